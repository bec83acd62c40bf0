"""Instrumentation of one `openai.OpenAI` / `openai.AsyncOpenAI` client object.

Wraps `client.chat.completions.create` and `client.responses.create` on that client's own resource
objects (instance attributes; the classes and other clients are untouched), and `client.copy` /
`client.with_options` so that derived clients share the instrumentation.

Chat streams: unless the application passed `stream_options` (any value) or instrumentation was set
up with `stream_usage=False`, the request asks for `stream_options={"include_usage": True}` so the
provider reports the stream's usage in one extra final chunk whose `choices` is empty. That chunk is
consumed by the instrumentation and NOT given to the application, which therefore sees exactly the
chunks it would have seen uninstrumented (code doing `chunk.choices[0]` keeps working). When the
application asks for usage itself, it receives that chunk as usual.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from llmpulse.sdk._usage import field, from_openai_chat, from_openai_responses
from llmpulse.sdk.instrument._common import (
    CONTENT,
    HIDE,
    OTHER,
    Holder,
    Outcome,
    StreamState,
    wrap_create,
)

PROVIDER: Final = "openai"


def _chat_prepare(kwargs: dict[str, Any], stream_usage: bool) -> tuple[dict[str, Any], bool]:
    """Ask a chat stream for its usage unless the application chose; True when we asked."""
    if not stream_usage:
        return kwargs, False
    current = kwargs.get("stream_options")
    if "stream_options" in kwargs and type(current).__name__ not in ("Omit", "NotGiven"):
        return kwargs, False
    return {**kwargs, "stream_options": {"include_usage": True}}, True


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _chat_outcome(result: Any) -> Outcome:
    finish = None
    for choice in field(result, "choices") or ():
        finish = field(choice, "finish_reason")
        if finish:
            break
    return Outcome(
        from_openai_chat(field(result, "usage")),
        _str(field(result, "model")),
        _str(field(result, "id")),
        _str(finish),
    )


def _chat_chunk(state: StreamState, chunk: Any) -> int:
    if state.request_id is None:
        state.request_id = _str(getattr(chunk, "id", None))
        state.response_model = _str(getattr(chunk, "model", None))
    usage = getattr(chunk, "usage", None)
    if usage is not None:
        state.usage.add(from_openai_chat(usage))
    choices = getattr(chunk, "choices", None)
    if not choices:
        return HIDE if usage is not None and state.hide_usage_chunk else OTHER
    kind = OTHER
    for choice in choices:
        delta = getattr(choice, "delta", None)
        if delta is not None and (
            getattr(delta, "content", None)
            or getattr(delta, "tool_calls", None)
            or getattr(delta, "refusal", None)
            or getattr(delta, "function_call", None)
        ):
            kind = CONTENT
        reason = getattr(choice, "finish_reason", None)
        if reason:
            state.finish_reason = str(reason)
            state.terminal = True
    return kind


def _responses_finish_reason(response: Any) -> str | None:
    details = getattr(response, "incomplete_details", None)
    reason = getattr(details, "reason", None)
    return _str(reason) or _str(getattr(response, "status", None))


def _responses_outcome(result: Any) -> Outcome:
    error = getattr(result, "error", None)
    return Outcome(
        from_openai_responses(getattr(result, "usage", None)),
        _str(getattr(result, "model", None)),
        _str(getattr(result, "id", None)),
        _responses_finish_reason(result),
        _error_dict(error) if error is not None else None,
    )


def _error_dict(error: Any) -> dict[str, Any]:
    if isinstance(error, Mapping):
        return {"type": str(error.get("code") or "error"), "message": str(error.get("message") or "")}
    return {
        "type": str(getattr(error, "code", None) or "error"),
        "message": str(getattr(error, "message", "")),
    }


#: Responses API events that carry generated content (ttft is measured to the first of them).
_CONTENT_EVENTS: Final = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
    }
)
_TERMINAL_EVENTS: Final = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _responses_event(state: StreamState, event: Any) -> int:
    kind = getattr(event, "type", None)
    if kind in _CONTENT_EVENTS:
        return CONTENT
    response = getattr(event, "response", None)
    if response is not None:
        if state.request_id is None:
            state.request_id = _str(getattr(response, "id", None))
        model = _str(getattr(response, "model", None))
        if model is not None:
            state.response_model = model
        usage = getattr(response, "usage", None)
        if usage is not None:
            state.usage.add(from_openai_responses(usage))
    if kind in _TERMINAL_EVENTS:
        state.terminal = True
        state.finish_reason = _responses_finish_reason(response)
        error = getattr(response, "error", None)
        if kind == "response.failed" or error is not None:
            state.error = _error_dict(error) if error is not None else {"type": "failed", "message": ""}
    elif kind == "error":
        state.error = {"type": str(getattr(event, "code", None) or "error"), "message": str(event.message)}
    return OTHER


def instrument_openai(client: Any, holder: Holder) -> None:
    """Wrap the resource methods of this one openai client (sync or async). Does not block."""
    completions = client.chat.completions
    completions.create = wrap_create(
        completions.create, holder, PROVIDER, _chat_outcome, _chat_chunk, prepare=_chat_prepare
    )
    responses = client.responses
    responses.create = wrap_create(responses.create, holder, PROVIDER, _responses_outcome, _responses_event)
