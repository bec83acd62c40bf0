"""OTLP spans into `LLMCall` events: which spans are model calls and what each attribute becomes.

`read_export` is the one mapping both OTLP transports call (``POST /v1/traces`` in
`llmpulse.server._otlp`, OTLP/gRPC in `llmpulse.server._otlp_grpc`); it is pure and CPU-bound. A span
is a model call when it is an OpenTelemetry GenAI span (``gen_ai.operation.name`` in
`CALL_OPERATIONS`, or, from instrumentations older than that attribute, ``llm.request.type``) or an
OpenInference ``LLM`` span. The attributes read, per instrumentation, are tabled in
docs/otlp-receiver.md and docs/compatibility.md. Errors: `SpanRejected` (one span breaks a limit:
reported in the answer's ``partial_success``, the rest of the export kept).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import msgspec

from llmpulse.events import CALL_TYPE, EventValidationError, Limits, LLMCall, check_event
from llmpulse.events._limits import MAX_LATENCY_MS, MAX_TOKENS
from llmpulse.server._errors import ApiError
from llmpulse.server._otlp_decode import hex_id, value_of
from llmpulse.server._otlp_dialects import (
    TTFT_ATTRIBUTES,
    LogfirePart,
    first_chunk_offset_s,
    logfire_part,
    logfire_stream_duration_s,
    raw_usage_tokens,
    requested_model,
    streamed,
)
from llmpulse.server._settings import ServerSettings

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

CALL_OPERATIONS: Final = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
#: The attributes naming a span's tenant and route (on the span, else on its resource).
TENANT_ATTRIBUTE: Final = "llmpulse.tenant_id"
ROUTE_ATTRIBUTE: Final = "llmpulse.route"
#: Pre-``gen_ai.operation.name`` instrumentations (OpenLLMetry) name the call type here.
_LEGACY_REQUEST_TYPES: Final = frozenset({"chat", "completion", "embedding"})
_STATUS_CODE_ERROR: Final = 2
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_METADATA_PREFIX: Final = "llmpulse.metadata."
_MAX_ERROR_TEXT: Final = 1024
#: At most this many rejection reasons are quoted in ``partial_success.error_message``.
_QUOTED_REJECTIONS: Final = 5


class SpanRejected(ValueError):
    """A call span breaks a limit or carries an unusable attribute; the message names it."""


@dataclass(slots=True)
class Export:
    """One export request read into calls: the events to append and what happened to each span."""

    calls: list[LLMCall] = field(default_factory=list)
    received: int = 0
    ignored: int = 0
    rejections: list[str] = field(default_factory=list)

    def error_message(self) -> str:
        """The ``partial_success.error_message``: how many spans were rejected, and the first reasons."""
        shown = "; ".join(self.rejections[:_QUOTED_REJECTIONS])
        more = "; ..." if len(self.rejections) > _QUOTED_REJECTIONS else ""
        return f"{len(self.rejections)} of {self.received} spans rejected: {shown}{more}"


def _named(span_attrs: Mapping[str, Any], resource_attrs: Mapping[str, Any], key: str) -> str | None:
    """A string attribute of the span, else of its resource; None when neither has a non-empty one."""
    for attrs in (span_attrs, resource_attrs):
        value = attrs.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise SpanRejected(f"`{key}` must be a string, got {value!r}")
        return value
    return None


def _tenant_of(
    span_attrs: Mapping[str, Any], resource_attrs: Mapping[str, Any], settings: ServerSettings
) -> str:
    """The tenant of a call span: ``llmpulse.tenant_id`` of the span, else of the resource, else
    ``settings.otlp_default_tenant``. Pure.

    The one place the receiver assigns tenants; an authenticated key's tenant, once the server has
    keys, is applied after this (in the ingest path) and wins. Raises `SpanRejected` for a
    non-string attribute.
    """
    return _named(span_attrs, resource_attrs, TENANT_ATTRIBUTE) or settings.otlp_default_tenant


def _route_of(
    span_attrs: Mapping[str, Any], resource_attrs: Mapping[str, Any], settings: ServerSettings
) -> str:
    """The route of a call span: ``llmpulse.route`` of the span, else of the resource, else the default."""
    return _named(span_attrs, resource_attrs, ROUTE_ATTRIBUTE) or settings.otlp_default_route


def _string(raw: Mapping[str, AnyValue], key: str) -> str | None:
    value = raw.get(key)
    if value is None or value.WhichOneof("value") != "string_value":
        return None
    return value.string_value


def _operation(raw: Mapping[str, AnyValue]) -> str | None:
    """The span's model-call operation, or None when it is not a model call."""
    operation = _string(raw, "gen_ai.operation.name")
    if operation is not None:
        return operation if operation in CALL_OPERATIONS else None
    kind = _string(raw, "openinference.span.kind")
    if kind is not None:
        return "llm" if kind.upper() == "LLM" else None
    legacy = _string(raw, "llm.request.type")
    if legacy in _LEGACY_REQUEST_TYPES and ("gen_ai.system" in raw or "gen_ai.request.model" in raw):
        return legacy
    return None


def _first(attrs: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, Any]:
    for key in keys:
        value = attrs.get(key)
        if value is not None:
            return key, value
    return keys[0], None


def _tokens(attrs: Mapping[str, Any], *keys: str) -> int:
    key, value = _first(attrs, keys)
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise SpanRejected(f"`{key}` must be an integer, got {value!r}")
    if not 0 <= value <= MAX_TOKENS:
        raise SpanRejected(f"`{key}` must be in 0..{MAX_TOKENS}, got {value}")
    return value


def _number(attrs: Mapping[str, Any], key: str) -> float | None:
    value = attrs.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise SpanRejected(f"`{key}` must be a non-negative number, got {value!r}")
    return float(value)


def _text(attrs: Mapping[str, Any], *keys: str) -> str | None:
    """A name-like attribute as a string (integers, such as numeric user ids, are written out)."""
    key, value = _first(attrs, keys)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise SpanRejected(f"`{key}` must be a string, got {value!r}")


def _finish_reason(attrs: Mapping[str, Any]) -> str | None:
    value = attrs.get("gen_ai.response.finish_reasons")
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return str(value) if value not in (None, "") else None


def _error(span: ProtoSpan, attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    error_type = attrs.get("error.type")
    if span.status.code != _STATUS_CODE_ERROR and error_type in (None, ""):
        return None
    error: dict[str, Any] = {"type": str(error_type) if error_type not in (None, "") else "_OTHER"}
    if span.status.message:
        error["message"] = span.status.message[:_MAX_ERROR_TEXT]
    return error


def _ttft_ms(span: ProtoSpan, attrs: Mapping[str, Any]) -> float | None:
    """Time to first token: the first of `TTFT_ATTRIBUTES` (seconds), else the first chunk event.

    None for a call the span says was not streamed (OpenLIT writes its whole duration there).
    Raises `SpanRejected` when the attribute is negative or not a number.
    """
    if streamed(attrs) is False:
        return None
    for key in TTFT_ATTRIBUTES:
        seconds = _number(attrs, key)
        if seconds is not None:
            return seconds * 1000.0
    offset = first_chunk_offset_s(span)
    return offset * 1000.0 if offset is not None else None


#: ``gen_ai.usage.cost.source`` values (the proposed GenAI cost attributes) that are the provider's.
_PROVIDER_COST_SOURCES: Final = frozenset({"provider"})
_COST_SOURCES: Final = frozenset({"provider", "estimate", "genai-prices"})


def _cost(attrs: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """The cost (USD) and its source: ``llmpulse.cost_usd`` / ``llmpulse.cost_source``, else the
    proposed ``gen_ai.usage.cost.amount`` (in USD) / ``gen_ai.usage.cost.source``. Raises `SpanRejected`.
    """
    cost = _number(attrs, "llmpulse.cost_usd")
    if cost is not None:
        source = attrs.get("llmpulse.cost_source")
        if source is not None and source not in _COST_SOURCES:
            raise SpanRejected(
                f"`llmpulse.cost_source` must be one of {', '.join(sorted(_COST_SOURCES))}, got {source!r}"
            )
        return cost, source
    amount = _number(attrs, "gen_ai.usage.cost.amount")
    currency = attrs.get("gen_ai.usage.cost.currency")
    if amount is None or currency not in (None, "USD"):
        return None, None  # a cost in another currency is left to the server's own pricing
    source = attrs.get("gen_ai.usage.cost.source")
    return amount, "provider" if source in _PROVIDER_COST_SOURCES else "estimate"


def _metadata(attrs: Mapping[str, Any], resource_attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    metadata = {k[len(_METADATA_PREFIX) :]: v for k, v in attrs.items() if k.startswith(_METADATA_PREFIX)}
    service = resource_attrs.get("service.name")
    if isinstance(service, str) and service:
        metadata["service.name"] = service
    return metadata or None


@dataclass(frozen=True, slots=True)
class _Context:
    """What every span of one export is checked against."""

    settings: ServerSettings
    limits: Limits
    now: datetime
    earliest: datetime
    latest: datetime

    @classmethod
    def at(cls, settings: ServerSettings, now: datetime) -> _Context:
        limits = settings.limits
        earliest = now - timedelta(seconds=limits.max_past_s)
        return cls(settings, limits, now, earliest, now + timedelta(seconds=limits.max_future_s))


def _call_of(span: ProtoSpan, resource_attrs: Mapping[str, Any], ctx: _Context) -> LLMCall | None:
    """The `LLMCall` a span describes, None when it is not a model call. Raises `SpanRejected`."""
    raw = {kv.key: kv.value for kv in span.attributes}
    if _operation(raw) is None:
        return None
    attrs = {key: value_of(value) for key, value in raw.items()}
    error = _error(span, attrs)
    part = logfire_part(attrs, error is not None)
    if part is LogfirePart.STREAM_HEAD:
        return None  # its stream's "streaming response" log is the call
    trace_id, span_id = hex_id(span.trace_id), hex_id(span.span_id)
    if trace_id is None or len(span.trace_id) != 16:
        raise SpanRejected("`traceId` must be 16 bytes and not all zero")
    if span_id is None or len(span.span_id) != 8:
        raise SpanRejected("`spanId` must be 8 bytes and not all zero")
    start_ns, end_ns = span.start_time_unix_nano, span.end_time_unix_nano
    if start_ns == 0:
        raise SpanRejected("`startTimeUnixNano` is missing")
    if end_ns < start_ns:
        raise SpanRejected("`endTimeUnixNano` is before `startTimeUnixNano`")
    duration_s = logfire_stream_duration_s(attrs) if part is LogfirePart.STREAM_LOG else None
    if duration_s is not None:  # the log is written when the stream ends: it started `duration` before
        start_ns = max(1, end_ns - round(duration_s * 1e9))
    started = _EPOCH + timedelta(microseconds=start_ns // 1000)
    if started < ctx.earliest:
        raise SpanRejected(
            f"span start {started.isoformat()} (`startTimeUnixNano`) is more than "
            f"{ctx.limits.max_past_s:g} s in the past (raise the server's max event age to backfill)"
        )
    if started > ctx.latest:
        raise SpanRejected(
            f"span start {started.isoformat()} (`startTimeUnixNano`) is more than "
            f"{ctx.limits.max_future_s:g} s in the future"
        )
    latency_ms = (end_ns - start_ns) / 1e6
    if latency_ms > MAX_LATENCY_MS:
        raise SpanRejected(
            f"span duration {latency_ms / 1000:g} s is over the limit of {MAX_LATENCY_MS / 1000:g} s"
        )
    cost, cost_source = _cost(attrs)
    raw_cached, raw_reasoning = raw_usage_tokens(attrs)
    parent = hex_id(span.parent_span_id)
    fields: dict[str, Any] = {
        "type": CALL_TYPE,
        "model": _text(attrs, "gen_ai.request.model")
        or requested_model(attrs)
        or _text(attrs, "llm.model_name", "gen_ai.response.model")
        or "unknown",
        "response_model": _text(attrs, "gen_ai.response.model", "llm.model_name"),
        "provider": _text(attrs, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"),
        "timestamp": started,
        "latency_ms": latency_ms,
        "ttft_ms": _ttft_ms(span, attrs),
        "input_tokens": _tokens(
            attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"
        ),
        "output_tokens": _tokens(
            attrs,
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
            "llm.token_count.completion",
        ),
        "cached_input_tokens": _tokens(
            attrs, "gen_ai.usage.cache_read.input_tokens", "llm.token_count.prompt_details.cache_read"
        )
        or raw_cached
        or 0,
        "cache_write_tokens": _tokens(
            attrs, "gen_ai.usage.cache_creation.input_tokens", "llm.token_count.prompt_details.cache_write"
        ),
        "reasoning_tokens": _tokens(
            attrs,
            "gen_ai.usage.reasoning.output_tokens",
            "gen_ai.usage.reasoning_tokens",
            "gen_ai.usage.completion_tokens_details.reasoning_tokens",
            "llm.token_count.completion_details.reasoning",
        )
        or raw_reasoning
        or 0,
        "cost": cost,
        "cost_source": cost_source,
        "finish_reason": _finish_reason(attrs),
        "error": error,
        "status": "error" if error is not None else "ok",
        "request_id": f"otlp-{trace_id}-{span_id}",
        "tenant_id": _tenant_of(attrs, resource_attrs, ctx.settings),
        "route": _route_of(attrs, resource_attrs, ctx.settings),
        "user_id": _text(attrs, "user.id", "enduser.id"),
        "session_id": _text(attrs, "session.id", "gen_ai.conversation.id"),
        "org_id": _text(attrs, "llmpulse.org_id"),
        "user_id_hash": _text(attrs, "llmpulse.user_id_hash"),
        "feature": _text(attrs, "llmpulse.feature"),
        "endpoint": _text(attrs, "llmpulse.endpoint"),
        "environment": _text(attrs, "llmpulse.environment")
        or _text(resource_attrs, "deployment.environment.name", "deployment.environment"),
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "metadata": _metadata(attrs, resource_attrs),
    }
    try:
        call = msgspec.convert(fields, LLMCall)
        checked = check_event(call, ctx.limits, ctx.now)
    except (msgspec.ValidationError, EventValidationError) as exc:
        raise SpanRejected(str(exc)) from None
    assert isinstance(checked, LLMCall)
    return checked


def read_export(request: ExportTraceServiceRequest, settings: ServerSettings, now: datetime) -> Export:
    """Turn every model-call span of a decoded export into an `LLMCall`. Pure, CPU-bound.

    Raises `ApiError` 413 when the export has more spans than ``limits.max_batch_items``.
    """
    total = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    if total > settings.limits.max_batch_items:
        raise ApiError(
            413,
            f"export has {total} spans; the limit is {settings.limits.max_batch_items} (max_batch_items): "
            "send smaller batches",
        )
    ctx = _Context.at(settings, now)
    export = Export(received=total)
    for resource_spans in request.resource_spans:
        resource_attrs = {kv.key: value_of(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                try:
                    call = _call_of(span, resource_attrs, ctx)
                except SpanRejected as exc:
                    who = hex_id(span.span_id) or "without id"
                    export.rejections.append(f"span {who} ({span.name[:64]!r}): {exc}")
                    continue
                if call is None:
                    export.ignored += 1
                else:
                    export.calls.append(call)
    return export
