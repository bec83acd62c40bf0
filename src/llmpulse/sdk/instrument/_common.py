"""What the openai and anthropic instrumentation share: settings, one call's record, metered streams.

A wrapped `create` builds a `Call` (start time, budget reservation), runs the original method and
either completes the call from the result or, for a stream, attaches a `StreamState` to the stream
object the provider SDK returned. The stream keeps its type: its class is swapped for a cached
subclass (`subclass`, methods from `_sync_stream_methods` / `_async_stream_methods`) that observes
every item the application pulls and notices `close()`; `weakref.finalize` hands a dropped stream to
the reaper thread. So `isinstance` checks, attributes and helper methods of the SDK's stream keep
working.

Nothing here raises into the application except the application's own exceptions (re-raised
unchanged) and `BudgetExceeded` from a budget the application configured; a failure of the
telemetry itself is logged once and the call goes on untouched.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import queue
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from llmpulse.events import LLMCall
from llmpulse.sdk._stream import MeteredStream, StreamMeter, StreamStatus, current_meter
from llmpulse.sdk._tracing import current_collector, current_span
from llmpulse.sdk._usage import StreamUsage, Usage

#: `metadata` key holding the provider's own id of the call (its response or request id).
PROVIDER_ID_KEY = "provider_request_id"

if TYPE_CHECKING:
    from llmpulse.pricing import Pricer

_log = logging.getLogger("llmpulse.sdk")

#: Attributes of `instrument()` that become top-level fields of the call event; others go in metadata.
TOP_LEVEL_ATTRIBUTES: Final = frozenset(
    {"tenant_id", "route", "user_id", "org_id", "session_id", "feature", "endpoint", "environment"}
)
#: Output tokens assumed for a budget estimate when the request sets no maximum.
DEFAULT_MAX_OUTPUT_TOKENS: Final = 4096
#: A stream's cost so far is checked against its budget every this many content chunks.
BUDGET_CHECK_CHUNKS: Final = 4
_NEVER: Final = 1 << 62
#: Header the provider SDKs add for `with_raw_response` / `with_streaming_response` calls.
RAW_RESPONSE_HEADER: Final = "X-Stainless-Raw-Response"

# What a stream handler says about one item.
HIDE: Final = -1  # counted, not given to the application (the usage-only chunk we asked for)
OTHER: Final = 0  # counted, no generated content (role-only, message_start, usage, ping, ...)
CONTENT: Final = 1  # counted, carries generated text or a tool-call delta
DERIVED: Final = 2  # given to the application but not counted (helper events derived from a raw one)


class Recorder(Protocol):
    """What `instrument()` needs of a collector: `record(item)`, which never raises or blocks."""

    def record(self, item: LLMCall) -> None:
        """Queue one item for export."""


class BudgetLike(Protocol):
    """What `instrument(budget=...)` needs: `llmpulse.Budget` / `Budgets` or anything alike.

    `reserve` returns a reservation with `settle(actual_cost_usd: float | None)` and `release()`.
    """

    def reserve(self, attributes: Mapping[str, str | None], max_cost_usd: float) -> Any:
        """Admit a call and reserve its estimated maximum cost (may raise `BudgetExceeded`)."""


class Settings:
    """The configuration of one instrumented client (replaced as a whole on re-instrumentation)."""

    __slots__ = ("active", "budget", "collector", "fields", "metadata", "meter", "stream_usage")

    def __init__(
        self,
        collector: Recorder | None,
        budget: BudgetLike | None,
        stream_usage: bool,
        meter: StreamMeter | None,
        attributes: Mapping[str, Any],
    ) -> None:
        self.collector = collector
        self.budget = budget
        self.stream_usage = stream_usage
        self.meter = meter
        self.fields: dict[str, Any] = {
            k: str(v) for k, v in attributes.items() if k in TOP_LEVEL_ATTRIBUTES and v is not None
        }
        extra = {k: v for k, v in attributes.items() if k not in TOP_LEVEL_ATTRIBUTES}
        self.metadata: dict[str, Any] | None = extra or None
        self.active = collector is not None or budget is not None


class Holder:
    """Shared by every wrapper of one client (and its copies); `settings` is swapped atomically."""

    __slots__ = ("settings",)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings


_failure_logged = False


def log_failure(what: str) -> None:
    """Log a failure of the telemetry itself, once per process (the call is unaffected)."""
    global _failure_logged
    if not _failure_logged:
        _failure_logged = True
        _log.warning(
            "llmpulse instrumentation failed while %s; the call was not affected", what, exc_info=True
        )


def is_raw_request(kwargs: Mapping[str, Any]) -> bool:
    """True for `with_raw_response` / `with_streaming_response` calls (passed through unrecorded)."""
    headers = kwargs.get("extra_headers")
    return bool(headers) and isinstance(headers, Mapping) and RAW_RESPONSE_HEADER in headers


def error_info(exc: BaseException) -> dict[str, Any]:
    """The `error` field of a call event for an exception: its type, message and HTTP status."""
    info: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)[:2000]}
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        info["status_code"] = status
    return info


def _current_trace() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current llmpulse or OpenTelemetry span, if any (duck-typed)."""
    span = current_span()
    if span is not None:
        return span.trace_id, span.span_id
    otel = sys.modules.get("opentelemetry.trace")
    if otel is not None:
        ctx = otel.get_current_span().get_span_context()
        if ctx.is_valid:
            return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
    return None


def _text_chars(value: Any, depth: int = 0) -> int:
    """Characters of text in a prompt structure (messages, content parts, instructions)."""
    if isinstance(value, str):
        return len(value)
    if depth > 6:
        return 0
    if isinstance(value, Mapping):
        return sum(_text_chars(value.get(k), depth + 1) for k in ("content", "text", "input", "instructions"))
    if isinstance(value, list | tuple):
        return sum(_text_chars(v, depth + 1) for v in value)
    return 0


def estimate_input_tokens(kwargs: Mapping[str, Any]) -> int:
    """A rough prompt size in tokens from the request's text (characters / 4). Does not block."""
    chars = sum(_text_chars(kwargs.get(k)) for k in ("messages", "input", "system", "instructions"))
    return chars // 4 + 1


def max_output_tokens(kwargs: Mapping[str, Any]) -> int:
    """The request's output limit (`max_tokens`, `max_completion_tokens`, `max_output_tokens`)."""
    for key in ("max_completion_tokens", "max_output_tokens", "max_tokens"):
        value = kwargs.get(key)
        if type(value) is int and value > 0:
            return value
    return DEFAULT_MAX_OUTPUT_TOKENS


_pricer: Pricer | None = None


def pricer() -> Pricer:
    """The shared `Pricer`, created on first use (only budgets price on the application's thread)."""
    global _pricer
    if _pricer is None:
        from llmpulse.pricing import Pricer

        _pricer = Pricer()
    return _pricer


class Outcome:
    """What a finished call reported: usage, the provider's model and id, why it stopped."""

    __slots__ = ("error", "finish_reason", "request_id", "response_model", "usage")

    def __init__(
        self,
        usage: Usage,
        response_model: str | None,
        request_id: str | None,
        finish_reason: str | None,
        error: dict[str, Any] | None = None,
    ) -> None:
        self.usage = usage
        self.response_model = response_model
        self.request_id = request_id
        self.finish_reason = finish_reason
        self.error = error


class Call:
    """One instrumented call from start to its single event; `reserve` first when a budget is set."""

    __slots__ = (
        "collector",
        "kwargs",
        "model",
        "provider",
        "reservation",
        "settings",
        "t0",
        "timestamp",
        "trace",
    )

    def __init__(
        self, settings: Settings, provider: str, kwargs: Mapping[str, Any], *, reserve: bool = True
    ) -> None:
        self.settings = settings
        # the context of the call's start: a stream may end in another context (or the reaper thread)
        collector = settings.collector
        self.collector: Recorder | None = collector if collector is not None else current_collector()
        self.trace = _current_trace()
        self.provider = provider
        self.kwargs = kwargs
        model = kwargs.get("model")
        self.model = model if isinstance(model, str) and model else "unknown"
        self.reservation: Any = None
        budget = settings.budget
        if budget is not None and reserve:
            self.reservation = budget.reserve(self.settings.fields, self._estimate())
        self.timestamp = datetime.now(UTC)
        self.t0 = time.perf_counter()

    async def areserve(self) -> None:
        """The async client's reservation (made with `reserve=False`): awaited when the budget has
        `areserve` (a shared budget's round trip must not block the event loop), else `reserve`;
        the call's clock starts after it. `BudgetExceeded` reaches the application."""
        budget = self.settings.budget
        if budget is None:
            return
        areserve = getattr(budget, "areserve", None)
        if areserve is not None:
            self.reservation = await areserve(self.settings.fields, self._estimate())
        else:
            self.reservation = budget.reserve(self.settings.fields, self._estimate())
        self.timestamp = datetime.now(UTC)
        self.t0 = time.perf_counter()

    def _estimate(self) -> float:
        """The call's estimated maximum cost (0 when it cannot be priced)."""
        try:
            estimate = pricer().cost(
                self.model,
                provider=self.provider,
                input_tokens=estimate_input_tokens(self.kwargs),
                output_tokens=max_output_tokens(self.kwargs),
            )
        except Exception:
            log_failure("estimating a call's cost for its budget")
            estimate = None
        return estimate or 0.0

    def _settle(self, status: str, usage: Usage, response_model: str | None) -> None:
        reservation, self.reservation = self.reservation, None
        if reservation is None:
            return
        try:
            if status == "error" and usage.total_tokens == 0:
                reservation.release()  # failed before costing anything
                return
            p = pricer()
            model = self.model
            if response_model is not None and not p.knows(model, provider=self.provider):
                model = response_model
            cost = p.cost(
                model,
                provider=self.provider,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_input_tokens=usage.cached_input_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                reasoning_tokens=usage.reasoning_tokens,
            )
            reservation.settle(cost)
        except Exception:
            log_failure("settling a budget reservation")

    def record(
        self,
        outcome: Outcome,
        *,
        status: str = "ok",
        ttft_ms: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Send the call's event to the collector and settle its budget. Never raises or blocks."""
        try:
            latency_ms = (time.perf_counter() - self.t0) * 1000.0
            settings = self.settings
            usage = outcome.usage
            self._settle(status, usage, outcome.response_model)
            collector = self.collector
            if collector is None:
                return
            metadata = settings.metadata
            if extra:
                metadata = {**metadata, **extra} if metadata else dict(extra)
            elif metadata is not None:
                metadata = dict(metadata)
            if outcome.request_id:
                # the provider's id is for correlating with its logs; llmpulse's own `request_id` is
                # always fresh, because the server counts each id once and some OpenAI-compatible
                # servers answer every call with the same id
                metadata = (
                    {**metadata, PROVIDER_ID_KEY: outcome.request_id}
                    if metadata
                    else {PROVIDER_ID_KEY: outcome.request_id}
                )
            trace = self.trace
            event = LLMCall(
                model=self.model,
                timestamp=self.timestamp,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_input_tokens=usage.cached_input_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                reasoning_tokens=usage.reasoning_tokens,
                request_id=uuid.uuid4().hex,
                provider=self.provider,
                response_model=outcome.response_model,
                latency_ms=latency_ms,
                ttft_ms=ttft_ms,
                finish_reason=outcome.finish_reason,
                error=outcome.error,
                status="ok" if status == "ok" else "error" if status == "error" else "cancelled",
                trace_id=trace[0] if trace else None,
                parent_span_id=trace[1] if trace else None,
                span_id=os.urandom(8).hex() if trace else None,
                metadata=metadata,
                **settings.fields,
            )
            collector.record(event)
        except Exception:
            log_failure("recording a call")

    def failed(self, exc: BaseException) -> None:
        """Record the call as failed with `exc` (`cancelled` for a cancellation). Never raises."""
        request_id = getattr(exc, "request_id", None)
        status = "error" if isinstance(exc, Exception) else "cancelled"
        outcome = Outcome(
            Usage(), None, request_id if isinstance(request_id, str) else None, None, error_info(exc)
        )
        self.record(outcome, status=status)


#: Handles one stream item: updates the state, returns HIDE, OTHER, CONTENT or DERIVED.
Handler = Callable[["StreamState", Any], int]


class StreamState:
    """Everything one stream accumulates until its single event; holds no reference to the stream."""

    __slots__ = (
        "call",
        "content_chunks",
        "done",
        "error",
        "finalizer",
        "finish_reason",
        "first_content",
        "handler",
        "hide_usage_chunk",
        "input_estimate",
        "last_bytes",
        "meter",
        "next_budget_check",
        "request_id",
        "response",
        "response_model",
        "terminal",
        "usage",
    )

    def __init__(self, call: Call, handler: Handler, *, hide_usage_chunk: bool = False, response: Any = None):
        self.call = call
        self.handler = handler
        self.hide_usage_chunk = hide_usage_chunk
        self.response = response
        self.usage = StreamUsage()
        self.request_id: str | None = None
        self.response_model: str | None = None
        self.finish_reason: str | None = None
        self.error: dict[str, Any] | None = None
        self.terminal = False
        self.first_content: float | None = None
        self.content_chunks = 0
        self.done = False
        self.finalizer: weakref.finalize[Any, Any] | None = None
        self.last_bytes = 0
        self.input_estimate = -1
        self.next_budget_check = BUDGET_CHECK_CHUNKS if call.reservation is not None else _NEVER
        meter = current_meter() or call.settings.meter
        self.meter: MeteredStream | None = None
        if meter is not None and meter.enabled:
            self.meter = meter.start(provider=call.provider, model=call.model, start_perf=call.t0)

    def observe(self, item: Any) -> bool:
        """Account for one item; False when the application must not see it. Never raises."""
        try:
            kind = self.handler(self, item)
        except Exception:
            log_failure("reading a stream chunk")
            return True
        if kind == CONTENT:
            self.content_chunks += 1
            if self.first_content is None:
                self.first_content = time.perf_counter()
        meter = self.meter
        if meter is not None and kind != DERIVED:
            total = getattr(self.response, "num_bytes_downloaded", 0)
            nbytes = total - self.last_bytes if type(total) is int else 0
            self.last_bytes += nbytes
            tokens = self.usage.usage.output_tokens if self.usage.seen else None
            meter.chunk(nbytes, content=kind == CONTENT, tokens=tokens or None, raw=item)
        return kind != HIDE

    def partial_usage(self, *, complete: bool) -> tuple[Usage, bool]:
        """The usage so far, and whether it had to be estimated.

        When the provider never said (usage not asked for, or the stream stopped before it came), or
        said less output than the content chunks received, what is known is billed: the prompt
        estimated from its text, one output token per content chunk.
        """
        usage = self.usage.usage
        if self.usage.seen and (complete or self.content_chunks <= usage.output_tokens):
            return usage, False
        if self.input_estimate < 0:
            self.input_estimate = estimate_input_tokens(self.call.kwargs)
        estimated = Usage.of(
            max(usage.input_tokens, self.input_estimate),
            max(usage.output_tokens, self.content_chunks),
            usage.cached_input_tokens,
            usage.cache_write_tokens,
            usage.reasoning_tokens,
        )
        return estimated, True

    def over_budget(self) -> BaseException | None:
        """`BudgetExceeded` when the stream's cost so far exhausts a `"raise"` budget, else None.

        Checked every `BUDGET_CHECK_CHUNKS` content chunks, only for calls holding a reservation with
        `check_progress` (llmpulse budgets). Never raises.
        """
        if self.content_chunks < self.next_budget_check:
            return None
        self.next_budget_check = self.content_chunks + BUDGET_CHECK_CHUNKS
        check = getattr(self.call.reservation, "check_progress", None)
        if check is None:
            return None
        try:
            usage, _ = self.partial_usage(complete=False)
            cost = pricer().cost(
                self.call.model,
                provider=self.call.provider,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_input_tokens=usage.cached_input_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                reasoning_tokens=usage.reasoning_tokens,
            )
            exceeded = check(cost) if cost is not None else None
        except Exception:
            log_failure("checking a stream's budget")
            return None
        return exceeded if isinstance(exceeded, BaseException) else None

    def finish(self, status: StreamStatus, exc: BaseException | None = None) -> None:
        """Send the stream's one event (first call wins). Never raises."""
        if self.done:
            return
        self.done = True
        try:
            if self.finalizer is not None:
                self.finalizer.detach()
                self.finalizer = None
            call = self.call
            if status == "completed" and self.error is not None:
                status = "error"
            usage, estimated = self.partial_usage(complete=status == "completed")
            extra: dict[str, Any] = {"usage_estimated": True} if estimated else {}
            if self.meter is not None:
                if exc is not None:
                    self.meter.error(exc)
                m = self.meter.finish(status, output_tokens=usage.output_tokens)
                extra["stream"] = {
                    "stream_id": m.stream_id,
                    "chunks": m.chunks_received,
                    "bytes": m.bytes_received,
                    "gap_p50_ms": round(m.gap_p50_ms, 3),
                    "gap_p95_ms": round(m.gap_p95_ms, 3),
                    "gap_max_ms": round(m.gap_max_ms, 3),
                    "tokens_per_second": round(m.tokens_per_second, 3),
                }
            error = self.error if exc is None else error_info(exc)
            if error is None and status == "error":
                error = {"type": "IncompleteStream", "message": "the stream ended before its final event"}
            ttft = (self.first_content - call.t0) * 1000.0 if self.first_content is not None else None
            request_id = self.request_id
            if request_id is None and exc is not None:
                rid = getattr(exc, "request_id", None)
                request_id = rid if isinstance(rid, str) else None
            outcome = Outcome(usage, self.response_model, request_id, self.finish_reason, error)
            call.record(
                outcome,
                status="ok" if status == "completed" else status,
                ttft_ms=ttft,
                extra=extra,
            )
        except Exception:
            log_failure("finishing a stream")

    def exhausted(self) -> None:
        """The stream ran out: complete if its final event came, else an incomplete stream (error)."""
        self.finish("completed" if self.terminal else "error")

    def closed(self) -> None:
        """The stream was closed or dropped: complete if its final event came, else cancelled."""
        self.finish("completed" if self.terminal else "cancelled")

    def raised(self, exc: BaseException) -> None:
        """Iteration raised `exc`: an error, or cancelled for a cancellation."""
        self.finish("error" if isinstance(exc, Exception) else "cancelled", exc)


_STATE: Final = "_llmpulse_state"


def _state(obj: object) -> StreamState:
    state: StreamState = obj.__dict__[_STATE]
    return state


def _sync_stream_methods(base: type) -> dict[str, Any]:
    """Methods of a sync stream subclass: observe `__next__`/`__iter__`, notice `close()`."""
    base_next: Callable[[Any], Any] = base.__next__  # type: ignore[attr-defined]
    base_close: Callable[[Any], None] = base.close  # type: ignore[attr-defined]

    def __next__(self: Any) -> Any:
        state = _state(self)
        while True:
            try:
                item = base_next(self)
            except StopIteration:
                state.exhausted()
                raise
            except BaseException as exc:
                state.raised(exc)
                raise
            if state.observe(item):
                if state.content_chunks >= state.next_budget_check:
                    exceeded = state.over_budget()
                    if exceeded is not None:
                        try:
                            base_close(self)
                        finally:
                            state.raised(exceeded)
                        raise exceeded
                return item

    def __iter__(self: Any) -> Any:
        while True:
            try:
                item = self.__next__()
            except StopIteration:
                return
            yield item

    def close(self: Any) -> None:
        try:
            base_close(self)
        finally:
            _state(self).closed()

    close.__doc__ = base_close.__doc__
    return {"__next__": __next__, "__iter__": __iter__, "close": close}


def _async_stream_methods(base: type) -> dict[str, Any]:
    """Methods of an async stream subclass: observe `__anext__`/`__aiter__`, notice `close()`."""
    base_anext: Callable[[Any], Any] = base.__anext__  # type: ignore[attr-defined]
    base_close: Callable[[Any], Any] = base.close  # type: ignore[attr-defined]

    async def __anext__(self: Any) -> Any:
        state = _state(self)
        while True:
            try:
                item = await base_anext(self)
            except StopAsyncIteration:
                state.exhausted()
                raise
            except BaseException as exc:
                state.raised(exc)
                raise
            if state.observe(item):
                if state.content_chunks >= state.next_budget_check:
                    exceeded = state.over_budget()
                    if exceeded is not None:
                        try:
                            await base_close(self)
                        finally:
                            state.raised(exceeded)
                        raise exceeded
                return item

    async def __aiter__(self: Any) -> Any:
        while True:
            try:
                item = await self.__anext__()
            except StopAsyncIteration:
                return
            yield item

    async def close(self: Any) -> None:
        try:
            await base_close(self)
        finally:
            _state(self).closed()

    close.__doc__ = base_close.__doc__
    return {"__anext__": __anext__, "__aiter__": __aiter__, "close": close}


#: Builds the overriding methods of a subclass of the given class.
Methods = Callable[[type], dict[str, Any]]
_subclasses: dict[tuple[Methods, type], type] = {}


def subclass(methods: Methods, base: type) -> type:
    """The cached subclass of `base` overriding `methods(base)`; it adds no slots, so `__class__` can swap.

    The methods call `base`'s own (captured when the subclass is made), not `super()`.
    """
    key = (methods, base)
    cls = _subclasses.get(key)
    if cls is None:
        namespace = {"__module__": base.__module__, "__qualname__": base.__qualname__, **methods(base)}
        cls = _subclasses[key] = type(base.__name__, (base,), namespace)
    return cls


def attach(stream: Any, state: StreamState, *, is_async: bool) -> None:
    """Meter `stream` in place: swap its class for the observing subclass; finalize if it is dropped."""
    stream.__dict__[_STATE] = state
    stream.__class__ = subclass(_async_stream_methods if is_async else _sync_stream_methods, type(stream))
    _ensure_reaper()
    finalizer = weakref.finalize(stream, _reaped.put, state)
    finalizer.atexit = False
    state.finalizer = finalizer


# A dropped stream's event is sent by the reaper thread, not by the finalizer: the garbage collector
# runs finalizers at arbitrary allocations, possibly while this thread holds a collector's or a
# budget's lock, which recording from the finalizer would then deadlock on. `SimpleQueue.put` is
# reentrant (safe in weakref callbacks); the reaper blocks in `get` and costs nothing while idle.
_reaped: queue.SimpleQueue[StreamState] = queue.SimpleQueue()
_reaper_pid = 0
_reaper_lock = threading.Lock()


def _reap() -> None:
    while True:
        state = _reaped.get()
        try:
            state.closed()
        except Exception:  # pragma: no cover - finish() already guards; keep the reaper alive
            log_failure("finishing a dropped stream")


def _ensure_reaper() -> None:
    """Start the reaper thread once per process (again in a forked child). Does not block."""
    global _reaper_pid
    pid = os.getpid()
    if _reaper_pid == pid:
        return
    with _reaper_lock:
        if _reaper_pid != pid:
            threading.Thread(target=_reap, name="llmpulse-stream-reaper", daemon=True).start()
            _reaper_pid = pid


#: Turns a non-stream result into its `Outcome`.
OutcomeOf = Callable[[Any], Outcome]
#: Adjusts a stream request's keyword arguments (given `stream_usage`); True to hide the usage chunk.
Prepare = Callable[[dict[str, Any], bool], tuple[dict[str, Any], bool]]
#: The attribute that marks a wrapper (and holds its client's `Holder`).
HOLDER_ATTR: Final = "_llmpulse_holder"


def is_async_method(method: Callable[..., Any]) -> bool:
    """True for an `async def` method, also behind decorators that set `__wrapped__`."""
    return inspect.iscoroutinefunction(method) or inspect.iscoroutinefunction(inspect.unwrap(method))


def start_stream(result: Any, call: Call, handler: Handler, hide: bool, *, is_async: bool) -> None:
    """Attach a `StreamState` to a stream the provider SDK returned. Never raises."""
    try:
        state = StreamState(call, handler, hide_usage_chunk=hide, response=getattr(result, "response", None))
        attach(result, state, is_async=is_async)
    except Exception:
        log_failure("attaching to a stream")


def complete(call: Call, outcome_of: OutcomeOf, result: Any) -> None:
    """Record a non-stream call from its result. Never raises."""
    try:
        outcome = outcome_of(result)
    except Exception:
        log_failure("reading a response")
        return
    call.record(outcome)


def wrap_create(
    original: Callable[..., Any],
    holder: Holder,
    provider: str,
    outcome_of: OutcomeOf,
    handler: Handler,
    *,
    prepare: Prepare | None = None,
) -> Callable[..., Any]:
    """A `create` that records one event per call around `original` (sync or async, like it).

    Without a collector (given, or bound in the context with `Collector.bind()`) or budget the call
    passes straight through.
    The application gets `original`'s return value (streams metered in place) and exceptions,
    unchanged. Blocks exactly as `original` does.
    """
    if is_async_method(original):

        @functools.wraps(original)
        async def acreate(*args: Any, **kwargs: Any) -> Any:
            settings = holder.settings
            if (not settings.active and current_collector() is None) or is_raw_request(kwargs):
                return await original(*args, **kwargs)
            stream = kwargs.get("stream") is True
            hide = False
            if stream and prepare is not None:
                kwargs, hide = prepare(kwargs, settings.stream_usage)
            call = Call(settings, provider, kwargs, reserve=False)
            await call.areserve()
            try:
                result = await original(*args, **kwargs)
            except BaseException as exc:
                call.failed(exc)
                raise
            if stream:
                start_stream(result, call, handler, hide, is_async=True)
            else:
                complete(call, outcome_of, result)
            return result

        setattr(acreate, HOLDER_ATTR, holder)
        return acreate

    @functools.wraps(original)
    def create(*args: Any, **kwargs: Any) -> Any:
        settings = holder.settings
        if (not settings.active and current_collector() is None) or is_raw_request(kwargs):
            return original(*args, **kwargs)
        stream = kwargs.get("stream") is True
        hide = False
        if stream and prepare is not None:
            kwargs, hide = prepare(kwargs, settings.stream_usage)
        call = Call(settings, provider, kwargs)
        try:
            result = original(*args, **kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        if stream:
            start_stream(result, call, handler, hide, is_async=False)
        else:
            complete(call, outcome_of, result)
        return result

    setattr(create, HOLDER_ATTR, holder)
    return create
