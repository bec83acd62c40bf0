"""Committing checkpoints: additive window merges, pending joins, dedup chunks, offsets, atomicity."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa

from llmpulse.store import (
    Checkpoint,
    PendingEntry,
    Store,
    StoreError,
    StoreIntegrityError,
    WindowDelta,
    WindowKey,
    merged,
    quantile,
)
from llmpulse.store._commit import CheckpointWriter
from llmpulse.store._tables import processor_dedup
from tests.store.conftest import make_delta, make_record

T0 = 1_763_546_400  # 2025-11-19T10:00:00Z
KEY = WindowKey("t1", "chat", "gpt-4.1-mini", T0)


def _only_window(store: Store) -> WindowDelta:
    rows = store.query_windows("t1")
    assert len(rows) == 1
    return rows[0].delta


def test_two_checkpoints_to_one_window_add_up(store: Store) -> None:
    a = make_delta(
        requests=2, errors=1, latencies=[100.0, 300.0], ttfts=[20.0], prompt_tokens=50, cost_usd=0.25
    )
    b = make_delta(requests=3, latencies=[200.0, 250.0, 5000.0], completion_tokens=70, cost_usd=0.5, late=2)
    store.commit(Checkpoint("c", windows={KEY: a}))
    store.commit(Checkpoint("c", windows={KEY: b}))
    expected = WindowDelta().merge(a).merge(b)
    got = _only_window(store)
    assert got == expected
    assert (got.requests, got.errors, got.late) == (5, 1, 2)
    assert got.latency_sum_ms == pytest.approx(5850.0)
    assert got.cost_usd == pytest.approx(0.75)


def test_histograms_merge_bucket_by_bucket_and_p95_is_that_of_the_union(store: Store) -> None:
    first = [float(v) for v in range(1, 101)]
    second = [float(v) for v in range(1000, 1100)]
    store.commit(Checkpoint("c", windows={KEY: make_delta(requests=100, latencies=first)}))
    store.commit(Checkpoint("c", windows={KEY: make_delta(requests=100, latencies=second)}))
    got = _only_window(store)
    union = merged([make_delta(latencies=first).latency_hist, make_delta(latencies=second).latency_hist])
    assert got.latency_hist == union
    assert sum(got.latency_hist.values()) == 200
    p95 = quantile(got.latency_hist, 0.95)
    assert p95 is not None
    assert p95 == pytest.approx(1089.0, rel=0.01)  # the 190th of 200 values


def test_negative_corrections_remove_emptied_buckets(store: Store) -> None:
    store.commit(Checkpoint("c", windows={KEY: make_delta(requests=1, timeouts=1, errors=1)}))
    fix = make_delta(latencies=[42.0])
    fix.timeouts, fix.errors = -1, -1
    store.commit(Checkpoint("c", windows={KEY: fix}))
    undo = make_delta()
    undo.latency_count, undo.latency_sum_ms = -1, -42.0
    undo.latency_hist = {k: -v for k, v in fix.latency_hist.items()}
    store.commit(Checkpoint("c", windows={KEY: undo}))
    got = _only_window(store)
    assert (got.requests, got.timeouts, got.errors, got.latency_count) == (1, 0, 0, 0)
    assert got.latency_hist == {}


def test_many_windows_and_dedup_keys_in_one_checkpoint(store: Store) -> None:
    deltas = {
        WindowKey(f"t{t}", f"r{r}", f"m{m}", T0 + 60 * w): make_delta(
            requests=1 + w, latencies=[10.0 * (r + 1)]
        )
        for t in range(10)
        for r in range(10)
        for m in range(5)
        for w in range(4)
    }
    keys = [f"req-{i}:request" for i in range(50_000)]
    store.commit(Checkpoint("c", windows=deltas, dedup_keys=keys, dedup_expires_at=10_000.0))
    store.commit(Checkpoint("c", windows=deltas))
    assert len(store.tenants()) == 10
    rows = store.query_windows("t3", route="r7", model="m2", limit=10)
    assert [r.key.window_start for r in rows] == [T0 + 180, T0 + 120, T0 + 60, T0]
    assert [r.delta.requests for r in rows] == [8, 6, 4, 2]
    assert rows[0].delta.latency_hist == merged([deltas[rows[0].key].latency_hist] * 2)
    assert store.load_state("c", now=0.0).dedup_keys == set(keys)


def test_pending_entries_upsert_replace_and_delete(store: Store) -> None:
    req = PendingEntry("r1", "request", b"req-payload", seen_at=10.0)
    resp = PendingEntry("r2", "response", b"resp", seen_at=11.0)
    store.commit(Checkpoint("c", pending_upserts=[req, resp]))
    assert store.load_state("c", now=0.0).pending == [req, resp]

    expired = PendingEntry("r1", "request", b"req-payload", seen_at=10.0, expired=True)
    store.commit(Checkpoint("c", pending_upserts=[expired], pending_deletes=[("", "r2", "response")]))
    assert store.load_state("c", now=0.0).pending == [expired]

    # In one checkpoint, upserts apply before deletes: a key in both ends deleted.
    again = PendingEntry("r3", "request", b"x", seen_at=12.0)
    store.commit(
        Checkpoint(
            "c", pending_upserts=[again], pending_deletes=[("", "r3", "request"), ("", "r1", "request")]
        )
    )
    assert store.load_state("c", now=0.0).pending == []


def test_pending_entries_are_per_consumer(store: Store) -> None:
    store.commit(Checkpoint("a", pending_upserts=[PendingEntry("r1", "request", b"a", 1.0)]))
    store.commit(Checkpoint("b", pending_upserts=[PendingEntry("r1", "request", b"b", 2.0)]))
    store.commit(Checkpoint("a", pending_deletes=[("", "r1", "request")]))
    assert store.load_state("a", now=0.0).pending == []
    assert [e.payload for e in store.load_state("b", now=0.0).pending] == [b"b"]


def test_dedup_chunks_expire_and_are_deleted_on_load(store: Store) -> None:
    store.commit(Checkpoint("c", dedup_keys=["a", "b"], dedup_expires_at=100.0))
    store.commit(Checkpoint("c", dedup_keys=["c"], dedup_expires_at=200.0))
    store.commit(Checkpoint("other", dedup_keys=["z"], dedup_expires_at=100.0))
    assert store.load_state("c", now=50.0).dedup_keys == {"a", "b", "c"}
    assert store.load_state("c", now=100.0).dedup_keys == {"c"}
    with store.engine.connect() as conn:
        remaining = conn.execute(sa.select(processor_dedup.c.consumer).order_by("consumer")).scalars().all()
    assert remaining == ["c", "other"]  # the expired chunk of "c" is gone, other consumers untouched
    assert store.purge_dedup("c", now=1000.0) == 1
    assert store.load_state("c", now=0.0).dedup_keys == set()
    assert store.load_state("other", now=0.0).dedup_keys == {"z"}


def test_offsets_and_watermark_round_trip(store: Store) -> None:
    empty = store.load_state("c", now=0.0)
    assert (empty.offsets, empty.pending, empty.dedup_keys, empty.watermark) == ({}, [], set(), 0.0)
    store.commit(Checkpoint("c", offsets={0: 10, 3: 7}, watermark=500.5))
    store.commit(Checkpoint("c", offsets={0: 25}, watermark=400.0))  # an older watermark never wins
    state = store.load_state("c", now=0.0)
    assert state.offsets == {0: 25, 3: 7}
    assert state.watermark == 500.5
    assert store.load_state("d", now=0.0).offsets == {}


def test_counters_add_up_across_commits_and_consumers(store: Store) -> None:
    store.commit(Checkpoint("a", counters={"orphan_responses": 2, "duplicates": 1}))
    store.commit(Checkpoint("b", counters={"orphan_responses": 3}))
    assert store.counters() == {"orphan_responses": 5, "duplicates": 1}


def _full_checkpoint(**overrides: Any) -> Checkpoint:
    cp = Checkpoint(
        "c",
        offsets={0: 99},
        windows={KEY: make_delta(requests=1, latencies=[5.0])},
        pending_upserts=[PendingEntry("r1", "request", b"p", 1.0)],
        dedup_keys=["k1"],
        dedup_expires_at=1e12,
        counters={"late": 1},
        watermark=123.0,
    )
    for name, value in overrides.items():
        setattr(cp, name, value)
    return cp


def _assert_nothing_written(store: Store) -> None:
    assert store.query_windows("t1") == []
    assert store.counters() == {}
    state = store.load_state("c", now=0.0)
    assert (state.offsets, state.pending, state.dedup_keys, state.watermark) == ({}, [], set(), 0.0)


def test_an_invalid_row_rolls_back_the_whole_checkpoint(store: Store) -> None:
    bad = _full_checkpoint(offsets={0: None})  # NOT NULL violation in the last statement of the commit
    with pytest.raises(StoreIntegrityError) as info:
        store.commit(bad)
    assert isinstance(info.value, StoreError)
    assert isinstance(info.value.__cause__, sa.exc.IntegrityError)
    _assert_nothing_written(store)
    store.commit(_full_checkpoint())  # the store is still usable
    assert store.load_state("c", now=0.0).offsets == {0: 99}


def test_a_crash_after_every_statement_rolls_back_everything(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = CheckpointWriter.write

    def write_then_crash(self: CheckpointWriter, *args: Any) -> None:
        original(self, *args)
        raise RuntimeError("power cut")

    monkeypatch.setattr(CheckpointWriter, "write", write_then_crash)
    with pytest.raises(RuntimeError, match="power cut"):
        store.commit(_full_checkpoint(calls={("t1", "r1"): make_record("t1", "r1")}))
    monkeypatch.undo()
    _assert_nothing_written(store)
    with store.engine.connect() as conn:
        for table in ("calls", "rollups_hour", "rollups_day"):
            assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() == 0


def test_concurrent_writers_to_the_same_windows_merge_additively(store_url: str) -> None:
    keys = [WindowKey("t1", f"r{r}", "m", T0 + 60 * w) for r in range(5) for w in range(5)]
    rounds = 10
    stores = [Store.open(store_url) for _ in range(3)]
    errors: list[BaseException] = []

    def work(s: Store, n: int) -> None:
        try:
            for i in range(rounds):
                # Each worker walks the keys in a different order: sorting inside commit avoids deadlocks.
                order = keys[n:] + keys[:n] if i % 2 else list(reversed(keys))
                s.commit(
                    Checkpoint(
                        f"w{n}", windows={k: make_delta(requests=1, latencies=[1.0 + n]) for k in order}
                    )
                )
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s, n)) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        rows = stores[0].query_windows("t1", limit=1000)
        assert len(rows) == len(keys)
        assert all(r.delta.requests == 3 * rounds for r in rows)
        assert all(sum(r.delta.latency_hist.values()) == 3 * rounds for r in rows)
    finally:
        for s in stores:
            s.close()


def test_each_commit_to_a_window_raises_its_version_and_returns_it_as_written(store: Store) -> None:
    other = WindowKey("t1", "chat", "gpt-4.1", T0)
    (first,) = store.commit(Checkpoint("c", windows={KEY: make_delta(requests=2)}), return_windows=True)
    assert (first.key, first.version, first.delta.requests) == (KEY, 1, 2)
    written = store.commit(
        Checkpoint(
            "d", windows={KEY: make_delta(requests=3, latencies=[10.0]), other: make_delta(requests=1)}
        ),
        return_windows=True,
    )
    by_key = {w.key: w for w in written}
    assert (by_key[KEY].version, by_key[KEY].delta.requests, by_key[KEY].delta.latency_count) == (2, 5, 1)
    assert (by_key[other].version, by_key[other].delta.requests) == (1, 1)
    # what the commit returned is what a reader finds afterwards
    stored = {w.key: w for w in store.query_windows("t1")}
    assert {k: (w.version, w.delta) for k, w in stored.items()} == {
        k: (w.version, w.delta) for k, w in by_key.items()
    }
    assert store.commit(Checkpoint("c", windows={KEY: make_delta(requests=1)})) == []  # not asked
    assert store.query_windows("t1", model="gpt-4.1-mini")[0].version == 3


def test_committed_offsets_by_consumer_prefix_reads_only_those_consumers(store: Store) -> None:
    store.commit(Checkpoint("group:g_1/0", offsets={0: 5, 1: 7}))
    store.commit(Checkpoint("group:g_1/1", offsets={3: 2}))
    store.commit(Checkpoint("group:gx1/0", offsets={0: 99}))  # "_" must not match as a wildcard
    store.commit(Checkpoint("kafka", offsets={0: 1}))
    assert store.committed_offsets("group:g_1/") == {"group:g_1/0": {0: 5, 1: 7}, "group:g_1/1": {3: 2}}
    assert store.committed_offsets("nobody") == {}


def test_commit_many_writes_several_consumers_in_one_transaction_with_windows_added_up(store: Store) -> None:
    from llmpulse.store._commit import StaleCheckpoint

    a = Checkpoint(
        "u/0",
        offsets={0: 4},
        windows={KEY: make_delta(requests=2, latencies=[10.0])},
        pending_upserts=[PendingEntry("r1", "request", b"x", 1.0, False)],
        dedup_keys=["p:a"],
        dedup_expires_at=9e9,
        counters={"duplicates": 1},
        watermark=5.0,
    )
    b = Checkpoint(
        "u/1",
        offsets={3: 7},
        windows={KEY: make_delta(requests=3, latencies=[20.0])},
        dedup_keys=["p:b"],
        dedup_expires_at=9e9,
        counters={"duplicates": 2},
        watermark=6.0,
    )
    (written,) = store.commit_many([a, b], expect_offsets={"u/0": {}, "u/1": {}}, return_windows=True)
    assert (written.version, written.delta.requests, written.delta.latency_count) == (1, 5, 2)
    assert store.counters()["duplicates"] == 3
    first, second = store.load_state("u/0", 0.0), store.load_state("u/1", 0.0)
    assert (first.offsets, second.offsets) == ({0: 4}, {3: 7})
    assert ([e.request_id for e in first.pending], second.pending) == (["r1"], [])
    assert (first.dedup_keys, second.dedup_keys) == ({"p:a"}, {"p:b"})
    assert (first.watermark, second.watermark) == (5.0, 6.0)
    # one stale consumer: nothing of either is written, and the error names it
    again = [Checkpoint("u/0", offsets={0: 9}, windows={KEY: make_delta(requests=1)}),
             Checkpoint("u/1", offsets={3: 9}, windows={KEY: make_delta(requests=1)})]  # fmt: skip
    with pytest.raises(StaleCheckpoint) as stale:
        store.commit_many(again, expect_offsets={"u/0": {0: 4}, "u/1": {3: 6}})
    assert stale.value.consumer == "u/1"
    assert _only_window(store).requests == 5
    assert store.load_state("u/0", 0.0).offsets == {0: 4}
    with pytest.raises(ValueError, match="distinct"):
        store.commit_many([a, a])


def test_names_and_payloads_with_quotes_backslashes_and_braces_round_trip(store: Store) -> None:
    """Postgres receives each column as the text of an array literal: every character that is
    special there (quotes, backslashes, commas, braces, spaces, the word NULL) must come back as sent."""
    names = ['a"b', "c\\d", "x,y{}", " sp ", "NULL", "é✓", ""]
    deltas = {
        WindowKey(f"t{i}", name, name or "m", T0): make_delta(requests=i + 1) for i, name in enumerate(names)
    }
    payloads = [b'\x00\xff\\"', b""]
    pending = [PendingEntry(f'r"{i}\\', "request", p, 1.5, False) for i, p in enumerate(payloads)]
    store.commit(Checkpoint('c,{"x\\', windows=deltas, pending_upserts=pending))
    for key, delta in deltas.items():
        (got,) = store.query_windows(key.tenant_id)
        assert (got.key, got.delta.requests) == (key, delta.requests)
    state = store.load_state('c,{"x\\', 0.0)
    assert {(e.request_id, e.payload, e.seen_at) for e in state.pending} == {
        (e.request_id, e.payload, 1.5) for e in pending
    }
