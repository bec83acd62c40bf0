"""`RetentionPruner`: prunes against its injected clock, counts what it deleted, records failures,
and stops promptly, between intervals and in the middle of a prune."""

from __future__ import annotations

import threading
import time

import pytest

from llmpulse.store import Checkpoint, RetentionPolicy, RetentionPruner, Store, StoreUnavailable
from tests.store.conftest import make_record

NOW = 1_800_000_000.0
DAY = 86400.0


def _old_calls(store: Store, n: int, tenant: str = "acme") -> None:
    calls = {(tenant, f"r{i}"): make_record(tenant, f"r{i}", started_at=NOW - 40 * DAY + i) for i in range(n)}
    store.commit(Checkpoint("c", calls=calls))


def _wait_for(condition: threading.Event, what: str) -> None:
    assert condition.wait(10.0), f"timed out waiting for {what}"


def test_run_once_prunes_against_the_injected_clock_and_counts(store: Store) -> None:
    _old_calls(store, 5)
    clock = [NOW - 20 * DAY]  # 20 days before NOW the calls are 20 days old: kept
    pruner = RetentionPruner(store, RetentionPolicy(batch_rows=2), clock=lambda: clock[0], pause_s=0)

    assert pruner.run_once().total_deleted == 0
    clock[0] = NOW
    result = pruner.run_once()

    assert result.deleted["calls"] == 5
    assert result.at == NOW
    assert result.batches == 3
    stats = pruner.stats()
    assert stats["runs"] == 2
    assert stats["deleted_total"]["calls"] == 5
    assert stats["last"]["deleted"]["calls"] == 5
    assert stats["last"]["oldest_kept"]["calls"] is None
    assert stats["failures"] == 0
    assert stats["alive"] is False
    assert pruner.last is result


def test_a_failed_prune_is_counted_and_raised(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import llmpulse.store._pruner as pruner_module

    def broken(*_args: object, **_kwargs: object) -> None:
        raise StoreUnavailable("pruning calls: database is locked")

    monkeypatch.setattr(pruner_module, "prune", broken)
    pruner = RetentionPruner(store, RetentionPolicy(), clock=lambda: NOW)
    with pytest.raises(StoreUnavailable):
        pruner.run_once()
    stats = pruner.stats()
    assert stats["failures"] == 1
    assert stats["last_error"] == "StoreUnavailable: pruning calls: database is locked"
    assert stats["runs"] == 0


def test_the_thread_stops_promptly_while_waiting_for_its_interval(store: Store) -> None:
    pruner = RetentionPruner(store, RetentionPolicy(interval_s=3600), clock=lambda: NOW)
    pruner.start()
    assert pruner.alive
    started = time.monotonic()
    pruner.stop(timeout=10)
    assert not pruner.alive
    assert time.monotonic() - started < 2
    assert pruner.stats()["runs"] == 0


def test_stop_ends_a_prune_under_way_after_its_current_batch(store: Store) -> None:
    _old_calls(store, 10)
    first_batch = threading.Event()

    class Watched(RetentionPruner):
        def _between_batches(self, took_s: float) -> bool:
            first_batch.set()
            return super()._between_batches(took_s)

    # a pause of an hour between batches: only stop() can end the prune in time
    pruner = Watched(store, RetentionPolicy(interval_s=3600, batch_rows=1), clock=lambda: NOW, pause_s=3600)
    pruner.start(delay_s=0)
    _wait_for(first_batch, "the first batch")
    started = time.monotonic()
    pruner.stop(timeout=10)
    assert not pruner.alive
    assert time.monotonic() - started < 2
    last = pruner.last
    assert last is not None
    assert not last.complete
    assert last.deleted["calls"] == 1


def test_start_refuses_a_policy_without_interval_and_a_second_start(store: Store) -> None:
    with pytest.raises(ValueError, match="interval_s"):
        RetentionPruner(store, RetentionPolicy(interval_s=0)).start()
    pruner = RetentionPruner(store, RetentionPolicy(interval_s=3600))
    pruner.start()
    try:
        with pytest.raises(RuntimeError, match="already"):
            pruner.start()
    finally:
        pruner.stop()
    with pytest.raises(ValueError, match="pause_s"):
        RetentionPruner(store, RetentionPolicy(), pause_s=-1)
    with pytest.raises(ValueError, match="max_batch_s"):
        RetentionPruner(store, RetentionPolicy(), max_batch_s=0)
