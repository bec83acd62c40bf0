"""What the processor hands the store: window deltas, pending joins, dedup keys and offsets.

Everything here is additive or idempotent so that a checkpoint can be committed in one transaction,
and windows written by several workers (or at several times) merge by addition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

from llmpulse.store._histogram import Histogram, merge_into

#: Length of a window in seconds (one-minute tumbling windows aligned to the minute).
WINDOW_SECONDS: Final = 60

PendingKind = Literal["request", "response"]

#: Status of a call record: ``timeout`` is a request whose response did not come in time.
CallStatus = Literal["ok", "error", "timeout", "cancelled"]
#: Where a call record's cost came from (None: the price is unknown).
RecordCostSource = Literal["provider", "estimate", "genai-prices"]


class CallRecord(NamedTuple):
    """One counted call, as stored in the ``calls`` table (fields in column order).

    Keyed by (`tenant_id`, `request_id`); a call event sent without a `request_id` gets a generated
    one starting with ``~``. `started_at` is the call's event time (the request's or call's
    timestamp; epoch seconds) and places it in its window; `updated_at` is the processor's clock at
    the commit that wrote this version (a timeout later joined by its response is written again).
    `user_id` is the call's own user id; `user_id_hash` the StreamLens hashed one. `metadata` is
    compact JSON text bounded by `llmpulse.store.MAX_RECORD_METADATA_BYTES`, or None.
    `cost_usd` is the figure that counts (in windows, rollups and `/v1/costs`), from `cost_source`;
    `sender_cost_usd` is the cost the call event itself carried (whatever its source; None when it
    carried none), kept beside it when the counted figure is genai-prices' instead (added last, by
    migration 0009, so the column order matches the table's).
    """

    tenant_id: str
    request_id: str
    started_at: float
    route: str
    model: str
    provider: str | None
    status: str
    error_type: str | None
    error_message: str | None
    latency_ms: float | None
    ttft_ms: float | None
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_usd: float | None
    cost_source: str | None
    user_id: str | None
    user_id_hash: str | None
    org_id: str | None
    session_id: str | None
    feature: str | None
    endpoint: str | None
    environment: str | None
    trace_id: str | None
    span_id: str | None
    metadata: str | None
    updated_at: float
    sender_cost_usd: float | None = None


#: The columns of a call record, in `CallRecord` order.
CALL_FIELDS: Final = CallRecord._fields


def record_as_dict(record: CallRecord) -> dict[str, Any]:
    """The record's fields by name (``started_at``/``updated_at`` still epoch seconds). Pure."""
    return record._asdict()


class WindowKey(NamedTuple):
    """Identifies one window: tenant, route, model and the window's start (epoch seconds, UTC)."""

    tenant_id: str
    route: str
    model: str
    window_start: int


class WindowDelta:
    """Signed changes to one window's figures. Every field adds; histograms add bucket by bucket.

    Counts may be negative in a correction (a timed-out request whose response arrives later removes
    its timeout and error and adds its latency).
    """

    __slots__ = (
        "cache_write_tokens",
        "cached_input_tokens",
        "completion_tokens",
        "cost_unknown",
        "cost_usd",
        "errors",
        "late",
        "latency_count",
        "latency_hist",
        "latency_sum_ms",
        "prompt_tokens",
        "reasoning_tokens",
        "requests",
        "timeouts",
        "ttft_count",
        "ttft_hist",
        "ttft_sum_ms",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.timeouts = 0
        self.late = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_input_tokens = 0
        self.cache_write_tokens = 0
        self.reasoning_tokens = 0
        self.latency_count = 0
        self.latency_sum_ms = 0.0
        self.latency_hist: Histogram = {}
        self.ttft_count = 0
        self.ttft_sum_ms = 0.0
        self.ttft_hist: Histogram = {}
        self.cost_usd = 0.0
        self.cost_unknown = 0

    def merge(self, other: WindowDelta) -> WindowDelta:
        """Add `other` into this delta (in place) and return self."""
        for name in self.__slots__:
            if name.endswith("_hist"):
                merge_into(getattr(self, name), getattr(other, name))
            else:
                setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def as_dict(self) -> dict[str, object]:
        """All fields as a dict (histograms copied)."""
        return {
            name: dict(getattr(self, name)) if name.endswith("_hist") else getattr(self, name)
            for name in self.__slots__
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WindowDelta):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return f"WindowDelta({self.as_dict()!r})"


@dataclass(slots=True)
class PendingEntry:
    """Half of a pair waiting for its other half (or a timed-out one kept to correct its window).

    `payload` is the event encoded with `llmpulse.events.encode_log([event])`; `seen_at` is the
    processor's wall clock (epoch seconds) when it first saw the event; `expired` is true once the
    entry has been counted as a timeout (request) or an orphan (response). `tenant_id` is the
    request's tenant, or the response's when it names one ("" when it does not).
    """

    request_id: str
    kind: PendingKind
    payload: bytes
    seen_at: float
    expired: bool = False
    tenant_id: str = ""


@dataclass(slots=True)
class Checkpoint:
    """Everything one processor commit writes, in a single transaction.

    Attributes:
        consumer: the processor's identity (``"embedded"``, or the group and partition when scaled).
        offsets: partition → next offset to read (the offsets this checkpoint covers).
        windows: window deltas to add to the stored windows.
        pending_upserts: pending entries to insert or replace.
        pending_deletes: (tenant_id, request_id, kind) of pending entries to remove (tenant "" for a
            response that named none).
        dedup_keys: keys of events now fully counted, to remember until `dedup_expires_at`.
        calls: call records to insert or replace, by (tenant_id, request_id) (the newest version of
            each record changed since the last checkpoint).
        dedup_expires_at: epoch seconds after which `dedup_keys` may be forgotten.
        counters: server-wide counter deltas (orphan_responses, duplicates, unknown_cost, late, ...).
        watermark: the highest event time (epoch seconds) the processor has seen.
        forget_before: when set, the consumer's expired pending entries first seen at or before it
            are deleted (they left the dedup horizon).
        purge_chunks_at: when set, the consumer's dedup chunks expired at it are deleted.
        expire_calls_before: when set, the commit also deletes call records that started before it
            (retention), of the tenants whose records it writes, at most `EXPIRE_PER_RECORD` per
            record written plus `EXPIRE_BATCH_EXTRA` per tenant, oldest first; counted in the
            ``call_records_expired`` counter. At a steady rate this deletes as fast as records
            arrive, inside the writes that make them, where a separate pruner on SQLite waits its
            turn for the database between commits.
    """

    consumer: str
    offsets: dict[int, int] = field(default_factory=dict)
    windows: dict[WindowKey, WindowDelta] = field(default_factory=dict)
    pending_upserts: list[PendingEntry] = field(default_factory=list)
    pending_deletes: list[tuple[str, str, PendingKind]] = field(default_factory=list)
    dedup_keys: list[str] = field(default_factory=list)
    dedup_expires_at: float = 0.0
    calls: dict[tuple[str, str], CallRecord] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    watermark: float = 0.0
    forget_before: float | None = None
    purge_chunks_at: float | None = None
    expire_calls_before: float | None = None


#: Expired call records a commit may delete per record it writes (`Checkpoint.expire_calls_before`):
#: more than one, so a backlog (a restart after a pause, a lowered retention) is worked off too.
EXPIRE_PER_RECORD: Final = 2
#: Expired call records a commit may delete per tenant besides `EXPIRE_PER_RECORD` per record.
EXPIRE_BATCH_EXTRA: Final = 100


#: Prefix of the dedup key of a counted call (``k:<len(tenant)>:<tenant><request_id>``).
DEDUP_KEY_PREFIX: Final = "k:"


def dedup_key(tenant_id: str, request_id: str) -> str:
    """The dedup key of a counted call (unambiguous whatever characters the tenant holds)."""
    return f"{DEDUP_KEY_PREFIX}{len(tenant_id)}:{tenant_id}{request_id}"


def parse_dedup_key(key: str) -> tuple[str, str]:
    """(tenant_id, request_id) of a `dedup_key`; `ValueError` for anything else."""
    if key.startswith(DEDUP_KEY_PREFIX):
        length, sep, rest = key[len(DEDUP_KEY_PREFIX) :].partition(":")
        if sep and length.isdigit() and int(length) <= len(rest):
            return rest[: int(length)], rest[int(length) :]
    raise ValueError(f"unrecognised dedup key {key!r} (expected 'k:<length>:<tenant><request id>')")


class ColdProbe(NamedTuple):
    """A request id the processor asks the store about (`Store.lookup_cold`), with where its record
    would start: every record starts at its request's or call event's own timestamp, so a request or
    call event (a re-sent copy of one counted before) gives that instant (``earliest == latest``),
    and a response a span around its own timestamp less its latency. Epoch seconds, inclusive."""

    request_id: str
    earliest: float
    latest: float


@dataclass(slots=True)
class ColdState:
    """What the store knows of some request ids that the processor no longer holds in memory.

    Attributes:
        counted: (tenant_id, request_id, when its record was last written on the processor's
            clock) of calls counted within the dedup horizon.
        expired: expired pending entries of the asking processor (timed-out requests, orphan
            responses) still within the dedup horizon, which a late other half may resolve.
    """

    counted: list[tuple[str, str, float]] = field(default_factory=list)
    expired: list[PendingEntry] = field(default_factory=list)


@dataclass(slots=True)
class ProcessorState:
    """What a processor recovers on start: the last committed checkpoint's cumulative state."""

    offsets: dict[int, int] = field(default_factory=dict)
    pending: list[PendingEntry] = field(default_factory=list)
    dedup_keys: set[str] = field(default_factory=set)
    watermark: float = 0.0
