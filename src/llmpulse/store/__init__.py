"""The store: SQLAlchemy Core tables and migrations, window upserts, processor checkpoints, queries.

`Store.open(url)` connects to SQLite (``sqlite:///path``, the embedded default) or Postgres
(``postgresql://…``, the libpq URL form of ``POSTGRES_DSN``), migrates the schema, then commits
processor `Checkpoint`s in one transaction each and answers window queries; `metrics_row` and
`summary_row` shape query results as API rows; `rollup` and `dimensions` answer the dashboard's reads
over a `Scope` (one tenant or all). All `Store` methods block.

Errors: `StoreError` is the base of this package's errors; `StoreUnavailable` (the database is
unreachable or busy: retry), `StoreIntegrityError` (the database rejected the data) and
`MigrationError` (the schema could not be brought up to date) derive from it. `create_engine_for`
raises `ValueError` for an unknown URL scheme, and query methods raise `ValueError` for invalid
arguments.

`calls_page`, `iter_calls` and `costs` read the call records (`CallFilter`: a tenant, a range and
attribute filters): pages newest or costliest first, every record oldest first a page at a time (for
export), and costs grouped by an attribute. They block.

API keys live in the store too (`Store.keys`, an `ApiKeys`): only their SHA-256 is kept. Shared
budgets too (`Store.budgets`, a `BudgetLedger`: `BudgetSpec` definitions, reservations against one
ledger row per period, `BudgetView`s).

Retention: `RetentionPolicy` says how long each kind of record is kept, `prune` deletes what it no
longer keeps in small batches, and `RetentionPruner` does so every interval on a background thread
(`RetentionSettingError` is the `ValueError` of a bad setting).
"""

from __future__ import annotations

from llmpulse.store._alerts import AlertState, AlertStore, AlertTransition
from llmpulse.store._budgets import (
    PERIODS,
    SCOPE_ATTRIBUTES,
    BudgetLedger,
    BudgetNotFound,
    BudgetPeriod,
    BudgetSpec,
    BudgetView,
    ReservationNotFound,
    ReservationSettled,
    ReserveResult,
    SettleResult,
    period_bounds,
)
from llmpulse.store._calls import (
    CALL_STATUSES,
    GROUP_BY_ATTRIBUTES,
    CallFilter,
    CallOrder,
    CostOrder,
    call_delta,
    call_row,
    calls_page,
    check_group_by,
    costs,
    cursor_range,
    iter_calls,
    minute_bounds,
)
from llmpulse.store._engine import (
    MigrationError,
    StoreError,
    StoreIntegrityError,
    StoreUnavailable,
    create_engine_for,
)
from llmpulse.store._filter import KeyFilter
from llmpulse.store._histogram import Histogram, bucket_of, merged, quantile, value_of
from llmpulse.store._keys import ApiKey, ApiKeys
from llmpulse.store._model import (
    CALL_FIELDS,
    WINDOW_SECONDS,
    CallRecord,
    CallStatus,
    Checkpoint,
    ColdProbe,
    ColdState,
    PendingEntry,
    PendingKind,
    ProcessorState,
    WindowDelta,
    WindowKey,
    dedup_key,
    parse_dedup_key,
)
from llmpulse.store._pruner import RetentionPruner
from llmpulse.store._query import GroupBy, StoredWindow, SummaryRow, metrics_row, rfc3339, summary_row
from llmpulse.store._retention import PruneResult, RetentionPolicy, RetentionSettingError, prune
from llmpulse.store._roller import ROLL_SETTLE_S, RollResult, roll_bound, roll_up
from llmpulse.store._rollup import Dimensions, Rollup, Scope, dimensions, figures, rollup
from llmpulse.store._store import Store
from llmpulse.store._tables import MAX_ERROR_MESSAGE_LEN, MAX_ERROR_TYPE_LEN, MAX_RECORD_METADATA_BYTES

__all__ = [
    "CALL_FIELDS",
    "CALL_STATUSES",
    "GROUP_BY_ATTRIBUTES",
    "MAX_ERROR_MESSAGE_LEN",
    "MAX_ERROR_TYPE_LEN",
    "MAX_RECORD_METADATA_BYTES",
    "PERIODS",
    "ROLL_SETTLE_S",
    "SCOPE_ATTRIBUTES",
    "WINDOW_SECONDS",
    "AlertState",
    "AlertStore",
    "AlertTransition",
    "ApiKey",
    "ApiKeys",
    "BudgetLedger",
    "BudgetNotFound",
    "BudgetPeriod",
    "BudgetSpec",
    "BudgetView",
    "CallFilter",
    "CallOrder",
    "CallRecord",
    "CallStatus",
    "Checkpoint",
    "ColdProbe",
    "ColdState",
    "CostOrder",
    "Dimensions",
    "GroupBy",
    "Histogram",
    "KeyFilter",
    "MigrationError",
    "PendingEntry",
    "PendingKind",
    "ProcessorState",
    "PruneResult",
    "ReservationNotFound",
    "ReservationSettled",
    "ReserveResult",
    "RetentionPolicy",
    "RetentionPruner",
    "RetentionSettingError",
    "RollResult",
    "Rollup",
    "Scope",
    "SettleResult",
    "Store",
    "StoreError",
    "StoreIntegrityError",
    "StoreUnavailable",
    "StoredWindow",
    "SummaryRow",
    "WindowDelta",
    "WindowKey",
    "bucket_of",
    "call_delta",
    "call_row",
    "calls_page",
    "check_group_by",
    "costs",
    "create_engine_for",
    "cursor_range",
    "dedup_key",
    "dimensions",
    "figures",
    "iter_calls",
    "merged",
    "metrics_row",
    "minute_bounds",
    "parse_dedup_key",
    "period_bounds",
    "prune",
    "quantile",
    "rfc3339",
    "roll_bound",
    "roll_up",
    "rollup",
    "summary_row",
    "value_of",
]
