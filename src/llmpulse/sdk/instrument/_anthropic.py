"""Instrumentation of one `anthropic.Anthropic` / `anthropic.AsyncAnthropic` client object.

Wraps `client.messages.create` (JSON and `stream=True`) and `client.messages.stream()` on that
client's own `messages` resource. The `stream()` helper returns the SDK's own
`MessageStreamManager`; its class is swapped for a subclass whose `__enter__`/`__aenter__` times the
request (sent on entering the `with` block) and meters the `MessageStream` it yields, so the event is
sent when the stream is read to the end, closed, or leaves its `with` block.

Usage: `message_start` carries the input side (Anthropic's `input_tokens` excludes cache reads and
writes; `Usage` adds them) and each `message_delta` a running `output_tokens` total; both are merged
as running totals, never summed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from llmpulse.sdk._tracing import current_collector
from llmpulse.sdk._usage import from_anthropic
from llmpulse.sdk.instrument._common import (
    CONTENT,
    DERIVED,
    HOLDER_ATTR,
    OTHER,
    Call,
    Holder,
    Outcome,
    StreamState,
    attach,
    log_failure,
    subclass,
    wrap_create,
)

PROVIDER: Final = "anthropic"
_CALL: Final = "_llmpulse_call"

#: Events the SDK's `MessageStream` derives from a raw event (not counted twice).
_DERIVED_EVENTS: Final = frozenset({"text", "input_json", "thinking", "signature", "citation", "compaction"})
_CONTENT_DELTAS: Final = frozenset({"text_delta", "input_json_delta"})


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _outcome(result: Any) -> Outcome:
    return Outcome(
        from_anthropic(getattr(result, "usage", None)),
        _str(getattr(result, "model", None)),
        _str(getattr(result, "id", None)),
        _str(getattr(result, "stop_reason", None)),
    )


def _event(state: StreamState, event: Any) -> int:
    kind = getattr(event, "type", None)
    if kind == "content_block_delta":
        delta = getattr(event, "delta", None)
        return CONTENT if getattr(delta, "type", None) in _CONTENT_DELTAS else OTHER
    if kind in _DERIVED_EVENTS:
        return DERIVED
    if kind == "message_start":
        message = getattr(event, "message", None)
        state.request_id = _str(getattr(message, "id", None))
        state.response_model = _str(getattr(message, "model", None))
        usage = getattr(message, "usage", None)
        if usage is not None:
            state.usage.add(from_anthropic(usage))
    elif kind == "message_delta":
        usage = getattr(event, "usage", None)
        if usage is not None:
            state.usage.add(from_anthropic(usage))
        reason = getattr(getattr(event, "delta", None), "stop_reason", None)
        if reason:
            state.finish_reason = str(reason)
    elif kind == "message_stop":
        state.terminal = True
    return OTHER


def _manager_methods(base: type) -> dict[str, Any]:
    """`__enter__` of a `MessageStreamManager` subclass: time the request, meter the stream."""
    base_enter: Callable[[Any], Any] = base.__enter__  # type: ignore[attr-defined]

    def __enter__(self: Any) -> Any:
        holder, kwargs = self.__dict__[_CALL]
        settings = holder.settings
        if not settings.active and current_collector() is None:
            return base_enter(self)
        call = Call(settings, PROVIDER, kwargs)
        try:
            stream = base_enter(self)
        except BaseException as exc:
            call.failed(exc)
            raise
        _meter(stream, call, is_async=False)
        return stream

    return {"__enter__": __enter__}


def _async_manager_methods(base: type) -> dict[str, Any]:
    """`__aenter__` of an `AsyncMessageStreamManager` subclass: time the request, meter the stream."""
    base_aenter: Callable[[Any], Any] = base.__aenter__  # type: ignore[attr-defined]

    async def __aenter__(self: Any) -> Any:
        holder, kwargs = self.__dict__[_CALL]
        settings = holder.settings
        if not settings.active and current_collector() is None:
            return await base_aenter(self)
        call = Call(settings, PROVIDER, kwargs)
        try:
            stream = await base_aenter(self)
        except BaseException as exc:
            call.failed(exc)
            raise
        _meter(stream, call, is_async=True)
        return stream

    return {"__aenter__": __aenter__}


def _meter(stream: Any, call: Call, *, is_async: bool) -> None:
    try:
        attach(
            stream, StreamState(call, _event, response=getattr(stream, "response", None)), is_async=is_async
        )
    except Exception:
        log_failure("attaching to a message stream")


def _wrap_stream(original: Any, holder: Holder, *, is_async: bool) -> Any:
    def stream(*args: Any, **kwargs: Any) -> Any:
        manager = original(*args, **kwargs)
        try:
            manager.__dict__[_CALL] = (holder, kwargs)
            manager.__class__ = subclass(
                _async_manager_methods if is_async else _manager_methods, type(manager)
            )
        except Exception:
            log_failure("attaching to a message stream manager")
        return manager

    stream.__doc__ = original.__doc__
    stream.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(stream, HOLDER_ATTR, holder)
    return stream


def instrument_anthropic(client: Any, holder: Holder, *, is_async: bool) -> None:
    """Wrap `messages.create` and `messages.stream` of this one anthropic client. Does not block."""
    messages = client.messages
    messages.create = wrap_create(messages.create, holder, PROVIDER, _outcome, _event)
    messages.stream = _wrap_stream(messages.stream, holder, is_async=is_async)
