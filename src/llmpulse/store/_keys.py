"""API keys: create, list, revoke, and look up by hash. Only a hash of each key is stored.

A key is ``lp_`` followed by 43 base64url characters: 32 bytes (256 bits) from `secrets`. The store
keeps its SHA-256 (`hash_key`), never the key itself, so a copy of the database grants nothing. A fast
hash is enough here, and a slow one (bcrypt, scrypt, argon2) would buy nothing: slow hashes exist to
make guessing low-entropy *passwords* expensive, but nobody can enumerate 2^256 random keys at any
hash speed, while a slow hash would cost every API request tens of milliseconds of CPU. (The
same reasoning as GitHub's and Stripe's token storage.) Lookups go by the hash's unique index.

Each key has a short public id (``key_id``, 12 hex digits) to list and revoke it by, the tenant it
belongs to, when it was created, when it was last used (written at most about once a minute per key by
the server, see `ApiKeys.mark_used`) and when it was revoked. A revoked key stays listed.

Every method blocks on the database.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa

from llmpulse.store._engine import StoreIntegrityError, translate_errors, write_transaction
from llmpulse.store._tables import MAX_NAME_LEN, api_keys

#: Every key starts with this, so leaked keys are recognisable (secret scanners, logs).
KEY_PREFIX: Final = "lp_"
#: Random bytes in a key (256 bits).
KEY_BYTES: Final = 32
#: Length of a key: the prefix and 43 base64url characters.
KEY_LENGTH: Final = len(KEY_PREFIX) + 43


def new_key() -> str:
    """A fresh random key (``lp_`` + 43 base64url characters). Does not block."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).rstrip(b"=").decode("ascii")
    return KEY_PREFIX + raw


def hash_key(key: str) -> str:
    """The stored form of a key: the hex SHA-256 of its UTF-8 bytes. Does not block."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _when(value: Any) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), UTC)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One API key as stored (never the key itself).

    Attributes:
        key_id: the public id, to list and revoke the key by.
        tenant_id: the tenant whose data the key reads and writes.
        created_at, last_used_at, revoked_at: UTC instants; `last_used_at` is None until the key is
            used (and lags up to about a minute), `revoked_at` None while the key works.
    """

    key_id: str
    tenant_id: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        """True once the key has been revoked."""
        return self.revoked_at is not None


def _row_key(row: Mapping[Any, Any]) -> ApiKey:
    created = _when(row["created_at"])
    assert created is not None
    return ApiKey(
        key_id=str(row["key_id"]),
        tenant_id=str(row["tenant_id"]),
        created_at=created,
        last_used_at=_when(row["last_used_at"]),
        revoked_at=_when(row["revoked_at"]),
    )


class ApiKeys:
    """The API keys of a store (``store.keys``). Every method blocks on the database."""

    def __init__(self, engine: sa.Engine, serial: contextlib.AbstractContextManager[Any]) -> None:
        """Wrap the store's engine and its lock for in-memory SQLite. Does not block."""
        self._engine = engine
        self._serial = serial

    @contextlib.contextmanager
    def _reading(self, action: str) -> Iterator[sa.Connection]:
        with self._serial, translate_errors(action), self._engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def _writing(self, action: str) -> Iterator[sa.Connection]:
        with self._serial, translate_errors(action), write_transaction(self._engine) as conn:
            yield conn

    def create(self, tenant_id: str) -> tuple[ApiKey, str]:
        """Create a key for `tenant_id`; returns it as stored and the key itself (shown only now).

        Raises:
            ValueError: `tenant_id` is empty or longer than 256 characters.
            StoreError: the database refused or is unreachable.
        """
        if not isinstance(tenant_id, str) or not 1 <= len(tenant_id) <= MAX_NAME_LEN:
            raise ValueError(f"tenant_id must be 1 to {MAX_NAME_LEN} characters, got {tenant_id!r}")
        for attempt in range(3):
            key = new_key()
            info = ApiKey(key_id=secrets.token_hex(6), tenant_id=tenant_id, created_at=datetime.now(UTC))
            try:
                with self._writing("creating an API key") as conn:
                    conn.execute(
                        sa.insert(api_keys).values(
                            key_id=info.key_id,
                            tenant_id=tenant_id,
                            key_hash=hash_key(key),
                            created_at=info.created_at.timestamp(),
                        )
                    )
            except StoreIntegrityError:
                if attempt == 2:  # three random id collisions in a row: something else is wrong
                    raise
                continue
            return info, key
        raise AssertionError("unreachable")

    def all(self, tenant_id: str | None = None) -> list[ApiKey]:
        """Every key (revoked ones too), oldest first; only `tenant_id`'s when given."""
        query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
        if tenant_id is not None:
            query = query.where(api_keys.c.tenant_id == tenant_id)
        with self._reading("listing API keys") as conn:
            return [_row_key(row) for row in conn.execute(query).mappings()]

    def get(self, key_id: str) -> ApiKey | None:
        """The key with this id, or None."""
        with self._reading("reading an API key") as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).mappings().first()
        return None if row is None else _row_key(row)

    def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke the key with this id (idempotent: an earlier revocation time stays); None if unknown."""
        with self._writing("revoking an API key") as conn:
            conn.execute(
                sa.update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
            row = conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).mappings().first()
        return None if row is None else _row_key(row)

    def lookup(self, key: str) -> ApiKey | None:
        """The stored key matching `key` (revoked or not: check `ApiKey.revoked`), or None."""
        with self._reading("looking up an API key") as conn:
            row = (
                conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == hash_key(key)))
                .mappings()
                .first()
            )
        return None if row is None else _row_key(row)

    def any_active(self) -> bool:
        """True when at least one key is not revoked (the server then requires keys)."""
        query = sa.select(api_keys.c.key_id).where(api_keys.c.revoked_at.is_(None)).limit(1)
        with self._reading("checking for API keys") as conn:
            return conn.execute(query).first() is not None

    def mark_used(self, used: Mapping[str, float]) -> None:
        """Set ``last_used_at`` (epoch seconds) of each key id in `used`; never moves it backwards."""
        if not used:
            return
        with self._writing("recording API key use") as conn:
            for key_id, when in sorted(used.items()):
                conn.execute(
                    sa.update(api_keys)
                    .where(
                        api_keys.c.key_id == key_id,
                        sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < when),
                    )
                    .values(last_used_at=when)
                )
