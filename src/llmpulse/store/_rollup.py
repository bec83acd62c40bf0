"""Reads for the dashboard: one pass over a scope's windows gives totals, a per-minute series and
breakdowns by model and by route; `dimensions` lists the tenants, routes and models present.

A scope is an optional tenant (None: every tenant), route and model, and a range of window starts
``[start, end)`` with the same bounds as `Store.summary` (so the totals equal the summary's). Window
rows merge by addition and histograms bucket by bucket, so every percentile here is that of the union
of the calls, never an average of percentiles. Both functions block on the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from llmpulse.store._model import WindowDelta
from llmpulse.store._query import _figures, epoch_bound
from llmpulse.store._store import Store
from llmpulse.store._tables import delta_from_row, windows


@dataclass(frozen=True, slots=True)
class Scope:
    """What the dashboard looks at: a tenant (None: all), optional route and model, and the window
    starts ``[start, end)`` (aware datetimes; ``start`` inclusive, ``end`` exclusive)."""

    tenant_id: str | None
    route: str | None
    model: str | None
    start: datetime
    end: datetime


@dataclass(slots=True)
class Rollup:
    """A scope's windows merged four ways.

    Attributes:
        total: every window of the scope merged.
        windows: how many stored windows were merged.
        series: window start (epoch seconds) → the windows of that minute merged (minutes with no
            window are absent).
        by_model, by_route: model or route → its windows merged.
    """

    total: WindowDelta = field(default_factory=WindowDelta)
    windows: int = 0
    series: dict[int, WindowDelta] = field(default_factory=dict)
    by_model: dict[str, WindowDelta] = field(default_factory=dict)
    by_route: dict[str, WindowDelta] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Dimensions:
    """The distinct tenants, routes and models with a window in a scope, each ascending."""

    tenants: list[str]
    routes: list[str]
    models: list[str]


def figures(delta: WindowDelta) -> dict[str, Any]:
    """The figures of a window or rollup, named as in `/v1/metrics` rows (StreamLens fields first,
    then llmpulse's additions), plus ``error_rate`` (errors / requests, None without requests). Pure."""
    seed, extra = _figures(delta)
    rate = delta.errors / delta.requests if delta.requests > 0 else None
    return {**seed, **extra, "error_rate": rate}


def _where(query: sa.Select[Any], scope: Scope, *, with_route_model: bool = True) -> sa.Select[Any]:
    if scope.tenant_id is not None:
        query = query.where(windows.c.tenant_id == scope.tenant_id)
    if with_route_model and scope.route is not None:
        query = query.where(windows.c.route == scope.route)
    if with_route_model and scope.model is not None:
        query = query.where(windows.c.model == scope.model)
    lo = epoch_bound(scope.start, "start")
    hi = epoch_bound(scope.end, "end")
    return query.where(windows.c.window_start >= lo, windows.c.window_start < hi)


def _add(into: dict[Any, WindowDelta], key: Any, delta: WindowDelta) -> None:
    found = into.get(key)
    if found is None:
        found = into[key] = WindowDelta()
    found.merge(delta)


def rollup(store: Store, scope: Scope) -> Rollup:
    """Merge the scope's windows into totals, a per-minute series and per-model/per-route rows. Blocks.

    Raises:
        ValueError: a naive `scope.start` or `scope.end`.
        StoreError: the database could not be read.
    """
    query = _where(sa.select(windows), scope)
    out = Rollup()
    with store._reading("rolling up windows") as conn:
        for row in conn.execute(query).mappings():
            delta = delta_from_row(row)
            out.windows += 1
            out.total.merge(delta)
            _add(out.series, int(row["window_start"]), delta)
            _add(out.by_model, str(row["model"]), delta)
            _add(out.by_route, str(row["route"]), delta)
    return out


def dimensions(store: Store, scope: Scope) -> Dimensions:
    """The tenants, routes and models with a window in the scope's tenant and range. Blocks.

    The scope's own route and model filters are ignored, so a filter list still offers the other
    routes and models of the tenant.

    Raises:
        ValueError: a naive `scope.start` or `scope.end`.
        StoreError: the database could not be read.
    """
    query = _where(
        sa.select(windows.c.tenant_id, windows.c.route, windows.c.model).distinct(),
        scope,
        with_route_model=False,
    )
    tenants: set[str] = set()
    routes: set[str] = set()
    models: set[str] = set()
    with store._reading("listing dimensions") as conn:
        for tenant, route, model in conn.execute(query):
            tenants.add(str(tenant))
            routes.add(str(route))
            models.add(str(model))
    return Dimensions(sorted(tenants), sorted(routes), sorted(models))
