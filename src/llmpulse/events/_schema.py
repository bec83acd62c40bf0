"""The wire schema: the StreamLens request/response bodies and the combined call event.

Each event is a `msgspec.Struct` tagged by its `type` field, so a batch decodes in one pass with
strict typing (no coercion: a string is never a number). Field constraints that do not depend on
settings are part of the types; see `_limits` for the numbers and `_codec` for the dynamic checks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec

from llmpulse.events._limits import (
    MAX_COST_USD,
    MAX_ID_LEN,
    MAX_LATENCY_MS,
    MAX_NAME_LEN,
    MAX_TEXT_LEN,
    MAX_TOKENS,
)

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LEN)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LEN)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_LEN)]
Tokens = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]
Millis = Annotated[float, msgspec.Meta(ge=0, le=MAX_LATENCY_MS)]
Usd = Annotated[float, msgspec.Meta(ge=0, le=MAX_COST_USD)]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
#: A call event's timestamp: with a UTC offset, or without one (token-copilot sends local or UTC
#: wall-clock time without an offset); `_codec` reads an offset-less one in
#: `Limits.naive_timestamp_tz` or refuses it.
CallTimestamp = datetime
Metadata = dict[str, Any]
ErrorInfo = Text | dict[str, Any] | None

#: Route used when an event names none.
DEFAULT_ROUTE: Final = "default"
#: Tenant used when a call event names none.
DEFAULT_TENANT: Final = "default"

Status = Literal["ok", "error", "cancelled"]
#: Where a call event's `cost` came from: the provider's own figure, or the sender's estimate.
CostSource = Literal["provider", "estimate", "genai-prices"]

REQUEST_TYPE: Final = "llm.request"
RESPONSE_TYPE: Final = "llm.response"
CALL_TYPE: Final = "llm.call"


class LLMRequest(msgspec.Struct, tag=REQUEST_TYPE, tag_field="type", kw_only=True, omit_defaults=True):
    """The request half of a model call (StreamLens `POST /v1/llm/request`).

    `timestamp` is the event time that places the call in its one-minute window.
    """

    request_id: Id
    tenant_id: Name
    model: Name
    timestamp: Timestamp
    prompt_tokens: Tokens
    route: Name = DEFAULT_ROUTE
    user_id_hash: Id | None = None
    metadata: Metadata | None = None


class LLMResponse(msgspec.Struct, tag=RESPONSE_TYPE, tag_field="type", kw_only=True, omit_defaults=True):
    """The response half of a model call (StreamLens `POST /v1/llm/response`).

    A non-null `error` (a string or an object) makes the call an error. `tenant_id` is llmpulse's
    addition (optional; with API keys, ingest sets it to the key's tenant): a response that names
    its tenant joins that tenant's request only; one that names none joins the request of its
    `request_id` when exactly one tenant has used that id (see `llmpulse.pipeline`).
    """

    request_id: Id
    timestamp: Timestamp
    latency_ms: Millis
    completion_tokens: Tokens = 0
    finish_reason: Text | None = None
    error: ErrorInfo = None
    ttft_ms: Millis | None = None
    tenant_id: Name | None = None

    @property
    def is_error(self) -> bool:
        """True when the response carries an error."""
        return self.error is not None


class LLMCall(msgspec.Struct, tag=CALL_TYPE, tag_field="type", kw_only=True, omit_defaults=False):
    """One whole model call, for clients that know both halves at once (the SDK's normal case).

    The JSON form carries the token-copilot cost-event fields (`timestamp`, `event_type`, `model`,
    `input_tokens`, `output_tokens`, `total_tokens`, `cost`, `user_id`, `org_id`, `session_id`,
    `feature`, `endpoint`, `environment`, `metadata`) plus llmpulse's own. Token convention (OpenTelemetry
    GenAI, genai-prices): `input_tokens` is the whole prompt, cached reads and cache writes included;
    `output_tokens` includes `reasoning_tokens`. `timestamp` is when the call started; `cost` is in USD,
    `None` when unknown; `cost_source` says where a `cost` came from (``provider``, the sender's
    ``estimate``, or ``genai-prices`` when the sender priced it with genai-prices; a cost without a
    source is an estimate).
    """

    model: Name
    timestamp: CallTimestamp
    input_tokens: Tokens = 0
    output_tokens: Tokens = 0
    total_tokens: Tokens | None = None
    cost: Usd | None = None
    cost_source: CostSource | None = None
    event_type: Literal["llm_cost"] = "llm_cost"
    request_id: Id | None = None
    tenant_id: Name = DEFAULT_TENANT
    route: Name = DEFAULT_ROUTE
    provider: Name | None = None
    response_model: Name | None = None
    latency_ms: Millis | None = None
    ttft_ms: Millis | None = None
    cached_input_tokens: Tokens = 0
    cache_write_tokens: Tokens = 0
    reasoning_tokens: Tokens = 0
    finish_reason: Text | None = None
    error: ErrorInfo = None
    status: Status | None = None
    user_id: Name | None = None
    org_id: Name | None = None
    session_id: Name | None = None
    feature: Name | None = None
    endpoint: Name | None = None
    environment: Name | None = None
    user_id_hash: Id | None = None
    trace_id: Id | None = None
    span_id: Id | None = None
    parent_span_id: Id | None = None
    metadata: Metadata | None = None

    def __post_init__(self) -> None:
        if self.cached_input_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError(
                "`cached_input_tokens` + `cache_write_tokens` must not exceed `input_tokens` "
                "(input_tokens counts the whole prompt, cached tokens included)"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError(
                "`reasoning_tokens` must not exceed `output_tokens` (output_tokens includes reasoning)"
            )
        if self.total_tokens is None:
            self.total_tokens = self.input_tokens + self.output_tokens
        if self.status is None:
            self.status = "error" if self.error is not None else "ok"

    @property
    def is_error(self) -> bool:
        """True when the call failed (an error was recorded or the status says so)."""
        return self.status == "error" or self.error is not None


#: Every kind of event the ingest API and the event log carry.
Event = LLMRequest | LLMResponse | LLMCall

#: The `type` tag of each event class.
EVENT_TYPES: Final[dict[str, type[Event]]] = {
    REQUEST_TYPE: LLMRequest,
    RESPONSE_TYPE: LLMResponse,
    CALL_TYPE: LLMCall,
}
