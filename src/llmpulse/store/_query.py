"""Query results and their JSON rows: `StoredWindow`, `SummaryRow`, `metrics_row`, `summary_row`.

The row functions are pure (no I/O) and shape the `/v1/metrics` and `/v1/metrics/summary` items: the
StreamLens fields first, exactly as the seed names them, then llmpulse's additions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import sqlalchemy as sa

from llmpulse.store._histogram import quantile
from llmpulse.store._model import WINDOW_SECONDS, WindowDelta, WindowKey
from llmpulse.store._tables import windows

GroupBy = Literal["model", "route"]


@dataclass(frozen=True, slots=True)
class StoredWindow:
    """One stored window: its key, its figures, when it was last written (UTC), and its version
    (the number of commits that changed it; 0 for a window written before versions existed)."""

    key: WindowKey
    delta: WindowDelta
    updated_at: datetime
    version: int = 0

    @property
    def window_start(self) -> datetime:
        """The window's first instant (UTC)."""
        return datetime.fromtimestamp(self.key.window_start, UTC)

    @property
    def window_end(self) -> datetime:
        """The instant after the window's last one (UTC): ``window_start`` plus one minute."""
        return datetime.fromtimestamp(self.key.window_start + WINDOW_SECONDS, UTC)


@dataclass(frozen=True, slots=True)
class SummaryRow:
    """A rollup of several windows: one group (a route, a model, or the whole tenant) over a range.

    `route` and `model` hold the group's value or the filter applied, else None. `start` and `end`
    are the requested range; a missing bound is replaced by the first window's start or the last
    window's end. `windows` is the number of stored windows merged.
    """

    tenant_id: str
    route: str | None
    model: str | None
    start: datetime
    end: datetime
    windows: int
    delta: WindowDelta


def rfc3339(dt: datetime) -> str:
    """An aware datetime as RFC 3339 in UTC with ``Z`` ("2025-11-19T10:00:00Z"; fractions when present)."""
    dt = dt.astimezone(UTC)
    spec = "%Y-%m-%dT%H:%M:%S.%fZ" if dt.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return dt.strftime(spec)


def _ratio(num: float, den: int) -> float | None:
    return num / den if den > 0 else None


def _figures(d: WindowDelta) -> tuple[dict[str, Any], dict[str, Any]]:
    """(StreamLens fields, llmpulse additions) of a window or rollup, before the formatting of keys."""
    all_cost_unknown = d.requests > 0 and d.cost_unknown >= d.requests
    seed = {
        "requests": d.requests,
        "errors": d.errors,
        "avg_latency_ms": _ratio(d.latency_sum_ms, d.latency_count),
        "p95_latency_ms": quantile(d.latency_hist, 0.95),
        "avg_prompt_tokens": _ratio(d.prompt_tokens, d.requests),
        "avg_completion_tokens": _ratio(d.completion_tokens, d.requests),
        "estimated_cost_usd": None if all_cost_unknown else d.cost_usd,
    }
    extra = {
        "prompt_tokens": d.prompt_tokens,
        "completion_tokens": d.completion_tokens,
        "cached_input_tokens": d.cached_input_tokens,
        "cache_write_tokens": d.cache_write_tokens,
        "reasoning_tokens": d.reasoning_tokens,
        "total_tokens": d.prompt_tokens + d.completion_tokens,
        "p50_latency_ms": quantile(d.latency_hist, 0.50),
        "p99_latency_ms": quantile(d.latency_hist, 0.99),
        "avg_ttft_ms": _ratio(d.ttft_sum_ms, d.ttft_count),
        "p95_ttft_ms": quantile(d.ttft_hist, 0.95),
        "timeouts": d.timeouts,
        "late_events": d.late,
        "cost_unknown_requests": d.cost_unknown,
    }
    return seed, extra


def metrics_row(w: StoredWindow, *, now: datetime, final_after_s: float) -> dict[str, Any]:
    """The `/v1/metrics` item for a stored window. Pure, does not block.

    Fields, in order: ``tenant_id, route, model, window_start, window_end, requests, errors,
    avg_latency_ms, p95_latency_ms, avg_prompt_tokens, avg_completion_tokens, estimated_cost_usd``
    (StreamLens), then ``final`` (true once ``window_end + final_after_s <= now``), token sums,
    ``total_tokens``, p50/p99 latency, time-to-first-token average and p95, ``timeouts``,
    ``late_events`` and ``cost_unknown_requests``. Averages and cost are unrounded; percentiles are
    nearest rank from the histogram; a figure without data (no latency, no requests) is None.
    ``estimated_cost_usd`` is None when no request of the window has a known cost.
    """
    seed, extra = _figures(w.delta)
    end = w.key.window_start + WINDOW_SECONDS
    return {
        "tenant_id": w.key.tenant_id,
        "route": w.key.route,
        "model": w.key.model,
        "window_start": rfc3339(w.window_start),
        "window_end": rfc3339(w.window_end),
        **seed,
        "final": end + final_after_s <= now.timestamp(),
        **extra,
    }


def summary_row(s: SummaryRow) -> dict[str, Any]:
    """The `/v1/metrics/summary` item for a rollup. Pure, does not block.

    Fields, in order: ``tenant_id, route, model`` (None where not grouped or filtered), ``from``,
    ``to`` (RFC 3339 UTC), ``windows``, then the same figures as `metrics_row` without ``final``.
    """
    seed, extra = _figures(s.delta)
    return {
        "tenant_id": s.tenant_id,
        "route": s.route,
        "model": s.model,
        "from": rfc3339(s.start),
        "to": rfc3339(s.end),
        "windows": s.windows,
        **seed,
        **extra,
    }


def epoch_bound(dt: datetime | None, name: str) -> int | None:
    """The smallest integer epoch second at or after an aware datetime (None passes through).

    For integer window starts, ``window_start >= epoch_bound(t)`` is ``window_start >= t``.

    Raises:
        ValueError: `dt` is naive (the message names the parameter).
    """
    if dt is None:
        return None
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {dt!r}")
    return math.ceil(dt.timestamp())


#: Columns that identify a window, in the deterministic order of ties.
_ORDER: Final = (windows.c.window_start.desc(), windows.c.route, windows.c.model)


def windows_select(
    tenant_id: str,
    *,
    route: str | None,
    model: str | None,
    start: datetime | None,
    end: datetime | None,
) -> sa.Select[Any]:
    """The windows of a tenant whose start lies in ``[start, end)``, optionally of one route/model,
    newest first, ties by route then model. Builds SQL only; does not block."""
    query = sa.select(windows).where(windows.c.tenant_id == tenant_id)
    if route is not None:
        query = query.where(windows.c.route == route)
    if model is not None:
        query = query.where(windows.c.model == model)
    lo = epoch_bound(start, "start")
    hi = epoch_bound(end, "end")
    if lo is not None:
        query = query.where(windows.c.window_start >= lo)
    if hi is not None:
        query = query.where(windows.c.window_start < hi)
    return query.order_by(*_ORDER)
