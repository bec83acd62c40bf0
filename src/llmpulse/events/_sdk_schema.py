"""The SDK's telemetry items besides `LLMCall`: spans, tool executions, orchestration steps, metrics, logs.

Every item is a `msgspec.Struct` tagged by its `type` field (`"span"`, `"tool"`, `"orchestration"`,
`"metric"`, `"log"`; an `LLMCall` is `"llm.call"`), so a mixed list encodes and decodes in one pass.
The seeds' names map onto these as follows: telemetry-bootstrap's `Metric` → `Metric`, `Event` →
`LogEvent`, `Trace` → `Span`; siumai's `GenerationEvent` → `LLMCall`, `ToolExecutionEvent` →
`ToolExecution`, `OrchestratorEvent` → `Orchestration`, `SpanEvent` → `Span`.

Construction is cheap and checks only what `__post_init__` can check quickly (non-negative durations,
finite metric values); the static limits of `_limits` (string lengths, ranges) are enforced by the
decoder, so `validate_item` round-trips an item through it. Errors: `EventValidationError` (from
`validate_item` and `decode_items`), `ValueError` from constructors.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

import msgspec

from llmpulse.events._codec import EventValidationError, _check_metadata
from llmpulse.events._limits import MAX_LATENCY_MS, Limits
from llmpulse.events._schema import ErrorInfo, Id, LLMCall, Metadata, Millis, Name, Text, Timestamp

SPAN_TYPE: Final = "span"
TOOL_TYPE: Final = "tool"
ORCHESTRATION_TYPE: Final = "orchestration"
METRIC_TYPE: Final = "metric"
LOG_TYPE: Final = "log"

#: A span's outcome.
SpanStatus = Literal["ok", "error"]
#: An orchestration step's outcome.
StepStatus = Literal["ok", "error", "cancelled"]
#: The kind of a metric (telemetry-bootstrap's `MetricType`).
MetricType = Literal["counter", "gauge", "histogram"]
#: The severity of a log event (telemetry-bootstrap's `EventSeverity`).
Severity = Literal["debug", "info", "warning", "error", "critical"]
#: What an orchestration event describes.
OrchestrationKind = Literal["step", "agent", "workflow"]

Attributes = dict[str, Any]
Tags = dict[Name, Annotated[str, msgspec.Meta(max_length=1024)]]


def _now() -> datetime:
    return datetime.now(UTC)


def new_trace_id() -> str:
    """A random W3C trace id: 32 lowercase hex digits, never all zeros. Does not block."""
    return f"{random.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    """A random W3C span id: 16 lowercase hex digits, never all zeros. Does not block."""
    return f"{random.getrandbits(64) or 1:016x}"


def _check_duration(value: float | None, field: str) -> None:
    if value is not None and not 0 <= value <= MAX_LATENCY_MS:
        raise ValueError(f"`{field}` must be between 0 and {MAX_LATENCY_MS:g} ms, got {value!r}")


class Span(msgspec.Struct, tag=SPAN_TYPE, tag_field="type", kw_only=True, omit_defaults=False):
    """One timed operation in a trace (siumai's `SpanEvent`, telemetry-bootstrap's `Trace`).

    Ids are W3C trace-context ids (32 and 16 hex digits) and are generated when not given.
    `end_time`/`duration_ms` are None while a span is open. `attributes` carry anything else;
    prompt/completion content goes under `attributes["input"]` / `attributes["output"]` so that
    `record_inputs` / `record_outputs` can strip it.
    """

    name: Name
    trace_id: Id = msgspec.field(default_factory=new_trace_id)
    span_id: Id = msgspec.field(default_factory=new_span_id)
    parent_span_id: Id | None = None
    start_time: Timestamp = msgspec.field(default_factory=_now)
    end_time: Timestamp | None = None
    duration_ms: Millis | None = None
    status: SpanStatus = "ok"
    error: ErrorInfo = None
    attributes: Attributes | None = None

    def __post_init__(self) -> None:
        _check_duration(self.duration_ms, "duration_ms")
        if self.end_time is not None and self.end_time < self.start_time:
            raise ValueError("`end_time` must not be before `start_time`")


class ToolExecution(msgspec.Struct, tag=TOOL_TYPE, tag_field="type", kw_only=True, omit_defaults=False):
    """One tool (function) call made on behalf of a model (siumai's `ToolExecutionEvent`).

    `arguments` (input) and `result` (output) are recorded only when the collector's
    `record_inputs` / `record_outputs` allow it. A non-null `error` makes `status` `"error"`.
    """

    name: Name
    timestamp: Timestamp = msgspec.field(default_factory=_now)
    tool_call_id: Id | None = None
    arguments: Any = None
    result: Any = None
    duration_ms: Millis | None = None
    status: SpanStatus | None = None
    error: ErrorInfo = None
    trace_id: Id | None = None
    span_id: Id | None = None
    parent_span_id: Id | None = None
    metadata: Metadata | None = None

    def __post_init__(self) -> None:
        _check_duration(self.duration_ms, "duration_ms")
        if self.status is None:
            self.status = "error" if self.error is not None else "ok"


class Orchestration(
    msgspec.Struct, tag=ORCHESTRATION_TYPE, tag_field="type", kw_only=True, omit_defaults=False
):
    """A step, agent turn or whole workflow of a multi-step run (siumai's `OrchestratorEvent`).

    `step` numbers or names the step inside its workflow; `steps` lists the steps of a workflow.
    """

    name: Name
    kind: OrchestrationKind = "step"
    timestamp: Timestamp = msgspec.field(default_factory=_now)
    step: int | Name | None = None
    steps: list[Name] | None = None
    status: StepStatus = "ok"
    duration_ms: Millis | None = None
    error: ErrorInfo = None
    trace_id: Id | None = None
    span_id: Id | None = None
    parent_span_id: Id | None = None
    metadata: Metadata | None = None

    def __post_init__(self) -> None:
        _check_duration(self.duration_ms, "duration_ms")


class Metric(msgspec.Struct, tag=METRIC_TYPE, tag_field="type", kw_only=True, omit_defaults=False):
    """A numerical measurement: a counter increment, a gauge reading or one histogram observation.

    Metrics are already aggregates, so the collector never samples them out.
    """

    name: Name
    value: float
    metric_type: MetricType = "gauge"
    tags: Tags | None = None
    unit: Name | None = None
    timestamp: Timestamp = msgspec.field(default_factory=_now)

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"`value` must be a finite number, got {self.value!r}")
        if self.metric_type == "counter" and self.value < 0:
            raise ValueError(f"`value` of a counter must not be negative, got {self.value!r}")


class LogEvent(msgspec.Struct, tag=LOG_TYPE, tag_field="type", kw_only=True, omit_defaults=False):
    """A discrete structured event with a severity (telemetry-bootstrap's `Event`)."""

    name: Name
    message: Text = ""
    severity: Severity = "info"
    timestamp: Timestamp = msgspec.field(default_factory=_now)
    trace_id: Id | None = None
    span_id: Id | None = None
    metadata: Metadata | None = None


#: Everything a `Collector` records.
TelemetryItem = LLMCall | Span | ToolExecution | Orchestration | Metric | LogEvent

#: The `type` tag of each telemetry item class.
ITEM_TYPES: Final[dict[str, type[TelemetryItem]]] = {
    "llm.call": LLMCall,
    SPAN_TYPE: Span,
    TOOL_TYPE: ToolExecution,
    ORCHESTRATION_TYPE: Orchestration,
    METRIC_TYPE: Metric,
    LOG_TYPE: LogEvent,
}

_to_builtins: Final = msgspec.to_builtins
_items_decoder: Final = msgspec.json.Decoder(list[TelemetryItem])
_item_decoders: Final[dict[type[Any], msgspec.json.Decoder[Any]]] = {
    cls: msgspec.json.Decoder(cls) for cls in ITEM_TYPES.values()
}
_encoder: Final = msgspec.json.Encoder()
_DEFAULT_LIMITS: Final = Limits()


def to_dict(item: TelemetryItem) -> dict[str, Any]:
    """The item's JSON form as a dict (equal to decoding `encode_json(item)`), `type` tag included.

    Timestamps become RFC 3339 strings. Does not block; costs a few microseconds.
    """
    result: dict[str, Any] = _to_builtins(item)
    return result


def encode_item(item: TelemetryItem) -> bytes:
    """The item's JSON encoding (the same bytes `encode_json` gives an `LLMCall`). Does not block."""
    return _encoder.encode(item)


def decode_items(body: bytes) -> list[TelemetryItem]:
    """Decode a JSON array of tagged telemetry items, enforcing the static limits.

    Raises `EventValidationError` naming the offending field.
    """
    try:
        items: list[TelemetryItem] = _items_decoder.decode(body)
    except msgspec.MsgspecError as exc:
        raise EventValidationError(str(exc)) from exc
    return items


def validate_item(item: TelemetryItem, limits: Limits | None = None) -> TelemetryItem:
    """Check an item against every limit by re-decoding its JSON form; returns the decoded copy.

    Constructors skip the static limits (string lengths, ranges) for speed; use this where an item
    built by hand must be proven valid. Raises `EventValidationError` naming the field. Does not block.
    """
    cls = type(item)
    try:
        checked: TelemetryItem = _item_decoders[cls].decode(_encoder.encode(item))
    except KeyError:
        raise EventValidationError(f"not a telemetry item: {cls.__name__}") from None
    except (msgspec.MsgspecError, ValueError) as exc:
        raise EventValidationError(str(exc)) from exc
    lim = limits or _DEFAULT_LIMITS
    for field in ("metadata", "attributes"):
        value = getattr(checked, field, None)
        if value:
            try:
                _check_metadata(value, lim)
            except EventValidationError as exc:
                raise EventValidationError(str(exc).replace("`metadata`", f"`{field}`")) from None
    return checked


def items_to_dicts(items: Sequence[TelemetryItem]) -> list[dict[str, Any]]:
    """`to_dict` over a sequence, in one call (what an export worker does for a batch)."""
    result: list[dict[str, Any]] = _to_builtins(items)
    return result
