"""Retention of the embedded event log: a record goes once a committed checkpoint covers it
(`release`) AND it was appended longer ago than the retention; in bounded batches, by the writer
thread too, and the file stops growing at a steady rate. The clock is fake."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

import llmpulse.pipeline._sqlite_log as sqlite_log
from llmpulse.events import LLMRequest
from llmpulse.pipeline import SQLiteEventLog

T0 = 1_800_000_000.0
STAMP = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    """A settable wall clock."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _req(i: int) -> LLMRequest:
    return LLMRequest(request_id=f"r{i}", tenant_id="t", model="m", timestamp=STAMP, prompt_tokens=i)


def _offsets(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [int(o) for (o,) in conn.execute('SELECT "offset" FROM event_log ORDER BY "offset"')]


def _append_at(log: SQLiteEventLog, clock: Clock, times: list[float]) -> list[int]:
    """Append one record per time (the clock set to it); their offsets."""
    for t in times:
        clock.now = t
        asyncio.run(log.append([_req(int(t - T0))]))
    return [r.offset for r in log.read(0, 0, 10_000)][-len(times) :]


def test_a_record_goes_only_once_released_and_older_than_the_retention(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    clock = Clock()
    log = SQLiteEventLog(f"sqlite:///{path}", retention_s=3600, clock=clock)
    try:
        offsets = _append_at(log, clock, [T0, T0 + 10, T0 + 20, T0 + 30, T0 + 4000])
        clock.now = T0 + 3615  # the first two are over an hour old
        assert log._prune() == 0  # nothing released yet
        log.release(0, offsets[1])  # a checkpoint covers the first record only
        assert log._prune() == 1
        assert _offsets(path) == offsets[1:]
        log.release(0, offsets[4] + 1)  # everything is covered now
        assert log._prune() == 1  # the second; the third is 3595 s old
        clock.now = T0 + 7000
        assert log._prune() == 2  # the third and the fourth; the fifth is 3000 s old
        assert _offsets(path) == offsets[4:]
        assert log.stats()["pruned_records"] == 4
        log.release(0, 1)  # a stale release never moves the mark back
        clock.now = T0 + 9000
        assert log._prune() == 1
        assert _offsets(path) == []
    finally:
        log.close()


def test_each_prune_transaction_deletes_at_most_the_batch(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    clock = Clock()
    log = SQLiteEventLog(f"sqlite:///{path}", retention_s=60, prune_batch_records=3, clock=clock)
    try:
        offsets = _append_at(log, clock, [T0 + i for i in range(8)])
        log.release(0, offsets[-1] + 1)
        clock.now = T0 + 1000
        sizes = []
        while (n := log._prune_once(log._writer_conn)) > 0:
            sizes.append(n)
        assert sizes == [3, 3, 2]
        assert _offsets(path) == []
    finally:
        log.close()


def test_the_writer_prunes_in_batches_while_appends_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_log, "_PRUNE_EVERY_S", 0.01)
    path = tmp_path / "log.db"
    clock = Clock()
    log = SQLiteEventLog(f"sqlite:///{path}", retention_s=60, prune_batch_records=2, clock=clock)
    try:
        offsets = _append_at(log, clock, [T0 + i for i in range(20)])
        clock.now = T0 + 1000
        log.release(0, offsets[-1] + 1)
        done = threading.Event()

        async def keep_appending() -> None:
            # appends are acknowledged while the writer works through ten prune batches
            for i in range(30):
                await log.append([_req(100 + i)])
            done.set()

        asyncio.run(keep_appending())
        assert done.is_set()
        deadline = threading.Event()
        for _ in range(1000):  # wait for the writer to reach the 20 released records, not for time
            if log.stats()["pruned_records"] == 20:
                break
            deadline.wait(0.01)
        assert log.stats()["pruned_records"] == 20
        remaining = _offsets(path)
        assert len(remaining) == 30
        assert min(remaining) > offsets[-1]
    finally:
        log.close()


def test_the_log_file_stops_growing_at_a_steady_rate(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    clock = Clock()
    log = SQLiteEventLog(f"sqlite:///{path}", sync="NORMAL", retention_s=600, clock=clock)
    sizes = []
    try:
        for _round in range(40):
            # a minute of traffic: 60 appends of 20 events, processed and committed at once
            for second in range(60):
                clock.now += 1
                asyncio.run(log.append([_req(second * 100 + i) for i in range(20)]))
            log.release(0, log.end_offset(0))
            log._prune()
            with sqlite3.connect(path) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            sizes.append(path.stat().st_size)
    finally:
        log.close()
    page = 4096
    assert sizes[9] > sizes[1]  # the first ten minutes fill it
    assert abs(sizes[-1] - sizes[19]) <= 2 * page, sizes
    assert max(sizes[19:]) - sizes[19] <= 2 * page, sizes


def test_invalid_retention_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="retention_s"):
        SQLiteEventLog(f"sqlite:///{tmp_path / 'a.db'}", retention_s=-1)
    with pytest.raises(ValueError, match="prune_batch_records"):
        SQLiteEventLog(f"sqlite:///{tmp_path / 'b.db'}", prune_batch_records=0)
