"""Reads for the dashboard: one pass over a scope's rows gives totals, a series at a step (a minute,
an hour or a day) and breakdowns by model and by route; `dimensions` lists the tenants, routes and
models present.

A scope is an optional tenant (None: every tenant), route and model, and a range of window starts
``[start, end)`` with the same bounds as `Store.summary` (so the totals equal the summary's). The
range is read from the coarsest rows no coarser than the step that cover it exactly (minute
windows, hourly and daily rollups: `llmpulse.store._ranges`). Rows merge by addition and histograms
bucket by bucket, so every percentile here is that of the union of the calls, never an average of
percentiles. Both functions block on the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llmpulse.store._model import WindowDelta
from llmpulse.store._query import _figures, epoch_bound
from llmpulse.store._ranges import DAY, piece_select, plan, read_rows, rolled_through
from llmpulse.store._store import Store
from llmpulse.store._tables import delta_from_row


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
        windows: how many stored rows (minute windows, hourly or daily rollups) were merged.
        series: bucket start (epoch seconds, a multiple of the step) → the rows of that bucket
            merged (buckets with no row are absent).
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


def _add(into: dict[Any, WindowDelta], key: Any, delta: WindowDelta) -> None:
    found = into.get(key)
    if found is None:
        found = into[key] = WindowDelta()
    found.merge(delta)


def rollup(store: Store, scope: Scope, step: int = 60) -> Rollup:
    """Merge the scope's rows into totals, a series of `step` seconds (60, 3600 or 86400; buckets
    aligned to UTC minutes, hours or days) and per-model/per-route rows. Blocks.

    Raises:
        ValueError: a naive `scope.start` or `scope.end`, or another `step`.
        StoreError: the database could not be read.
    """
    lo, hi = epoch_bound(scope.start, "start"), epoch_bound(scope.end, "end")
    out = Rollup()
    with store._reading("rolling up windows") as conn:
        pieces = plan(lo, hi, coarsest=step, rolled=rolled_through(conn, scope.tenant_id))
        for _, row in read_rows(
            conn, pieces, tenant_id=scope.tenant_id, route=scope.route, model=scope.model
        ):
            delta = delta_from_row(row)
            out.windows += 1
            out.total.merge(delta)
            _add(out.series, int(row["window_start"]) // step * step, delta)
            _add(out.by_model, str(row["model"]), delta)
            _add(out.by_route, str(row["route"]), delta)
    return out


def dimensions(store: Store, scope: Scope) -> Dimensions:
    """The tenants, routes and models with a row in the scope's tenant and range. Blocks.

    The scope's own route and model filters are ignored, so a filter list still offers the other
    routes and models of the tenant.

    Raises:
        ValueError: a naive `scope.start` or `scope.end`.
        StoreError: the database could not be read.
    """
    lo, hi = epoch_bound(scope.start, "start"), epoch_bound(scope.end, "end")
    tenants: set[str] = set()
    routes: set[str] = set()
    models: set[str] = set()
    with store._reading("listing dimensions") as conn:
        pieces = plan(lo, hi, coarsest=DAY, rolled=rolled_through(conn, scope.tenant_id))
        for piece in pieces:
            query = piece_select(
                piece,
                tenant_id=scope.tenant_id,
                route=None,
                model=None,
                columns=("tenant_id", "route", "model"),
            )
            for tenant, route, model in conn.execute(query):
                tenants.add(str(tenant))
                routes.add(str(route))
                models.add(str(model))
    return Dimensions(sorted(tenants), sorted(routes), sorted(models))
