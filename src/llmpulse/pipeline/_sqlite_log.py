"""The embedded event log: an append-only SQLite table in WAL mode, written with group commit.

Appends from any number of concurrent requests are queued to one writer thread, which writes every
queued batch in a single transaction and then resolves all of their futures: one fsync (with
``synchronous=FULL``) acknowledges many requests. Offsets are the table's AUTOINCREMENT row ids, so
they only ever grow, even after old records are pruned. Each row holds one appended batch.

The writer also keeps the most recently committed records in memory (the tail, bounded by
`tail_events`), as the event objects that were appended: a reader that keeps up, the embedded
processor, gets them without a SQLite read and a MessagePack decode, which was a fifth of the
processor's time. Only committed records enter the tail, so a reader never sees an event that is not
durable; a reader that falls behind, or starts after a restart, reads the table.

Retention: a record is deleted once a committed checkpoint covers it (`release`: the processor calls
it after each commit) and it was appended more than `retention_s` ago (an hour by default). The
writer thread deletes such records every few seconds, oldest first, at most `prune_batch_records`
per transaction, writing queued appends between two batches, so pruning never holds ingest back by
more than one short delete. Freed pages go to SQLite's freelist and hold the next appends: at a
steady rate the file stops growing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from llmpulse.events import Event, decode_log, encode_log
from llmpulse.pipeline._errors import LogBackpressure, LogClosed
from llmpulse.pipeline._log import LogRecord

_log = logging.getLogger(__name__)

#: How long consumed records are kept after they were appended (seconds).
DEFAULT_RETENTION_S: Final = 3600.0
#: Most records (appended batches) one prune transaction deletes.
DEFAULT_PRUNE_BATCH_RECORDS: Final = 200
_PRUNE_EVERY_S: Final = 10.0
#: Appended records per INSERT statement (3 parameters each: under SQLite's oldest 999 limit).
_ROWS_PER_INSERT: Final = 300
#: Most events the in-memory tail keeps for readers (the processor reads them without decoding).
DEFAULT_TAIL_EVENTS: Final = 50_000

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS event_log (
    "offset" INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    n_events INTEGER NOT NULL,
    payload BLOB NOT NULL
)
"""


def _path_of(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise ValueError(f"the embedded event log needs a sqlite:/// URL, got {url!r}")
    path = url.removeprefix("sqlite:///")
    if not path:
        raise ValueError("the event log URL has no path")
    return path


class _Pending:
    __slots__ = ("events", "future", "loop", "n_events", "payload")

    def __init__(
        self,
        events: list[Event],
        payload: bytes,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[None],
    ) -> None:
        self.events = events
        self.payload = payload
        self.n_events = len(events)
        self.loop = loop
        self.future = future


def _resolve(items: list[_Pending], error: BaseException | None) -> None:
    for item in items:
        if item.future.done():
            continue
        if error is None:
            item.future.set_result(None)
        else:
            item.future.set_exception(error)


class SQLiteEventLog:
    """An `EventLog` in a SQLite file (one partition, 0).

    Args:
        url: ``sqlite:///path`` of the log file (created if missing; ``:memory:`` is refused because the
            reader needs its own connection).
        sync: ``FULL`` fsyncs every group commit (survives power loss); ``NORMAL`` survives a crash of
            the process but may lose the last commits on power loss.
        max_pending_events: events queued for the writer beyond which `append` raises `LogBackpressure`.
        retention_s: consumed records appended longer ago than this (seconds) are pruned.
        tail_events: most events kept in memory for readers that keep up (0 disables the tail).
        prune_batch_records: most records one prune transaction deletes.
        clock: wall clock in epoch seconds: records' append time and what retention is measured
            against (tests pass a fake one).
    """

    def __init__(
        self,
        url: str,
        *,
        sync: str = "FULL",
        max_pending_events: int = 200_000,
        retention_s: float = DEFAULT_RETENTION_S,
        tail_events: int = DEFAULT_TAIL_EVENTS,
        prune_batch_records: int = DEFAULT_PRUNE_BATCH_RECORDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if sync not in ("FULL", "NORMAL"):
            raise ValueError(f"sync must be FULL or NORMAL, got {sync!r}")
        if retention_s < 0:
            raise ValueError(f"retention_s must be >= 0, got {retention_s!r}")
        if prune_batch_records < 1:
            raise ValueError(f"prune_batch_records must be positive, got {prune_batch_records!r}")
        path = _path_of(url)
        if path == ":memory:":
            raise ValueError("the event log must be a file, not :memory:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._sync = sync
        self._max_pending = max_pending_events
        self._retention_s = retention_s
        self._prune_batch = prune_batch_records
        self._clock = clock
        self._pruned_records = 0
        self._queue: deque[_Pending] = deque()
        self._queued_events = 0
        self._cond = threading.Condition()
        self._closed = False
        self._released = -1
        self._local = threading.local()
        self._appended_events = 0
        self._commits = 0
        self._tail_limit = tail_events
        self._tail: dict[int, LogRecord] = {}
        self._tail_first = 0
        self._tail_next = 0
        self._tail_count = 0
        self._tail_cum: dict[int, int] = {}
        self._committed_events = 0
        self._tail_lock = threading.Lock()
        self._tail_reads = 0
        self._writer_conn = self._connect()
        self._writer_conn.execute(_SCHEMA)
        self._writer = threading.Thread(target=self._write_loop, name="llmpulse-log-writer", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._sync}")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    # -- appending -----------------------------------------------------------------------------

    async def append(self, events: Sequence[Event], payload: bytes | None = None) -> None:
        """Append `events` as one record; returns once it is durable. Never blocks the event loop.

        `payload`, when given, is stored instead of `encode_log(events)` (it must decode to exactly
        `events` with `decode_log`). Raises `LogBackpressure` when too many events await the writer,
        `LogClosed` after `close`.
        """
        if not events:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if payload is None:
            payload = encode_log(events)
        with self._cond:
            if self._closed:
                raise LogClosed("the event log is closed")
            if self._queued_events + len(events) > self._max_pending:
                raise LogBackpressure(
                    f"the event log has {self._queued_events} events waiting to be written", 1.0
                )
            self._queue.append(_Pending(list(events), payload, loop, future))
            self._queued_events += len(events)
            self._cond.notify()
        await future

    def _write_loop(self) -> None:
        next_prune = time.monotonic() + _PRUNE_EVERY_S
        backlog = False  # the last prune batch was full: more records may be due
        while True:
            with self._cond:
                while not self._queue and not self._closed and not backlog:
                    wait = next_prune - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(min(1.0, wait))
                batch = list(self._queue)
                self._queue.clear()
                n_events = self._queued_events
                self._queued_events = 0
                closing = self._closed
            if batch:
                self._write(batch, n_events)
            if closing and not batch:
                return
            if backlog or time.monotonic() >= next_prune:
                # one batch, then back to the queue: appends wait for at most one short delete
                backlog = self._prune_once(self._writer_conn) == self._prune_batch
                if not backlog:
                    next_prune = time.monotonic() + _PRUNE_EVERY_S

    def _write(self, batch: list[_Pending], n_events: int) -> None:
        now = self._clock()
        error: BaseException | None = None
        try:
            conn = self._writer_conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = self._sequence(conn)
                # multi-row statements: the driver releases the GIL around each statement's step, and
                # taking it back waits while the other threads run (one step per row waited per row)
                for i in range(0, len(batch), _ROWS_PER_INSERT):
                    part = batch[i : i + _ROWS_PER_INSERT]
                    conn.execute(
                        "INSERT INTO event_log (created_at, n_events, payload) VALUES "
                        + ", ".join(["(?, ?, ?)"] * len(part)),
                        [v for item in part for v in (now, item.n_events, item.payload)],
                    )
                after = self._sequence(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            self._remember(batch, before, after)
            self._appended_events += n_events
            self._commits += 1
        except sqlite3.Error as exc:
            _log.error("event log write failed: %s", exc)
            error = LogBackpressure(f"the event log could not write: {exc}", 1.0)
        by_loop: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
        for item in batch:
            by_loop.setdefault(item.loop, []).append(item)
        for loop, items in by_loop.items():
            # a closed event loop raises RuntimeError: nobody waits for the answer any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, items, error)

    @staticmethod
    def _sequence(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'event_log'").fetchone()
        return int(row[0]) if row else 0

    def _remember(self, batch: list[_Pending], before: int, after: int) -> None:
        if not self._tail_limit:
            return
        with self._tail_lock:
            if after - before != len(batch) or (self._tail and before + 1 != self._tail_next):
                self._tail.clear()  # offsets were not consecutive: another writer? Read the table.
                self._tail_cum.clear()
                self._tail_count = 0
            if not self._tail:
                self._tail_first = before + 1
            for offset, item in enumerate(batch, start=before + 1):
                self._tail[offset] = LogRecord(0, offset, item.events)
                self._tail_count += item.n_events
                self._committed_events += item.n_events
                self._tail_cum[offset] = self._committed_events
            self._tail_next = after + 1
            while self._tail_count > self._tail_limit and self._tail:
                self._tail_count -= len(self._tail.pop(self._tail_first).events)
                del self._tail_cum[self._tail_first]
                self._tail_first += 1

    def events_after(self, partition: int, offset: int) -> int | None:
        """How many committed events lie at offsets ≥ `offset`: a reader's lag. Does not block.

        Exact while `offset` is within the in-memory tail; a reader behind the tail is at least
        `tail_events` behind, and that is what it returns. None when the tail is disabled.
        """
        if partition != 0 or not self._tail_limit:
            return None
        with self._tail_lock:
            if offset >= self._tail_next or not self._tail:
                return 0
            if offset < self._tail_first:
                return max(self._tail_limit, self._tail_count)
            if offset == self._tail_first:
                return self._tail_count
            return self._committed_events - self._tail_cum[offset - 1]

    def release(self, partition: int, offset: int) -> None:
        """Tell the log that records of `partition` before `offset` are consumed and may be pruned."""
        if partition == 0:
            self._released = max(self._released, offset)

    def _prune_once(self, conn: sqlite3.Connection) -> int:
        """Delete up to `prune_batch_records` of the oldest records that are released and older than
        the retention, in one statement; the number deleted. Reads only the first records' offsets
        and append times, never the whole table (records are in append order)."""
        released = self._released
        if released <= 0:
            return 0
        cut = self._clock() - self._retention_s
        try:
            rows = conn.execute(
                'SELECT "offset", created_at FROM event_log WHERE "offset" < ? ORDER BY "offset" LIMIT ?',
                (released, self._prune_batch),
            ).fetchall()
            last = None
            for offset, created_at in rows:
                if created_at >= cut:  # append order: the rest are younger (a clock set back waits)
                    break
                last = offset
            if last is None:
                return 0
            deleted = conn.execute('DELETE FROM event_log WHERE "offset" <= ?', (last,)).rowcount
        except sqlite3.Error as exc:
            _log.warning("event log prune failed: %s", exc)
            return 0
        self._pruned_records += deleted
        return int(deleted)

    def _prune(self) -> int:
        """Delete every released record older than the retention, batch by batch, on the writer's
        connection (tests call it while the writer is idle); the number deleted. Blocks."""
        total = 0
        while (n := self._prune_once(self._writer_conn)) > 0:
            total += n
            if n < self._prune_batch:
                break
        return total

    # -- reading -------------------------------------------------------------------------------

    def partitions(self) -> list[int]:
        """The log's partitions: always ``[0]``."""
        return [0]

    def read(self, partition: int, offset: int, max_records: int) -> list[LogRecord]:
        """Records at offsets ≥ `offset`, oldest first, at most `max_records`. Blocks briefly."""
        if partition != 0:
            raise ValueError(f"the SQLite log has only partition 0, not {partition}")
        with self._tail_lock:
            if self._tail and offset >= self._tail_first:
                end = min(self._tail_next, offset + max_records)
                self._tail_reads += 1
                return [self._tail[o] for o in range(offset, end)]
        rows = (
            self._reader()
            .execute(
                'SELECT "offset", payload FROM event_log WHERE "offset" >= ? ORDER BY "offset" LIMIT ?',
                (offset, max_records),
            )
            .fetchall()
        )
        return [LogRecord(0, off, decode_log(payload)) for off, payload in rows]

    def end_offset(self, partition: int) -> int:
        """The offset the next record will get. Blocks briefly."""
        row = self._reader().execute("SELECT seq FROM sqlite_sequence WHERE name = 'event_log'").fetchone()
        return (int(row[0]) if row else 0) + 1

    def stats(self) -> dict[str, int]:
        """Events appended and commits made by this process, events waiting for the writer, and the
        consumed records this process pruned."""
        return {
            "appended_events": self._appended_events,
            "commits": self._commits,
            "queued_events": self._queued_events,
            "tail_events": self._tail_count,
            "tail_reads": self._tail_reads,
            "pruned_records": self._pruned_records,
        }

    def close(self) -> None:
        """Refuse new appends, write those already queued, and close. Blocks until done."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._writer.join()
        self._writer_conn.close()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
