"""An independent, brute-force oracle for the processor's windows and call records.

It shares no code with `llmpulse.pipeline._processor` or `llmpulse.pricing`: it keeps every event,
deduplicates by (request_id, kind) with the first copy winning, joins with plain dicts after the fact,
places each call in its minute with datetime arithmetic, prices with `genai_prices.calc_price` itself,
and keeps exact latency lists so percentiles can be checked by nearest rank.
"""

from __future__ import annotations

import calendar
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache

import genai_prices

from llmpulse.events import Event, LLMCall, LLMRequest, LLMResponse
from llmpulse.store import WindowDelta, WindowKey, quantile


@dataclass
class ExpectedWindow:
    """What one window must hold, with exact latency lists."""

    requests: int = 0
    errors: int = 0
    timeouts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    cost_usd: float = 0.0
    cost_unknown: int = 0


@dataclass
class Expected:
    """The oracle's answer: windows, plus server-wide figures."""

    windows: dict[WindowKey, ExpectedWindow]
    duplicates: int
    orphan_responses: int
    unanswered_requests: int


def minute_of(ts: datetime) -> int:
    """Epoch seconds of the start of `ts`'s UTC minute."""
    return calendar.timegm(ts.astimezone(UTC).replace(second=0, microsecond=0).timetuple())


@cache
def _price(
    model: str,
    provider: str | None,
    input_tokens: int,
    output_tokens: int,
    cached: int,
    cache_write: int,
    reasoning: int,
    at: datetime,
) -> float | None:
    usage: dict[str, int] = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    if cached:
        usage["cache_read_tokens"] = cached
    if cache_write:
        usage["cache_write_tokens"] = cache_write
    if reasoning:
        usage["output_reasoning_tokens"] = reasoning
    for provider_id in (provider, None) if provider is not None else (None,):
        try:
            result = genai_prices.calc_price(
                genai_prices.Usage(**usage), model, provider_id=provider_id, genai_request_timestamp=at
            )
        except LookupError:
            continue
        return float(result.total_price)
    return None


def price(
    model: str,
    *,
    provider: str | None = None,
    input_tokens: int,
    output_tokens: int,
    cached: int = 0,
    cache_write: int = 0,
    reasoning: int = 0,
    at: datetime,
) -> float | None:
    """genai-prices' own price for one call, or None when it does not know the model."""
    return _price(model, provider, input_tokens, output_tokens, cached, cache_write, reasoning, at)


def call_cost(call: LLMCall) -> tuple[float | None, str | None]:
    """(counted cost, source) of a call event under the default estimate policy: a provider's or a
    sender's genai-prices figure as sent; an estimate (or no source) gives way to genai-prices'
    figure when genai-prices knows the model; no cost: genai-prices' figure or unknown."""
    priced = price(
        call.model,
        provider=call.provider,
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        cached=call.cached_input_tokens,
        cache_write=call.cache_write_tokens,
        reasoning=call.reasoning_tokens,
        at=call.timestamp,
    )
    if call.cost is None:
        return priced, None if priced is None else "genai-prices"
    if call.cost_source in ("provider", "genai-prices"):
        return call.cost, call.cost_source
    if priced is not None:
        return priced, "genai-prices"
    return call.cost, "estimate"


def _kind(event: Event) -> str:
    return type(event).__name__


def expected_windows(events: Iterable[Event], *, unanswered_are_timeouts: bool = False) -> Expected:
    """The windows `events` must produce, whatever their order and duplication.

    With `unanswered_are_timeouts`, a request without a response counts as a request, an error and
    a timeout with its prompt tokens and the cost of its prompt alone; without it, it does not count
    (its response is assumed still to come). A response without a request never counts in a window.
    """
    first: dict[tuple[str, str], Event] = {}
    duplicates = 0
    for event in events:
        rid = event.request_id
        if rid is None:  # a call without an id cannot be deduplicated
            first[(f"anonymous-{len(first)}", _kind(event))] = event
            continue
        key = (rid, _kind(event))
        if key in first:
            duplicates += 1
        else:
            first[key] = event
    requests = {rid: e for (rid, _), e in first.items() if isinstance(e, LLMRequest)}
    responses = {rid: e for (rid, _), e in first.items() if isinstance(e, LLMResponse)}
    calls = [e for e in first.values() if isinstance(e, LLMCall)]

    windows: dict[WindowKey, ExpectedWindow] = {}

    def window(tenant: str, route: str, model: str, ts: datetime) -> ExpectedWindow:
        key = WindowKey(tenant, route, model, minute_of(ts))
        if key not in windows:
            windows[key] = ExpectedWindow()
        return windows[key]

    def add_cost(w: ExpectedWindow, cost: float | None) -> None:
        if cost is None:
            w.cost_unknown += 1
        else:
            w.cost_usd += cost

    unanswered = 0
    for rid, req in requests.items():
        w = window(req.tenant_id, req.route, req.model, req.timestamp)
        resp = responses.get(rid)
        if resp is None:
            unanswered += 1
            if not unanswered_are_timeouts:
                if w.requests == 0 and not w.latencies:
                    del windows[WindowKey(req.tenant_id, req.route, req.model, minute_of(req.timestamp))]
                continue
            w.requests += 1
            w.errors += 1
            w.timeouts += 1
            w.prompt_tokens += req.prompt_tokens
            add_cost(w, price(req.model, input_tokens=req.prompt_tokens, output_tokens=0, at=req.timestamp))
            continue
        w.requests += 1
        w.errors += resp.error is not None
        w.prompt_tokens += req.prompt_tokens
        w.completion_tokens += resp.completion_tokens
        w.latencies.append(resp.latency_ms)
        if resp.ttft_ms is not None:
            w.ttfts.append(resp.ttft_ms)
        add_cost(
            w,
            price(
                req.model,
                input_tokens=req.prompt_tokens,
                output_tokens=resp.completion_tokens,
                at=req.timestamp,
            ),
        )
    for call in calls:
        w = window(call.tenant_id, call.route, call.model, call.timestamp)
        w.requests += 1
        w.errors += call.status == "error" or call.error is not None
        w.prompt_tokens += call.input_tokens
        w.completion_tokens += call.output_tokens
        w.cached_input_tokens += call.cached_input_tokens
        w.cache_write_tokens += call.cache_write_tokens
        w.reasoning_tokens += call.reasoning_tokens
        if call.latency_ms is not None:
            w.latencies.append(call.latency_ms)
        if call.ttft_ms is not None:
            w.ttfts.append(call.ttft_ms)
        add_cost(w, call_cost(call)[0])
    orphan_responses = sum(1 for rid in responses if rid not in requests)
    return Expected(windows, duplicates, orphan_responses, unanswered)


def nearest_rank(values: list[float], q: float) -> float | None:
    """The exact nearest-rank q-quantile of `values`."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def assert_matches(actual: Mapping[WindowKey, WindowDelta], expected: Expected) -> None:
    """Assert the processor's (merged) windows equal the oracle's: exact counts and token sums, float
    sums within 1e-9 relative, p50/p95/p99 (latency and time to first token) within 1 %.
    """
    live = {k: d for k, d in actual.items() if d.requests or d.latency_count or d.ttft_count}
    assert set(live) == set(expected.windows), (
        f"missing {set(expected.windows) - set(live)}, unexpected {set(live) - set(expected.windows)}"
    )
    for key, want in expected.windows.items():
        got = live[key]
        for name in (
            "requests",
            "errors",
            "timeouts",
            "prompt_tokens",
            "completion_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
            "cost_unknown",
        ):
            assert getattr(got, name) == getattr(want, name), (key, name, getattr(got, name), want)
        assert got.latency_count == len(want.latencies), key
        assert got.ttft_count == len(want.ttfts), key
        assert sum(got.latency_hist.values()) == len(want.latencies), key
        assert math.isclose(got.latency_sum_ms, math.fsum(want.latencies), rel_tol=1e-9, abs_tol=1e-6), key
        assert math.isclose(got.ttft_sum_ms, math.fsum(want.ttfts), rel_tol=1e-9, abs_tol=1e-6), key
        assert math.isclose(got.cost_usd, want.cost_usd, rel_tol=1e-9, abs_tol=1e-12), (
            key,
            got.cost_usd,
            want.cost_usd,
        )
        for hist, values in ((got.latency_hist, want.latencies), (got.ttft_hist, want.ttfts)):
            for q in (0.5, 0.95, 0.99):
                exact = nearest_rank(values, q)
                approx = quantile(hist, q) if values else None
                if exact is None:
                    assert approx is None
                else:
                    assert approx is not None
                    assert abs(approx - exact) <= 0.01 * exact + 1e-3, (key, q, approx, exact)


# -- call records --------------------------------------------------------------------------------------

#: Attribution fields a StreamLens request may carry in its metadata (string values of at most 256
#: characters count).
_REQUEST_ATTRIBUTES = ("user_id", "org_id", "session_id", "feature", "endpoint", "environment")


def _meta_attr(metadata: Mapping[str, object] | None, name: str) -> str | None:
    value = (metadata or {}).get(name)
    return value if isinstance(value, str) and 0 < len(value) <= 256 else None


def _error(error: object) -> tuple[str | None, str | None]:
    if error is None:
        return None, None
    if isinstance(error, str):
        return None, error
    if isinstance(error, dict):
        kind = error.get("type")
        if kind is None:
            kind = error.get("code")
        message = error.get("message")
        if not isinstance(message, str):
            message = json.dumps(error, separators=(",", ":"), ensure_ascii=False)
        return (None if kind is None else str(kind)), message
    return None, str(error)


def expected_calls(
    events: Iterable[Event], *, unanswered_are_timeouts: bool
) -> dict[tuple[str, str], dict[str, object]]:
    """The call records `events` must produce, keyed by (tenant_id, request_id), whatever their order
    and duplication. Each is a dict of the record's columns (``metadata`` as a dict or None; no
    ``updated_at``).

    Identity is per tenant: the first request or call event seen for a (tenant, request_id) claims
    it, any later one is a duplicate. A response naming its tenant joins that tenant's request; one
    naming none joins the request of its id (the first response of an id wins). A request without a
    response is a ``timeout`` record (its prompt alone, priced alone) with `unanswered_are_timeouts`,
    else no record; a response without a request, or whose id a call event claimed, makes none.
    Calls without a request id are left out (their ids are generated). Raises `ValueError` for a
    response naming no tenant whose id several tenants claimed (the processor's answer then
    depends on arrival order).
    """
    claims: dict[tuple[str, str], Event] = {}
    tenants_of: dict[str, set[str]] = {}
    responses: list[LLMResponse] = []
    for event in events:
        if isinstance(event, LLMResponse):
            responses.append(event)
            continue
        if event.request_id is None:
            continue
        key = (event.tenant_id, event.request_id)
        if key not in claims:
            claims[key] = event
            tenants_of.setdefault(event.request_id, set()).add(event.tenant_id)
    answers: dict[tuple[str, str], LLMResponse] = {}
    for resp in responses:
        if resp.tenant_id is not None:
            key = (resp.tenant_id, resp.request_id)
        else:
            owners = tenants_of.get(resp.request_id, set())
            if len(owners) > 1:
                raise ValueError(
                    f"response {resp.request_id!r} names no tenant and {sorted(owners)} use its id"
                )
            if not owners:
                continue
            key = (next(iter(owners)), resp.request_id)
        answers.setdefault(key, resp)

    out: dict[tuple[str, str], dict[str, object]] = {}
    for key, event in claims.items():
        if isinstance(event, LLMCall):
            cost, source = call_cost(event)
            error_type, error_message = _error(event.error)
            failed = event.status == "error" or event.error is not None
            out[key] = {
                "tenant_id": event.tenant_id,
                "request_id": key[1],
                "started_at": event.timestamp.timestamp(),
                "route": event.route,
                "model": event.model,
                "provider": event.provider,
                "status": "error" if failed else (event.status or "ok"),
                "error_type": error_type,
                "error_message": error_message,
                "latency_ms": event.latency_ms,
                "ttft_ms": event.ttft_ms,
                "input_tokens": event.input_tokens,
                "output_tokens": event.output_tokens,
                "cached_input_tokens": event.cached_input_tokens,
                "cache_write_tokens": event.cache_write_tokens,
                "reasoning_tokens": event.reasoning_tokens,
                "cost_usd": cost,
                "cost_source": source,
                "user_id": event.user_id,
                "user_id_hash": event.user_id_hash,
                "org_id": event.org_id,
                "session_id": event.session_id,
                "feature": event.feature,
                "endpoint": event.endpoint,
                "environment": event.environment,
                "trace_id": event.trace_id,
                "span_id": event.span_id,
                "metadata": event.metadata or None,
            }
            continue
        assert isinstance(event, LLMRequest)
        resp = answers.get(key)
        if resp is None and not unanswered_are_timeouts:
            continue
        output = 0 if resp is None else resp.completion_tokens
        cost = price(event.model, input_tokens=event.prompt_tokens, output_tokens=output, at=event.timestamp)
        if resp is None:
            status, (error_type, error_message) = "timeout", ("timeout", None)
        else:
            status = "ok" if resp.error is None else "error"
            error_type, error_message = _error(resp.error)
        meta = event.metadata
        out[key] = {
            "tenant_id": event.tenant_id,
            "request_id": event.request_id,
            "started_at": event.timestamp.timestamp(),
            "route": event.route,
            "model": event.model,
            "provider": None,
            "status": status,
            "error_type": error_type,
            "error_message": error_message,
            "latency_ms": None if resp is None else resp.latency_ms,
            "ttft_ms": None if resp is None else resp.ttft_ms,
            "input_tokens": event.prompt_tokens,
            "output_tokens": output,
            "cached_input_tokens": 0,
            "cache_write_tokens": 0,
            "reasoning_tokens": 0,
            "cost_usd": cost,
            "cost_source": None if cost is None else "genai-prices",
            **{name: _meta_attr(meta, name) for name in _REQUEST_ATTRIBUTES},
            "user_id_hash": event.user_id_hash,
            "trace_id": None,
            "span_id": None,
            "metadata": meta or None,
        }
    return out
