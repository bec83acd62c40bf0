"""The shared budgets' endpoints: definitions, reservations against them, and their state.

``PUT /v1/budgets/{id}`` creates or replaces a budget; ``GET /v1/budgets`` and ``GET
/v1/budgets/{id}`` show budgets with their current period's ledger (committed, reserved, remaining,
overrun) beside what the call records observed in the same scope; ``DELETE /v1/budgets/{id}``
removes one. ``POST /v1/budgets/{id}/reservations`` reserves an estimate (201, or 409 with what is
left when a hard budget cannot hold it), ``…/{rid}/extend`` grows one (a stream under way),
``…/{rid}/commit`` settles it with the actual cost and ``DELETE …/{rid}`` releases it. The ledger and
its guarantee are `llmpulse.store.BudgetLedger`'s (docs/budgets.md#shared-budgets).

With API keys, a key sees and changes only its tenant's budgets: another tenant's budget is 404
as if it did not exist, and a ``PUT`` naming another tenant is 403. Without keys, every budget is
visible. Bodies are JSON objects; an unknown or malformed field is answered 422 naming it. The
clock is the server's (`ServerState.clock`), injected in tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final, Literal, TypeVar

from anyio import to_thread
from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from llmpulse.server._auth import principal, scoped_tenant_or_all
from llmpulse.server._errors import JSON, ApiError, json_response
from llmpulse.server._state import server_state
from llmpulse.store import (
    BudgetNotFound,
    BudgetSpec,
    ReservationNotFound,
    ReservationSettled,
    StoreError,
)
from llmpulse.store._budgets import (
    DEFAULT_RESERVATION_TTL_S,
    MAX_BUDGET_ID_LEN,
    MAX_RESERVATION_TTL_S,
    MAX_USD,
)

router = APIRouter(tags=["budgets"])

_T = TypeVar("_T")
_NAME: Final = 256

BudgetId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_BUDGET_ID_LEN,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        description="The budget's id: letters, digits and ._:-",
    ),
]
ReservationId = Annotated[str, Path(min_length=1, max_length=32, description="A reservation's id.")]

_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    403: {"description": "The API key belongs to another tenant than the budget's scope"},
    404: {"description": "No such budget (or reservation) for this caller"},
    409: {"description": "The reservation was settled the other way already (commit of a released one…)"},
    422: {"description": "A field is missing or malformed; the message names it"},
    503: {"description": "The store is unavailable"},
}


class _Scope(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant_id: str | None = Field(
        default=None, min_length=1, max_length=_NAME, description="The tenant (default: the API key's)."
    )
    user_id: str | None = Field(default=None, min_length=1, max_length=_NAME)
    org_id: str | None = Field(default=None, min_length=1, max_length=_NAME)
    feature: str | None = Field(default=None, min_length=1, max_length=_NAME)
    environment: str | None = Field(default=None, min_length=1, max_length=_NAME)


class BudgetBody(BaseModel):
    """A budget's definition (``PUT /v1/budgets/{id}``)."""

    model_config = ConfigDict(extra="forbid")

    amount_usd: float = Field(gt=0, le=MAX_USD, allow_inf_nan=False, description="The cap per period (USD).")
    period: Literal["day", "week", "month", "total"] = Field(
        default="month", description="Calendar day, ISO week or month in `timezone`, or no period."
    )
    timezone: str = Field(default="UTC", min_length=1, max_length=64, description="IANA time zone name.")
    hard: bool = Field(default=True, description="Refuse reservations that do not fit (false: record them).")
    scope: _Scope = Field(default_factory=_Scope, description="Which calls the budget caps.")
    reservation_ttl_s: float = Field(
        default=DEFAULT_RESERVATION_TTL_S,
        gt=0,
        le=MAX_RESERVATION_TTL_S,
        allow_inf_nan=False,
        description="How long a reservation may stay open before it expires.",
    )


class ReserveBody(BaseModel):
    """A reservation (``POST …/reservations``)."""

    model_config = ConfigDict(extra="forbid")

    estimate_usd: float = Field(
        ge=0, le=MAX_USD, allow_inf_nan=False, description="The call's estimated cost."
    )
    ttl_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_RESERVATION_TTL_S,
        allow_inf_nan=False,
        description="Default: the budget's.",
    )


class ExtendBody(BaseModel):
    """A reservation grown to a new total estimate (``POST …/{rid}/extend``)."""

    model_config = ConfigDict(extra="forbid")

    estimate_usd: float = Field(ge=0, le=MAX_USD, allow_inf_nan=False, description="The new total estimate.")


class CommitBody(BaseModel):
    """A reservation's actual cost (``POST …/{rid}/commit``)."""

    model_config = ConfigDict(extra="forbid")

    cost_usd: float = Field(ge=0, le=MAX_USD, allow_inf_nan=False, description="What the call cost (USD).")


async def _blocking(fn: Callable[[], _T]) -> _T:
    """Run a ledger operation on a worker thread; map its errors to answers."""
    try:
        return await to_thread.run_sync(fn)
    except BudgetNotFound as exc:
        raise ApiError(404, f"no budget {exc.args[0]!r}") from None
    except ReservationNotFound as exc:
        raise ApiError(404, f"no reservation {exc.args[0]!r} of this budget") from None
    except ReservationSettled as exc:
        raise ApiError(409, str(exc)) from None
    except StoreError as exc:
        raise ApiError(503, f"the store is unavailable: {exc}", headers={"Retry-After": "1"}) from None
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None


def _caller_tenant(request: Request) -> str | None:
    """The tenant the caller's key is bound to (None without keys: every tenant)."""
    caller = principal(request)
    return None if caller is None else caller.tenant_id


@router.put("/v1/budgets/{budget_id}", summary="Create or replace a shared budget", responses=_ERRORS)
async def put_budget(request: Request, budget_id: BudgetId, body: BudgetBody) -> Response:
    """Create the budget, or replace its definition (its ledger and open reservations stay), and
    answer it as ``GET`` does. ``scope.tenant_id`` defaults to the API key's tenant (required
    without keys); naming another tenant than the key's is 403."""
    tenant = scoped_tenant_or_all(request, body.scope.tenant_id)
    if tenant is None:
        raise ApiError(422, "field `scope.tenant_id` is required")
    scope = {k: v for k, v in body.scope.model_dump().items() if k != "tenant_id" and v is not None}
    try:
        spec = BudgetSpec(
            budget_id=budget_id,
            tenant_id=tenant,
            amount_usd=body.amount_usd,
            period=body.period,
            timezone=body.timezone,
            hard=body.hard,
            scope=scope,
            reservation_ttl_s=body.reservation_ttl_s,
        )
    except ValueError as exc:
        raise ApiError(422, f"field {exc}") from None
    state = server_state(request)
    ledger = state.require_store().budgets
    now = state.clock()
    owner = _caller_tenant(request)

    def put() -> dict[str, Any]:
        if owner is not None:  # a key may not take over another tenant's budget id
            try:
                ledger.get(budget_id, now)
            except BudgetNotFound:
                pass
            else:
                ledger.get(budget_id, now, tenant_id=owner)
        ledger.put(spec, now)
        return ledger.get(budget_id, now).as_json()

    return json_response(await _blocking(put))


@router.get("/v1/budgets", summary="Every shared budget with its current period", responses=_ERRORS)
async def list_budgets(request: Request) -> Response:
    """``{"budgets": [...]}``: each as ``GET /v1/budgets/{id}`` answers it, by id; a key sees its
    tenant's only."""
    state = server_state(request)
    tenant = _caller_tenant(request)
    now = state.clock()
    views = await _blocking(lambda: state.require_store().budgets.all(now, tenant_id=tenant))
    return json_response({"budgets": [v.as_json() for v in views]})


@router.get("/v1/budgets/{budget_id}", summary="A shared budget and its current period", responses=_ERRORS)
async def get_budget(request: Request, budget_id: BudgetId) -> Response:
    """``{"id", "amount_usd", "committed_usd", "reserved_usd", "remaining_usd", "observed_usd",
    "observed_requests", "overrun_usd", "period", "timezone", "period_start", "period_end", "hard",
    "scope", "reservation_ttl_s", "reservations_open", "reservations_expired", "updated_at"}``.

    ``observed_usd`` is the cost of the call records in the budget's scope that started in the
    period so far (null when none of them has a known price): what really happened, beside what the
    ledger was told. ``overrun_usd`` is what commits exceeded their estimates by.
    """
    state = server_state(request)
    tenant = _caller_tenant(request)
    now = state.clock()
    view = await _blocking(lambda: state.require_store().budgets.get(budget_id, now, tenant_id=tenant))
    return json_response(view.as_json())


@router.delete(
    "/v1/budgets/{budget_id}", summary="Delete a shared budget", status_code=204, responses=_ERRORS
)
async def delete_budget(request: Request, budget_id: BudgetId) -> Response:
    """Delete the budget, its ledger and its reservations (later commits of them are 404)."""
    state = server_state(request)
    tenant = _caller_tenant(request)
    if not await _blocking(lambda: state.require_store().budgets.delete(budget_id, tenant_id=tenant)):
        raise ApiError(404, f"no budget {budget_id!r}")
    return Response(status_code=204)


_RESERVE_DOC: Final[dict[int | str, dict[str, Any]]] = {
    **_ERRORS,
    409: {
        "description": "A hard budget has less left than the estimate: nothing was reserved",
        "content": {JSON: {"example": {"error": "budget 'b' has $0.03 left", "remaining_usd": 0.03}}},
    },
}


@router.post(
    "/v1/budgets/{budget_id}/reservations",
    summary="Reserve an estimate before a call",
    status_code=201,
    responses=_RESERVE_DOC,
)
async def reserve(request: Request, budget_id: BudgetId, body: ReserveBody) -> Response:
    """201 ``{"reservation_id", "remaining_usd", "estimate_usd", "expires_at"}``, or 409
    ``{"error", "remaining_usd"}`` when a hard budget has less left than the estimate (or nothing at
    all). Commit or release the reservation before ``expires_at``, or it expires and its estimate
    goes back to the budget."""
    state = server_state(request)
    tenant = _caller_tenant(request)
    now = state.clock()
    result = await _blocking(
        lambda: state.require_store().budgets.reserve(
            budget_id, body.estimate_usd, now, ttl_s=body.ttl_s, tenant_id=tenant
        )
    )
    if not result.admitted:
        raise ApiError(
            409,
            f"budget {budget_id!r} has ${result.remaining_usd:.6f} left, less than the estimate "
            f"${body.estimate_usd:.6f}",
            extra={"remaining_usd": result.remaining_usd},
        )
    return json_response(result.as_json(), status=201)


@router.post(
    "/v1/budgets/{budget_id}/reservations/{reservation_id}/extend",
    summary="Grow an open reservation (a stream under way)",
    responses=_RESERVE_DOC,
)
async def extend(
    request: Request, budget_id: BudgetId, reservation_id: ReservationId, body: ExtendBody
) -> Response:
    """Grow the reservation to ``estimate_usd`` in all and renew its TTL: 200 as a reservation, or
    409 ``{"error", "remaining_usd"}`` (the reservation keeps its estimate: stop the stream)."""
    state = server_state(request)
    tenant = _caller_tenant(request)
    now = state.clock()
    result = await _blocking(
        lambda: state.require_store().budgets.extend(
            budget_id, reservation_id, body.estimate_usd, now, tenant_id=tenant
        )
    )
    if not result.admitted:
        raise ApiError(
            409,
            f"budget {budget_id!r} has ${result.remaining_usd:.6f} left, less than the growth asked",
            extra={"remaining_usd": result.remaining_usd},
        )
    return json_response(result.as_json())


@router.post(
    "/v1/budgets/{budget_id}/reservations/{reservation_id}/commit",
    summary="Settle a reservation with the actual cost",
    responses=_ERRORS,
)
async def commit(
    request: Request, budget_id: BudgetId, reservation_id: ReservationId, body: CommitBody
) -> Response:
    """``{"reservation_id", "state": "committed", "cost_usd", "remaining_usd", "expired"}``. A cost
    above the estimate is recorded (and counted in ``overrun_usd``); a repeated commit answers the
    first one; a commit after expiry still records the cost (``expired``: true)."""
    state = server_state(request)
    tenant = _caller_tenant(request)
    now = state.clock()
    result = await _blocking(
        lambda: state.require_store().budgets.commit(
            budget_id, reservation_id, body.cost_usd, now, tenant_id=tenant
        )
    )
    return json_response(result.as_json())


@router.delete(
    "/v1/budgets/{budget_id}/reservations/{reservation_id}",
    summary="Release a reservation (the call failed or was cancelled)",
    responses=_ERRORS,
)
async def release(request: Request, budget_id: BudgetId, reservation_id: ReservationId) -> Response:
    """``{"reservation_id", "state", "remaining_usd", "expired"}``: ``released`` (or ``expired`` when
    it had expired first); repeating it changes nothing."""
    state = server_state(request)
    tenant = _caller_tenant(request)
    now = state.clock()
    result = await _blocking(
        lambda: state.require_store().budgets.release(budget_id, reservation_id, now, tenant_id=tenant)
    )
    return json_response(result.as_json())
