"""`StreamMeter`: per-stream metrics (throughput, time to first token, gaps) with periodic callbacks.

A `StreamMeter` is a frozen configuration; `StreamMeter.start(...)` begins metering one stream and
returns a `MeteredStream` that the stream's consumer feeds with `chunk(...)` and ends with
`finish(...)`. Instrumented openai/anthropic streams do this themselves; any other stream can be
metered by hand:

    meter = StreamMeter(print, metrics_interval_ms=500)
    live = meter.start(provider="acme", model="m1")
    for piece in my_stream:
        live.chunk(len(piece), content=bool(piece))
    live.finish("completed")

`metrics_callback` receives a `StreamMetrics` snapshot every `metrics_interval_ms` while streaming
(checked when a chunk arrives: there is no timer thread, so a stalled stream reports nothing until its
next chunk or its end) and exactly once at the end, with the final status. A callback that raises is
logged once and never disturbs the stream. A disabled meter returns a shared no-op `MeteredStream`:
no clock reads, no allocation, no callback. Nothing here blocks except the callback you supply.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any, Final, Literal

__all__ = ["MeteredStream", "StreamMeter", "StreamMetrics", "StreamStatus", "current_meter"]

_log = logging.getLogger("llmpulse.sdk")

StreamStatus = Literal["streaming", "completed", "error", "cancelled"]

_ids = itertools.count(1)
_UNSET: Final = object()


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(math.ceil(q * len(ordered)), 1)
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class StreamMetrics:
    """A snapshot of one stream's metrics (the exllm streaming-metrics fields).

    Times: `start_time` and `current_time` are Unix epoch milliseconds; durations are milliseconds.
    `ttft_ms` is from sending the request to the first chunk carrying generated content (None until
    then). `gap_*_ms` are over the gaps between consecutive chunks. `tokens_per_second` is output
    tokens over the time since the first content chunk (generation speed; 0.0 before it).
    `raw_chunks` is None unless the meter keeps raw chunks.
    """

    stream_id: str
    provider: str | None
    model: str | None
    start_time: float
    current_time: float
    duration_ms: float
    bytes_received: int
    chunks_received: int
    bytes_per_second: float
    chunks_per_second: float
    avg_chunk_size: float
    ttft_ms: float | None
    gap_p50_ms: float
    gap_p95_ms: float
    gap_max_ms: float
    output_tokens: int
    tokens_per_second: float
    error_count: int
    last_error: str | None
    status: StreamStatus
    raw_chunks: tuple[Any, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as a plain dict (raw chunks included as they are). Does not block."""
        return asdict(self)


MetricsCallback = Callable[[StreamMetrics], object]


class MeteredStream:
    """The live metrics of one stream; feed it with `chunk`, `error` and end it with `finish`.

    Not thread-safe: one stream has one consumer. `finish` is idempotent (the first call wins).
    None of its methods blocks except by running the meter's callback.
    """

    __slots__ = (
        "_bytes",
        "_callback",
        "_chunks",
        "_errors",
        "_first_content",
        "_gaps",
        "_interval_s",
        "_last_chunk",
        "_last_error",
        "_last_report",
        "_output_tokens",
        "_raw",
        "_start_perf",
        "_start_wall",
        "_status",
        "model",
        "provider",
        "stream_id",
    )

    def __init__(
        self,
        *,
        stream_id: str,
        provider: str | None,
        model: str | None,
        callback: MetricsCallback | None,
        interval_ms: float,
        include_raw_chunks: bool,
        start_perf: float | None = None,
    ) -> None:
        now = time.perf_counter()
        self.stream_id = stream_id
        self.provider = provider
        self.model = model
        self._callback = callback
        self._interval_s = interval_ms / 1000.0
        self._start_perf = now if start_perf is None else start_perf
        self._start_wall = time.time() - (now - self._start_perf)
        self._last_report = self._start_perf
        self._last_chunk: float | None = None
        self._first_content: float | None = None
        self._gaps: list[float] = []
        self._bytes = 0
        self._chunks = 0
        self._errors = 0
        self._last_error: str | None = None
        self._output_tokens = 0
        self._raw: list[Any] | None = [] if include_raw_chunks else None
        self._status: StreamStatus = "streaming"

    @property
    def enabled(self) -> bool:
        """True: this stream is metered (the no-op stream answers False)."""
        return True

    @property
    def status(self) -> StreamStatus:
        """`streaming` until `finish`, then the final status."""
        return self._status

    def chunk(
        self, nbytes: int = 0, *, content: bool = True, tokens: int | None = None, raw: Any = None
    ) -> None:
        """Count one chunk of `nbytes` bytes; `content` says it carries generated text or a tool call.

        `tokens` is the running total of output tokens when known (else content chunks are counted as
        one token each). `raw` is kept when the meter keeps raw chunks. May call the metrics callback
        when `metrics_interval_ms` has passed since the last report.
        """
        if self._status != "streaming":
            return
        now = time.perf_counter()
        if self._last_chunk is not None:
            self._gaps.append(now - self._last_chunk)
        self._last_chunk = now
        self._chunks += 1
        self._bytes += nbytes
        if content:
            if self._first_content is None:
                self._first_content = now
            if tokens is None:
                self._output_tokens += 1
        if tokens is not None and tokens > self._output_tokens:
            self._output_tokens = tokens
        if self._raw is not None:
            self._raw.append(raw)
        if self._callback is not None and now - self._last_report >= self._interval_s:
            self._last_report = now
            self._report(now)

    def add_bytes(self, nbytes: int) -> None:
        """Count bytes that arrived outside a chunk (headers, keep-alives). Does not block."""
        self._bytes += nbytes

    def error(self, exc: BaseException | str) -> None:
        """Record an error seen on the stream (it keeps streaming unless `finish` is called)."""
        self._errors += 1
        self._last_error = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"

    def finish(
        self, status: StreamStatus = "completed", *, output_tokens: int | None = None
    ) -> StreamMetrics:
        """End the stream with `status`, report the final metrics once, and return them.

        `output_tokens` is the provider's final count when known. A second call returns the current
        snapshot without reporting again.
        """
        now = time.perf_counter()
        if self._status != "streaming":
            return self.snapshot(now)
        if output_tokens is not None:
            self._output_tokens = output_tokens
        self._status = status
        if status == "streaming":  # pragma: no cover - a caller error; keep the snapshot meaningful
            self._status = "completed"
        return self._report(now)

    def snapshot(self, now: float | None = None) -> StreamMetrics:
        """The metrics as of now (or `now`, a `time.perf_counter()` reading). Does not block."""
        if now is None:
            now = time.perf_counter()
        elapsed = max(now - self._start_perf, 0.0)
        gaps = sorted(self._gaps)
        generating = now - self._first_content if self._first_content is not None else 0.0
        return StreamMetrics(
            stream_id=self.stream_id,
            provider=self.provider,
            model=self.model,
            start_time=self._start_wall * 1000.0,
            current_time=(self._start_wall + elapsed) * 1000.0,
            duration_ms=elapsed * 1000.0,
            bytes_received=self._bytes,
            chunks_received=self._chunks,
            bytes_per_second=self._bytes / elapsed if elapsed > 0 else 0.0,
            chunks_per_second=self._chunks / elapsed if elapsed > 0 else 0.0,
            avg_chunk_size=self._bytes / self._chunks if self._chunks else 0.0,
            ttft_ms=(self._first_content - self._start_perf) * 1000.0
            if self._first_content is not None
            else None,
            gap_p50_ms=_percentile(gaps, 0.50) * 1000.0,
            gap_p95_ms=_percentile(gaps, 0.95) * 1000.0,
            gap_max_ms=(gaps[-1] if gaps else 0.0) * 1000.0,
            output_tokens=self._output_tokens,
            tokens_per_second=self._output_tokens / generating if generating > 0 else 0.0,
            error_count=self._errors,
            last_error=self._last_error,
            status=self._status,
            raw_chunks=tuple(self._raw) if self._raw is not None else None,
        )

    def _report(self, now: float) -> StreamMetrics:
        metrics = self.snapshot(now)
        callback = self._callback
        if callback is not None:
            try:
                callback(metrics)
            except Exception:
                _log_callback_failure()
        return metrics


_callback_failure_logged = False


def _log_callback_failure() -> None:
    global _callback_failure_logged
    if not _callback_failure_logged:
        _callback_failure_logged = True
        _log.warning("a StreamMeter metrics_callback raised; it is ignored (logged once)", exc_info=True)


class _NoopStream(MeteredStream):
    """The stream a disabled meter hands out: every method does nothing."""

    __slots__ = ()

    def __init__(self) -> None:  # no state, no clock
        pass

    @property
    def enabled(self) -> bool:
        """False: nothing is measured."""
        return False

    @property
    def status(self) -> StreamStatus:
        """Always `streaming`: a no-op stream never ends."""
        return "streaming"

    def chunk(
        self, nbytes: int = 0, *, content: bool = True, tokens: int | None = None, raw: Any = None
    ) -> None:
        """Do nothing."""

    def add_bytes(self, nbytes: int) -> None:
        """Do nothing."""

    def error(self, exc: BaseException | str) -> None:
        """Do nothing."""

    def finish(
        self, status: StreamStatus = "completed", *, output_tokens: int | None = None
    ) -> StreamMetrics:
        """Return an empty snapshot; no callback."""
        return _EMPTY

    def snapshot(self, now: float | None = None) -> StreamMetrics:
        """Return an empty snapshot."""
        return _EMPTY


_EMPTY: Final = StreamMetrics(
    stream_id="",
    provider=None,
    model=None,
    start_time=0.0,
    current_time=0.0,
    duration_ms=0.0,
    bytes_received=0,
    chunks_received=0,
    bytes_per_second=0.0,
    chunks_per_second=0.0,
    avg_chunk_size=0.0,
    ttft_ms=None,
    gap_p50_ms=0.0,
    gap_p95_ms=0.0,
    gap_max_ms=0.0,
    output_tokens=0,
    tokens_per_second=0.0,
    error_count=0,
    last_error=None,
    status="streaming",
)

#: The shared no-op stream of every disabled meter.
NOOP_STREAM: Final[MeteredStream] = _NoopStream()


@dataclass(frozen=True, slots=True)
class StreamMeter:
    """Configuration of stream metering; `start` meters one stream.

    `metrics_callback(metrics)` is called every `metrics_interval_ms` while a stream is running
    (checked on chunk arrival) and once when it ends; `include_raw_chunks` keeps every chunk in the
    snapshots (memory grows with the stream: for debugging). `enabled=False` makes `start` return a
    no-op stream (zero work). Per-request overrides: pass them to `start(...)`, or make a variant with
    `with_options(...)` and activate it for the calls in a block with `use()`.
    Raises `ValueError` (naming the field) for a negative interval.
    """

    metrics_callback: MetricsCallback | None = None
    metrics_interval_ms: float = 1000.0
    include_raw_chunks: bool = False
    enabled: bool = True

    def __post_init__(self) -> None:
        if not (self.metrics_interval_ms >= 0):
            raise ValueError(f"metrics_interval_ms must be >= 0, got {self.metrics_interval_ms!r}")

    def with_options(
        self,
        *,
        metrics_callback: MetricsCallback | object | None = _UNSET,
        metrics_interval_ms: float | None = None,
        include_raw_chunks: bool | None = None,
        enabled: bool | None = None,
    ) -> StreamMeter:
        """A copy with the given settings changed (`metrics_callback=None` removes the callback)."""
        changes: dict[str, Any] = {}
        if metrics_callback is not _UNSET:
            changes["metrics_callback"] = metrics_callback
        if metrics_interval_ms is not None:
            changes["metrics_interval_ms"] = metrics_interval_ms
        if include_raw_chunks is not None:
            changes["include_raw_chunks"] = include_raw_chunks
        if enabled is not None:
            changes["enabled"] = enabled
        return replace(self, **changes)

    def start(
        self,
        *,
        provider: str | None = None,
        model: str | None = None,
        stream_id: str | None = None,
        start_perf: float | None = None,
        metrics_callback: MetricsCallback | None = None,
        metrics_interval_ms: float | None = None,
        include_raw_chunks: bool | None = None,
        enabled: bool | None = None,
    ) -> MeteredStream:
        """Begin metering one stream; keyword overrides apply to this stream only.

        `start_perf` is the `time.perf_counter()` reading when the request was sent (default: now),
        from which `ttft_ms` and `duration_ms` are measured. Returns the shared no-op stream when
        disabled. Does not block.
        """
        if not (self.enabled if enabled is None else enabled):
            return NOOP_STREAM
        return MeteredStream(
            stream_id=stream_id or f"stream_{os.getpid()}_{next(_ids)}",
            provider=provider,
            model=model,
            callback=self.metrics_callback if metrics_callback is None else metrics_callback,
            interval_ms=self.metrics_interval_ms if metrics_interval_ms is None else metrics_interval_ms,
            include_raw_chunks=self.include_raw_chunks if include_raw_chunks is None else include_raw_chunks,
            start_perf=start_perf,
        )

    @contextmanager
    def use(self) -> Iterator[StreamMeter]:
        """Make this meter the one instrumented clients use for the streams started in the block.

        Overrides the meter given to `instrument()` for those calls only (a `contextvars` value, so
        it follows threads' and asyncio tasks' own contexts). Does not block.
        """
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)


_current: contextvars.ContextVar[StreamMeter | None] = contextvars.ContextVar(
    "llmpulse_stream_meter", default=None
)


def current_meter() -> StreamMeter | None:
    """The meter activated by `StreamMeter.use()` in this context, if any. Does not block."""
    return _current.get()
