"""The runner over a real SQLite log and store: windows equal the oracle through failures and restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from llmpulse.events import Event
from llmpulse.pipeline import ProcessorConfig, ProcessorRunner, SQLiteEventLog
from llmpulse.store import Checkpoint, ProcessorState, Store, WindowDelta, WindowKey
from llmpulse.testing.traffic import generate_events
from tests.oracle import assert_matches, expected_windows


class FlakyStore:
    """A real store whose commits fail on chosen calls (after doing nothing), to exercise recovery."""

    def __init__(self, store: Store, fail_on: set[int]) -> None:
        self.store = store
        self.fail_on = fail_on
        self.calls = 0

    def load_state(self, consumer: str, now: float, **kwargs: Any) -> ProcessorState:
        return self.store.load_state(consumer, now, **kwargs)

    def lookup_cold(self, consumer: str, request_ids: Any, since: float) -> Any:
        return self.store.lookup_cold(consumer, request_ids, since)

    def commit(self, checkpoint: Checkpoint) -> None:
        self.calls += 1
        if self.calls in self.fail_on:
            raise OSError(f"injected failure on commit {self.calls}")
        self.store.commit(checkpoint)


def _events(n: int, seed: int) -> list[Event]:
    return generate_events(
        n,
        tenants=2,
        routes=2,
        start=datetime.now(UTC) - timedelta(minutes=20),
        duration_s=600,
        duplicate_rate=0.05,
        call_rate=0.1,
        shuffle=20,
        seed=seed,
    )


def _append(log: SQLiteEventLog, events: Sequence[Event], size: int = 50) -> None:
    async def go() -> None:
        for i in range(0, len(events), size):
            await log.append(events[i : i + size])

    asyncio.run(go())


def _stored(store: Store, tenants: set[str]) -> dict[WindowKey, WindowDelta]:
    out: dict[WindowKey, WindowDelta] = {}
    for tenant in tenants:
        for w in store.query_windows(tenant, limit=100_000):
            out[w.key] = w.delta
    return out


@pytest.fixture
def parts(tmp_path: Path) -> tuple[SQLiteEventLog, Store]:
    log = SQLiteEventLog(f"sqlite:///{tmp_path / 'log.db'}", sync="NORMAL")
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    yield log, store
    store.close()
    log.close()


def _run_until_committed(runner: ProcessorRunner, log: SQLiteEventLog) -> None:
    assert runner.wait_committed(0, log.end_offset(0), timeout=30), runner.stats()


def test_windows_equal_the_oracle_through_failed_commits(parts: tuple[SQLiteEventLog, Store]) -> None:
    log, store = parts
    events = _events(1500, seed=3)
    flaky = FlakyStore(store, fail_on={2, 3, 5})
    runner = ProcessorRunner(log, flaky, ProcessorConfig(), checkpoint_interval_s=0.01, max_records=3)
    runner.start()
    try:
        _append(log, events)
        _run_until_committed(runner, log)
        stats = runner.stats()
        assert stats["failures"] == 3
        assert stats["alive"]
        assert not stats["failing"]
    finally:
        runner.stop()
    expected = expected_windows(events)
    assert_matches(_stored(store, {k.tenant_id for k in expected.windows}), expected)


def test_a_restarted_runner_counts_nothing_twice(parts: tuple[SQLiteEventLog, Store]) -> None:
    log, store = parts
    first, second = _events(600, seed=4), _events(600, seed=5)
    runner = ProcessorRunner(log, store, ProcessorConfig(), checkpoint_interval_s=0.01)
    runner.start()
    _append(log, first)
    _run_until_committed(runner, log)
    runner.stop()
    _append(log, second + first[:100])  # the resent head of the first batch is all duplicates
    again = ProcessorRunner(log, store, ProcessorConfig(), checkpoint_interval_s=0.01)
    again.start()
    try:
        _run_until_committed(again, log)
    finally:
        again.stop()
    expected = expected_windows(first + second)
    assert_matches(_stored(store, {k.tenant_id for k in expected.windows}), expected)


def test_a_runner_that_dies_uncommitted_is_replayed_once(parts: tuple[SQLiteEventLog, Store]) -> None:
    log, store = parts
    events = _events(800, seed=6)
    # every commit fails: the runner keeps processing (and restoring) but nothing lands
    dying = ProcessorRunner(log, FlakyStore(store, fail_on=set(range(1, 10_000))), checkpoint_interval_s=0.01)
    dying.start()
    _append(log, events)
    assert not dying.wait_committed(0, log.end_offset(0), timeout=1.0)
    dying.stop(timeout=5)
    fresh = ProcessorRunner(log, store, checkpoint_interval_s=0.01)
    fresh.start()
    try:
        _run_until_committed(fresh, log)
    finally:
        fresh.stop()
    expected = expected_windows(events)
    assert_matches(_stored(store, {k.tenant_id for k in expected.windows}), expected)
