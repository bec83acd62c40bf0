"""The query endpoints: ``GET /v1/metrics`` (recent windows) and ``GET /v1/metrics/summary`` (rollups).

Store calls block, so they run on a worker thread. Parameters: ``tenant_id`` is required without
API keys (400 ``{"error": "tenant_id is required"}``); with keys it defaults to the key's tenant and
any other tenant is a 403 (`llmpulse.server._auth.scoped_tenant`). ``from`` and ``to`` are RFC 3339
timestamps with an offset (422 naming the parameter otherwise) and may span at most
`RequestLimits.max_query_range_s` (400); ``limit`` is 1 … `RequestLimits.max_page_size` (default
60; 400 above the maximum). ``tenant_id``, ``route`` and ``model`` are at most 256 characters (422).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal

import msgspec
from anyio import to_thread
from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from llmpulse.server._auth import scoped_tenant
from llmpulse.server._errors import JSON, ApiError, json_response
from llmpulse.server._limits import check_page_size, check_query_range
from llmpulse.server._state import server_state
from llmpulse.store import StoreError, metrics_row, summary_row

#: Windows returned by ``/v1/metrics`` when no ``limit`` is given (StreamLens' default).
DEFAULT_LIMIT: Final = 60
#: The largest ``limit`` accepted by default (`RequestLimits.max_page_size`).
MAX_LIMIT: Final = 10_000
#: Longest ``tenant_id``, ``route`` or ``model`` parameter (as the events limit names).
MAX_NAME_PARAM: Final = 256
#: Range of ``/v1/metrics/summary`` when ``from`` is not given: the last hour.
DEFAULT_SUMMARY_RANGE: Final = timedelta(hours=1)
#: Timestamps before this year are refused (windows are stored as epoch seconds).
EARLIEST_YEAR: Final = 1970
#: A window is final this long after ``orphan_timeout_s`` has passed since its end.
FINAL_GRACE_S: Final = 60.0

_Aware = Annotated[datetime, msgspec.Meta(tz=True)]

router = APIRouter(tags=["query"])

_ERROR_DOC: Final[dict[int | str, dict[str, Any]]] = {
    400: {
        "description": "`tenant_id` is missing (without API keys), or the range or `limit` is over its limit",
        "content": {JSON: {"example": {"error": "tenant_id is required"}}},
    },
    422: {"description": "A parameter is invalid; the message names it"},
    503: {"description": "The store is unavailable"},
}

TenantParam = Annotated[
    str | None,
    Query(
        max_length=MAX_NAME_PARAM,
        description="The tenant: required without API keys; with a key, the key's tenant (the default).",
    ),
]
RouteParam = Annotated[str | None, Query(max_length=MAX_NAME_PARAM, description="Only this route.")]
ModelParam = Annotated[str | None, Query(max_length=MAX_NAME_PARAM, description="Only this model.")]
FromParam = Annotated[
    str | None, Query(alias="from", description="RFC 3339 start (inclusive), e.g. 2025-11-19T10:00:00Z.")
]
ToParam = Annotated[str | None, Query(description="RFC 3339 end (exclusive).")]


def parse_time(name: str, value: str | None) -> datetime | None:
    """Parse an RFC 3339 timestamp with an offset (in UTC), or raise `ApiError` 422 naming `name`."""
    if value is None or value == "":
        return None
    try:
        parsed = msgspec.convert(value, _Aware)
    except msgspec.ValidationError as exc:
        raise ApiError(
            422,
            f"query parameter `{name}` must be an RFC 3339 timestamp with an offset ({exc}), got {value!r}",
        ) from None
    try:
        parsed = parsed.astimezone(UTC)
        in_range = parsed.year >= EARLIEST_YEAR
    except OverflowError:
        in_range = False
    if not in_range:
        raise ApiError(422, f"query parameter `{name}` is out of range (1970 to 9999), got {value!r}")
    return parsed


def _check_range(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and start >= end:
        raise ApiError(422, "query parameter `from` must be before `to`")


async def _store_call(request: Request, fn: Any) -> Any:
    try:
        return await to_thread.run_sync(fn)
    except StoreError as exc:
        raise ApiError(503, f"the store is unavailable: {exc}", headers={"Retry-After": "1"}) from None


@router.get("/v1/metrics", summary="Recent one-minute windows, newest first", responses=_ERROR_DOC)
async def get_metrics(
    request: Request,
    tenant_id: TenantParam = None,
    route: RouteParam = None,
    model: ModelParam = None,
    limit: Annotated[
        int,
        Query(ge=1, description=f"Most windows to return (at most max_page_size, {MAX_LIMIT} by default)."),
    ] = DEFAULT_LIMIT,
    from_: FromParam = None,
    to: ToParam = None,
) -> Response:
    """The tenant's windows in ``[from, to)``, newest first: ``{"metrics": [...], "count": N}``.

    Each row has the StreamLens fields, ``final`` and llmpulse's additions (`llmpulse.store.metrics_row`).
    """
    tenant = scoped_tenant(request, tenant_id)
    start, end = parse_time("from", from_), parse_time("to", to)
    _check_range(start, end)
    state = server_state(request)
    check_page_size(limit, state.settings.request_limits)
    check_query_range(start, end, datetime.now(UTC), state.settings.request_limits)
    store = state.require_store()
    final_after_s = state.settings.orphan_timeout_s + FINAL_GRACE_S

    def query() -> list[dict[str, Any]]:
        """Read the windows and shape the rows (blocks)."""
        found = store.query_windows(tenant, route=route, model=model, start=start, end=end, limit=limit)
        now = datetime.now(UTC)
        return [metrics_row(w, now=now, final_after_s=final_after_s) for w in found]

    rows: list[dict[str, Any]] = await _store_call(request, query)
    return json_response({"metrics": rows, "count": len(rows)})


@router.get(
    "/v1/metrics/summary",
    summary="Rollups over a range, grouped by model or route (p95 merged from histograms)",
    responses=_ERROR_DOC,
)
async def get_summary(
    request: Request,
    tenant_id: TenantParam = None,
    route: RouteParam = None,
    model: ModelParam = None,
    from_: FromParam = None,
    to: ToParam = None,
    group_by: Annotated[
        Literal["model", "route"] | None,
        Query(description="Group rows by `model` or `route`; one row for the tenant when absent."),
    ] = None,
) -> Response:
    """Rollups of the tenant's windows in ``[from, to)`` (default: the last hour).

    Answers ``{"summary": [...], "count": N}`` (`llmpulse.store.summary_row` items).
    """
    tenant = scoped_tenant(request, tenant_id)
    start, end = parse_time("from", from_), parse_time("to", to)
    now = datetime.now(UTC)
    if start is None:
        start = (end or now) - DEFAULT_SUMMARY_RANGE
    _check_range(start, end)
    state = server_state(request)
    check_query_range(start, end, now, state.settings.request_limits)
    store = state.require_store()

    def query() -> list[dict[str, Any]]:
        """Read and merge the windows, shape the rows (blocks)."""
        found = store.summary(tenant, start=start, end=end, group_by=group_by, route=route, model=model)
        return [summary_row(s) for s in found]

    rows: list[dict[str, Any]] = await _store_call(request, query)
    return json_response({"summary": rows, "count": len(rows)})
