"""The call-record endpoints: ``GET /v1/calls`` (pages of calls) and ``GET /v1/costs`` (who spent what).

Both read the store's call records (`llmpulse.store.calls_page`, `llmpulse.store.costs`) on a worker
thread. Parameters shared with ``/v1/metrics``: ``tenant_id`` is required without API keys (400);
with keys it defaults to the key's tenant and another tenant is a 403
(`llmpulse.server._auth.scoped_tenant`). ``from`` and ``to`` are RFC 3339 with an offset (422
otherwise) and may span at most `RequestLimits.max_query_range_s` (400). Both are rounded up to the
minute (`llmpulse.store.minute_bounds`): the calls read are exactly those of the minute windows
``/v1/metrics/summary`` sums for the same ``from`` and ``to``, so ``/v1/costs``' total equals the
summary's. Filters match exactly; ``user_id`` matches the call's user id, else its user id hash.

A value out of its bounds (``limit``, a ``cursor`` of another query, a ``group_by`` that is no
attribute) is answered 400 naming the parameter, a malformed one 422, an unavailable store 503 with
``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal, TypeVar

from anyio import to_thread
from fastapi import APIRouter, Depends, Query
from starlette.requests import Request
from starlette.responses import Response

from llmpulse.server._auth import scoped_tenant
from llmpulse.server._errors import JSON, ApiError, json_response
from llmpulse.server._limits import check_page_size, check_query_range
from llmpulse.server._query import (
    MAX_NAME_PARAM,
    FromParam,
    ModelParam,
    RouteParam,
    TenantParam,
    ToParam,
    parse_time,
)
from llmpulse.server._state import server_state
from llmpulse.store import (
    GROUP_BY_ATTRIBUTES,
    CallFilter,
    StoreError,
    call_row,
    calls_page,
    check_group_by,
    costs,
    cursor_range,
    minute_bounds,
    rfc3339,
)

#: Range of ``/v1/calls`` when ``from`` is not given: the day before ``to``.
DEFAULT_CALLS_RANGE: Final = timedelta(hours=24)
#: Range of ``/v1/costs`` when ``from`` is not given: the 30 days before ``to`` (the call records'
#: retention).
DEFAULT_COSTS_RANGE: Final = timedelta(days=30)
#: Calls of a ``/v1/calls`` page by default and at most.
DEFAULT_CALLS_LIMIT: Final = 100
MAX_CALLS_LIMIT: Final = 1000
#: Groups of ``/v1/costs`` by default and at most.
DEFAULT_COSTS_LIMIT: Final = 20
MAX_COSTS_LIMIT: Final = 1000
#: Longest ``request_id`` and ``cursor`` parameters.
MAX_ID_PARAM: Final = 128
MAX_CURSOR_PARAM: Final = 2048

router = APIRouter(tags=["calls"])

_ERROR_DOC: Final[dict[int | str, dict[str, Any]]] = {
    400: {
        "description": "`tenant_id` is missing (without API keys), or a parameter is out of its bounds "
        "(the message names it)",
        "content": {JSON: {"example": {"error": "query parameter `limit` must be 1 … 1000, got 5000"}}},
    },
    422: {"description": "A parameter is malformed; the message names it"},
    503: {"description": "The store is unavailable"},
}

_T = TypeVar("_T")


def _name(description: str) -> Any:
    return Query(max_length=MAX_NAME_PARAM, description=description)


@dataclass(frozen=True, slots=True)
class FilterParams:
    """The attribute filters of a request (None: not filtered)."""

    route: str | None
    model: str | None
    provider: str | None
    user_id: str | None
    org_id: str | None
    session_id: str | None
    feature: str | None
    endpoint: str | None
    environment: str | None
    status: str | None
    request_id: str | None
    min_cost_usd: float | None


def filter_params(
    route: RouteParam = None,
    model: ModelParam = None,
    provider: Annotated[str | None, _name("Only calls to this provider.")] = None,
    user_id: Annotated[
        str | None, _name("Only this user's calls (the call's user id, else its user id hash).")
    ] = None,
    org_id: Annotated[str | None, _name("Only this organisation's calls.")] = None,
    session_id: Annotated[str | None, _name("Only this session's calls.")] = None,
    feature: Annotated[str | None, _name("Only this feature's calls.")] = None,
    endpoint: Annotated[str | None, _name("Only this endpoint's calls.")] = None,
    environment: Annotated[str | None, _name("Only this environment's calls.")] = None,
    status: Annotated[
        Literal["ok", "error", "timeout", "cancelled"] | None, Query(description="Only calls of this status.")
    ] = None,
    request_id: Annotated[
        str | None, Query(max_length=MAX_ID_PARAM, description="Only the call of this request id.")
    ] = None,
    min_cost_usd: Annotated[
        float | None,
        Query(ge=0, allow_inf_nan=False, description="Only calls with a known cost of at least this (USD)."),
    ] = None,
) -> FilterParams:
    """The filters of ``/v1/calls`` and ``/v1/costs`` (a FastAPI dependency)."""
    return FilterParams(
        route or None,
        model or None,
        provider or None,
        user_id or None,
        org_id or None,
        session_id or None,
        feature or None,
        endpoint or None,
        environment or None,
        status,
        request_id or None,
        min_cost_usd,
    )


Filters = Annotated[FilterParams, Depends(filter_params)]


def _bounded(name: str, value: int | None, default: int, high: int) -> int:
    if value is None:
        return default
    if not 1 <= value <= high:
        raise ApiError(400, f"query parameter `{name}` must be 1 … {high}, got {value}")
    return value


def _range(
    request: Request, from_: str | None, to: str | None, default: timedelta
) -> tuple[datetime, datetime]:
    """The asked ``[from, to)`` (defaults: now, and `default` before `to`), checked, in UTC."""
    now = datetime.now(UTC)
    end = parse_time("to", to) or now
    start = parse_time("from", from_)
    if start is None:
        if end - datetime.min.replace(tzinfo=UTC) < default:
            raise ApiError(422, "query parameter `to` is too early to look back from")
        start = end - default
    if start >= end:
        raise ApiError(422, "query parameter `from` must be before `to`")
    check_query_range(start, end, now, server_state(request).settings.request_limits)
    return start, end


def _filter(tenant: str, start: datetime | None, end: datetime | None, f: FilterParams) -> CallFilter:
    return CallFilter(
        tenant,
        start=start,
        end=end,
        route=f.route,
        model=f.model,
        provider=f.provider,
        user_id=f.user_id,
        org_id=f.org_id,
        session_id=f.session_id,
        feature=f.feature,
        endpoint=f.endpoint,
        environment=f.environment,
        status=f.status,
        request_id=f.request_id,
        min_cost_usd=f.min_cost_usd,
    )


def _head(tenant: str, flt: CallFilter) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "from": None if flt.start is None else rfc3339(flt.start),
        "to": None if flt.end is None else rfc3339(flt.end),
    }


async def _blocking(fn: Callable[[], _T], *, refused_param: str) -> _T:
    """Run a store read on a worker thread: `StoreError` → 503; `ValueError` → 400 naming the one
    parameter (`refused_param`) the read can still refuse once the others are checked."""
    try:
        return await to_thread.run_sync(fn)
    except StoreError as exc:
        raise ApiError(503, f"the store is unavailable: {exc}", headers={"Retry-After": "1"}) from None
    except ValueError as exc:
        raise ApiError(400, f"query parameter `{refused_param}`: {exc}") from None


@router.get(
    "/v1/calls",
    summary="A tenant's call records, newest or costliest first, a page at a time",
    responses=_ERROR_DOC,
)
async def get_calls(
    request: Request,
    filters: Filters,
    tenant_id: TenantParam = None,
    from_: FromParam = None,
    to: ToParam = None,
    order: Annotated[
        Literal["time", "cost"],
        Query(description="`time`: newest first; `cost`: costliest first, unknown costs last."),
    ] = "time",
    limit: Annotated[
        int | None,
        Query(
            description=f"Most calls a page (1 … {MAX_CALLS_LIMIT}, default {DEFAULT_CALLS_LIMIT}).",
            json_schema_extra={"minimum": 1, "maximum": MAX_CALLS_LIMIT},
        ),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(
            max_length=MAX_CURSOR_PARAM,
            description="`next_cursor` of the previous page (with the same `from`, `to`, `order` "
            "and filters).",
        ),
    ] = None,
) -> Response:
    """One page of the tenant's calls in ``[from, to)`` (default: the last 24 hours), ties by request
    id: ``{"tenant_id", "from", "to", "order", "calls": [...], "count", "next_cursor"}``.

    Each call has every field of its record (`llmpulse.store.CallRecord`): ``started_at`` and
    ``updated_at`` as RFC 3339, ``metadata`` as a JSON object, ``cost_usd`` (null: unknown price) and
    ``cost_source`` (``provider``, ``estimate``, ``genai-prices`` or null). ``next_cursor`` is null on
    the last page. Without ``from`` and ``to``, a cursor reads the range its first page had.
    """
    tenant = scoped_tenant(request, tenant_id)
    n = _bounded("limit", limit, DEFAULT_CALLS_LIMIT, MAX_CALLS_LIMIT)
    state = server_state(request)
    check_page_size(n, state.settings.request_limits)
    if cursor is not None and from_ is None and to is None:
        try:
            start, end = cursor_range(cursor)
        except ValueError as exc:
            raise ApiError(400, f"query parameter `cursor`: {exc}") from None
    else:
        start, end = minute_bounds(*_range(request, from_, to, DEFAULT_CALLS_RANGE))
    if start is None or end is None or start > end:
        raise ApiError(400, "query parameter `cursor`: it holds no range this server issues")
    flt = _filter(tenant, start, end, filters)
    store = state.require_store()
    records, next_cursor = await _blocking(
        lambda: calls_page(store, flt, order=order, limit=n, cursor=cursor), refused_param="cursor"
    )
    rows = [call_row(r) for r in records]
    body = {**_head(tenant, flt), "order": order, "calls": rows, "count": len(rows)}
    return json_response({**body, "next_cursor": next_cursor})


@router.get(
    "/v1/costs", summary="Who spent what: a tenant's calls grouped by an attribute", responses=_ERROR_DOC
)
async def get_costs(
    request: Request,
    filters: Filters,
    tenant_id: TenantParam = None,
    from_: FromParam = None,
    to: ToParam = None,
    group_by: Annotated[
        str,
        Query(
            max_length=80,
            description=f"One of {', '.join(GROUP_BY_ATTRIBUTES)}, or metadata.<key> (1 to 64 of "
            "A-Z a-z 0-9 _ . -). `user_id` is the call's user id, else its user id hash.",
        ),
    ] = "user_id",
    order: Annotated[
        Literal["cost", "requests", "tokens"],
        Query(description="Largest first by cost (unknown last), requests or input + output tokens."),
    ] = "cost",
    limit: Annotated[
        int | None,
        Query(
            description=f"Most groups (1 … {MAX_COSTS_LIMIT}, default {DEFAULT_COSTS_LIMIT}); the rest "
            "add up in `other`.",
            json_schema_extra={"minimum": 1, "maximum": MAX_COSTS_LIMIT},
        ),
    ] = None,
) -> Response:
    """The tenant's calls in ``[from, to)`` (default: the last 30 days) grouped by `group_by`:
    ``{"tenant_id", "from", "to", "group_by", "order", "groups": [...], "other", "total"}``.

    Each row: ``requests, errors, input_tokens, output_tokens, cached_input_tokens,
    cache_write_tokens, reasoning_tokens, total_tokens, cost_usd`` (null when no call of the row has
    a known price), ``cost_unknown_requests``, ``cost_share`` (of the total cost), ``first_call_at``
    and ``last_call_at``; a group has its ``key`` (null: calls without the attribute), ``other``
    (null when every group fits) and ``total`` the number of ``groups``. groups + other = total, and
    the total equals ``/v1/metrics/summary`` over the same range and route/model filters.
    """
    tenant = scoped_tenant(request, tenant_id)
    n = _bounded("limit", limit, DEFAULT_COSTS_LIMIT, MAX_COSTS_LIMIT)
    try:
        check_group_by(group_by)
    except ValueError as exc:
        raise ApiError(400, f"query parameter `group_by`: {exc}") from None
    start, end = minute_bounds(*_range(request, from_, to, DEFAULT_COSTS_RANGE))
    flt = _filter(tenant, start, end, filters)
    store = server_state(request).require_store()
    found = await _blocking(
        lambda: costs(store, flt, group_by=group_by, order=order, limit=n), refused_param="group_by"
    )
    return json_response({**_head(tenant, flt), "group_by": group_by, "order": order, **found})
