"""API keys in the store (SQLite and Postgres): only hashes stored, lookup, revocation, last use."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from llmpulse.store import Store
from llmpulse.store._keys import KEY_LENGTH, hash_key, new_key
from llmpulse.store._tables import api_keys


def test_created_keys_are_random_and_only_their_hash_is_stored(store: Store) -> None:
    info, key = store.keys.create("acme")
    _, second = store.keys.create("acme")
    assert key != second
    assert len(key) == KEY_LENGTH
    assert key.startswith("lp_")
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(api_keys)).mappings()]
    assert all(key not in str(row.values()) for row in rows)
    assert {row["key_hash"] for row in rows} == {hash_key(key), hash_key(second)}
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert info.tenant_id == "acme"
    assert not info.revoked


def test_lookup_finds_the_key_and_nothing_else(store: Store) -> None:
    info, key = store.keys.create("acme")
    found = store.keys.lookup(key)
    assert found == info
    assert store.keys.lookup(key + "x") is None
    assert store.keys.lookup(new_key()) is None
    assert store.keys.lookup("") is None


def test_revocation_is_idempotent_and_keeps_the_key_listed(store: Store) -> None:
    assert not store.keys.any_active()
    info, key = store.keys.create("acme")
    other, _ = store.keys.create("globex")
    assert store.keys.any_active()
    first = store.keys.revoke(info.key_id)
    assert first is not None
    assert first.revoked
    again = store.keys.revoke(info.key_id)
    assert again is not None
    assert again.revoked_at == first.revoked_at
    assert store.keys.revoke("missing") is None
    found = store.keys.lookup(key)
    assert found is not None
    assert found.revoked
    assert [k.key_id for k in store.keys.all()] == [info.key_id, other.key_id]
    assert [k.key_id for k in store.keys.all("globex")] == [other.key_id]
    assert store.keys.any_active()
    store.keys.revoke(other.key_id)
    assert not store.keys.any_active()


def test_last_use_only_moves_forward(store: Store) -> None:
    info, _ = store.keys.create("acme")
    store.keys.mark_used({info.key_id: 2000.0, "missing": 1.0})
    store.keys.mark_used({info.key_id: 1000.0})
    found = store.keys.get(info.key_id)
    assert found is not None
    assert found.last_used_at is not None
    assert found.last_used_at.timestamp() == 2000.0


@pytest.mark.parametrize("tenant", ["", "x" * 257])
def test_a_bad_tenant_is_refused(store: Store, tenant: str) -> None:
    with pytest.raises(ValueError, match="tenant_id"):
        store.keys.create(tenant)
