"""The dashboard's read endpoints: a series (per minute, hour or day) with totals, breakdowns by
model or route, the tenants/routes/models for the filters, and the recent calls.

Every endpoint reads one scope: ``tenant_id`` (absent: every tenant), optional ``route`` and
``model``, and a range of window starts given as ``from``/``to`` (RFC 3339 with an offset) or as the
last ``minutes`` before ``to`` (default: the last 60 minutes before now). The range spans at most
400 days (long ranges read hourly and daily rollups); ``limit`` parameters are bounded. A value out
of its bounds is answered 400 naming the parameter; a value that is not even of the right type
(``minutes=abc``, a timestamp without an offset) 422, as in the rest of the query API; an
unavailable store 503.

Store reads block, so they run on a worker thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal, TypeVar

from anyio import to_thread
from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from llmpulse.server._auth import scoped_tenant_or_all
from llmpulse.server._errors import JSON, ApiError, json_response
from llmpulse.server._query import parse_time
from llmpulse.server._recent import recent_calls
from llmpulse.server._state import server_state
from llmpulse.store import (
    WINDOW_SECONDS,
    Scope,
    StoreError,
    WindowDelta,
    dimensions,
    figures,
    rfc3339,
    rollup,
)

#: Range used when neither ``from`` nor ``minutes`` is given.
DEFAULT_MINUTES: Final = 60
#: The longest range any dashboard endpoint reads: 400 days (the hourly rollups' default retention
#: is 396); long ranges are read from hourly and daily rollups, so their cost grows with days.
MAX_MINUTES: Final = 400 * 24 * 60
#: Steps of ``/v1/metrics/timeseries`` by name, in seconds.
STEPS: Final = {"minute": 60, "hour": 3600, "day": 86400}
#: The most points a series may have (a finer ``step`` over a longer range is a 400).
MAX_POINTS: Final = 1500
#: Rows of ``/v1/metrics/breakdown`` by default and at most.
DEFAULT_BREAKDOWN_LIMIT: Final = 10
MAX_BREAKDOWN_LIMIT: Final = 100
#: Calls of ``/v1/calls/recent`` by default and at most.
DEFAULT_RECENT_LIMIT: Final = 50
MAX_RECENT_LIMIT: Final = 500
#: The per-minute figures ``/v1/metrics/timeseries`` returns, one array each.
SERIES_FIELDS: Final = (
    "requests",
    "errors",
    "p50_latency_ms",
    "p95_latency_ms",
    "p95_ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "estimated_cost_usd",
)

router = APIRouter(tags=["dashboard"])

_ERROR_DOC: Final[dict[int | str, dict[str, Any]]] = {
    400: {
        "description": "A parameter is out of its bounds; the message names it",
        "content": {JSON: {"example": {"error": "query parameter `minutes` must be 1 … 1440, got 5000"}}},
    },
    422: {"description": "A parameter is malformed (not a number, a timestamp without an offset)"},
    503: {"description": "The store is unavailable"},
}

TenantParam = Annotated[
    str | None,
    Query(description="Only this tenant; every tenant when absent (with API keys: the key's tenant)."),
]
RouteParam = Annotated[str | None, Query(description="Only this route.")]
ModelParam = Annotated[str | None, Query(description="Only this model.")]
FromParam = Annotated[
    str | None,
    Query(alias="from", description="RFC 3339 start (inclusive), e.g. 2025-11-19T10:00:00Z; or `minutes`."),
]
ToParam = Annotated[str | None, Query(description="RFC 3339 end (exclusive); default now.")]
MinutesParam = Annotated[
    int | None,
    Query(
        description=f"The range as the last N minutes before `to` (1 … {MAX_MINUTES}, default "
        f"{DEFAULT_MINUTES}); not together with `from`.",
        json_schema_extra={"minimum": 1, "maximum": MAX_MINUTES},
    ),
]

_T = TypeVar("_T")


def scope_tenant(request: Request, tenant_id: str | None) -> str | None:
    """The tenant a dashboard read covers: `tenant_id`, or every tenant (None) when it is absent.

    The one place where a request's tenant scope is decided: with API keys, the key's tenant is the
    default and another tenant is a 403 (`llmpulse.server._auth.scoped_tenant_or_all`).
    """
    return scoped_tenant_or_all(request, tenant_id)


def _bounded(name: str, value: int | None, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if not low <= value <= high:
        raise ApiError(400, f"query parameter `{name}` must be {low} … {high}, got {value}")
    return value


def resolve_range(from_: str | None, to: str | None, minutes: int | None) -> tuple[datetime, datetime]:
    """The ``[start, end)`` a request asks for (UTC), or `ApiError` 400/422 naming the parameter."""
    end = parse_time("to", to) or datetime.now(UTC)
    start = parse_time("from", from_)
    if start is not None and minutes is not None:
        raise ApiError(400, "give query parameter `from` or `minutes`, not both")
    if start is None:
        span = timedelta(minutes=_bounded("minutes", minutes, DEFAULT_MINUTES, 1, MAX_MINUTES))
        if end - datetime.min.replace(tzinfo=UTC) < span:
            raise ApiError(400, "query parameter `to` is too early to look back from")
        start = end - span
    if start >= end:
        raise ApiError(400, "query parameter `from` must be before `to`")
    if end - start > timedelta(minutes=MAX_MINUTES):
        raise ApiError(400, f"query parameter `from`: the range may span at most {MAX_MINUTES // 1440} days")
    return start, end


def choose_step(scope: Scope, step: str | None) -> int:
    """The series step in seconds: `step` by name, else the finest (minute, hour, day) that gives
    at most `MAX_POINTS` points; `ApiError` 400 naming `step` when the asked one gives more."""
    span = scope.end.timestamp() - scope.start.timestamp()
    if step is None:
        for seconds in STEPS.values():
            if span / seconds <= MAX_POINTS:
                return seconds
        return STEPS["day"]
    seconds = STEPS[step]
    if span / seconds > MAX_POINTS:
        raise ApiError(
            400,
            f"query parameter `step`: a {step} step over this range gives more than {MAX_POINTS} points; "
            "use a coarser step or a shorter range",
        )
    return seconds


async def _blocking(fn: Callable[[], _T]) -> _T:
    try:
        return await to_thread.run_sync(fn)
    except StoreError as exc:
        raise ApiError(503, f"the store is unavailable: {exc}", headers={"Retry-After": "1"}) from None


def _scope(
    request: Request,
    tenant_id: str | None,
    route: str | None,
    model: str | None,
    from_: str | None,
    to: str | None,
    minutes: int | None,
) -> Scope:
    start, end = resolve_range(from_, to, minutes)
    return Scope(scope_tenant(request, tenant_id), route or None, model or None, start, end)


def _head(scope: Scope) -> dict[str, Any]:
    return {
        "tenant_id": scope.tenant_id,
        "route": scope.route,
        "model": scope.model,
        "from": rfc3339(scope.start),
        "to": rfc3339(scope.end),
    }


def _buckets(scope: Scope, step: int) -> range:
    """Bucket starts (epoch seconds, multiples of `step`) of the series over the scope's range: the
    bucket of its first minute (as `Store.summary` bounds it) to that of its last."""
    first = math.ceil(scope.start.timestamp() / WINDOW_SECONDS) * WINDOW_SECONDS
    end = math.ceil(scope.end.timestamp())
    return range(first // step * step, end, step)


@router.get(
    "/v1/metrics/timeseries",
    summary="Totals and a series (per minute, hour or day) for a scope (every tenant, or one)",
    responses=_ERROR_DOC,
)
async def get_timeseries(
    request: Request,
    tenant_id: TenantParam = None,
    route: RouteParam = None,
    model: ModelParam = None,
    from_: FromParam = None,
    to: ToParam = None,
    minutes: MinutesParam = None,
    step: Annotated[
        Literal["minute", "hour", "day"] | None,
        Query(
            description=f"The series' step; default the finest giving at most {MAX_POINTS} points "
            "(a minute up to a day, an hour up to 62 days, else a day)."
        ),
    ] = None,
) -> Response:
    """The scope's totals and one point per step of its range, oldest first.

    Answers ``{"tenant_id", "route", "model", "from", "to", "step_s", "total": {...},
    "series": {"window_start": [...], "requests": [...], ...}}``. ``total`` has the figures of a
    `/v1/metrics/summary` row plus ``windows`` (rows merged) and ``error_rate``; ``series`` holds
    one array per figure (`SERIES_FIELDS`), one item per step (buckets aligned to UTC minutes,
    hours or days; the first and last may cover only part of theirs), empty buckets included (0
    requests, null percentiles). Long ranges are read from hourly and daily rollups.
    """
    scope = _scope(request, tenant_id, route, model, from_, to, minutes)
    seconds = choose_step(scope, step)
    store = server_state(request).require_store()
    found = await _blocking(lambda: rollup(store, scope, seconds))
    starts = list(_buckets(scope, seconds))
    empty = figures(WindowDelta())
    points = [figures(found.series[ws]) if ws in found.series else empty for ws in starts]
    stamps = [rfc3339(datetime.fromtimestamp(ws, UTC)) for ws in starts]
    series: dict[str, list[Any]] = {"window_start": stamps}
    for name in SERIES_FIELDS:
        series[name] = [p[name] for p in points]
    total = {"windows": found.windows, **figures(found.total)}
    return json_response({**_head(scope), "step_s": seconds, "total": total, "series": series})


_SORT_KEYS: Final = {
    "cost": "estimated_cost_usd",
    "p95_latency": "p95_latency_ms",
    "requests": "requests",
    "errors": "errors",
}


@router.get(
    "/v1/metrics/breakdown",
    summary="Per-model or per-route figures for a scope, top N by cost, p95 latency, requests or errors",
    responses=_ERROR_DOC,
)
async def get_breakdown(
    request: Request,
    by: Annotated[Literal["model", "route"], Query(description="Group by `model` or `route`.")] = "model",
    sort: Annotated[
        Literal["cost", "p95_latency", "requests", "errors"],
        Query(description="Largest first; groups without the figure last, ties by name."),
    ] = "cost",
    limit: Annotated[
        int | None,
        Query(
            description=f"Most rows (1 … {MAX_BREAKDOWN_LIMIT}, default {DEFAULT_BREAKDOWN_LIMIT}).",
            json_schema_extra={"minimum": 1, "maximum": MAX_BREAKDOWN_LIMIT},
        ),
    ] = None,
    tenant_id: TenantParam = None,
    route: RouteParam = None,
    model: ModelParam = None,
    from_: FromParam = None,
    to: ToParam = None,
    minutes: MinutesParam = None,
) -> Response:
    """The top `limit` models or routes of the scope: ``{"by", "sort", ..., "rows": [...], "count",
    "groups"}``. Each row names its ``model`` or ``route`` and has the figures of a summary row plus
    ``windows`` and ``error_rate``; ``groups`` is the number of groups before the limit."""
    n = _bounded("limit", limit, DEFAULT_BREAKDOWN_LIMIT, 1, MAX_BREAKDOWN_LIMIT)
    scope = _scope(request, tenant_id, route, model, from_, to, minutes)
    store = server_state(request).require_store()
    found = await _blocking(lambda: rollup(store, scope, STEPS["day"]))
    groups = found.by_model if by == "model" else found.by_route
    key = _SORT_KEYS[sort]
    rows = [{by: name, **figures(delta)} for name, delta in groups.items()]
    rows.sort(key=lambda r: r[by])
    rows.sort(key=lambda r: (r[key] is None, -(r[key] or 0)))
    body = {**_head(scope), "by": by, "sort": sort, "rows": rows[:n], "count": min(n, len(rows))}
    return json_response({**body, "groups": len(rows)})


@router.get(
    "/v1/metrics/dimensions",
    summary="The tenants, routes and models with data in a range (for filters)",
    responses=_ERROR_DOC,
)
async def get_dimensions(
    request: Request,
    tenant_id: TenantParam = None,
    from_: FromParam = None,
    to: ToParam = None,
    minutes: MinutesParam = None,
) -> Response:
    """``{"tenants": [...], "routes": [...], "models": [...]}``, each ascending: the names with at
    least one window in the range (of the tenant, when given)."""
    scope = _scope(request, tenant_id, None, None, from_, to, minutes)
    store = server_state(request).require_store()
    found = await _blocking(lambda: dimensions(store, scope))
    return json_response(
        {**_head(scope), "tenants": found.tenants, "routes": found.routes, "models": found.models}
    )


@router.get(
    "/v1/calls/recent",
    summary="The most recent calls of a scope with their status (from the call records)",
    responses=_ERROR_DOC,
)
async def get_recent_calls(
    request: Request,
    tenant_id: TenantParam = None,
    route: RouteParam = None,
    model: ModelParam = None,
    from_: FromParam = None,
    to: ToParam = None,
    minutes: MinutesParam = None,
    limit: Annotated[
        int | None,
        Query(
            description=f"Most calls (1 … {MAX_RECENT_LIMIT}, default {DEFAULT_RECENT_LIMIT}).",
            json_schema_extra={"minimum": 1, "maximum": MAX_RECENT_LIMIT},
        ),
    ] = None,
) -> Response:
    """The newest calls whose start is in the range, newest first: ``{"calls": [...], "count"}``.

    Read from the store's call records (the same as ``/v1/calls``), with a SQLite or a Kafka event
    log alike: a call shows once the processor has counted it (a request without its response once
    it timed out). Each call: ``request_id, tenant_id, route, model, timestamp, status`` (``ok |
    error | timeout | cancelled``), ``latency_ms, ttft_ms, input_tokens, output_tokens, cost_usd,
    error``; see `llmpulse.server._recent`.
    """
    n = _bounded("limit", limit, DEFAULT_RECENT_LIMIT, 1, MAX_RECENT_LIMIT)
    scope = _scope(request, tenant_id, route, model, from_, to, minutes)
    store = server_state(request).require_store()
    calls = await _blocking(
        lambda: recent_calls(
            store,
            tenant_id=scope.tenant_id,
            route=scope.route,
            model=scope.model,
            start=scope.start,
            end=scope.end,
            limit=n,
        )
    )
    return json_response({**_head(scope), "calls": calls, "count": len(calls)})
