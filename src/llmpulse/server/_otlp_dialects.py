"""What the GenAI instrumentations say differently, read in one place for the OTLP span mapping.

`llmpulse.server._otlp_calls` maps the attributes every instrumentation shares; the readers here
cover the rest, each naming the instrumentation it is for (docs/compatibility.md tables them):

* `ttft_seconds`: time to first token from an attribute (the conventions' name, OpenLIT's), else from
  the first span event that marks a streamed chunk (OpenLLMetry / Traceloop, OpenInference);
* `requested_model`: OpenInference's ``llm.invocation_parameters`` (a JSON string), the only place
  a failed call names its model;
* `raw_usage_tokens`: Logfire's ``gen_ai.usage.raw`` (the provider's usage object as JSON), the only
  place it gives reasoning tokens;
* `logfire_part`: Logfire describes a streamed call with two spans, a request span that ends when
  the stream opens (no usage) and a zero-duration "streaming response" log span written when the
  stream is consumed (usage, and the stream's ``duration``). The log is the call; the request span
  of a stream is not counted.

Pure functions of a span's decoded attributes; nothing here raises for a malformed optional
attribute (it is ignored and the span kept: a wrong ``llm.invocation_parameters`` must not lose the
call it describes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any, Final

import msgspec

if TYPE_CHECKING:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

#: Attributes holding the time to first token in seconds, first present wins: the GenAI
#: conventions' span attribute, then OpenLIT's (the name of the conventions' server metric).
TTFT_ATTRIBUTES: Final = ("gen_ai.response.time_to_first_chunk", "gen_ai.server.time_to_first_token")
#: Span events whose first occurrence marks the first streamed chunk: OpenLLMetry / Traceloop write
#: one per chunk, OpenInference one for the first.
FIRST_CHUNK_EVENTS: Final = frozenset({"gen_ai.content.completion.chunk", "First Token Stream Event"})
#: Attributes saying whether the call was streamed (OpenLIT, OpenLLMetry / Traceloop).
STREAM_FLAGS: Final = ("gen_ai.request.stream", "gen_ai.is_streaming")
#: Longest ``llm.invocation_parameters`` / ``gen_ai.usage.raw`` parsed (they are small JSON objects).
MAX_JSON_ATTRIBUTE: Final = 64 * 1024
_LOGFIRE_STREAM_LOG: Final = "streaming response from "


class LogfirePart(Enum):
    """The role of a Logfire span in a streamed call."""

    #: Not a Logfire stream span (a non-streamed call, a failure, or another instrumentation's span).
    NONE = "none"
    #: The request span of a stream: it ends when the stream opens; the log after it is the call.
    STREAM_HEAD = "stream_head"
    #: The "streaming response" log: the call, with usage and the stream's duration.
    STREAM_LOG = "stream_log"


def _json_object(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or len(value) > MAX_JSON_ATTRIBUTE:
        return None
    try:
        decoded = msgspec.json.decode(value)
    except msgspec.DecodeError:
        return None
    return decoded if isinstance(decoded, dict) else None


def requested_model(attrs: Mapping[str, Any]) -> str | None:
    """The ``model`` of OpenInference's ``llm.invocation_parameters`` JSON, None when absent or unusable."""
    params = _json_object(attrs.get("llm.invocation_parameters"))
    model = params.get("model") if params is not None else None
    return model if isinstance(model, str) and model else None


def raw_usage_tokens(attrs: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(cached input, reasoning) tokens from Logfire's ``gen_ai.usage.raw``; None where it says nothing.

    Reads OpenAI's usage shapes: chat completions' ``prompt_tokens_details.cached_tokens`` /
    ``completion_tokens_details.reasoning_tokens`` and the Responses API's ``input_tokens_details`` /
    ``output_tokens_details``. A figure that is not a non-negative integer is ignored (the span's
    own token attributes are still checked by the mapping).
    """
    usage = _json_object(attrs.get("gen_ai.usage.raw"))
    if usage is None:
        return None, None

    def figure(details_keys: tuple[str, str], key: str) -> int | None:
        for details_key in details_keys:
            details = usage.get(details_key)
            value = details.get(key) if isinstance(details, dict) else None
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return int(value)
        return None

    cached = figure(("prompt_tokens_details", "input_tokens_details"), "cached_tokens")
    reasoning = figure(("completion_tokens_details", "output_tokens_details"), "reasoning_tokens")
    return cached, reasoning


def streamed(attrs: Mapping[str, Any]) -> bool | None:
    """Whether the span says its call was streamed (True/False), None when it does not say."""
    for key in STREAM_FLAGS:
        value = attrs.get(key)
        if isinstance(value, bool):
            return value
    return None


def first_chunk_offset_s(span: ProtoSpan) -> float | None:
    """Seconds from the span's start to its first chunk event (`FIRST_CHUNK_EVENTS`), None without one."""
    start: int = span.start_time_unix_nano
    for event in span.events:
        at: int = event.time_unix_nano
        if event.name in FIRST_CHUNK_EVENTS and at >= start:
            return (at - start) / 1e9
    return None


def logfire_part(attrs: Mapping[str, Any], is_error: bool) -> LogfirePart:
    """The role of a Logfire GenAI span in a streamed call (`LogfirePart`). Pure.

    A Logfire request span (``logfire.span_type`` ``span``) that succeeded without a response id
    or any usage is the head of a stream: a non-streamed success always has them (Logfire records
    the response on the span), a failure has its error. Its call is the "streaming response" log
    (``logfire.span_type`` ``log``) written when the stream has been read; a stream that is never
    read writes no log, and is not counted.
    """
    span_type = attrs.get("logfire.span_type")
    if span_type == "log":
        template = attrs.get("logfire.msg_template")
        if isinstance(template, str) and template.startswith(_LOGFIRE_STREAM_LOG):
            return LogfirePart.STREAM_LOG
        return LogfirePart.NONE
    if span_type != "span" or is_error or "logfire.msg_template" not in attrs:
        return LogfirePart.NONE
    answered = ("gen_ai.response.id", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")
    if any(attrs.get(key) is not None for key in answered):
        return LogfirePart.NONE
    return LogfirePart.STREAM_HEAD


def logfire_stream_duration_s(attrs: Mapping[str, Any]) -> float | None:
    """The ``duration`` (seconds) of a Logfire "streaming response" log; None when unusable."""
    value = attrs.get("duration")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None
