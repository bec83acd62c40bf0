"""Retention: how long each kind of record is kept (`RetentionPolicy`) and `prune`, which deletes the
expired ones in small batches.

| kept | table | default | environment variable |
|---|---|---|---|
| call records | ``calls`` (by ``started_at``) | 30 days | ``LLMPULSE_RETENTION_CALLS_DAYS`` |
| minute windows | ``windows`` | 14 days | ``LLMPULSE_RETENTION_MINUTES_DAYS`` |
| hourly rollups | ``rollups_hour`` | 396 days (13 months) | ``LLMPULSE_RETENTION_HOURS_DAYS`` |
| daily rollups | ``rollups_day`` | forever (0) | ``LLMPULSE_RETENTION_DAYS_DAYS`` |
| consumed log records | the embedded event log | 1 hour | ``LLMPULSE_RETENTION_LOG_S`` |

An aggregate row goes whole once its bucket has ended before the cut (``window_start + bucket ≤ now -
retention``), so no partial bucket is ever left; a call record goes once it started before the cut.
Finer aggregates may not outlive coarser ones (minutes ≤ hours ≤ days, 0 counting as forever): a
range whose minutes are gone is still answered exactly by its hours and days.

Every batch is its own short write transaction deleting at most ``batch_rows`` rows, the oldest
first, read from an index (``ix_calls_tenant_started`` tenant by tenant; ``ix_<table>_window_start``
for the aggregates, migration 0005), so on SQLite the processor's commits wait at most one batch.
Deleted pages go to SQLite's freelist and are reused by later inserts, so at a steady rate the file
stops growing (Postgres reuses dead tuples after autovacuum). Deletes are idempotent: any number of
servers may prune the same store.

Errors: `RetentionSettingError` (a `ValueError` naming the field, and the variable when read from
the environment); `prune` raises the store's `StoreError`s.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

import sqlalchemy as sa

from llmpulse.store._engine import translate_errors, write_transaction
from llmpulse.store._store import Store
from llmpulse.store._tables import AGGREGATE_TABLES, calls, rollup_progress

#: Seconds in a retention day.
DAY_S: Final = 86400.0


class RetentionSettingError(ValueError):
    """A retention setting is invalid; `field` names it (and the message starts with its name), and
    `fields` every setting involved (two of them when their order is wrong)."""

    def __init__(self, field: str, message: str, *, also: str | None = None) -> None:
        super().__init__(f"{field} {message}")
        self.field = field
        self.fields: tuple[str, ...] = (field,) if also is None else (field, also)


@dataclass(frozen=True, slots=True)
class _Setting:
    field: str
    env: str
    parse: Callable[[str], float | int]
    doc: str


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


#: Every retention setting: its field, environment variable, parser and meaning (the one table read by
#: `RetentionPolicy.from_env`; docs/configuration.md lists the same).
SETTINGS: Final = (
    _Setting("calls_days", "LLMPULSE_RETENTION_CALLS_DAYS", _number, "days call records are kept"),
    _Setting("minutes_days", "LLMPULSE_RETENTION_MINUTES_DAYS", _number, "days minute windows are kept"),
    _Setting("hours_days", "LLMPULSE_RETENTION_HOURS_DAYS", _number, "days hourly rollups are kept"),
    _Setting("days_days", "LLMPULSE_RETENTION_DAYS_DAYS", _number, "days daily rollups are kept"),
    _Setting("log_s", "LLMPULSE_RETENTION_LOG_S", _number, "seconds consumed log records are kept"),
    _Setting("interval_s", "LLMPULSE_PRUNE_INTERVAL_S", _number, "seconds between prunes (0: none)"),
    _Setting("batch_rows", "LLMPULSE_PRUNE_BATCH_ROWS", int, "most rows deleted per transaction"),
)
#: The largest ``batch_rows``: bigger batches would hold the processor's commits for too long.
MAX_BATCH_ROWS: Final = 100_000


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long each kind of record is kept, and how the pruner runs. Validated on construction.

    A retention of 0 days means forever. Call records, minute windows and hourly rollups are kept at
    least a day (the dashboard reads a day of minutes); ``minutes_days ≤ hours_days ≤ days_days``.

    Attributes:
        calls_days: call records (``calls``), by the call's start.
        minutes_days: one-minute windows (``windows``).
        hours_days: hourly rollups (``rollups_hour``); 396 days is 13 months.
        days_days: daily rollups (``rollups_day``); 0 keeps them forever.
        log_s: consumed records of the embedded event log, once a committed checkpoint covers them
            (Kafka topics keep what their ``retention.ms`` says).
        interval_s: seconds between the server's prunes; 0 runs no pruner in this process.
        batch_rows: most rows one prune transaction deletes.

    Raises:
        RetentionSettingError: a value out of range (the message starts with the field's name).
    """

    calls_days: float = 30.0
    minutes_days: float = 14.0
    hours_days: float = 396.0
    days_days: float = 0.0
    log_s: float = 3600.0
    interval_s: float = 60.0
    batch_rows: int = 1000

    def __post_init__(self) -> None:
        for name in ("calls_days", "minutes_days", "hours_days", "days_days"):
            value = getattr(self, name)
            if not _finite(value) or (value != 0 and value < 1):
                raise RetentionSettingError(name, f"must be 0 (forever) or at least 1 day, got {value!r}")
        order = ("minutes_days", "hours_days", "days_days")
        for finer, coarser in itertools.pairwise(order):
            if _forever(getattr(self, finer)) > _forever(getattr(self, coarser)):
                raise RetentionSettingError(
                    finer,
                    f"({_days(getattr(self, finer))}) must not exceed {coarser} "
                    f"({_days(getattr(self, coarser))}): finer aggregates may not outlive coarser ones",
                    also=coarser,
                )
        if not _finite(self.log_s) or self.log_s < 0:
            raise RetentionSettingError("log_s", f"must be a number of seconds >= 0, got {self.log_s!r}")
        if not _finite(self.interval_s) or self.interval_s < 0:
            raise RetentionSettingError(
                "interval_s", f"must be a number of seconds >= 0 (0: no pruner), got {self.interval_s!r}"
            )
        if (
            isinstance(self.batch_rows, bool)
            or not isinstance(self.batch_rows, int)
            or not 1 <= self.batch_rows <= MAX_BATCH_ROWS
        ):
            raise RetentionSettingError(
                "batch_rows", f"must be an integer in 1..{MAX_BATCH_ROWS}, got {self.batch_rows!r}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> RetentionPolicy:
        """A policy from the environment variables of `SETTINGS`, then `overrides` (None ignored).

        Raises:
            ValueError: a variable that does not parse, or a value out of range; the message starts
                with the variables involved when a value came from one (else it is the
                `RetentionSettingError`, naming the field).
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        source: dict[str, str] = {}
        for setting in SETTINGS:
            text = env.get(setting.env, "").strip()
            if not text:
                continue
            try:
                values[setting.field] = setting.parse(text)
            except ValueError:
                kind = "an integer" if setting.parse is int else "a number"
                raise ValueError(f"{setting.env} must be {kind} ({setting.doc}), got {text!r}") from None
            source[setting.field] = setting.env
        given = {k: v for k, v in overrides.items() if v is not None}
        values.update(given)
        try:
            return cls(**values)
        except RetentionSettingError as exc:
            named = [source[f] for f in exc.fields if f in source and f not in given]
            if named:
                raise ValueError(f"{', '.join(named)}: {exc}") from exc
            raise

    def retention_s(self, table: str) -> float | None:
        """Seconds rows of `table` (``calls``, ``windows``, ``rollups_hour``, ``rollups_day``) are
        kept; None for forever.

        Raises:
            KeyError: an unknown table.
        """
        days = {
            "calls": self.calls_days,
            "windows": self.minutes_days,
            "rollups_hour": self.hours_days,
            "rollups_day": self.days_days,
        }[table]
        return None if days == 0 else days * DAY_S

    def as_dict(self) -> dict[str, Any]:
        """The policy's fields (for ``/health``). Does not block."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _forever(days: float) -> float:
    return math.inf if days == 0 else days


def _days(days: float) -> str:
    return "forever" if days == 0 else f"{days:g} days"


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What one `prune` did.

    Attributes:
        at: the instant pruned against (epoch seconds).
        cutoffs: per table, the epoch second before which rows were expired (None: kept forever).
        deleted: per table, rows deleted.
        oldest_kept: per table, the oldest row left (``started_at`` of calls, ``window_start`` of
            aggregates; None when the table is empty).
        batches: write transactions that deleted rows.
        longest_batch_s: the longest of those transactions, in seconds.
        elapsed_s: the whole prune's duration, in seconds.
        complete: False when `between_batches` stopped it early (more expired rows may be left).
    """

    at: float
    cutoffs: Mapping[str, float | None]
    deleted: Mapping[str, int]
    oldest_kept: Mapping[str, float | None]
    batches: int
    longest_batch_s: float
    elapsed_s: float
    complete: bool

    @property
    def total_deleted(self) -> int:
        """Rows deleted from every table."""
        return sum(self.deleted.values())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for ``/health``). Does not block."""
        return {
            "at": self.at,
            "cutoffs": dict(self.cutoffs),
            "deleted": dict(self.deleted),
            "oldest_kept": dict(self.oldest_kept),
            "batches": self.batches,
            "longest_batch_s": round(self.longest_batch_s, 6),
            "elapsed_s": round(self.elapsed_s, 6),
            "complete": self.complete,
        }


class _Stopped(Exception):
    """`between_batches` asked to stop."""


#: The bind parameter holding a batch's row limit.
_ROWS: Final = "batch_rows"


#: The fewest rows a shrunk batch deletes (see `_Batches`).
MIN_BATCH_ROWS: Final = 100


class _Batches:
    """Runs delete statements one short write transaction each, timing them and asking to go on.

    With a `max_batch_s`, the rows of the next batch follow the last batch's duration: cut in
    proportion when it took longer (to `MIN_BATCH_ROWS` at the fewest), doubled (up to `cap`) when
    it took under half of it.
    """

    def __init__(
        self, store: Store, between: Callable[[float], bool] | None, cap: int, max_batch_s: float | None
    ) -> None:
        self._store = store
        self._between = between
        self._cap = cap
        self._max_s = max_batch_s
        self.rows = cap
        self.count = 0
        self.longest_s = 0.0
        self.deleted: dict[str, int] = {}

    def delete(self, stmt: sa.Delete, table: str) -> bool:
        """Run one batch of deletes from `table` (at most `rows`), counted in `deleted`; whether it
        was full (more may be left). Raises `_Stopped` when it deleted rows and `between_batches`
        says stop."""
        asked = self.rows
        # the store's own lock: an in-memory SQLite store has one connection shared by every thread
        with self._store._serial, self._store.write_lock:
            # timed once the lock is held: waiting for another writer's commit is not the batch's cost
            started = time.perf_counter()
            with translate_errors(f"pruning {table}"), write_transaction(self._store.engine) as conn:
                deleted = int(conn.execute(stmt, {_ROWS: asked}).rowcount)
            # BEGIN to COMMIT: on SQLite the commit writes the changed pages to the WAL under the lock
            took = time.perf_counter() - started
        if self._max_s is not None:
            if took > self._max_s:
                # never below a floor: a batch's fixed cost (the commit, a WAL checkpoint, pages
                # read from disk) would otherwise shrink it to a row or two and stall the prune
                self.rows = max(min(MIN_BATCH_ROWS, self._cap), int(asked * self._max_s / took))
            elif took < self._max_s / 2 and deleted == asked:
                self.rows = min(self._cap, asked * 2)
        if deleted:
            self.deleted[table] = self.deleted.get(table, 0) + deleted
            self.count += 1
            self.longest_s = max(self.longest_s, took)
            if self._between is not None and not self._between(took):
                raise _Stopped
        return deleted == asked

    def scalar(self, query: sa.Select[Any], action: str) -> Any:
        """One value read outside any write transaction."""
        with self._store._serial, translate_errors(action), self._store.engine.connect() as conn:
            return conn.execute(query).scalar()


def prune(
    store: Store,
    policy: RetentionPolicy,
    now: float,
    *,
    batch_rows: int | None = None,
    between_batches: Callable[[float], bool] | None = None,
    max_batch_s: float | None = None,
) -> PruneResult:
    """Delete the records `policy` no longer keeps at `now` (epoch seconds), in batches. Blocks.

    Each batch deletes at most `batch_rows` rows (``policy.batch_rows`` by default), oldest first, in
    its own write transaction. `between_batches`, when given, is called with the batch's duration
    (seconds) after every batch that deleted rows and before the next one: it may wait (so other
    writers get the database) and returns False to stop (the result is then not `complete`). With
    `max_batch_s`, batches shrink below `batch_rows` while they take longer than that (and grow back
    when they take under half): on SQLite every writer, the processor included, waits for the batch
    under way.

    Raises:
        ValueError: `batch_rows` < 1, or `max_batch_s` not positive.
        StoreUnavailable, StoreError: the database failed (rows deleted by earlier batches stay
            deleted; pruning again carries on).
    """
    rows = policy.batch_rows if batch_rows is None else batch_rows
    if rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {rows!r}")
    if max_batch_s is not None and not max_batch_s > 0:
        raise ValueError(f"max_batch_s must be positive, got {max_batch_s!r}")
    started = time.perf_counter()
    batches = _Batches(store, between_batches, rows, max_batch_s)
    cutoffs: dict[str, float | None] = {}
    oldest: dict[str, float | None] = {}
    complete = True
    for name in ("calls", *(table.name for table, _ in AGGREGATE_TABLES)):
        kept_s = policy.retention_s(name)
        cutoffs[name] = None if kept_s is None else now - kept_s
    # a minute window of an hour not rolled up yet is kept whatever its age (`llmpulse.store._roller`)
    progress = sa.select(sa.func.min(rollup_progress.c.rolled_through))
    rolled = batches.scalar(progress, "reading rollup progress")
    if rolled is not None and cutoffs["windows"] is not None:
        cutoffs["windows"] = min(cutoffs["windows"], float(rolled))
    try:
        _prune_calls(batches, cutoffs["calls"], oldest)
        for table, seconds in AGGREGATE_TABLES:
            cut = cutoffs[table.name]
            if cut is not None:
                _prune_aggregate(batches, table, seconds, cut)
    except _Stopped:
        complete = False
    for table, _ in AGGREGATE_TABLES:
        first = batches.scalar(sa.select(sa.func.min(table.c.window_start)), "reading the oldest window")
        oldest[table.name] = None if first is None else float(first)
    return PruneResult(
        at=now,
        cutoffs=cutoffs,
        deleted={name: batches.deleted.get(name, 0) for name in cutoffs},
        oldest_kept={name: oldest.get(name) for name in cutoffs},
        batches=batches.count,
        longest_batch_s=batches.longest_s,
        elapsed_s=time.perf_counter() - started,
        complete=complete,
    )


def _prune_aggregate(batches: _Batches, table: sa.Table, seconds: int, cut: float) -> None:
    """Delete `table`'s rows whose bucket ended at or before `cut`, oldest first, in index order."""
    last_start = math.floor(cut) - seconds  # a bucket starting here ends at floor(cut) <= cut
    key = [table.c.tenant_id, table.c.window_start, table.c.route, table.c.model]
    oldest = (
        sa.select(*key)
        .where(table.c.window_start <= last_start)
        .order_by(table.c.window_start)
        .limit(sa.bindparam(_ROWS))
    )
    stmt = sa.delete(table).where(sa.tuple_(*key).in_(oldest))
    while batches.delete(stmt, table.name):
        pass


def _prune_calls(batches: _Batches, cut: float | None, oldest: dict[str, float | None]) -> None:
    """Delete call records started before `cut`, tenant by tenant in (tenant_id, started_at) order,
    and note the oldest kept in `oldest["calls"]`. Tenants are found by a loose index scan (one
    index seek each), so a run costs a few queries per tenant besides the deletes."""
    first: float | None = None
    tenant: str | None = None
    while True:
        query = sa.select(sa.func.min(calls.c.tenant_id))
        if tenant is not None:
            query = query.where(calls.c.tenant_id > tenant)
        tenant = batches.scalar(query, "listing tenants of call records")
        if tenant is None:
            break
        start = sa.select(sa.func.min(calls.c.started_at)).where(calls.c.tenant_id == tenant)
        found = batches.scalar(start, "reading the oldest call record")
        if cut is not None and found is not None and float(found) < cut:
            _prune_tenant_calls(batches, tenant, cut)
            found = batches.scalar(start, "reading the oldest call record")
        if found is not None:
            first = float(found) if first is None else min(first, float(found))
    oldest["calls"] = first


def _prune_tenant_calls(batches: _Batches, tenant: str, cut: float) -> None:
    # the tenant's oldest records are the first rows of its key range: a batch is a contiguous run
    key = [calls.c.tenant_id, calls.c.started_at, calls.c.request_id]
    oldest = (
        sa.select(*key)
        .where(calls.c.tenant_id == tenant, calls.c.started_at < cut)
        .order_by(calls.c.started_at)
        .limit(sa.bindparam(_ROWS))
    )
    stmt = sa.delete(calls).where(sa.tuple_(*key).in_(oldest))
    while batches.delete(stmt, "calls"):
        pass
