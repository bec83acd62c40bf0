"""Writing a `Checkpoint` inside one transaction: batched, additive window merges and checkpoint rows.

Windows merge by read-modify-write under row locks: on Postgres the rows are created if missing and
locked in key order by one batched ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` (so concurrent
workers serialise per window and never deadlock); on SQLite the transaction already holds the
database's single write lock (``BEGIN IMMEDIATE``). The merged totals are then written with one batched
upsert. Large statements run through the driver with rows as tuples when SQLite is the database
(its Python-side parameter handling dominates otherwise), INSERTs as multi-row ``VALUES`` statements
(`_Many`), and on Postgres as one statement over array parameters (`_pg_run`: one round trip).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from llmpulse.store._engine import StoreError
from llmpulse.store._histogram import merge_into
from llmpulse.store._model import (
    CALL_FIELDS,
    EXPIRE_BATCH_EXTRA,
    EXPIRE_PER_RECORD,
    CallRecord,
    Checkpoint,
    WindowDelta,
    WindowKey,
)
from llmpulse.store._query import StoredWindow
from llmpulse.store._tables import (
    AGGREGATE_TABLES,
    ALL_SERIES,
    COUNT_FIELDS,
    HIST_FIELDS,
    KEY_FIELDS,
    SUM_FIELDS,
    calls,
    decode_hist,
    encode_hist,
    encode_keys,
    processor_dedup,
    processor_meta,
    processor_offsets,
    processor_pending,
    rollup_progress,
    server_counters,
)

#: Tenants per ``tenant_id IN (…)`` list when SQLite reads the windows a checkpoint touches.
TENANTS_PER_SELECT: Final = 500

_T = TypeVar("_T")
_NUM_FIELDS: Final = COUNT_FIELDS + SUM_FIELDS
_delta_numbers: Final = operator.attrgetter(*_NUM_FIELDS)
#: Column order of a window row as read (key, numbers, histograms, version) and written (key,
#: numbers, histograms, updated_at, version: the table's order).
_READ_FIELDS: Final = (*KEY_FIELDS, *_NUM_FIELDS, *HIST_FIELDS, "version")
_WRITE_FIELDS: Final = (*KEY_FIELDS, *_NUM_FIELDS, *HIST_FIELDS, "updated_at", "version")
#: A written window row: the `_WRITE_FIELDS` values in order.
WindowRow = tuple[Any, ...]
_N_KEY: Final = len(KEY_FIELDS)
_N_NUM: Final = len(_NUM_FIELDS)
_LAT: Final = _N_KEY + _N_NUM
#: Where a read row holds the version; a written row holds updated_at there and the version next.
_VERSION: Final = _LAT + 2
_PENDING_FIELDS: Final = ("consumer", "tenant_id", "request_id", "kind", "payload", "seen_at", "expired")
_CALL_KEY: Final = ("tenant_id", "started_at", "request_id")


class StaleCheckpoint(StoreError):
    """A fenced commit found other offsets stored for its consumer than it expected: another
    processor committed that consumer's state meanwhile (it owns the partition now), so this
    checkpoint was built on stale state and nothing of it was written. Not retryable as is: reload.

    `consumer` names the stale consumer (one of several when they were committed together)."""

    def __init__(self, message: str, *, consumer: str = "") -> None:
        super().__init__(message)
        self.consumer = consumer


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _merge_hist_text(text: str, delta: Mapping[int, int]) -> str:
    if not delta:
        return text
    if text == "{}":
        return encode_hist(delta)
    return encode_hist(merge_into(decode_hist(text), delta))


def merged_row(
    key: WindowKey, delta: WindowDelta, stored: Sequence[Any] | None, now: float
) -> tuple[Any, ...]:
    """The window row (in write order) holding `stored` (a row in read order, or None) plus `delta`;
    its version is the stored one plus one (1 for a new window)."""
    numbers: tuple[Any, ...] = _delta_numbers(delta)
    if stored is None:
        return (*key, *numbers, encode_hist(delta.latency_hist), encode_hist(delta.ttft_hist), now, 1)
    numbers = tuple(map(operator.add, stored[_N_KEY:_LAT], numbers))
    latency = _merge_hist_text(stored[_LAT], delta.latency_hist)
    ttft = _merge_hist_text(stored[_LAT + 1], delta.ttft_hist)
    return (*key, *numbers, latency, ttft, now, stored[_VERSION] + 1)


def written_window(row: WindowRow) -> StoredWindow:
    """The `StoredWindow` a written window row (`CheckpointWriter.write`) holds."""
    delta = WindowDelta()
    for name, value in zip(_NUM_FIELDS, row[_N_KEY:_LAT], strict=True):
        setattr(delta, name, value)
    delta.latency_hist = decode_hist(row[_LAT])
    delta.ttft_hist = decode_hist(row[_LAT + 1])
    return StoredWindow(
        key=WindowKey(*row[:_N_KEY]),
        delta=delta,
        updated_at=datetime.fromtimestamp(row[_VERSION], UTC),
        version=row[_VERSION + 1],
    )


_CALL_INTS: Final = frozenset(
    ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens")
)
_CALL_FLOATS: Final = frozenset(
    ("started_at", "latency_ms", "ttft_ms", "cost_usd", "updated_at", "sender_cost_usd")
)


def _pg_type(name: str) -> str:
    if name in COUNT_FIELDS or name in ("window_start", "version") or name in _CALL_INTS:
        return "BIGINT"
    if name in HIST_FIELDS or name in ("error_message", "metadata"):
        return "TEXT"
    if name == "payload":
        return "BYTEA"
    if name == "expired":
        return "BOOLEAN"
    if name in SUM_FIELDS or name in _CALL_FLOATS or name in ("seen_at",):
        return "DOUBLE PRECISION"
    return "VARCHAR"


def _pg_unnest(fields: Sequence[str]) -> str:
    """``unnest(…) AS v(…)`` over one array parameter per field, each passed as the text of a
    Postgres array literal (`_pg_array`) and cast to the column's array type."""
    arrays = ", ".join(f"CAST(%({n})s AS {_pg_type(n)}[])" for n in fields)
    return f"unnest({arrays}) AS v({', '.join(fields)})"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pg_array(values: Iterable[Any], pg_type: str) -> str:
    """The text of a Postgres array literal holding `values` as `pg_type` elements (None is NULL).

    Why not the driver's list adaptation: psycopg dumps a list element by element in Python (a
    regex escape each in text format; a dumper call each in binary), which made dumping the
    parameters the largest part of a worker's commit (`make bench`, benchmark 6). Here the work is
    `str.join` over `str`/`repr`/`bytes.hex`, and Postgres parses the literal. Strings are quoted
    with backslash escapes for ``\\`` and ``"`` (the only characters special inside a quoted
    element; NUL never reaches the store), floats are written by `repr` (shortest round-trip form,
    read back exactly), bytes in bytea hex form.
    """
    if pg_type == "BIGINT":
        body = ",".join(["NULL" if v is None else str(int(v)) for v in values])
    elif pg_type == "DOUBLE PRECISION":
        body = ",".join(["NULL" if v is None else repr(float(v)) for v in values])
    elif pg_type == "BYTEA":
        body = ",".join(['"\\\\x' + v.hex() + '"' for v in values])
    elif pg_type == "BOOLEAN":
        body = ",".join(["t" if v else "f" for v in values])
    else:
        body = ",".join([_quoted(v) if v is not None else "NULL" for v in values])
    return "{" + body + "}"


def _pg_run(conn: sa.Connection, sql: str, fields: Sequence[str], rows: Sequence[Sequence[Any]]) -> Any:
    """Execute a statement over `_pg_unnest(fields)` with `rows` (tuples in `fields` order) passed as
    one array literal per column; returns the driver's result. One round trip whatever the number
    of rows."""
    columns = zip(*rows, strict=True)
    params = {name: _pg_array(column, _pg_type(name)) for name, column in zip(fields, columns, strict=True)}
    return conn.exec_driver_sql(sql, params)


_PG_KEYS: Final = ", ".join(KEY_FIELDS)


def _pg_lock(table: str) -> str:
    """Postgres: create the missing rows of an aggregate table and lock all of them in key order,
    returning the stored figures."""
    return (
        f"INSERT INTO {table} ({_PG_KEYS}, updated_at) "
        f"SELECT {_PG_KEYS}, updated_at FROM {_pg_unnest((*KEY_FIELDS, 'updated_at'))} "
        f"ORDER BY {_PG_KEYS} "
        f"ON CONFLICT ({_PG_KEYS}) DO UPDATE SET updated_at = excluded.updated_at "
        f"RETURNING {', '.join(_READ_FIELDS)}"
    )


def _pg_write(table: str) -> str:
    """Postgres: set the merged totals of an aggregate table's (locked) rows."""
    return (
        f"UPDATE {table} SET "
        + ", ".join(f"{n} = v.{n}" for n in _WRITE_FIELDS[_N_KEY:])
        + f" FROM {_pg_unnest(_WRITE_FIELDS)} WHERE "
        + " AND ".join(f"{table}.{n} = v.{n}" for n in KEY_FIELDS)
    )


_PENDING_KEY: Final = _PENDING_FIELDS[:4]
#: Postgres: upsert pending entries (unique by key: the caller keeps the latest of each).
_PG_PENDING_WRITE: Final = (
    f"INSERT INTO processor_pending ({', '.join(_PENDING_FIELDS)}) "
    f"SELECT {', '.join(_PENDING_FIELDS)} FROM {_pg_unnest(_PENDING_FIELDS)} "
    f"ON CONFLICT ({', '.join(_PENDING_KEY)}) DO UPDATE SET "
    + ", ".join(f"{n} = excluded.{n}" for n in _PENDING_FIELDS[4:])
)
#: Postgres: delete pending entries by key.
_PG_PENDING_DELETE: Final = (
    f"DELETE FROM processor_pending p USING {_pg_unnest(_PENDING_KEY)} WHERE "
    + " AND ".join(f"p.{n} = v.{n}" for n in _PENDING_KEY)
)
#: Postgres: insert or replace call records (unique by key: a checkpoint holds one per key).
_PG_CALLS_WRITE: Final = (
    f"INSERT INTO calls ({', '.join(CALL_FIELDS)}) "
    f"SELECT {', '.join(CALL_FIELDS)} FROM {_pg_unnest(CALL_FIELDS)} "
    f"ON CONFLICT ({', '.join(_CALL_KEY)}) DO UPDATE SET "
    + ", ".join(f"{n} = excluded.{n}" for n in CALL_FIELDS if n not in _CALL_KEY)
)


#: Postgres: create the missing `rollup_progress` rows of a commit's tenants (at 0: nothing rolled).
_PG_PROGRESS_CREATE: Final = (
    "INSERT INTO rollup_progress (tenant_id, rolled_through) "
    f"SELECT tenant_id, 0 FROM {_pg_unnest(('tenant_id',))} ORDER BY tenant_id ON CONFLICT DO NOTHING"
)
#: Postgres: read and share-lock a commit's tenants' progress (the roller takes them exclusively).
_PG_PROGRESS_SHARE: Final = sa.text(
    "SELECT tenant_id, rolled_through FROM rollup_progress WHERE tenant_id = ANY(:tenants) "
    "ORDER BY tenant_id FOR SHARE"
)


#: SQLite: delete one tenant's oldest call records started before a cut, up to a count (executed for
#: many tenants at once; `CheckpointWriter._expire_calls`).
_SQLITE_EXPIRE_CALLS: Final = (
    "DELETE FROM calls WHERE (tenant_id, started_at, request_id) IN ("
    "SELECT tenant_id, started_at, request_id FROM calls WHERE tenant_id = ? AND started_at < ? "
    "ORDER BY started_at LIMIT ?)"
)
#: Postgres: delete each tenant's oldest call records started before a cut, up to a count per tenant,
#: in one statement (`CheckpointWriter._expire_calls`).
_PG_EXPIRE_CALLS: Final = (
    "DELETE FROM calls WHERE (tenant_id, started_at, request_id) IN ("
    "SELECT c.tenant_id, c.started_at, c.request_id "
    "FROM unnest(CAST(%(x_tenant)s AS VARCHAR[]), CAST(%(x_rows)s AS BIGINT[])) AS v(tenant_id, n) "
    "CROSS JOIN LATERAL (SELECT tenant_id, started_at, request_id FROM calls "
    "WHERE calls.tenant_id = v.tenant_id AND calls.started_at < %(x_cut)s "
    "ORDER BY started_at LIMIT v.n) AS c)"
)


def rollup_deltas(deltas: Mapping[WindowKey, WindowDelta], seconds: int) -> dict[WindowKey, WindowDelta]:
    """Minute-window deltas summed into buckets of `seconds` (an hour, a day) of the same tenant,
    route and model. Pure. A bucket fed by one window shares that window's delta object."""
    if seconds == 60:
        return dict(deltas)
    out: dict[WindowKey, WindowDelta] = {}
    owned: set[WindowKey] = set()  # buckets holding a delta of their own (safe to add to)
    for key, delta in deltas.items():
        bucket = WindowKey(key.tenant_id, key.route, key.model, key.window_start // seconds * seconds)
        have = out.get(bucket)
        if have is None:
            out[bucket] = delta
        elif bucket in owned:
            have.merge(delta)
        else:
            out[bucket] = WindowDelta().merge(have).merge(delta)
            owned.add(bucket)
    return out


def series_totals(deltas: Mapping[WindowKey, WindowDelta]) -> dict[WindowKey, WindowDelta]:
    """Rollup deltas summed over routes and models: one delta per tenant and bucket, keyed by the
    `ALL_SERIES` route and model (the rollups' tenant totals). Pure; never shares a delta object."""
    out: dict[WindowKey, WindowDelta] = {}
    for key, delta in deltas.items():
        total = WindowKey(key.tenant_id, ALL_SERIES, ALL_SERIES, key.window_start)
        have = out.get(total)
        if have is None:
            have = out[total] = WindowDelta()
        have.merge(delta)
    return out


#: Rows per statement of a SQLite multi-row INSERT (`_Many`): at most 999 parameters each, SQLite's
#: oldest limit, and never more than this many rows.
_ROWS_PER_INSERT: Final = 32


class _Many:
    """An INSERT/DELETE compiled once for one dialect and executed for many rows given as tuples.

    On SQLite an INSERT runs as multi-row ``VALUES (…), (…)`` statements of up to
    `_ROWS_PER_INSERT` rows. Why: the driver releases the GIL around each statement's step and must
    take it back after, and with another thread of the server busy (ingest) taking it back waits up
    to the interpreter's switch interval (5 ms): one step per row made a commit's inserts wait on
    every row (a scratch run with one busy thread: 4.5 ms a row one at a time, 0.24 ms in
    statements of 30 rows; without a busy thread one at a time is ~20 % cheaper).
    """

    def __init__(self, dialect: sa.Dialect, stmt: Any, fields: Sequence[str]) -> None:
        self.stmt = stmt
        self.fields = tuple(fields)
        self.raw: str | None = None
        self._multi: tuple[str, str, str] | None = None  # (head, one row's placeholders, tail)
        if dialect.name == "sqlite":
            compiled = stmt.compile(dialect=dialect)
            if list(compiled.positiontup or ()) != list(self.fields):
                raise AssertionError(f"parameter order {compiled.positiontup} != {self.fields}")
            self.raw = str(compiled)
            one = "(" + ", ".join("?" * len(self.fields)) + ")"
            head, sep, tail = self.raw.partition(" VALUES " + one)
            if sep and self.raw.startswith("INSERT"):
                self._multi = (head + " VALUES ", one, tail)
        self._per = max(1, min(_ROWS_PER_INSERT, 999 // max(1, len(self.fields))))
        self._sql: dict[int, str] = {}

    def _statement(self, n: int) -> str:
        sql = self._sql.get(n)
        if sql is None:
            assert self._multi is not None
            head, one, tail = self._multi
            sql = self._sql[n] = head + ", ".join([one] * n) + tail
        return sql

    def run(self, conn: sa.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self.raw is None:
            conn.execute(self.stmt, [dict(zip(self.fields, row, strict=True)) for row in rows])
        elif self._multi is None or len(rows) < 2:
            conn.exec_driver_sql(self.raw, rows)
        else:
            per = self._per
            full = len(rows) // per * per
            chain = itertools.chain.from_iterable
            if full:
                groups = [tuple(chain(rows[i : i + per])) for i in range(0, full, per)]
                conn.exec_driver_sql(self._statement(per), groups)
            if full < len(rows):
                rest = rows[full:]
                conn.exec_driver_sql(self._statement(len(rest)), [tuple(chain(rest))])


class CheckpointWriter:
    """Writes checkpoints for one engine's dialect; statements are prepared once. Thread-safe."""

    def __init__(self, dialect: sa.Dialect) -> None:
        """Prepare the statements for `dialect` (``sqlite`` or ``postgresql``). Does not block."""
        self._postgres = dialect.name == "postgresql"
        insert = postgresql.insert if self._postgres else sqlite.insert

        def upsert(table: sa.Table, conflict: Sequence[str], set_: Mapping[str, Any]) -> Any:
            stmt = insert(table)
            values: dict[str, Any] = {
                c.name: sa.bindparam(c.name) for c in table.columns if c.name in set_ or c.name in conflict
            }
            return stmt.values(values).on_conflict_do_update(
                index_elements=list(conflict),
                set_={
                    k: (v(table, stmt.excluded) if callable(v) else stmt.excluded[k]) for k, v in set_.items()
                },
            )

        self._aggregates = [
            _AggregateWriter(dialect, table, seconds, upsert) for table, seconds in AGGREGATE_TABLES
        ]
        self._pending_write = _Many(
            dialect,
            upsert(
                processor_pending, _PENDING_FIELDS[:4], {"payload": True, "seen_at": True, "expired": True}
            ),
            _PENDING_FIELDS,
        )
        self._pending_delete = _Many(
            dialect,
            sa.delete(processor_pending)
            .where(processor_pending.c.consumer == sa.bindparam("k_consumer"))
            .where(processor_pending.c.tenant_id == sa.bindparam("k_tenant_id"))
            .where(processor_pending.c.request_id == sa.bindparam("k_request_id"))
            .where(processor_pending.c.kind == sa.bindparam("k_kind")),
            ("k_consumer", "k_tenant_id", "k_request_id", "k_kind"),
        )
        self._calls_write = _Many(
            dialect,
            upsert(calls, _CALL_KEY, {n: True for n in CALL_FIELDS if n not in _CALL_KEY}),
            CALL_FIELDS,
        )
        self._progress_create = _Many(
            dialect,
            insert(rollup_progress)
            .values(tenant_id=sa.bindparam("tenant_id"), rolled_through=sa.literal_column("0"))
            .on_conflict_do_nothing(),
            ("tenant_id",),
        )
        self._progress_read = sa.select(rollup_progress.c.tenant_id, rollup_progress.c.rolled_through).where(
            rollup_progress.c.tenant_id.in_(sa.bindparam("tenants", expanding=True))
        )
        self._counters = upsert(server_counters, ["name"], {"value": lambda t, x: t.c.value + x.value})
        self._meta = upsert(
            processor_meta,
            ["consumer"],
            {
                "watermark": lambda t, x: sa.case(
                    (x.watermark > t.c.watermark, x.watermark), else_=t.c.watermark
                )
            },
        )
        self._offsets = upsert(processor_offsets, ["consumer", "partition"], {"next_offset": True})

    def rolled_through(self, conn: sa.Connection, tenants: Iterable[str]) -> dict[str, int]:
        """Each of `tenants`' ``rollup_progress.rolled_through``, its row created (at 0) when missing
        and held until the transaction ends (Postgres: a share lock, in tenant order; SQLite's write
        transaction already excludes the roller). Call inside the commit's write transaction, before
        its window rows are locked. Blocks."""
        names = sorted(set(tenants))
        if self._postgres:
            _pg_run(conn, _PG_PROGRESS_CREATE, ("tenant_id",), [(t,) for t in names])
            return {str(t): int(r) for t, r in conn.execute(_PG_PROGRESS_SHARE, {"tenants": names})}
        self._progress_create.run(conn, [(t,) for t in names])
        found: dict[str, int] = {}
        for chunk in _chunks(names, TENANTS_PER_SELECT):
            found.update(
                (str(t), int(r)) for t, r in conn.execute(self._progress_read, {"tenants": list(chunk)})
            )
        return found

    def add_to_rollups(
        self, conn: sa.Connection, deltas: Mapping[WindowKey, WindowDelta], now: float
    ) -> None:
        """Add minute-window `deltas` to the hourly and daily rollups, inside the caller's write
        transaction (the commit's, for hours already rolled up; the roller's). Blocks."""
        if not deltas:
            return
        for aggregate in self._aggregates[1:]:
            rolled = rollup_deltas(deltas, aggregate.seconds)
            aggregate.write(conn, {**rolled, **series_totals(rolled)}, now)

    def _expire_calls(self, conn: sa.Connection, records: Sequence[CallRecord], cut: float) -> int:
        """Delete call records started before `cut` of the tenants of `records`, oldest first, at
        most `EXPIRE_PER_RECORD` per record of theirs plus `EXPIRE_BATCH_EXTRA` per tenant (see
        `Checkpoint.expire_calls_before`); the number deleted. A tenant's oldest records are the first
        of its key range, so each delete is one contiguous run. Blocks."""
        per_tenant: dict[str, int] = {}
        for r in records:
            per_tenant[r.tenant_id] = per_tenant.get(r.tenant_id, 0) + 1
        rows = [(t, cut, n * EXPIRE_PER_RECORD + EXPIRE_BATCH_EXTRA) for t, n in sorted(per_tenant.items())]
        if self._postgres:
            params = {
                "x_tenant": _pg_array((t for t, _, _ in rows), "VARCHAR"),
                "x_rows": _pg_array((n for _, _, n in rows), "BIGINT"),
                "x_cut": cut,
            }
            return int(conn.exec_driver_sql(_PG_EXPIRE_CALLS, params).rowcount)
        before = conn.connection.total_changes
        conn.exec_driver_sql(_SQLITE_EXPIRE_CALLS, rows)
        return int(conn.connection.total_changes) - int(before)

    def check_offsets(self, conn: sa.Connection, expected: Mapping[str, Mapping[int, int]]) -> None:
        """Lock the offset rows of every consumer in `expected` and raise `StaleCheckpoint` (naming
        the first consumer found stale) unless each holds its expected offsets (a partition without a
        row counts as offset 0). Run first in the commit's transaction. One query. Blocks."""
        if not expected:
            return
        query = sa.select(
            processor_offsets.c.consumer, processor_offsets.c.partition, processor_offsets.c.next_offset
        ).where(processor_offsets.c.consumer.in_(sorted(expected)))
        if self._postgres:
            query = query.order_by(processor_offsets.c.consumer, processor_offsets.c.partition)
            query = query.with_for_update()
        stored: dict[str, dict[int, int]] = {}
        for consumer, partition, offset in conn.execute(query):
            stored.setdefault(str(consumer), {})[int(partition)] = int(offset)
        for consumer in sorted(expected):
            want, have = expected[consumer], stored.get(consumer, {})
            for partition in sorted(set(have) | set(want)):
                if have.get(partition, 0) != want.get(partition, 0):
                    raise StaleCheckpoint(
                        f"consumer {consumer!r} has offset {have.get(partition, 0)} stored for partition "
                        f"{partition}, expected {want.get(partition, 0)}: another processor committed it",
                        consumer=consumer,
                    )

    def write(self, conn: sa.Connection, cps: Sequence[Checkpoint], now: float) -> list[WindowRow]:
        """Write every part of the checkpoints `cps` (of distinct consumers) on `conn`, inside the
        caller's (write) transaction, with one statement per kind of row whatever their number: the
        minute windows (and, for hours already rolled up, the hourly and daily rollups from the same
        deltas), the call records (and the deletion of expired ones), the pending joins, dedup keys,
        counters, watermarks and offsets. Returns the minute window rows as written (merged totals,
        new versions). Blocks."""
        if len(cps) == 1:
            deltas = cps[0].windows
        else:  # windows merge additively: add the checkpoints' deltas up first, one row each
            deltas = {}
            for cp in cps:
                for key, delta in cp.windows.items():
                    have = deltas.get(key)
                    deltas[key] = delta if have is None else WindowDelta().merge(have).merge(delta)
        # progress first (Postgres locks it before any aggregate row, as the roller does)
        rolled = self.rolled_through(conn, {k.tenant_id for k in deltas}) if deltas else {}
        written = self._aggregates[0].write(conn, deltas, now)
        # an hour already rolled up gets its deltas now; a later hour waits for the roller
        late = {k: d for k, d in deltas.items() if k.window_start < rolled[k.tenant_id]}
        self.add_to_rollups(conn, late, now)
        records: list[CallRecord] = [r for cp in cps for r in cp.calls.values()]
        cuts = [cp.expire_calls_before for cp in cps if cp.expire_calls_before is not None]
        expired = self._expire_calls(conn, records, min(cuts)) if cuts and records else 0
        if records:
            if self._postgres:
                _pg_run(conn, _PG_CALLS_WRITE, CALL_FIELDS, records)
            else:
                self._calls_write.run(conn, records)
        pending: list[tuple[Any, ...]] = []
        for cp in cps:
            latest = {(e.tenant_id, e.request_id, e.kind): e for e in cp.pending_upserts}
            pending.extend(
                (cp.consumer, e.tenant_id, e.request_id, e.kind, e.payload, e.seen_at, e.expired)
                for e in (latest[k] for k in sorted(latest))
            )
        if pending:
            if self._postgres:
                _pg_run(conn, _PG_PENDING_WRITE, _PENDING_FIELDS, pending)
            else:
                self._pending_write.run(conn, pending)
        gone = [(cp.consumer, *key) for cp in cps for key in sorted(set(cp.pending_deletes))]
        if gone:
            if self._postgres:
                _pg_run(conn, _PG_PENDING_DELETE, _PENDING_KEY, gone)
            else:
                self._pending_delete.run(conn, gone)
        chunks = [
            {"consumer": cp.consumer, "expires_at": cp.dedup_expires_at, "keys": encode_keys(cp.dedup_keys)}
            for cp in cps
            if cp.dedup_keys
        ]
        if chunks:
            conn.execute(sa.insert(processor_dedup), chunks)
        for cp in cps:
            if cp.forget_before is not None:
                conn.execute(
                    sa.delete(processor_pending).where(
                        processor_pending.c.consumer == cp.consumer,
                        processor_pending.c.expired.is_(True),
                        processor_pending.c.seen_at <= cp.forget_before,
                    )
                )
            if cp.purge_chunks_at is not None:
                conn.execute(
                    sa.delete(processor_dedup).where(
                        processor_dedup.c.consumer == cp.consumer,
                        processor_dedup.c.expires_at <= cp.purge_chunks_at,
                    )
                )
        counters: dict[str, int] = {"call_records_expired": expired} if expired else {}
        for cp in cps:
            for name, n in cp.counters.items():
                counters[name] = counters.get(name, 0) + n
        if counters:
            conn.execute(self._counters, [{"name": n, "value": counters[n]} for n in sorted(counters)])
        conn.execute(self._meta, [{"consumer": cp.consumer, "watermark": cp.watermark} for cp in cps])
        offsets = [
            {"consumer": cp.consumer, "partition": p, "next_offset": o}
            for cp in cps
            for p, o in sorted(cp.offsets.items())
        ]
        if offsets:
            conn.execute(self._offsets, offsets)
        return written


class _AggregateWriter:
    """Merges deltas into one aggregate table (minute windows, hourly or daily rollups)."""

    def __init__(self, dialect: sa.Dialect, table: sa.Table, seconds: int, upsert: Any) -> None:
        self.seconds = seconds
        self._postgres = dialect.name == "postgresql"
        self._table = table
        self._write = _Many(
            dialect, upsert(table, KEY_FIELDS, dict.fromkeys(_WRITE_FIELDS[_N_KEY:], True)), _WRITE_FIELDS
        )
        self._read = (
            sa.select(*(table.c[n] for n in _READ_FIELDS))
            .where(table.c.window_start == sa.bindparam("start"))
            .where(table.c.tenant_id.in_(sa.bindparam("tenants", expanding=True)))
        )
        self._pg_lock = _pg_lock(table.name)
        self._pg_write = _pg_write(table.name)

    def write(
        self, conn: sa.Connection, deltas: Mapping[WindowKey, WindowDelta], now: float
    ) -> list[WindowRow]:
        """Add `deltas` to the stored rows; the rows as written. Blocks."""
        if not deltas:
            return []
        if self._postgres:
            # sorted: concurrent workers lock rows in the same order, so they cannot deadlock
            keys = sorted(deltas)
            locked = _pg_run(conn, self._pg_lock, (*KEY_FIELDS, "updated_at"), [(*k, now) for k in keys])
            found = {tuple(row[:_N_KEY]): row for row in locked}
            rows = [merged_row(k, deltas[k], found.get(k), now) for k in keys]
            _pg_run(conn, self._pg_write, _WRITE_FIELDS, rows)
            return rows
        keys = list(deltas)  # SQLite has one writer at a time: no lock order to keep
        stored: dict[tuple[Any, ...], Sequence[Any]] = {}
        # By window start, then tenant: the (tenant_id, window_start) index answers each read, where
        # SQLite would scan the table for a row-value IN list. Rows of other routes/models that
        # share a tenant and a window start come along and are ignored.
        tenants_by_start: dict[int, set[str]] = {}
        for k in keys:
            tenants_by_start.setdefault(k.window_start, set()).add(k.tenant_id)
        for start, tenants in sorted(tenants_by_start.items()):
            for chunk in _chunks(sorted(tenants), TENANTS_PER_SELECT):
                for row in conn.execute(self._read, {"start": start, "tenants": chunk}):
                    stored[tuple(row[:_N_KEY])] = row
        written = [merged_row(k, deltas[k], stored.get(k), now) for k in keys]
        self._write.run(conn, written)
        return written
