"""Building call records (`llmpulse.store.CallRecord`) from the events the processor counts. Pure.

One place decides what a record holds:

* **status**: a call event's own status (``ok``, ``error``, ``cancelled``), ``error`` whenever
  it counts as an error in its window (it carries an error); a pair is ``error`` when its response
  carries one, else ``ok``; a request whose response did not come in time is ``timeout``.
* **error**: a string error is the message (no type); an object gives its ``type`` (else ``code``)
  as the type and its ``message`` as the message (else the whole object as compact JSON). The type is
  cut to `MAX_ERROR_TYPE_LEN` and the message to `MAX_ERROR_MESSAGE_LEN` characters.
* **cost** (`call_cost`, the one place that chooses the figure that counts, for the window and the
  record alike): a call event's own cost from its ``provider`` always counts, as does one its sender
  priced with ``genai-prices``; an ``estimate`` (or a cost without a source: token-copilot's static
  price table) counts as the policy `EstimateCost` says (``genai-prices``, the default: genai-prices'
  figure when it knows the model, else the event's; ``event``: the event's); a call without a cost
  is priced with genai-prices; an unknown cost is None. The record keeps the event's own figure in
  ``sender_cost_usd`` whichever counts.
* **cost_source**: where the counted figure came from: ``provider``, ``estimate`` (the sender's),
  ``genai-prices``; None when unknown.
* **attribution**: a call event's own ``user_id``, ``org_id``, ``session_id``, ``feature``,
  ``endpoint`` and ``environment``; a StreamLens request has only ``user_id_hash`` and ``metadata``,
  so string values under those six names in its metadata are used.
* **metadata**: compact JSON, at most `MAX_RECORD_METADATA_BYTES`; larger metadata keeps its first
  keys that fit and gains ``"_truncated": true``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Literal

import msgspec

from llmpulse.events import LLMCall, LLMRequest, LLMResponse
from llmpulse.store import (
    MAX_ERROR_MESSAGE_LEN,
    MAX_ERROR_TYPE_LEN,
    MAX_RECORD_METADATA_BYTES,
    CallRecord,
)

#: Which figure counts for a call event's estimated cost (an ``estimate`` or a cost without a
#: source): ``genai-prices`` (genai-prices' figure when it knows the model, else the event's) or
#: ``event`` (the event's own).
EstimateCost = Literal["genai-prices", "event"]
#: The values of `EstimateCost`.
ESTIMATE_COSTS: Final = ("genai-prices", "event")

#: The attribution fields a StreamLens request may carry in its metadata.
ATTRIBUTION_KEYS: Final = ("user_id", "org_id", "session_id", "feature", "endpoint", "environment")
_MAX_ATTR_LEN: Final = 256
_encode: Final = msgspec.json.Encoder().encode
_new: Final = tuple.__new__


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_parts(error: Any) -> tuple[str | None, str | None]:
    """(error_type, error_message) of an event's `error` (None, a string or an object). Pure."""
    if error is None:
        return None, None
    if isinstance(error, str):
        return None, _cut(error, MAX_ERROR_MESSAGE_LEN)
    if isinstance(error, dict):
        kind = error.get("type")
        if kind is None:
            kind = error.get("code")
        message = error.get("message")
        if not isinstance(message, str):
            message = _encode(error).decode()
        return (
            None if kind is None else _cut(str(kind), MAX_ERROR_TYPE_LEN),
            _cut(message, MAX_ERROR_MESSAGE_LEN),
        )
    return None, _cut(str(error), MAX_ERROR_MESSAGE_LEN)


def bounded_metadata(metadata: dict[str, Any] | None) -> str | None:
    """`metadata` as compact JSON of at most `MAX_RECORD_METADATA_BYTES` (see the module). Pure."""
    if not metadata:
        return None
    text = _encode(metadata)
    if len(text) <= MAX_RECORD_METADATA_BYTES:
        return text.decode()
    kept: dict[str, Any] = {}
    budget = MAX_RECORD_METADATA_BYTES - len(b',"_truncated":true}') - 1
    used = 0
    for key, value in metadata.items():
        item = len(_encode({key: value})) - 1  # '"k":v' plus a comma
        if used + item > budget:
            continue
        kept[key] = value
        used += item
    kept["_truncated"] = True
    return _encode(kept).decode()


def _attr(metadata: dict[str, Any] | None, name: str) -> str | None:
    if not metadata:
        return None
    value = metadata.get(name)
    if isinstance(value, str) and 0 < len(value) <= _MAX_ATTR_LEN:
        return value
    return None


def pair_record(
    req: LLMRequest, resp: LLMResponse, cost: float | None, now: float, started_at: float
) -> CallRecord:
    """The record of a joined request and response; `cost` as counted (None: unknown). Pure."""
    meta = req.metadata
    error_type, error_message = error_parts(resp.error)
    return _new(
        CallRecord,
        (
            req.tenant_id,
            req.request_id,
            started_at,
            req.route,
            req.model,
            None,
            "ok" if resp.error is None else "error",
            error_type,
            error_message,
            resp.latency_ms,
            resp.ttft_ms,
            req.prompt_tokens,
            resp.completion_tokens,
            0,
            0,
            0,
            cost,
            None if cost is None else "genai-prices",
            _attr(meta, "user_id") if meta else None,
            req.user_id_hash,
            _attr(meta, "org_id") if meta else None,
            _attr(meta, "session_id") if meta else None,
            _attr(meta, "feature") if meta else None,
            _attr(meta, "endpoint") if meta else None,
            _attr(meta, "environment") if meta else None,
            None,
            None,
            bounded_metadata(meta) if meta else None,
            now,
            None,
        ),
    )


def timeout_record(req: LLMRequest, cost: float | None, now: float) -> CallRecord:
    """The record of a request counted as a timeout: its prompt alone, `cost` of the prompt. Pure."""
    meta = req.metadata
    return CallRecord(
        tenant_id=req.tenant_id,
        request_id=req.request_id,
        started_at=req.timestamp.timestamp(),
        route=req.route,
        model=req.model,
        provider=None,
        status="timeout",
        error_type="timeout",
        error_message=None,
        latency_ms=None,
        ttft_ms=None,
        input_tokens=req.prompt_tokens,
        output_tokens=0,
        cached_input_tokens=0,
        cache_write_tokens=0,
        reasoning_tokens=0,
        cost_usd=cost,
        cost_source=None if cost is None else "genai-prices",
        user_id=_attr(meta, "user_id"),
        user_id_hash=req.user_id_hash,
        org_id=_attr(meta, "org_id"),
        session_id=_attr(meta, "session_id"),
        feature=_attr(meta, "feature"),
        endpoint=_attr(meta, "endpoint"),
        environment=_attr(meta, "environment"),
        trace_id=None,
        span_id=None,
        metadata=bounded_metadata(meta),
        updated_at=now,
    )


def call_cost(
    call: LLMCall, estimate_cost: EstimateCost, price: Callable[[LLMCall], float | None]
) -> tuple[float | None, str | None]:
    """(the cost that counts, its source) of a call event under `estimate_cost` (see the module).

    `price` is genai-prices' figure for the call (None: unknown model); it is asked only when the
    answer may use it. Pure when `price` is.
    """
    own = call.cost
    if own is None:
        priced = price(call)
        return priced, None if priced is None else "genai-prices"
    source = call.cost_source
    if source == "provider" or source == "genai-prices":
        return own, source
    if estimate_cost == "genai-prices":
        priced = price(call)
        if priced is not None:
            return priced, "genai-prices"
    return own, "estimate"


def call_record(
    call: LLMCall, request_id: str, cost: float | None, source: str | None, now: float
) -> CallRecord:
    """The record of a call event; `cost` and `source` as `call_cost` chose them. Pure."""
    error_type, error_message = error_parts(call.error)
    status = "error" if call.is_error else (call.status or "ok")
    return _new(
        CallRecord,
        (
            call.tenant_id,
            request_id,
            call.timestamp.timestamp(),
            call.route,
            call.model,
            call.provider,
            status,
            error_type,
            error_message,
            call.latency_ms,
            call.ttft_ms,
            call.input_tokens,
            call.output_tokens,
            call.cached_input_tokens,
            call.cache_write_tokens,
            call.reasoning_tokens,
            cost,
            source,
            call.user_id,
            call.user_id_hash,
            call.org_id,
            call.session_id,
            call.feature,
            call.endpoint,
            call.environment,
            call.trace_id,
            call.span_id,
            bounded_metadata(call.metadata) if call.metadata else None,
            now,
            call.cost,
        ),
    )
