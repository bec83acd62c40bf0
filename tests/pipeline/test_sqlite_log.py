"""The embedded event log: durability, order, group commit, back-pressure, pruning."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from llmpulse.events import LLMRequest, LLMResponse
from llmpulse.pipeline import LogBackpressure, LogClosed, SQLiteEventLog

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _req(i: int) -> LLMRequest:
    return LLMRequest(request_id=f"r{i}", tenant_id="t", model="gpt-4o-mini", timestamp=NOW, prompt_tokens=i)


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'log.db'}"


def test_appended_batches_read_back_in_order_with_growing_offsets(tmp_path: Path) -> None:
    log = SQLiteEventLog(_url(tmp_path))
    try:

        async def go() -> None:
            await log.append([_req(1), _req(2)])
            await log.append([LLMResponse(request_id="r1", timestamp=NOW, latency_ms=5.0)])

        asyncio.run(go())
        records = log.read(0, 0, 10)
        assert [len(r.events) for r in records] == [2, 1]
        assert records[0].offset < records[1].offset
        assert records[0].events[1] == _req(2)
        assert isinstance(records[1].events[0], LLMResponse)
        assert log.read(0, records[1].offset, 10) == records[1:]
        assert log.end_offset(0) == records[1].offset + 1
    finally:
        log.close()


def test_records_survive_reopening(tmp_path: Path) -> None:
    log = SQLiteEventLog(_url(tmp_path))
    asyncio.run(log.append([_req(7)]))
    log.close()
    reopened = SQLiteEventLog(_url(tmp_path))
    try:
        assert [r.events for r in reopened.read(0, 0, 10)] == [[_req(7)]]
    finally:
        reopened.close()


def test_concurrent_appends_share_commits(tmp_path: Path) -> None:
    log = SQLiteEventLog(_url(tmp_path))
    try:

        async def go() -> None:
            await asyncio.gather(*(log.append([_req(i)]) for i in range(300)))

        asyncio.run(go())
        stats = log.stats()
        assert stats["appended_events"] == 300
        assert stats["commits"] < 300
        seen = sorted(r.events[0].prompt_tokens for r in log.read(0, 0, 1000))  # type: ignore[union-attr]
        assert seen == list(range(300))
    finally:
        log.close()


def test_append_raises_backpressure_when_the_writer_is_behind(tmp_path: Path) -> None:
    url = _url(tmp_path)
    log = SQLiteEventLog(url, max_pending_events=3)
    blocker = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:

        async def go() -> None:
            blocker.execute("BEGIN IMMEDIATE")  # the writer now waits for the lock
            first = asyncio.ensure_future(log.append([_req(1)]))
            await asyncio.sleep(0.2)
            second = asyncio.ensure_future(log.append([_req(2), _req(3)]))
            await asyncio.sleep(0.05)
            with pytest.raises(LogBackpressure) as info:
                await log.append([_req(4), _req(5)])
            assert info.value.retry_after_s >= 1
            blocker.execute("ROLLBACK")
            await asyncio.wait_for(asyncio.gather(first, second), 10)

        asyncio.run(go())
        assert sum(len(r.events) for r in log.read(0, 0, 10)) == 3
    finally:
        blocker.close()
        log.close()


def test_close_writes_queued_appends_then_refuses_new_ones(tmp_path: Path) -> None:
    log = SQLiteEventLog(_url(tmp_path))

    async def go() -> None:
        tasks = [asyncio.ensure_future(log.append([_req(i)])) for i in range(50)]
        await asyncio.sleep(0)
        await asyncio.to_thread(log.close)
        await asyncio.gather(*tasks)
        with pytest.raises(LogClosed):
            await log.append([_req(99)])

    asyncio.run(go())
    reopened = SQLiteEventLog(_url(tmp_path))
    try:
        assert sum(len(r.events) for r in reopened.read(0, 0, 100)) == 50
    finally:
        reopened.close()


def test_pruning_keeps_offsets_growing(tmp_path: Path) -> None:
    log = SQLiteEventLog(_url(tmp_path), retention_s=0.0)
    try:
        asyncio.run(log.append([_req(1)]))
        asyncio.run(log.append([_req(2)]))
        last = log.read(0, 0, 10)[-1].offset
        log.release(0, last + 1)
        log._prune()
        assert log.read(0, 0, 10) == []
        asyncio.run(log.append([_req(3)]))
        (record,) = log.read(0, 0, 10)
        assert record.offset == last + 1
    finally:
        log.close()


def test_refuses_a_non_sqlite_url() -> None:
    with pytest.raises(ValueError, match="sqlite"):
        SQLiteEventLog("postgresql://x/y")


def test_tail_serves_the_same_records_as_the_table(tmp_path: Path) -> None:
    log = SQLiteEventLog(_url(tmp_path), tail_events=6)
    try:

        async def go() -> None:
            for i in range(6):
                await log.append([_req(2 * i), _req(2 * i + 1)])

        asyncio.run(go())
        from_tail = log.read(0, 4, 10)
        assert log.stats()["tail_reads"] == 1
        assert log.stats()["tail_events"] == 6
        assert [r.offset for r in from_tail] == [4, 5, 6]
        behind = log.read(0, 1, 10)  # older than the tail: read from the table
        assert log.stats()["tail_reads"] == 1
        assert [r.offset for r in behind] == [1, 2, 3, 4, 5, 6]
        assert behind[3:] == from_tail
        assert log.read(0, 7, 10) == []
    finally:
        log.close()
    reopened = SQLiteEventLog(_url(tmp_path), tail_events=0)
    try:
        assert reopened.read(0, 4, 10) == from_tail
    finally:
        reopened.close()


def test_events_after_measures_a_readers_lag(tmp_path: Path) -> None:
    log = SQLiteEventLog(_url(tmp_path), tail_events=6)
    try:
        assert log.events_after(0, 0) == 0

        async def go() -> None:
            for i in range(4):
                await log.append([_req(3 * i), _req(3 * i + 1), _req(3 * i + 2)][: i + 1])

        asyncio.run(go())  # records 1..4 hold 1, 2, 3, 3 events; the tail keeps records 3 and 4
        assert log.events_after(0, 5) == 0
        assert log.events_after(0, 4) == 3
        assert log.events_after(0, 3) == 6
        assert log.events_after(0, 1) == 6  # behind the tail: at least what the tail holds
    finally:
        log.close()
    untailed = SQLiteEventLog(f"sqlite:///{tmp_path / 'other.db'}", tail_events=0)
    try:
        assert untailed.events_after(0, 0) is None
    finally:
        untailed.close()
