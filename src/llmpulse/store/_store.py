"""`Store`: commits processor checkpoints in one transaction and answers window queries.

Every method blocks on the database. One `Store` may be shared by threads (a processor thread committing
while request handlers query): each call takes its own pooled connection; on an in-memory SQLite
database, which has a single connection, calls are serialised by a lock.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa

from llmpulse.store._alerts import AlertStore
from llmpulse.store._budgets import BudgetLedger
from llmpulse.store._commit import CheckpointWriter, _chunks, written_window
from llmpulse.store._engine import create_engine_for, migrate, translate_errors, write_transaction
from llmpulse.store._filter import KeyFilter
from llmpulse.store._keys import ApiKeys
from llmpulse.store._model import (
    DEDUP_KEY_PREFIX,
    WINDOW_SECONDS,
    Checkpoint,
    ColdProbe,
    ColdState,
    PendingEntry,
    ProcessorState,
    WindowDelta,
    WindowKey,
    parse_dedup_key,
)
from llmpulse.store._query import GroupBy, StoredWindow, SummaryRow, epoch_bound, windows_select
from llmpulse.store._ranges import HOUR, Piece, piece_conditions, plan, read_rows, rolled_through
from llmpulse.store._tables import (
    CALL_SECOND,
    COUNT_FIELDS,
    SUM_FIELDS,
    calls,
    decode_keys,
    delta_from_row,
    processor_dedup,
    processor_meta,
    processor_offsets,
    processor_pending,
    rollup_progress,
    server_counters,
    windows,
)

#: Minute windows a roll-up transaction reads at most, about (`Store.roll_hours`; a tenant's hour is
#: never split).
ROLL_MAX_ROWS: Final = 20_000
#: Tenants whose progress one roll-up transaction locks at most.
_ROLL_TENANTS: Final = 500
#: `Store.roll_hours`: a tenant's first minute window in ``[lo, hi)``.
_NEXT_MINUTE: Final = sa.select(sa.func.min(windows.c.window_start)).where(
    windows.c.tenant_id == sa.bindparam("tenant"),
    windows.c.window_start >= sa.bindparam("lo"),
    windows.c.window_start < sa.bindparam("hi"),
)
#: `Store.roll_hours`: a tenant's minute windows in ``[lo, hi)``.
_HOUR_MINUTES: Final = sa.select(windows).where(
    windows.c.tenant_id == sa.bindparam("tenant"),
    windows.c.window_start >= sa.bindparam("lo"),
    windows.c.window_start < sa.bindparam("hi"),
)
#: `Store.roll_hours`: move a tenant's progress.
_SET_PROGRESS: Final = (
    sa.update(rollup_progress)
    .where(rollup_progress.c.tenant_id == sa.bindparam("t"))
    .values(rolled_through=sa.bindparam("r"))
)
#: `Store.lookup_cold`: the records of one request id started within a span (one index seek per
#: second of it), written after `since`.
_COLD_COUNTED: Final = sa.select(calls.c.tenant_id, calls.c.request_id, calls.c.updated_at).where(
    CALL_SECOND.in_(sa.bindparam("seconds", expanding=True)),
    calls.c.request_id == sa.bindparam("rid"),
    calls.c.started_at >= sa.bindparam("lo"),
    calls.c.started_at <= sa.bindparam("hi"),
    calls.c.updated_at > sa.bindparam("since"),
)


def _pending_entry(r: Mapping[Any, Any]) -> PendingEntry:
    return PendingEntry(
        request_id=r["request_id"],
        kind=r["kind"],
        payload=bytes(r["payload"]),
        seen_at=float(r["seen_at"]),
        expired=bool(r["expired"]),
        tenant_id=r["tenant_id"],
    )


def _key_of(row: Mapping[Any, Any]) -> WindowKey:
    return WindowKey(row["tenant_id"], row["route"], row["model"], int(row["window_start"]))


def _stored(row: Mapping[Any, Any]) -> StoredWindow:
    return StoredWindow(
        key=_key_of(row),
        delta=delta_from_row(row),
        updated_at=datetime.fromtimestamp(float(row["updated_at"]), UTC),
        version=int(row["version"]),
    )


#: The fields `Store.sums` adds up, and its SELECT per aggregate table (built once: a statement's
#: construction costs more than SQLite's aggregate over a few hundred rows).
_SUMMED: Final = (*COUNT_FIELDS, *SUM_FIELDS)


@functools.cache
def _sums_select(seconds: int) -> sa.Select[Any]:
    table = Piece(seconds, None, None).table
    return sa.select(*(sa.func.sum(table.c[n]) for n in _SUMMED))


class Store:
    """The window and checkpoint store over SQLite or Postgres. Create it with `Store.open`."""

    def __init__(self, engine: sa.Engine) -> None:
        """Wrap an engine whose schema is already migrated (use `Store.open` instead). Does not block."""
        self._engine = engine
        self._dialect: str = engine.dialect.name
        memory = self._dialect == "sqlite" and engine.url.database in (None, "", ":memory:")
        self._serial: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if memory else contextlib.nullcontext()
        )
        # SQLite has one writer at a time: writers of this process (the processor's commits, the
        # retention pruner's batches) queue on this lock instead of in SQLite's busy handler, which
        # sleeps in steps of up to 100 ms, so a commit waits no longer than the batch under way
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self._dialect == "sqlite" and not memory else contextlib.nullcontext()
        )
        self._writer = CheckpointWriter(engine.dialect)
        self._keys = ApiKeys(engine, self._serial)
        self._budgets = BudgetLedger(engine, self._serial, self._write_lock)
        self._alerts = AlertStore(engine, self._serial, self._write_lock)
        self._windows_written = 0

    @classmethod
    def open(cls, url: str) -> Store:
        """Connect to `url` (see `create_engine_for`) and migrate its schema to the newest revision.

        Idempotent, and safe when several processes open the same database at once. Blocks.

        Raises:
            ValueError: unknown URL scheme.
            StoreError: the database cannot be reached or migrated.
        """
        engine = create_engine_for(url)
        try:
            migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def write_lock(self) -> contextlib.AbstractContextManager[Any]:
        """Held around a write transaction by this process's writers that take turns (on a SQLite
        file: a lock; elsewhere a no-op). Blocks while another holds it."""
        return self._write_lock

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for tests and tools; prefer the methods)."""
        return self._engine

    @property
    def alerts(self) -> AlertStore:
        """Alert states, their history and the evaluator's lease. Its methods block."""
        return self._alerts

    @property
    def budgets(self) -> BudgetLedger:
        """The shared budgets kept in this store (definitions, reservations, views). Its methods block."""
        return self._budgets

    @property
    def keys(self) -> ApiKeys:
        """The API keys kept in this store (create, list, revoke, look up). Its methods block."""
        return self._keys

    @property
    def windows_written(self) -> int:
        """Window rows this `Store` object has written (one per window per commit). Does not block."""
        return self._windows_written

    @property
    def dialect(self) -> str:
        """The dialect's name: ``"sqlite"`` or ``"postgresql"``."""
        return self._dialect

    def close(self) -> None:
        """Close every pooled connection. Blocks briefly; the store must not be used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------------

    def commit(
        self,
        checkpoint: Checkpoint,
        *,
        expect_offsets: Mapping[int, int] | None = None,
        return_windows: bool = False,
    ) -> list[StoredWindow]:
        """Write a checkpoint in ONE transaction: all of it, or (on any error) none of it. Blocks.

        Window deltas are added to the stored windows (counters add, histograms merge bucket by
        bucket) under row locks taken in key order, so workers writing the same windows merge
        additively. Pending upserts are applied before pending deletes (a key in both ends deleted).
        The dedup keys become one chunk row; counters add; the watermark keeps the maximum; the
        offsets are set.

        With `expect_offsets` the commit is fenced: the consumer's stored offsets are locked first and
        must equal `expect_offsets` (what this processor loaded or last committed), else nothing is
        written and `StaleCheckpoint` is raised. A processor that lost its partitions without noticing
        (a consumer-group member whose session expired) thus cannot count them a second time.

        Returns the windows the checkpoint changed, as this transaction wrote them (merged totals,
        each with its new version), when `return_windows` is set; else an empty list.

        Raises:
            StoreUnavailable: the database is unreachable or busy (retry the same checkpoint).
            StaleCheckpoint: (fenced commits) another processor committed this consumer meanwhile.
            StoreIntegrityError, StoreError: the database rejected the checkpoint.
        """
        fence = None if expect_offsets is None else {checkpoint.consumer: expect_offsets}
        return self.commit_many([checkpoint], expect_offsets=fence, return_windows=return_windows)

    def commit_many(
        self,
        checkpoints: Sequence[Checkpoint],
        *,
        expect_offsets: Mapping[str, Mapping[int, int]] | None = None,
        return_windows: bool = False,
    ) -> list[StoredWindow]:
        """Write the checkpoints of several consumers (distinct) in ONE transaction, as `commit`
        writes one: all of them, or (on any error) none. Their window deltas are added up first, so
        each window is one row whatever the number of checkpoints that touch it (a worker commits all
        its partitions this way); each kind of row is written with one statement. Blocks.

        `expect_offsets` fences the consumers it names (consumer → offsets), as `commit` does;
        `StaleCheckpoint.consumer` names the first one found stale. Returns the windows as written
        when `return_windows` is set; raises as `commit` does.
        """
        if len({cp.consumer for cp in checkpoints}) != len(checkpoints):
            raise ValueError("commit_many needs checkpoints of distinct consumers")
        if not checkpoints:
            return []
        with (
            self._serial,
            self._write_lock,
            translate_errors("committing a checkpoint"),
            write_transaction(self._engine) as conn,
        ):
            if expect_offsets:
                self._writer.check_offsets(conn, expect_offsets)
            written = self._writer.write(conn, checkpoints, time.time())
        self._windows_written += len(written)
        return [written_window(row) for row in written] if return_windows else []

    def roll_hours(self, bound: int, now: float, *, max_rows: int = ROLL_MAX_ROWS) -> tuple[int, int, bool]:
        """Roll the next hour before `bound` (a whole hour, epoch seconds) of the tenants not rolled
        up to it yet, in one write transaction: each tenant's next hour holding minute windows is
        summed into the hourly and daily rollups and its ``rollup_progress`` moved past it; a tenant
        with no minute window left before `bound` moves to `bound`. Tenants are taken in order until
        about `max_rows` minute windows are read (at least one tenant), their progress rows locked
        first (exclusively on Postgres, in tenant order, as commits share-lock theirs), so no commit
        writing their minutes runs meanwhile. Returns (tenant-hours rolled, minute windows read,
        whether every tenant has reached `bound`). Blocks.

        Raises:
            ValueError: `bound` is not a whole hour, or `max_rows` < 1.
        """
        if bound % HOUR:
            raise ValueError(f"bound must be a whole hour (epoch seconds), got {bound!r}")
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows!r}")
        behind = (
            sa.select(rollup_progress.c.tenant_id, rollup_progress.c.rolled_through)
            .where(rollup_progress.c.rolled_through < bound)
            .order_by(rollup_progress.c.tenant_id)
            .limit(_ROLL_TENANTS)
        )
        if self._dialect == "postgresql":
            behind = behind.with_for_update()
        hours = rows = 0
        with (
            self._serial,
            self._write_lock,
            translate_errors("rolling up hours"),
            write_transaction(self._engine) as conn,
        ):
            progress = [(str(t), int(r)) for t, r in conn.execute(behind)]
            deltas: dict[WindowKey, WindowDelta] = {}
            moved: list[tuple[str, int]] = []
            for tenant, done in progress:
                if rows >= max_rows:
                    break
                first = conn.execute(_NEXT_MINUTE, {"tenant": tenant, "lo": done, "hi": bound}).scalar()
                if first is None:
                    moved.append((tenant, bound))
                    continue
                hour = int(first) // HOUR * HOUR
                found = conn.execute(_HOUR_MINUTES, {"tenant": tenant, "lo": hour, "hi": hour + HOUR})
                for row in found.mappings():
                    deltas[_key_of(row)] = delta_from_row(row)
                    rows += 1
                hours += 1
                moved.append((tenant, hour + HOUR))
            self._writer.add_to_rollups(conn, deltas, now)
            if moved:
                conn.execute(_SET_PROGRESS, [{"t": t, "r": r} for t, r in moved])
        done_all = (
            len(progress) < _ROLL_TENANTS
            and all(r >= bound for _, r in moved)
            and len(moved) == len(progress)
        )
        return hours, rows, done_all

    def purge_dedup(self, consumer: str, now: float) -> int:
        """Delete `consumer`'s dedup chunks that expired at or before `now`; the number deleted. Blocks."""
        with self._serial, translate_errors("purging dedup keys"), write_transaction(self._engine) as conn:
            return self._purge(conn, consumer, now)

    @staticmethod
    def _purge(conn: sa.Connection, consumer: str, now: float) -> int:
        result = conn.execute(
            sa.delete(processor_dedup)
            .where(processor_dedup.c.consumer == consumer)
            .where(processor_dedup.c.expires_at <= now)
        )
        return int(result.rowcount)

    # -- reading ---------------------------------------------------------------------------------------

    def consumers(self) -> set[str]:
        """The processors (consumer names) that have committed offsets to this store. Blocks."""
        with self._reading("listing consumers") as conn:
            query = sa.select(processor_offsets.c.consumer).distinct()
            return {str(c) for (c,) in conn.execute(query)}

    def committed_offsets(self, consumer_prefix: str) -> dict[str, dict[int, int]]:
        """The offsets committed by every consumer whose name starts with `consumer_prefix` (consumer
        → partition → next offset to read); one query, nothing else of their state. Blocks."""
        query = sa.select(
            processor_offsets.c.consumer, processor_offsets.c.partition, processor_offsets.c.next_offset
        ).where(processor_offsets.c.consumer.startswith(consumer_prefix, autoescape=True))
        found: dict[str, dict[int, int]] = {}
        with self._reading("reading committed offsets") as conn:
            for consumer, partition, offset in conn.execute(query):
                found.setdefault(str(consumer), {})[int(partition)] = int(offset)
        return found

    def load_state(
        self, consumer: str, now: float, *, key_filter: KeyFilter | None = None, ttl_s: float = 0.0
    ) -> ProcessorState:
        """What `consumer` committed: offsets, pending entries, unexpired dedup keys, watermark. Blocks.

        Dedup chunks expired at `now` (processor clock, epoch seconds) are deleted on the way.

        With `key_filter`, what the processor need not hold in memory goes into the filter instead
        (streamed, a chunk at a time): the request id of every unexpired dedup key (until its
        chunk's expiry) and of every expired pending entry first seen within `ttl_s` (until then);
        `dedup_keys` stays empty and `pending` holds only the entries still waiting. The processor
        finds the rest with `lookup_cold`.
        """
        with (
            self._serial,
            translate_errors("loading processor state"),
            write_transaction(self._engine) as conn,
        ):
            self._purge(conn, consumer, now)
            state = ProcessorState()
            offsets = sa.select(processor_offsets.c.partition, processor_offsets.c.next_offset).where(
                processor_offsets.c.consumer == consumer
            )
            state.offsets = {int(p): int(o) for p, o in conn.execute(offsets)}
            pending = (
                sa.select(processor_pending)
                .where(processor_pending.c.consumer == consumer)
                .order_by(
                    processor_pending.c.seen_at,
                    processor_pending.c.tenant_id,
                    processor_pending.c.request_id,
                    processor_pending.c.kind,
                )
            )
            if key_filter is not None:
                pending = pending.where(processor_pending.c.expired.is_(False))
                expired = sa.select(processor_pending.c.request_id, processor_pending.c.seen_at).where(
                    processor_pending.c.consumer == consumer,
                    processor_pending.c.expired.is_(True),
                    processor_pending.c.seen_at > now - ttl_s,
                )
                for rid, seen_at in conn.execution_options(yield_per=1000).execute(expired):
                    key_filter.add(str(rid), float(seen_at) + ttl_s)
            state.pending = [_pending_entry(r) for r in conn.execute(pending).mappings()]
            chunks = sa.select(processor_dedup.c["keys"], processor_dedup.c.expires_at).where(
                processor_dedup.c.consumer == consumer, processor_dedup.c.expires_at > now
            )
            for blob, expires_at in conn.execution_options(yield_per=100).execute(chunks):
                keys = decode_keys(bytes(blob))
                if key_filter is None:
                    state.dedup_keys.update(keys)
                    continue
                for key in keys:
                    if key.startswith(DEDUP_KEY_PREFIX):
                        key_filter.add(parse_dedup_key(key)[1], float(expires_at))
                    else:  # a key of the previous format: kept in memory until it expires
                        state.dedup_keys.add(key)
            watermark = conn.execute(
                sa.select(processor_meta.c.watermark).where(processor_meta.c.consumer == consumer)
            ).scalar()
            state.watermark = float(watermark) if watermark is not None else 0.0
            return state

    def lookup_cold(self, consumer: str, probes: Sequence[ColdProbe], since: float) -> ColdState:
        """What the store knows of the probed request ids: the calls counted with those ids (of any
        tenant) whose record starts where the probe says and was written after `since` (processor
        clock), and `consumer`'s expired pending entries of those ids first seen after `since`. One
        query per probe (an index seek per second of its span, ``ix_calls_second_request``) and one
        per 500 ids for the pending entries. Blocks."""
        found = ColdState()
        counted: set[tuple[str, str, float]] = set()
        with self._reading("looking up request ids") as conn:
            for p in sorted(set(probes)):
                # the integer seconds the span may be stored under (SQLite truncates, Postgres rounds)
                seconds = list(range(math.floor(p.earliest) - 1, math.floor(p.latest) + 2))
                params = {
                    "seconds": seconds,
                    "rid": p.request_id,
                    "lo": p.earliest,
                    "hi": p.latest,
                    "since": since,
                }
                rows = conn.execute(_COLD_COUNTED, params)
                counted.update((str(t), str(r), float(u)) for t, r, u in rows)
            found.counted.extend(counted)
            for chunk in _chunks(sorted({p.request_id for p in probes}), 500):
                expired = sa.select(processor_pending).where(
                    processor_pending.c.consumer == consumer,
                    processor_pending.c.request_id.in_(chunk),
                    processor_pending.c.expired.is_(True),
                    processor_pending.c.seen_at > since,
                )
                found.expired.extend(_pending_entry(r) for r in conn.execute(expired).mappings())
        found.counted.sort()
        found.expired.sort(key=lambda e: (e.seen_at, e.tenant_id, e.request_id, e.kind))
        return found

    @contextlib.contextmanager
    def _reading(self, action: str) -> Iterator[sa.Connection]:
        with self._serial, translate_errors(action), self._engine.connect() as conn:
            yield conn

    def windows(self, keys: Iterable[WindowKey]) -> list[StoredWindow]:
        """The stored windows of `keys` (those that exist), in no particular order. Blocks."""
        by_start: dict[tuple[str, int], set[tuple[str, str]]] = {}
        for k in keys:
            by_start.setdefault((k.tenant_id, k.window_start), set()).add((k.route, k.model))
        found: list[StoredWindow] = []
        with self._reading("reading windows") as conn:
            for (tenant, start), wanted in sorted(by_start.items()):
                query = sa.select(windows).where(
                    windows.c.tenant_id == tenant, windows.c.window_start == start
                )
                for row in conn.execute(query).mappings():
                    if (row["route"], row["model"]) in wanted:
                        found.append(_stored(row))
        return found

    def query_windows(
        self,
        tenant_id: str,
        *,
        route: str | None = None,
        model: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 60,
    ) -> list[StoredWindow]:
        """A tenant's windows starting in ``[start, end)``, newest first (ties by route, then model),
        at most `limit`. Open windows are included. Blocks.

        Raises:
            ValueError: `limit` < 1, or a naive `start`/`end`.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        query = windows_select(tenant_id, route=route, model=model, start=start, end=end).limit(limit)
        with self._reading("querying windows") as conn:
            return [_stored(row) for row in conn.execute(query).mappings()]

    def summary(
        self,
        tenant_id: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        group_by: GroupBy | None = None,
        route: str | None = None,
        model: str | None = None,
    ) -> list[SummaryRow]:
        """Rollups of a tenant's windows starting in ``[start, end)``: one row per model or per route
        (ascending), or one row in all when `group_by` is None; none when no window matches.
        Histograms are merged, so percentiles are those of the union. Blocks.

        The range is read from the coarsest rows that cover it exactly (whole days from the daily
        rollups, whole hours from the hourly ones, minutes at the edges: `llmpulse.store._ranges`),
        so a month costs a few hundred rows and equals the sum of its minute windows. `windows` in
        each row counts the stored rows merged.

        Raises:
            ValueError: an unknown `group_by`, or a naive `start`/`end`.
        """
        if group_by not in (None, "model", "route"):
            raise ValueError(f"group_by must be 'model', 'route' or None, got {group_by!r}")
        lo_s, hi_s = epoch_bound(start, "start"), epoch_bound(end, "end")
        groups: dict[str, tuple[WindowDelta, list[int]]] = {}
        first = last = None
        with self._reading("summarising windows") as conn:
            pieces = plan(lo_s, hi_s, rolled=rolled_through(conn, tenant_id))
            # a tenant-wide summary reads the rollups' tenant totals: one row an hour or a day
            totals = group_by is None and route is None and model is None
            for piece, row in read_rows(
                conn, pieces, tenant_id=tenant_id, route=route, model=model, totals=totals
            ):
                group = "" if group_by is None else str(row[group_by])
                delta, count = groups.setdefault(group, (WindowDelta(), [0]))
                delta.merge(delta_from_row(row))
                count[0] += 1
                ws = int(row["window_start"])
                first = ws if first is None else min(first, ws)
                last = ws + piece.seconds if last is None else max(last, ws + piece.seconds)
            if first is None or last is None:
                return []
            if start is None or end is None:  # an open side is the first (last) minute window's
                first, last = self._minute_span(conn, tenant_id, route, model, first, last)
        lo = start if start is not None else datetime.fromtimestamp(first, UTC)
        hi = end if end is not None else datetime.fromtimestamp(last, UTC)
        return [
            SummaryRow(
                tenant_id=tenant_id,
                route=group if group_by == "route" else route,
                model=group if group_by == "model" else model,
                start=lo,
                end=hi,
                windows=count[0],
                delta=delta,
            )
            for group, (delta, count) in sorted(groups.items())
        ]

    def rolled_through(self, tenant_id: str) -> int:
        """How far `tenant_id`'s hours are rolled up (a whole hour, epoch seconds; 0: none). It only
        grows; a reader may pass an older value to `sums` and still get exact figures. Blocks."""
        with self._reading("reading rollup progress") as conn:
            return rolled_through(conn, tenant_id)

    def sums(
        self,
        tenant_id: str,
        *,
        start: datetime,
        end: datetime,
        route: str | None = None,
        model: str | None = None,
        rolled: int | None = None,
    ) -> WindowDelta:
        """The counts and sums of `summary` over ``[start, end)`` without its histograms, added up
        in SQL (one aggregate query per piece of the range): requests, errors, tokens, cost, latency
        and TTFT counts and sums. For readers that need no percentile (alert rules on cost, errors,
        requests, tokens). `rolled`: the tenant's `rolled_through` when the caller has it (it is read
        otherwise). Blocks.

        Raises:
            ValueError: a naive `start` or `end`.
        """
        lo_s, hi_s = epoch_bound(start, "start"), epoch_bound(end, "end")
        out = WindowDelta()
        with self._reading("adding up windows") as conn:
            if rolled is None:
                rolled = rolled_through(conn, tenant_id)
            totals = route is None and model is None
            for piece in plan(lo_s, hi_s, rolled=rolled):
                where = piece_conditions(piece, tenant_id=tenant_id, route=route, model=model, totals=totals)
                row = conn.execute(_sums_select(piece.seconds).where(*where)).one()
                for name, value in zip(_SUMMED, row, strict=True):
                    if value is not None:
                        setattr(
                            out,
                            name,
                            getattr(out, name) + (float(value) if name in SUM_FIELDS else int(value)),
                        )
        return out

    @staticmethod
    def _minute_span(
        conn: sa.Connection, tenant_id: str, route: str | None, model: str | None, first: int, last: int
    ) -> tuple[int, int]:
        """The first window start and the last window end of the minute windows in ``[first, last)``
        (the span of the coarse rows found), or those bounds where no minute window is left."""
        query = sa.select(sa.func.min(windows.c.window_start), sa.func.max(windows.c.window_start)).where(
            windows.c.tenant_id == tenant_id, windows.c.window_start >= first, windows.c.window_start < last
        )
        if route is not None:
            query = query.where(windows.c.route == route)
        if model is not None:
            query = query.where(windows.c.model == model)
        lo, hi = conn.execute(query).one()
        return (first if lo is None else int(lo), last if hi is None else int(hi) + WINDOW_SECONDS)

    def counters(self) -> dict[str, int]:
        """The server-wide counters (orphan responses, duplicates, …) summed over every commit. Blocks."""
        with self._reading("reading counters") as conn:
            rows = conn.execute(sa.select(server_counters.c.name, server_counters.c.value))
            return {str(name): int(value) for name, value in rows}

    def tenants(self) -> list[str]:
        """Every tenant with at least one stored window, ascending. Blocks."""
        with self._reading("listing tenants") as conn:
            query = sa.select(windows.c.tenant_id).distinct().order_by(windows.c.tenant_id)
            return [str(t) for t in conn.execute(query).scalars()]
