"""Bounded memory (issue 11, item 6): the processor holds only what is in flight and what it counted
in the last `hot_s`; older keys and timed-out halves live in the store, a `KeyFilter` remembers their
request ids, and a duplicate or a late half sent hours later is still recognised, across restarts.

A `ProcessorRunner` over a real SQLite log and store on both dialects, with an injected clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmpulse.events import Event, LLMCall, LLMRequest, LLMResponse
from llmpulse.pipeline import ProcessorConfig, ProcessorRunner, SQLiteEventLog
from llmpulse.store import KeyFilter, Store
from tests.postgres_server import suite_dsn
from tests.store.conftest import reset_postgres

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOUR = 3600.0
CONFIG = ProcessorConfig(orphan_timeout_s=60, dedup_ttl_s=24 * HOUR, hot_s=30)


class Clock:
    """The runner's wall clock, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "postgresql":
        url = suite_dsn()
        reset_postgres(url)
    else:
        url = f"sqlite:///{tmp_path / 'store.db'}"
    s = Store.open(url)
    yield s
    s.close()


@pytest.fixture
def log(tmp_path: Path) -> Iterator[SQLiteEventLog]:
    log = SQLiteEventLog(f"sqlite:///{tmp_path / 'log.db'}", sync="NORMAL")
    yield log
    log.close()


def _append(log: SQLiteEventLog, events: Sequence[Event]) -> None:
    async def go() -> None:
        await log.append(list(events))

    asyncio.run(go())


class Run:
    """A runner started on the log and store with `clock`; `feed` appends and waits for the commit."""

    def __init__(self, log: SQLiteEventLog, store: Store, clock: Clock) -> None:
        self.log, self.store, self.clock = log, store, clock
        self.runner = ProcessorRunner(log, store, CONFIG, checkpoint_interval_s=0.01, clock=clock)
        self.runner.start()

    def feed(self, events: Sequence[Event]) -> None:
        _append(self.log, events)
        assert self.runner.wait_committed(0, self.log.end_offset(0), timeout=30), self.runner.stats()

    def tick(self, seconds: float) -> None:
        """Move the clock and wait for a commit at the new time (expiry runs before each commit; an
        idle runner commits every second)."""
        self.clock.now += seconds
        deadline = time.monotonic() + 10
        while self.runner.stats()["last_commit_at"] < self.clock.now:
            assert time.monotonic() < deadline, self.runner.stats()
            time.sleep(0.05)

    def stop(self) -> None:
        self.runner.stop()


def _req(rid: str, tenant: str = "t1", minute: int = 0) -> LLMRequest:
    return LLMRequest(
        request_id=rid,
        tenant_id=tenant,
        model="gpt-4o-mini",
        timestamp=T0 + timedelta(minutes=minute),
        prompt_tokens=100,
    )


def _resp(rid: str, tenant: str | None = None) -> LLMResponse:
    return LLMResponse(request_id=rid, tenant_id=tenant, timestamp=T0, latency_ms=250.0, completion_tokens=40)


def _call(rid: str, tenant: str = "t1") -> LLMCall:
    return LLMCall(model="gpt-4o-mini", timestamp=T0, request_id=rid, tenant_id=tenant, input_tokens=10)


def _requests(store: Store, tenant: str) -> int:
    return sum(w.delta.requests for w in store.query_windows(tenant, limit=10_000))


def test_a_duplicate_hours_later_and_after_a_restart_counts_once(log: SQLiteEventLog, store: Store) -> None:
    clock = Clock(T0.timestamp())
    run = Run(log, store, clock)
    try:
        run.feed([_req("a"), _resp("a"), _call("c"), _req("x", tenant="t2"), _resp("x", tenant="t2")])
        run.tick(120)  # past hot_s: memory has let the keys go
        stats = run.runner.stats()
        assert stats["dedup_keys"] == 0
        assert stats["filter_keys"] >= 3
        clock.now += 3 * HOUR
        run.feed([_req("a"), _resp("a"), _call("c")])  # hours later: duplicates, found in the store
        assert run.runner.stats()["cold_lookups"] >= 2
    finally:
        run.stop()
    assert _requests(store, "t1") == 2
    clock.now += 5 * HOUR
    again = Run(log, store, clock)  # a restart: the filter is rebuilt from the store, memory empty
    try:
        assert again.runner.stats()["dedup_keys"] == 0
        again.feed([_call("c"), _req("a"), _resp("a"), _req("x", tenant="t2")])
        # the same ids in another tenant are other calls, counted
        again.feed([_call("c", tenant="t3"), _req("a", tenant="t3"), _resp("a", tenant="t3")])
    finally:
        again.stop()
    assert _requests(store, "t1") == 2
    assert _requests(store, "t2") == 1
    assert _requests(store, "t3") == 2
    counters = store.counters()
    assert counters["duplicates"] == 3 + 4


def test_a_response_hours_late_corrects_its_timeout_from_the_store(log: SQLiteEventLog, store: Store) -> None:
    clock = Clock(T0.timestamp())
    run = Run(log, store, clock)
    try:
        run.feed([_req("late")])
        run.tick(61)  # timed out
        run.tick(120)  # and let go of: only the store holds the expired request
        assert run.runner.stats()["expired_requests"] == 0
        (window,) = store.query_windows("t1")
        assert (window.delta.requests, window.delta.timeouts) == (1, 1)
    finally:
        run.stop()
    clock.now += 6 * HOUR
    again = Run(log, store, clock)
    try:
        again.feed([_resp("late")])
    finally:
        again.stop()
    (window,) = store.query_windows("t1")
    assert (window.delta.requests, window.delta.timeouts, window.delta.errors) == (1, 0, 0)
    assert window.delta.completion_tokens == 40


def test_memory_holds_the_last_hot_s_not_the_dedup_horizon(log: SQLiteEventLog, store: Store) -> None:
    """Two simulated hours of calls at a steady rate: the keys in memory stay at about what
    `hot_s` and one commit interval hold, while the filter holds every id at ~1.2 bytes each."""
    clock = Clock(T0.timestamp())
    run = Run(log, store, clock)
    held: list[int] = []
    try:
        for step in range(120):  # a batch of 50 calls a simulated minute
            run.feed([_call(f"{step}-{i}") for i in range(50)])
            clock.now += 60
            held.append(run.runner.stats()["dedup_keys"])
        stats = run.runner.stats()
    finally:
        run.stop()
    assert max(held[10:]) <= 2 * 50  # the last minute's (hot_s = 30 s, one batch a minute)
    assert stats["filter_keys"] == 120 * 50
    assert stats["filter_bytes"] < 2 * 100_000  # one filter of its minimum size holds 6,000 ids
    assert _requests(store, "t1") == 6000


def test_the_key_filter_has_no_false_negatives_and_drops_expired_generations() -> None:
    kf = KeyFilter(span_s=100, capacity=1000)
    for i in range(5000):
        kf.add(f"id-{i}", expires_at=1000.0 + i // 10)
    assert all(f"id-{i}" in kf for i in range(5000))
    false_positives = sum(f"other-{i}" in kf for i in range(20_000))
    assert false_positives < 20_000 * 0.03
    kf.expire(1250.0)  # generations ending at or before 1200 go: ids expiring before 1200
    assert len(kf) == 5000 - 2000
    assert all(f"id-{i}" in kf for i in range(2000, 5000))
    kf.expire(10_000.0)
    assert len(kf) == 0
    assert "id-4999" not in kf
