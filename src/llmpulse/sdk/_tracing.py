"""Tracing: `observe`, `Collector.span()` and `Collector.generation()`, parent/child through `contextvars`.

The current span (and the collector it records to) lives in a `ContextVar`, so nesting follows the
code: a span opened inside another is its child, asyncio tasks inherit the span that was current when
they were created, and threads start with none. `observe` needs a collector: an explicit
`collector=`, the current span's, or the one bound with `Collector.bind()`; with none it calls the
function directly (a context-variable lookup, nothing else). There is no module-level collector.

Ids follow W3C trace context: 32 hex digits for a trace, 16 for a span.

Errors: none of its own; failures while recording are counted by the collector, never raised into the
application, and the application's own exceptions propagate unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, NamedTuple, ParamSpec, TypeVar, cast, overload

from llmpulse.events import LLMCall, Span, new_span_id, new_trace_id

if TYPE_CHECKING:
    from llmpulse.sdk._collector import Collector

P = ParamSpec("P")
R = TypeVar("R")


class SpanContext(NamedTuple):
    """The ids of the current span and the collector it records to."""

    trace_id: str
    span_id: str
    collector: Collector


_current_span: Final[ContextVar[SpanContext | None]] = ContextVar("llmpulse_current_span", default=None)
_bound_collector: Final[ContextVar[Collector | None]] = ContextVar("llmpulse_collector", default=None)

#: Exceptions that mean "stopped", not "failed": a generation ends `cancelled`, a span `ok`.
_CANCELLED: Final = (GeneratorExit, KeyboardInterrupt)


def _is_cancelled(exc: BaseException) -> bool:
    """True for exceptions that mean "stopped" (also `asyncio.CancelledError`), not "failed"."""
    if isinstance(exc, _CANCELLED):
        return True
    # asyncio is not imported here (it costs ~40 ms); a CancelledError exists only once it is loaded.
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and isinstance(exc, asyncio.CancelledError)


#: Attributes of `generation()` / `GenerationHandle.set_attribute` that are top-level `LLMCall` fields.
CALL_FIELDS: Final = frozenset(
    {
        "tenant_id",
        "route",
        "user_id",
        "org_id",
        "session_id",
        "feature",
        "endpoint",
        "environment",
        "provider",
        "request_id",
        "response_model",
        "finish_reason",
    }
)
_MAX_CAPTURE_ITEMS: Final = 100
_MAX_CAPTURE_TEXT: Final = 8192


def current_span() -> SpanContext | None:
    """The span open in this context, or None. Does not block."""
    return _current_span.get()


def current_collector() -> Collector | None:
    """The collector `observe` records to here: the current span's, else the bound one, else None."""
    ctx = _current_span.get()
    if ctx is not None:
        return ctx.collector
    return _bound_collector.get()


class Binding:
    """The result of `Collector.bind()`: already in effect; as a context manager, undone on exit."""

    __slots__ = ("_token", "collector")

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self._token: Token[Collector | None] = _bound_collector.set(collector)

    def __enter__(self) -> Collector:
        return self.collector

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # exited in another context, or twice: nothing to undo here
        with contextlib.suppress(ValueError, RuntimeError):
            _bound_collector.reset(self._token)


def bind(collector: Collector) -> Binding:
    """Make `collector` the current collector of this context; see `Collector.bind`."""
    return Binding(collector)


def _error_text(error: BaseException | str) -> str:
    if isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    else:
        text = error
    return text[:_MAX_CAPTURE_TEXT]


def _jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-ready copy of a captured argument or result (bounded in size; repr for other objects)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value[:_MAX_CAPTURE_TEXT]
    if depth < 4:
        if isinstance(value, list | tuple | set | frozenset):
            return [_jsonable(v, depth + 1) for v in list(value)[:_MAX_CAPTURE_ITEMS]]
        if isinstance(value, Mapping):
            items = list(value.items())[:_MAX_CAPTURE_ITEMS]
            return {str(k): _jsonable(v, depth + 1) for k, v in items}
    try:
        return repr(value)[:_MAX_CAPTURE_TEXT]
    except Exception:
        return f"<{type(value).__name__}>"


def _capture_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return {"args": _jsonable(args), "kwargs": _jsonable(kwargs)}
    except Exception:
        return None


class _Timed:
    """Ids and clocks shared by span and generation handles."""

    __slots__ = ("_start", "_t0", "error", "parent_span_id", "span_id", "trace_id")

    def __init__(self) -> None:
        parent = _current_span.get()
        if parent is None:
            self.trace_id = new_trace_id()
            self.parent_span_id: str | None = None
        else:
            self.trace_id = parent.trace_id
            self.parent_span_id = parent.span_id
        self.span_id = new_span_id()
        self.error: str | None = None
        self._start = time.time()
        self._t0 = time.perf_counter()

    def set_error(self, error: BaseException | str) -> None:
        """Mark the operation as failed with this error (an exception or a message)."""
        self.error = _error_text(error)

    def _elapsed_ms(self) -> float:
        return max(0.0, (time.perf_counter() - self._t0) * 1000.0)


class SpanHandle(_Timed):
    """The open span inside `with collector.span(...)` or an `@observe`d function."""

    __slots__ = ("attributes", "name")

    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        super().__init__()
        self.name = name
        self.attributes = attributes

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one attribute of the span. Does not block."""
        self.attributes[key] = value

    def set_attributes(self, **attributes: Any) -> None:
        """Set several attributes of the span. Does not block."""
        self.attributes.update(attributes)

    def _build(self, exc: BaseException | None) -> Span:
        if exc is not None and not _is_cancelled(exc):
            self.set_error(exc)
        duration = self._elapsed_ms()
        start = datetime.fromtimestamp(self._start, UTC)
        return Span(
            name=self.name,
            trace_id=self.trace_id,
            span_id=self.span_id,
            parent_span_id=self.parent_span_id,
            start_time=start,
            end_time=datetime.fromtimestamp(self._start + duration / 1000.0, UTC),
            duration_ms=duration,
            status="error" if self.error is not None else "ok",
            error=self.error,
            attributes=self.attributes or None,
        )


class GenerationHandle(_Timed):
    """The open model call inside `with collector.generation(...)`; recorded as an `LLMCall` on exit."""

    __slots__ = (
        "cache_write_tokens",
        "cached_input_tokens",
        "cost",
        "fields",
        "input_tokens",
        "metadata",
        "model",
        "output_tokens",
        "reasoning_tokens",
        "status",
        "ttft_ms",
    )

    def __init__(self, model: str, attributes: Mapping[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.fields: dict[str, str] = {}
        self.metadata: dict[str, Any] = {}
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_input_tokens = 0
        self.cache_write_tokens = 0
        self.reasoning_tokens = 0
        self.cost: float | None = None
        self.ttft_ms: float | None = None
        self.status: str | None = None
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def set_attribute(self, key: str, value: Any) -> None:
        """Set an `LLMCall` field (`tenant_id`, `route`, `user_id`, `provider`, ...) or a metadata key."""
        if key in CALL_FIELDS:
            if value is None:
                self.fields.pop(key, None)
            else:
                self.fields[key] = str(value)
        else:
            self.metadata[key] = value

    def set_usage(
        self,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        *,
        cached_input_tokens: int | None = None,
        cache_write_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        cost: float | None = None,
    ) -> None:
        """Record the call's usage (OpenTelemetry convention: input includes cached tokens, output
        includes reasoning) and, when the provider reported one, its cost in USD. Does not block."""
        if input_tokens is not None:
            self.input_tokens = input_tokens
        if output_tokens is not None:
            self.output_tokens = output_tokens
        if cached_input_tokens is not None:
            self.cached_input_tokens = cached_input_tokens
        if cache_write_tokens is not None:
            self.cache_write_tokens = cache_write_tokens
        if reasoning_tokens is not None:
            self.reasoning_tokens = reasoning_tokens
        if cost is not None:
            self.cost = cost

    def set_input(self, content: Any) -> None:
        """Record the prompt (kept in `metadata["input"]`; removed when `record_inputs=False`)."""
        self.metadata["input"] = _jsonable(content)

    def set_output(self, content: Any, *, finish_reason: str | None = None) -> None:
        """Record the completion (kept in `metadata["output"]`; removed when `record_outputs=False`)."""
        self.metadata["output"] = _jsonable(content)
        if finish_reason is not None:
            self.fields["finish_reason"] = finish_reason

    def set_response_model(self, model: str) -> None:
        """Record the model the provider says answered."""
        self.fields["response_model"] = model

    def first_token(self) -> None:
        """Note that the first generated content arrived now (sets `ttft_ms` once)."""
        if self.ttft_ms is None:
            self.ttft_ms = self._elapsed_ms()

    def set_status(self, status: str) -> None:
        """Override the final status: ``"ok"``, ``"error"`` or ``"cancelled"``."""
        self.status = status

    def _build(self, exc: BaseException | None) -> LLMCall:
        status = self.status
        if exc is not None:
            if _is_cancelled(exc):
                status = status or "cancelled"
            else:
                self.set_error(exc)
        if status is None:
            status = "error" if self.error is not None else "ok"
        return LLMCall(
            model=self.model,
            timestamp=datetime.fromtimestamp(self._start, UTC),
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_input_tokens=self.cached_input_tokens,
            cache_write_tokens=self.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens,
            cost=self.cost,
            cost_source=None if self.cost is None else "provider",  # `set_usage`: the provider's figure
            latency_ms=self._elapsed_ms(),
            ttft_ms=self.ttft_ms,
            error=self.error,
            status=cast(Any, status),
            trace_id=self.trace_id,
            span_id=self.span_id,
            parent_span_id=self.parent_span_id,
            metadata=self.metadata or None,
            **cast(dict[str, Any], self.fields),
        )


class _Scope:
    """Opens a handle, makes it the current span (unless `activate=False`) and records it on exit."""

    __slots__ = ("_activate", "_collector", "_handle", "_token")

    def __init__(self, collector: Collector, *, activate: bool = True) -> None:
        self._collector = collector
        self._activate = activate
        self._token: Token[SpanContext | None] | None = None
        self._handle: SpanHandle | GenerationHandle | None = None

    def _open(self) -> SpanHandle | GenerationHandle:
        raise NotImplementedError

    def _enter(self) -> SpanHandle | GenerationHandle:
        handle = self._handle = self._open()
        if self._activate:
            self._token = _current_span.set(self.context)
        return handle

    @property
    def context(self) -> SpanContext:
        """The context the open span gives its children."""
        assert self._handle is not None
        return SpanContext(self._handle.trace_id, self._handle.span_id, self._collector)

    def _finish(self, exc: BaseException | None) -> None:
        if self._token is not None:
            # closed in another context: that context keeps its own value
            with contextlib.suppress(ValueError, RuntimeError):
                _current_span.reset(self._token)
            self._token = None
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            self._collector.record(handle._build(exc))
        except Exception as failure:
            self._collector._record_failure(failure)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._finish(exc)


class SpanScope(_Scope):
    """`with collector.span(name, **attributes) as span:` — records a `Span` on exit."""

    __slots__ = ("_attributes", "_name")

    def __init__(
        self, collector: Collector, name: str, attributes: Mapping[str, Any], *, activate: bool = True
    ) -> None:
        super().__init__(collector, activate=activate)
        self._name = name
        self._attributes = attributes

    def _open(self) -> SpanHandle:
        return SpanHandle(self._name, dict(self._attributes))

    def __enter__(self) -> SpanHandle:
        return cast(SpanHandle, self._enter())


class GenerationScope(_Scope):
    """`with collector.generation(model, **attributes) as gen:` — records an `LLMCall` on exit."""

    __slots__ = ("_attributes", "_model")

    def __init__(self, collector: Collector, model: str, attributes: Mapping[str, Any]) -> None:
        super().__init__(collector)
        self._model = model
        self._attributes = attributes

    def _open(self) -> GenerationHandle:
        return GenerationHandle(self._model, self._attributes)

    def __enter__(self) -> GenerationHandle:
        return cast(GenerationHandle, self._enter())


@overload
def observe(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def observe(
    func: None = None,
    /,
    *,
    name: str | None = None,
    collector: Collector | None = None,
    capture_input: bool = False,
    capture_output: bool = False,
    **attributes: Any,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def observe(
    func: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    collector: Collector | None = None,
    capture_input: bool = False,
    capture_output: bool = False,
    **attributes: Any,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Record each call of a function as a `Span` (name: `name` or the function's qualified name).

    Works on plain and `async` functions and on (async) generator functions, whose span lasts until
    they are exhausted or closed. The span is a child of the current span; its status is ``"error"``
    when the function raises (the exception propagates unchanged). `capture_input` / `capture_output`
    store the arguments / return value in the span's `input` / `output` attributes (subject to
    `record_inputs` / `record_outputs`). Without a collector (see module docs) the function is called
    directly. Use as ``@observe`` or ``@observe(name=..., **attributes)``. Does not block.
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        span_name = name or getattr(fn, "__qualname__", None) or repr(fn)

        def scope_for(
            args: tuple[Any, ...], kwargs: dict[str, Any], activate: bool = True
        ) -> SpanScope | None:
            target = collector if collector is not None else current_collector()
            if target is None:
                return None
            attrs = dict(attributes)
            if capture_input:
                attrs["input"] = _capture_args(args, kwargs)
            return SpanScope(target, span_name, attrs, activate=activate)

        def output(handle: SpanHandle, result: Any) -> None:
            if capture_output:
                handle.attributes["output"] = _jsonable(result)

        if inspect.isasyncgenfunction(fn):
            return cast(Callable[P, R], _wrap_async_gen(fn, scope_for))
        if inspect.isgeneratorfunction(fn):
            return cast(Callable[P, R], _wrap_gen(fn, scope_for))
        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[..., Any], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                scope = scope_for(args, kwargs)
                if scope is None:
                    return await afn(*args, **kwargs)
                with scope as handle:
                    result = await afn(*args, **kwargs)
                    output(handle, result)
                    return result

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            scope = scope_for(args, kwargs)
            if scope is None:
                return fn(*args, **kwargs)
            with scope as handle:
                result = fn(*args, **kwargs)
                output(handle, result)
                return result

        return wrapper

    if func is not None:
        return decorate(func)
    return decorate


ScopeFactory = Callable[[tuple[Any, ...], dict[str, Any], bool], "SpanScope | None"]


def _wrap_gen(fn: Callable[..., Generator[Any, Any, Any]], scope_for: ScopeFactory) -> Callable[..., Any]:
    """A generator function whose span lasts until exhaustion; the span is current only while it runs."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        scope = scope_for(args, kwargs, False)
        if scope is None:
            return (yield from fn(*args, **kwargs))
        scope._enter()
        ctx = scope.context
        failure: BaseException | None = None
        try:
            gen = fn(*args, **kwargs)
            sent: Any = None
            thrown: BaseException | None = None
            while True:
                token = _current_span.set(ctx)
                try:
                    value = gen.throw(thrown) if thrown is not None else gen.send(sent)
                except StopIteration as stop:
                    return stop.value
                finally:
                    _current_span.reset(token)
                thrown = None
                try:
                    sent = yield value
                except GeneratorExit:
                    gen.close()
                    raise
                except BaseException as exc:
                    thrown = exc
        except BaseException as exc:
            failure = exc
            raise
        finally:
            scope._finish(failure)

    return wrapper


def _wrap_async_gen(
    fn: Callable[..., AsyncGenerator[Any, Any]], scope_for: ScopeFactory
) -> Callable[..., Any]:
    """An async generator function whose span lasts until exhaustion (current only while it runs)."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        scope = scope_for(args, kwargs, False)
        if scope is None:
            async for value in fn(*args, **kwargs):
                yield value
            return
        scope._enter()
        ctx = scope.context
        failure: BaseException | None = None
        try:
            agen = fn(*args, **kwargs)
            sent: Any = None
            thrown: BaseException | None = None
            while True:
                token = _current_span.set(ctx)
                try:
                    value = await (agen.athrow(thrown) if thrown is not None else agen.asend(sent))
                except StopAsyncIteration:
                    return
                finally:
                    _current_span.reset(token)
                thrown = None
                try:
                    sent = yield value
                except GeneratorExit:
                    await agen.aclose()
                    raise
                except BaseException as exc:
                    thrown = exc
        except BaseException as exc:
            failure = exc
            raise
        finally:
            scope._finish(failure)

    return wrapper
