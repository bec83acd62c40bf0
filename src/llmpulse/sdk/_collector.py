"""`Collector`: samples, cleans and hands telemetry items to one `ExportPipeline` per exporter.

The application's threads call `record` (the hot path: a sampling decision, the processor chain and
a non-blocking `offer` to each pipeline; no I/O, no serialisation, never raises). Each pipeline's
daemon worker prices, serialises and exports batches. `flush` / `shutdown` hand one deadline from
pipeline to pipeline; an `atexit` hook shuts the collector down at interpreter exit; forked children
restart their pipelines and deliver what they record themselves.

Errors: `record` never raises (failures are counted in `stats()`); `add_exporter` raises `TypeError`
for an object that is no exporter and `RuntimeError` after `shutdown`.
"""

from __future__ import annotations

import atexit
import itertools
import os
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol

from llmpulse.events import LLMCall, TelemetryItem
from llmpulse.sdk._config import TelemetryConfig
from llmpulse.sdk._exporter import Exporter, as_exporter
from llmpulse.sdk._pipeline import ExportPipeline, _peek
from llmpulse.sdk._processors import DropItem, Processor, Sampler, build_processors
from llmpulse.sdk._tracing import Binding, GenerationScope, SpanScope, bind

if TYPE_CHECKING:
    from llmpulse.pricing import Pricer

ExporterLike = Exporter | Callable[[str, dict[str, Any]], object]


class BudgetStats(Protocol):
    """What `Collector.watch_budget` needs: a `budget_id` and `stats()` counters (`SharedBudget`)."""

    @property
    def budget_id(self) -> str:
        """The budget's name in `stats()["budgets"]`."""

    def stats(self) -> dict[str, Any]:
        """Counters, with at least `fail_open`, `fail_closed` and `refused`; must not block."""


#: Token counters kept per (model, provider) for unsampled calls without a cost.
_UNPRICED_FIELDS: Final = 6  # calls, input, output, cached, cache_write, reasoning


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Pipelines:
    """A collector's pipelines and their shutdown, shared with its `atexit` hook and finalizer.

    Kept apart from the `Collector` so that neither hook keeps the collector alive: a collector that
    is garbage-collected without `shutdown` has its pipelines shut down on a background thread, and
    whatever that has not finished at interpreter exit is finished by the `atexit` hook.
    """

    __slots__ = (
        "__weakref__",
        "closing",
        "done",
        "errors",
        "lock",
        "names",
        "offers",
        "pipelines",
        "timeout",
    )

    def __init__(self, timeout: float) -> None:
        self.pipelines: tuple[ExportPipeline, ...] = ()
        self.offers: tuple[Callable[[TelemetryItem], None], ...] = ()  # their bound `offer`s
        self.names: tuple[str, ...] = ()
        self.timeout = timeout
        self.closing = False
        self.errors: list[BaseException] = []
        self.reinit()

    def reinit(self) -> None:
        """Fresh lock and event (construction, and in a forked child)."""
        self.lock = threading.Lock()
        self.done = threading.Event()
        if self.closing:
            self.done.set()

    def add(self, name: str, pipeline: ExportPipeline) -> str:
        """Append a pipeline under a unique name; raises `RuntimeError` once closing."""
        with self.lock:
            if self.closing:
                raise RuntimeError("cannot add an exporter to a collector that is shut down")
            unique, n = name, 1
            while unique in self.names:
                n += 1
                unique = f"{name}#{n}"
            self.names = (*self.names, unique)
            self.pipelines = (*self.pipelines, pipeline)
            self.offers = (*self.offers, pipeline.offer)
            return unique

    def shutdown(self, timeout: float) -> bool:
        """Shut every pipeline down in parallel within one deadline; blocks up to `timeout`.

        In parallel, so a hung exporter cannot eat the time of the others. False at once when a
        shutdown already began elsewhere.
        """
        with self.lock:
            if self.closing:
                return False
            self.closing = True
            pipelines = self.pipelines
        try:
            ok, errors = run_within([p.shutdown for p in pipelines], timeout)
            self.errors.extend(errors)
        finally:
            self.done.set()
        return ok

    def at_exit(self) -> None:
        """The `atexit` hook: finish a shutdown in progress, or shut down now."""
        if self.closing:
            self.done.wait(self.timeout)
        else:
            self.shutdown(self.timeout)


def run_within(calls: Sequence[Callable[[float], bool]], timeout: float) -> tuple[bool, list[Exception]]:
    """Run each ``call(remaining_timeout)`` in parallel and wait for all up to `timeout`. Blocks.

    True when every call returned True in time; a call still running at the deadline counts as
    False (its daemon thread finishes on its own). Exceptions are returned, never raised.
    """
    errors: list[Exception] = []
    if len(calls) == 1:
        try:
            return bool(calls[0](timeout)), errors
        except Exception as exc:
            return False, [exc]
    deadline = time.monotonic() + timeout
    results: list[bool] = []

    def one(call: Callable[[float], bool]) -> None:
        try:
            results.append(bool(call(max(0.0, deadline - time.monotonic()))))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(c,), name="llmpulse-flush", daemon=True) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return len(results) == len(calls) and all(results), list(errors)


def _abandon(pipelines: _Pipelines, hook: Callable[[], None]) -> None:
    """Finalizer of a collector collected without `shutdown`: shut its pipelines down off-thread."""
    if pipelines.closing:
        atexit.unregister(hook)
        return

    def close() -> None:
        pipelines.shutdown(pipelines.timeout)
        atexit.unregister(hook)

    try:
        threading.Thread(target=close, name="llmpulse-collector-close", daemon=True).start()
    except RuntimeError:  # interpreter shutting down: the atexit hook does it
        return


class Collector:
    """The SDK's entry point: `record` telemetry items, export them in the background.

    `config` defaults to `TelemetryConfig()` (use `TelemetryConfig.from_env()` for the environment);
    `exporters` are `Exporter`s or plain `(kind, item_dict)` callables. `processors` run before the
    built-in chain (strip content, hash user ids, redact, tags, sample weight), so what they add is
    redacted too. `pricer` prices calls without a cost on the workers (default: a shared `Pricer`).
    Thread-safe. Construction registers an `atexit` shutdown and a fork handler; neither keeps the
    collector alive. Does not block.
    """

    def __init__(
        self,
        config: TelemetryConfig | None = None,
        exporters: Iterable[ExporterLike] = (),
        *,
        processors: Iterable[Processor] = (),
        pricer: Pricer | None = None,
    ) -> None:
        self.config: Final = config if config is not None else TelemetryConfig()
        cfg = self.config
        self._enabled = cfg.enabled
        self._sampler = Sampler(cfg.sample_rate) if cfg.sample_rate < 1.0 else None
        self._plain = self._enabled and self._sampler is None
        self._aggregate = cfg.sampling == "aggregate"
        self._processors: tuple[Processor, ...] = (*processors, *build_processors(cfg))
        # a processor object's bound `__call__` is called ~30 ns faster than the object itself
        self._chain: tuple[Processor, ...] = tuple(
            p if isinstance(p, types.FunctionType | types.MethodType) else getattr(p, "__call__", p)  # noqa: B004
            for p in self._processors
        )
        self._pricer = pricer
        self._exporters = exporters_ = _Pipelines(cfg.shutdown_timeout_s)
        # shared budgets shown in stats(), by name; weak, so watching keeps no budget alive
        self._budgets: dict[str, weakref.ref[BudgetStats]] = {}
        self._init_state()
        for exporter in exporters:
            self.add_exporter(exporter)

        ref = weakref.ref(self)

        def _after_fork_in_child() -> None:
            collector = ref()
            if collector is not None:
                collector._after_fork()

        # The hook holds the pipelines, not the collector, so the collector can be collected; the
        # finalizer then shuts the pipelines down (not at exit: there the hook itself runs).
        self._atexit_hook = exporters_.at_exit
        atexit.register(self._atexit_hook)
        weakref.finalize(self, _abandon, exporters_, self._atexit_hook).atexit = False
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)

    def _init_state(self) -> None:
        """Fresh lock and counters (construction, and in a forked child)."""
        self._lock = threading.Lock()
        self._emitted = itertools.count()  # lock-free on the hot path; read with `_peek`
        self._sampled_out = 0
        self._dropped_by_processors = 0
        self._errors = 0
        self._last_error: str | None = None
        self._unsampled_calls = 0
        self._unsampled_input = 0
        self._unsampled_output = 0
        self._unsampled_cost = 0.0
        self._unpriced: dict[tuple[str, str | None], list[int]] = {}

    # -- the hot path -----------------------------------------------------------------------------

    def record(self, item: TelemetryItem) -> None:
        """Sample, process and queue one item for every exporter. The hot path.

        Never blocks (beyond short uncontended locks), does no I/O and never raises: an item a
        processor drops or fails on is counted (`dropped_by_processors`, `errors`) and not exported;
        the caller's object is never modified. Safe from any thread and from asyncio code.
        """
        try:
            if not self._plain:  # disabled, or sampling
                if not self._enabled:
                    return
                sampler = self._sampler
                if sampler is not None and not sampler.keep(item):
                    self._count_unsampled(item)
                    return
            for processor in self._chain:
                item = processor(item)
            next(self._emitted)
            for offer in self._exporters.offers:
                offer(item)
        except DropItem:
            with self._lock:
                self._dropped_by_processors += 1
        except Exception as exc:
            self._record_failure(exc)

    def _count_unsampled(self, item: TelemetryItem) -> None:
        if type(item) is not LLMCall or not self._aggregate:
            with self._lock:
                self._sampled_out += 1
            return
        cost = item.cost
        with self._lock:
            self._sampled_out += 1
            self._unsampled_calls += 1
            self._unsampled_input += item.input_tokens
            self._unsampled_output += item.output_tokens
            if cost is not None:
                self._unsampled_cost += cost
                return
            key = (item.model, item.provider)
            bucket = self._unpriced.get(key)
            if bucket is None:
                bucket = self._unpriced[key] = [0] * _UNPRICED_FIELDS
            bucket[0] += 1
            bucket[1] += item.input_tokens
            bucket[2] += item.output_tokens
            bucket[3] += item.cached_input_tokens
            bucket[4] += item.cache_write_tokens
            bucket[5] += item.reasoning_tokens

    def _record_failure(self, exc: BaseException) -> None:
        """Count a failure inside the SDK (never raised into the application)."""
        with self._lock:
            self._errors += 1
            self._last_error = _describe(exc)

    # -- exporters --------------------------------------------------------------------------------

    def add_exporter(self, exporter: ExporterLike) -> None:
        """Add an exporter (or a `(kind, item_dict)` callable) with its own queue and worker.

        It receives the items recorded from now on; its worker starts at once. Raises `TypeError`
        for an object that is no exporter, `RuntimeError` after `shutdown`. Thread-safe; does not
        block.
        """
        adapted = as_exporter(exporter)
        cfg = self.config
        pipeline = ExportPipeline(
            adapted,
            max_queue=cfg.buffer_size,
            max_batch=cfg.max_batch_size,
            flush_interval_s=cfg.flush_interval_s,
            pricer=self._pricer,
        )
        self._exporters.add(pipeline.name or "exporter", pipeline)
        pipeline.start()  # its worker loads the price table now, before the first batch needs it

    #: `register_exporter` is `add_exporter` (the telemetry-bootstrap name).
    register_exporter = add_exporter

    def start(self) -> None:
        """Start every pipeline's worker now (construction does; they also start on the first record).

        Each worker begins by loading the price table (genai-prices, ~0.2 s the first time in a
        process), so the first batch does not wait for it. Does not block.
        """
        for pipeline in self._exporters.pipelines:
            pipeline.start()

    # -- flush and shutdown -----------------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float:
        return self.config.shutdown_timeout_s if timeout is None else max(0.0, timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Export everything recorded so far; blocks up to `timeout` s (default `shutdown_timeout_s`).

        Every exporter flushes in parallel against the same deadline, so a hung one cannot hold the
        others back. True when every exporter settled its items in time. From asyncio use `aflush`.
        """
        ok, errors = run_within([p.force_flush for p in self._exporters.pipelines], self._timeout(timeout))
        for exc in errors:
            self._record_failure(exc)
        return ok

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush and stop every exporter; blocks up to `timeout` s (default `shutdown_timeout_s`).

        Every exporter shuts down in parallel against one deadline; what is still queued at the
        deadline is dropped and counted. Items recorded afterwards are counted as dropped (reason
        ``"shutdown"``).
        Idempotent: later calls return False at once. From asyncio code use `ashutdown`.
        """
        exporters = self._exporters
        ok = exporters.shutdown(self._timeout(timeout))
        atexit.unregister(self._atexit_hook)
        while exporters.errors:
            self._record_failure(exporters.errors.pop())
        return ok

    async def aflush(self, timeout: float | None = None) -> bool:
        """`flush` on a worker thread, so the event loop keeps running while it waits."""
        import asyncio  # here, not at the top: importing asyncio costs ~40 ms; only its users pay

        return await asyncio.to_thread(self.flush, timeout)

    async def ashutdown(self, timeout: float | None = None) -> bool:
        """`shutdown` on a worker thread, so the event loop keeps running while it waits."""
        import asyncio  # see aflush

        return await asyncio.to_thread(self.shutdown, timeout)

    def _after_fork(self) -> None:
        """In a forked child: new lock, zeroed counters, restarted pipelines (queues stay the parent's)."""
        self._init_state()
        self._exporters.reinit()
        for pipeline in self._exporters.pipelines:
            pipeline.restart_after_fork()

    @property
    def is_shut_down(self) -> bool:
        """True once `shutdown` has begun."""
        return self._exporters.closing

    def __enter__(self) -> Collector:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    # -- tracing ----------------------------------------------------------------------------------

    def span(self, name: str, **attributes: Any) -> SpanScope:
        """A context manager timing a block as a `Span`, a child of the current span if any.

        Yields a `SpanHandle` (`set_attribute`, `set_error`, ids). An exception marks the span as an
        error and propagates. Records on exit; does not block.
        """
        return SpanScope(self, name, attributes)

    def generation(self, model: str, **attributes: Any) -> GenerationScope:
        """A context manager timing one model call, recorded on exit as an `LLMCall`.

        Yields a `GenerationHandle` (`set_usage`, `set_output`, `set_input`, `first_token`, ...).
        Attributes named like `LLMCall` fields (`tenant_id`, `route`, `user_id`, `provider`, ...) become
        those fields; others go to `metadata`. Does not block.
        """
        return GenerationScope(self, model, attributes)

    def bind(self) -> Binding:
        """Make this the current collector of this context (thread or asyncio task and its children).

        `@observe` without a `collector=` records to it. Takes effect at once; use it as a context
        manager to restore the previous one on exit. Does not block.
        """
        return bind(self)

    # -- statistics -------------------------------------------------------------------------------

    def watch_budget(self, budget: BudgetStats) -> str:
        """Show a shared budget's counters in `stats()` (under its `budget_id`); returns that name.

        `SharedBudget(collector=...)` calls it. A second budget with the same id gets ``id#2``. The
        collector keeps only a weak reference. Does not block.
        """
        with self._lock:
            name = budget.budget_id
            n = 1
            while name in self._budgets and self._budgets[name]() not in (None, budget):
                n += 1
                name = f"{budget.budget_id}#{n}"
            self._budgets[name] = weakref.ref(budget)
        return name

    def stats(self) -> dict[str, Any]:
        """Counters of the collector and of each exporter. Does not block on I/O.

        Keys: `emitted` (items that passed sampling and processors), `sampled_out`,
        `dropped_by_processors`, `errors` and `last_error` (failures inside the SDK), `unsampled`
        (calls, tokens and cost of LLM calls left out by sampling, see `TelemetryConfig.sampling`) and
        `exporters`: per exporter name, `emitted`, `exported`, `queued`, `dropped`, `dropped_by_reason`,
        `failed`, `retried`, `last_error`, with ``emitted == exported + queued + dropped``;
        `budget_fail_open`, `budget_fail_closed`, `budget_refused` (summed over the shared budgets
        given this collector) and `budgets`: each one's `SharedBudget.stats()` by name. Pricing
        unsampled calls may take a few milliseconds the first time a model is seen.
        """
        with self._lock:
            result: dict[str, Any] = {
                "emitted": _peek(self._emitted),
                "sampled_out": self._sampled_out,
                "dropped_by_processors": self._dropped_by_processors,
                "errors": self._errors,
                "last_error": self._last_error,
            }
            unsampled = (
                self._unsampled_calls,
                self._unsampled_input,
                self._unsampled_output,
                self._unsampled_cost,
            )
            unpriced = {k: list(v) for k, v in self._unpriced.items()}
            exporters_ = self._exporters
            pipelines = tuple(zip(exporters_.names, exporters_.pipelines, strict=True))
        cost, unpriced_calls = self._price_unsampled(unsampled[3], unpriced)
        result["unsampled"] = {
            "calls": unsampled[0],
            "input_tokens": unsampled[1],
            "output_tokens": unsampled[2],
            "cost": cost,
            "unpriced_calls": unpriced_calls,
        }
        exporters: dict[str, dict[str, Any]] = {}
        for name, pipeline in pipelines:
            stats = pipeline.stats()
            stats["emitted"] = stats.pop("offered", 0)
            exporters[name] = stats
        result["exporters"] = exporters
        with self._lock:
            watched = [(name, ref()) for name, ref in self._budgets.items()]
        budgets = {name: budget.stats() for name, budget in watched if budget is not None}
        for key in ("fail_open", "fail_closed", "refused"):
            result[f"budget_{key}"] = sum(b[key] for b in budgets.values())
        result["budgets"] = budgets
        return result

    def _price_unsampled(
        self, known: float, unpriced: dict[tuple[str, str | None], list[int]]
    ) -> tuple[float, int]:
        """Known costs plus the priced token sums; linear prices are exact, tiered ones use the mean."""
        if not unpriced:
            return known, 0
        pricer = self._pricer
        if pricer is None:
            # imported here: genai-prices takes ~150 ms to load and `import llmpulse.sdk` stays light
            from llmpulse.pricing import Pricer

            pricer = self._pricer = Pricer()
        total, missing = known, 0
        for (model, provider), (calls, inp, out, cached, cw, reasoning) in unpriced.items():
            try:
                rates = pricer.linear_rates(model, provider=provider)
                if rates is not None:
                    total += rates.cost(inp, out, cached, cw, reasoning) + rates.base * (calls - 1)
                    continue
                one = pricer.cost(
                    model,
                    provider=provider,
                    input_tokens=inp // calls,
                    output_tokens=out // calls,
                    cached_input_tokens=cached // calls,
                    cache_write_tokens=cw // calls,
                    reasoning_tokens=reasoning // calls,
                )
            except Exception:
                one = None
            if one is None:
                missing += calls
            else:
                total += one * calls
        return total, missing

    def __repr__(self) -> str:
        return f"<Collector exporters={list(self._exporters.names)} shut_down={self._exporters.closing}>"
