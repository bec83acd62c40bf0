"""`LlmpulseCallbackHandler`: LangChain runs as llmpulse call events, with cost tracking and budgets.

One handler can serve many concurrent runs (threads and asyncio tasks): every piece of per-call state
lives in a dict keyed by LangChain's `run_id`, and the running totals sit behind a lock held for a
few dictionary updates. The handler is synchronous and `run_inline`, so in async chains it runs on the
event loop without a thread hop; it does no I/O (events go to the collector's bounded queue).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, GenerationChunk, LLMResult

from llmpulse.events import LLMCall, Span, Status
from llmpulse.pricing import Pricer
from llmpulse.sdk._budget import Budget, BudgetExceeded, Budgets, OnExceed, Reservation
from llmpulse.sdk._usage import Usage
from llmpulse.sdk.langchain import _extract as ex

__all__ = ["LlmpulseCallbackHandler", "Recorder"]

logger = logging.getLogger("llmpulse.sdk.langchain")

#: Call attributes exported as top-level event fields; anything else goes in `metadata`.
TOP_LEVEL: Final = (
    "tenant_id",
    "route",
    "user_id",
    "org_id",
    "session_id",
    "feature",
    "endpoint",
    "environment",
)
#: Characters per token assumed when estimating a prompt's size before the call (conservative: real
#: English text averages about 4). Only the budget reservation uses it; events carry reported usage.
CHARS_PER_TOKEN: Final = 3.0
#: Tags LangChain adds to runs by itself (step positions); left out of `metadata["tags"]`.
_INTERNAL_TAGS: Final = ("seq:step:", "map:key:", "graph:step:", "langsmith:")
_CANCELLED: Final = ("CancelledError", "GeneratorExit", "KeyboardInterrupt")


class Recorder(Protocol):
    """What the handler needs from a `Collector`: a `record` that never raises or blocks."""

    def record(self, item: LLMCall | Span, /) -> object:
        """Queue one telemetry item for export."""


@dataclass(slots=True)
class _LLMRun:
    model: str
    provider: str | None
    timestamp: datetime
    started: float
    attributes: dict[str, str]
    metadata: dict[str, Any] | None
    trace_id: str
    span_id: str
    parent_span_id: str | None
    input_estimate: int
    reservation: Reservation | None
    ttft_ms: float | None = None
    streamed_chars: int = 0


@dataclass(slots=True)
class _SpanRun:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    start_time: datetime
    started: float
    kind: str


class LlmpulseCallbackHandler(BaseCallbackHandler):
    """A LangChain callback handler that records every model call as an `LLMCall` and enforces budgets.

    Give it to a model or a chain (`callbacks=[handler]` or `config={"callbacks": [handler]}`). Per
    model run it records model, provider, tokens (LangChain's `usage_metadata`, else the provider's
    figures in `llm_output`), cost (genai-prices), latency, time to first token (streaming), finish
    reason, status (`ok`, `error`, `cancelled`) and error; chains, tools and retrievers become `Span`s
    so `trace_id` / `parent_span_id` link a call to the run that made it.

    Attributes: keyword arguments `tenant_id, route, user_id, org_id, session_id, feature, endpoint,
    environment` are top-level event fields, other keyword arguments go in `metadata`. A run's
    LangChain metadata (`config={"metadata": {...}}`) overrides them per call the same way (LangChain's
    own `ls_*` and `lc_*` keys are left out).

    Budgets: `budget_limit` (USD, with `on_exceed`) builds a global `Budget`; `budget` takes any
    `Budget` or `Budgets` (per org / user / session). Before each model call the handler reserves its
    estimated maximum cost (prompt characters / 3 as input tokens, plus `max_tokens` from the
    invocation params or `default_max_output_tokens`, priced for the model; or a fixed `reserve_usd`),
    settles it with the real cost afterwards, and releases it when the call fails before producing
    output. With `on_exceed="raise"` a `BudgetExceeded` stops the chain: this handler sets
    `raise_error = True` (LangChain swallows callback errors otherwise) and lets nothing else escape.
    A streaming call whose cost passes its reservation is charged as it goes and cut off with
    `BudgetExceeded` once a `"raise"` budget is exhausted (`stream_cutoff`). A model without a known
    price reserves and costs nothing (its `cost` is None, logged once per model).

    Events go to `collector.record` (never blocks); with `exporters=` and no collector the handler
    builds an `llmpulse.sdk.Collector` for them. Without either it only keeps the totals. Thread- and
    asyncio-safe; no method blocks or does I/O.
    """

    raise_error: bool = True
    run_inline: bool = True

    def __init__(
        self,
        collector: Recorder | None = None,
        *,
        budget_limit: float | None = None,
        budget: Budget | Budgets | None = None,
        on_exceed: OnExceed = "raise",
        exporters: Iterable[Any] | None = None,
        pricer: Pricer | None = None,
        reserve_usd: float | None = None,
        default_max_output_tokens: int = 4096,
        stream_cutoff: bool = True,
        emit_spans: bool = True,
        **attributes: object,
    ) -> None:
        super().__init__()
        if collector is None and exporters is not None:
            collector = _build_collector(exporters)
        if reserve_usd is not None and not (0 <= reserve_usd < math.inf):
            raise ValueError(f"`reserve_usd` must be a finite number >= 0, got {reserve_usd!r}")
        if type(default_max_output_tokens) is not int or default_max_output_tokens < 0:
            raise ValueError(
                f"`default_max_output_tokens` must be an int >= 0, got {default_max_output_tokens!r}"
            )
        budgets = [] if budget is None else list(budget) if isinstance(budget, Budgets) else [budget]
        if budget_limit is not None:
            budgets.append(Budget(budget_limit, on_exceed=on_exceed))
        self.collector: Recorder | None = collector
        #: The budgets every call is checked against (None: no limit).
        self.budget: Budget | Budgets | None = (
            None if not budgets else budgets[0] if len(budgets) == 1 else Budgets(budgets)
        )
        self.pricer = pricer if pricer is not None else Pricer()
        self.reserve_usd = reserve_usd
        self.default_max_output_tokens = default_max_output_tokens
        self.stream_cutoff = stream_cutoff
        self.emit_spans = emit_spans
        self._attributes: dict[str, str] = {}
        self._extra: dict[str, Any] = {}
        for key, value in attributes.items():
            if key in TOP_LEVEL:
                if value is not None:
                    self._attributes[key] = ex.name(value) or ""
            else:
                self._extra[key] = value
        self._llm_runs: dict[UUID, _LLMRun] = {}
        self._span_runs: dict[UUID, _SpanRun] = {}
        self._parents: dict[UUID, UUID | None] = {}
        self._lock = threading.Lock()
        self._unpriced: set[str] = set()
        self._calls = 0
        self._errors = 0
        self._tokens = 0
        self._cost = 0.0
        self._by: dict[str, dict[str | None, float]] = {}

    # ----------------------------------------------------------------- queries

    @property
    def total_cost(self) -> float:
        """USD of every finished call with a known cost. Does not block."""
        with self._lock:
            return self._cost

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens of every finished call. Does not block."""
        with self._lock:
            return self._tokens

    @property
    def calls(self) -> int:
        """Model calls finished (successfully or not). Does not block."""
        with self._lock:
            return self._calls

    def get_total_cost(self) -> float:
        """`total_cost` (token-copilot's name)."""
        return self.total_cost

    def get_costs_by(self, field: str) -> dict[str | None, float]:
        """USD per value of `field` (`model` or a top-level attribute such as `user_id`).

        Calls without the attribute count under None. Does not block.
        """
        if field != "model" and field not in TOP_LEVEL:
            raise ValueError(f"`field` must be 'model' or one of {TOP_LEVEL}, got {field!r}")
        with self._lock:
            return dict(self._by.get(field, {}))

    def get_costs_by_user(self) -> dict[str | None, float]:
        """USD per `user_id`."""
        return self.get_costs_by("user_id")

    def get_costs_by_org(self) -> dict[str | None, float]:
        """USD per `org_id`."""
        return self.get_costs_by("org_id")

    def get_remaining_budget(self, attributes: Mapping[str, str | None] | None = None) -> float:
        """USD a new call could still reserve (the tightest member budget for these attributes).

        Without a budget: infinity. Does not block.
        """
        if self.budget is None:
            return math.inf
        attributes = {**self._attributes, **(attributes or {})}
        members = self.budget if isinstance(self.budget, Budgets) else (self.budget,)
        return min(member.remaining(None, member.key_for(attributes)) for member in members)

    def flush(self, timeout: float | None = None) -> bool:
        """Flush the collector if it can be flushed (blocks up to `timeout`). True when done."""
        flush = getattr(self.collector, "flush", None)
        return bool(flush(timeout)) if callable(flush) else True

    def shutdown(self, timeout: float | None = None) -> bool:
        """Shut the collector down if it can be (blocks up to `timeout`). True when done."""
        shutdown = getattr(self.collector, "shutdown", None)
        return bool(shutdown(timeout)) if callable(shutdown) else True

    # ------------------------------------------------------------- model runs

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Start a chat model run: check and reserve the budget (may raise `BudgetExceeded`)."""
        chars = sum(ex.messages_chars(prompt) for prompt in messages)
        self._guard(self._start_llm, serialized, chars, run_id, parent_run_id, tags, metadata, kwargs)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Start a text-completion model run: check and reserve the budget (may raise)."""
        chars = sum(len(prompt) for prompt in prompts)
        self._guard(self._start_llm, serialized, chars, run_id, parent_run_id, tags, metadata, kwargs)

    def on_llm_new_token(
        self,
        token: str | list[str | dict[str, Any]],
        *,
        chunk: GenerationChunk | ChatGenerationChunk | None = None,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Note the time to first token; charge a stream's progress (may raise `BudgetExceeded`)."""
        self._guard(self._token, token, chunk, run_id)

    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Finish a model run: record its event and settle its reservation with the real cost."""
        self._guard(self._end_llm, run_id, response, None)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Finish a failed or cancelled model run: record its event, settle or release its budget."""
        response = kwargs.get("response")
        self._guard(self._end_llm, run_id, response if isinstance(response, LLMResult) else None, error)

    # --------------------------------------------------- chains, tools, retrievers

    def on_chain_start(
        self,
        serialized: dict[str, Any],
        inputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open a span for a chain run."""
        self._guard(self._start_span, "chain", serialized, kwargs, run_id, parent_run_id)

    def on_chain_end(
        self, outputs: dict[str, Any], *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Close a chain run's span."""
        self._guard(self._end_span, run_id, None)

    def on_chain_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Close a failed chain run's span."""
        self._guard(self._end_span, run_id, error)

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open a span for a tool run."""
        self._guard(self._start_span, "tool", serialized, kwargs, run_id, parent_run_id)

    def on_tool_end(
        self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Close a tool run's span."""
        self._guard(self._end_span, run_id, None)

    def on_tool_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Close a failed tool run's span."""
        self._guard(self._end_span, run_id, error)

    def on_retriever_start(
        self,
        serialized: dict[str, Any],
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open a span for a retriever run."""
        self._guard(self._start_span, "retriever", serialized, kwargs, run_id, parent_run_id)

    def on_retriever_end(
        self,
        documents: Sequence[Document],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Close a retriever run's span."""
        self._guard(self._end_span, run_id, None)

    def on_retriever_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Close a failed retriever run's span."""
        self._guard(self._end_span, run_id, error)

    # ---------------------------------------------------------------- internals

    def _guard(self, method: Any, *args: Any) -> None:
        """Run a callback body; only `BudgetExceeded` reaches the application."""
        try:
            method(*args)
        except BudgetExceeded:
            raise
        except Exception:
            logger.exception("llmpulse LangChain handler failed (the run goes on)")

    def _link(self, run_id: UUID, parent_run_id: UUID | None) -> tuple[str, str, str | None]:
        """Register a run; answer its `(trace_id, span_id, parent_span_id)`."""
        self._parents[run_id] = parent_run_id
        root = run_id
        parent = parent_run_id
        for _ in range(10_000):
            if parent is None:
                break
            root = parent
            parent = self._parents.get(parent)
        return (
            ex.trace_id(root),
            ex.span_id(run_id),
            None if parent_run_id is None else ex.span_id(parent_run_id),
        )

    def _call_attributes(
        self, metadata: Mapping[str, Any] | None, tags: list[str] | None
    ) -> tuple[dict[str, str], dict[str, Any] | None]:
        attributes = dict(self._attributes)
        extra = dict(self._extra)
        for key, value in (metadata or {}).items():
            if key.startswith(("ls_", "lc_")):
                continue
            if key in TOP_LEVEL:
                found = ex.name(value)
                if found is not None:
                    attributes[key] = found
            else:
                extra[key] = value
        user_tags = [tag for tag in tags or () if not tag.startswith(_INTERNAL_TAGS)]
        if user_tags:
            extra["tags"] = user_tags
        return attributes, extra or None

    def _estimate(self, model: str, provider: str | None, input_tokens: int, max_output: int) -> float:
        if self.reserve_usd is not None:
            return self.reserve_usd
        cost = self._price(model, provider, Usage.of(input_tokens, max_output))
        return 0.0 if cost is None else cost

    def _price(self, model: str, provider: str | None, usage: Usage) -> float | None:
        try:
            cost = self.pricer.cost(
                model,
                provider=provider,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_input_tokens=usage.cached_input_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                reasoning_tokens=usage.reasoning_tokens,
            )
        except Exception:
            logger.exception("pricing %r failed", model)
            return None
        if cost is None and model not in self._unpriced:
            self._unpriced.add(model)
            logger.warning("no price for model %r: its calls cost None and reserve no budget", model)
        return cost

    def _start_llm(
        self,
        serialized: Mapping[str, Any] | None,
        prompt_chars: int,
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: list[str] | None,
        metadata: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
    ) -> None:
        timestamp = datetime.now(UTC)
        started = time.perf_counter()
        params = kwargs.get("invocation_params")
        params = params if isinstance(params, Mapping) else None
        model = ex.name(ex.model_of(params, metadata, serialized)) or "unknown"
        provider = ex.name((metadata or {}).get("ls_provider"))
        attributes, extra = self._call_attributes(metadata, tags)
        input_estimate = math.ceil(prompt_chars / CHARS_PER_TOKEN)
        reservation = None
        if self.budget is not None:
            max_output = ex.max_output_tokens(params, metadata) or self.default_max_output_tokens
            estimate = self._estimate(model, provider, input_estimate, max_output)
            reservation = self.budget.reserve(attributes, estimate)  # may raise BudgetExceeded
        trace, span, parent_span = self._link(run_id, parent_run_id)
        self._llm_runs[run_id] = _LLMRun(
            model=model,
            provider=provider,
            timestamp=timestamp,
            started=started,
            attributes=attributes,
            metadata=extra,
            trace_id=trace,
            span_id=span,
            parent_span_id=parent_span,
            input_estimate=input_estimate,
            reservation=reservation,
        )

    def _token(self, token: object, chunk: object, run_id: UUID) -> None:
        run = self._llm_runs.get(run_id)
        if run is None:
            return
        if run.ttft_ms is None and ex.chunk_has_content(token, chunk):
            run.ttft_ms = (time.perf_counter() - run.started) * 1000.0
        if run.reservation is None or not self.stream_cutoff:
            return
        run.streamed_chars += ex.chunk_chars(token, chunk)
        so_far = self._progress_cost(run)
        if so_far is not None:
            exhausted = run.reservation.check_progress(so_far)
            if exhausted is not None:
                raise exhausted

    def _progress_cost(self, run: _LLMRun) -> float | None:
        output = math.ceil(run.streamed_chars / CHARS_PER_TOKEN)
        return self._price(run.model, run.provider, Usage.of(run.input_estimate, output))

    def _end_llm(self, run_id: UUID, response: LLMResult | None, error: BaseException | None) -> None:
        run = self._llm_runs.pop(run_id, None)
        self._parents.pop(run_id, None)
        if run is None:
            return
        latency_ms = (time.perf_counter() - run.started) * 1000.0
        usage = ex.usage_of(response) if response is not None else None
        response_model, finish_reason = (
            ex.response_details(response) if response is not None else (None, None)
        )
        cost: float | None = None
        if usage is not None:
            cost = self._price(response_model or run.model, run.provider, usage)
            if cost is None and response_model is not None:
                cost = self._price(run.model, run.provider, usage)
        self._settle(run, usage, cost, error)
        status: Status = "ok"
        if error is not None:
            status = "cancelled" if type(error).__name__ in _CANCELLED else "error"
        used = usage or Usage()
        call = LLMCall(
            model=run.model,
            timestamp=run.timestamp,
            input_tokens=used.input_tokens,
            output_tokens=used.output_tokens,
            cached_input_tokens=used.cached_input_tokens,
            cache_write_tokens=used.cache_write_tokens,
            reasoning_tokens=used.reasoning_tokens,
            cost=cost,
            cost_source=None if cost is None else "genai-prices",
            request_id=str(run_id),
            provider=run.provider,
            response_model=response_model,
            latency_ms=latency_ms,
            ttft_ms=run.ttft_ms,
            finish_reason=finish_reason,
            error=None if error is None else ex.error_info(error),
            status=status,
            trace_id=run.trace_id,
            span_id=run.span_id,
            parent_span_id=run.parent_span_id,
            metadata=run.metadata,
            **run.attributes,  # type: ignore[arg-type]  # only TOP_LEVEL keys, all str
        )
        self._account(call)
        if self.collector is not None:
            self.collector.record(call)

    def _settle(
        self, run: _LLMRun, usage: Usage | None, cost: float | None, error: BaseException | None
    ) -> None:
        reservation = run.reservation
        if reservation is None:
            return
        if error is None:
            reservation.settle(cost)  # None (unknown cost) charges the reservation
        elif cost is not None and usage is not None and usage.total_tokens > 0:
            reservation.settle(cost)  # a failed call that reported usage was billed
        elif run.streamed_chars > 0 or run.ttft_ms is not None:
            # output was produced but no usage reported: charge what it has cost so far (estimated)
            reservation.settle(self._progress_cost(run) or 0.0)
        else:
            reservation.release()

    def _account(self, call: LLMCall) -> None:
        with self._lock:
            self._calls += 1
            self._errors += call.status != "ok"
            self._tokens += call.input_tokens + call.output_tokens
            if call.cost is None:
                return
            self._cost += call.cost
            for field in ("model", *TOP_LEVEL):
                value = getattr(call, field)
                by = self._by.setdefault(field, {})
                by[value] = by.get(value, 0.0) + call.cost

    def _start_span(
        self,
        kind: str,
        serialized: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
        run_id: UUID,
        parent_run_id: UUID | None,
    ) -> None:
        trace, span, parent_span = self._link(run_id, parent_run_id)
        if not self.emit_spans or self.collector is None:
            return
        ids = (serialized or {}).get("id")
        label = kwargs.get("name") or (serialized or {}).get("name")
        if not label and isinstance(ids, list) and ids:
            label = ids[-1]
        self._span_runs[run_id] = _SpanRun(
            name=ex.name(label) or kind,
            trace_id=trace,
            span_id=span,
            parent_span_id=parent_span,
            start_time=datetime.now(UTC),
            started=time.perf_counter(),
            kind=kind,
        )

    def _end_span(self, run_id: UUID, error: BaseException | None) -> None:
        self._parents.pop(run_id, None)
        run = self._span_runs.pop(run_id, None)
        if run is None or self.collector is None:
            return
        duration_ms = (time.perf_counter() - run.started) * 1000.0
        attributes: dict[str, Any] = {"langchain.run_type": run.kind, **self._attributes}
        self.collector.record(
            Span(
                name=run.name,
                trace_id=run.trace_id,
                span_id=run.span_id,
                parent_span_id=run.parent_span_id,
                start_time=run.start_time,
                end_time=datetime.now(UTC),
                duration_ms=duration_ms,
                status="ok" if error is None else "error",
                error=None if error is None else ex.error_info(error),
                attributes=attributes,
            )
        )


def _build_collector(exporters: Iterable[Any]) -> Recorder:
    """A `Collector` with default settings for `exporters` (imported lazily: only this needs it)."""
    from llmpulse.sdk._collector import Collector

    return Collector(exporters=list(exporters))
