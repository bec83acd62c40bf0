"""Queries: window ordering, filters, limit and range; summaries; tenants and counters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from llmpulse.store import Checkpoint, Store, WindowKey, merged, quantile, roll_up
from tests.store.conftest import make_delta

T0 = 1_763_546_400  # 2025-11-19T10:00:00Z
D0 = datetime.fromtimestamp(T0, UTC)


def _seed(store: Store) -> None:
    windows = {}
    for w in range(5):
        for route in ("b-route", "a-route"):
            for model in ("m2", "m1"):
                lat = [100.0 * (w + 1), 10.0 * (w + 1) + (route == "b-route") * 1000 + (model == "m2") * 3000]
                windows[WindowKey("t1", route, model, T0 + 60 * w)] = make_delta(
                    requests=2, errors=w % 2, latencies=lat, prompt_tokens=10, cost_usd=0.01
                )
    windows[WindowKey("t2", "a-route", "m1", T0)] = make_delta(requests=7)
    store.commit(Checkpoint("c", windows=windows))


def test_windows_newest_first_ties_by_route_then_model(store: Store) -> None:
    _seed(store)
    rows = store.query_windows("t1", limit=6)
    assert [(r.key.window_start - T0, r.key.route, r.key.model) for r in rows] == [
        (240, "a-route", "m1"),
        (240, "a-route", "m2"),
        (240, "b-route", "m1"),
        (240, "b-route", "m2"),
        (180, "a-route", "m1"),
        (180, "a-route", "m2"),
    ]
    assert rows[0].updated_at.tzinfo is not None
    assert rows[0].window_end - rows[0].window_start == timedelta(minutes=1)


def test_default_limit_is_60_and_limit_caps(store: Store) -> None:
    store.commit(
        Checkpoint(
            "c", windows={WindowKey("t", "r", "m", T0 + 60 * i): make_delta(requests=1) for i in range(70)}
        )
    )
    assert len(store.query_windows("t")) == 60
    assert len(store.query_windows("t", limit=3)) == 3
    with pytest.raises(ValueError, match="limit"):
        store.query_windows("t", limit=0)


def test_filters_by_tenant_route_and_model(store: Store) -> None:
    _seed(store)
    assert {(r.key.route, r.key.model) for r in store.query_windows("t1", route="b-route", limit=100)} == {
        ("b-route", "m1"),
        ("b-route", "m2"),
    }
    only = store.query_windows("t1", route="a-route", model="m2", limit=100)
    assert len(only) == 5
    assert {(r.key.route, r.key.model) for r in only} == {("a-route", "m2")}
    assert [r.delta.requests for r in store.query_windows("t2")] == [7]
    assert store.query_windows("nobody") == []


def test_range_is_start_inclusive_end_exclusive(store: Store) -> None:
    _seed(store)
    rows = store.query_windows(
        "t1", start=D0 + timedelta(minutes=1), end=D0 + timedelta(minutes=3), limit=100
    )
    assert sorted({r.key.window_start - T0 for r in rows}) == [60, 120]
    # A bound inside a window excludes the window that starts before it.
    rows = store.query_windows("t1", start=D0 + timedelta(seconds=61), limit=100)
    assert sorted({r.key.window_start - T0 for r in rows}) == [120, 180, 240]
    # Bounds in another time zone mean the same instants.
    plus2 = D0.astimezone(timezone(timedelta(hours=2)))
    assert len(store.query_windows("t1", start=plus2, end=plus2 + timedelta(minutes=1), limit=100)) == 4


def test_naive_datetimes_are_rejected(store: Store) -> None:
    with pytest.raises(ValueError, match="start"):
        store.query_windows("t1", start=datetime(2025, 11, 19, 10))
    with pytest.raises(ValueError, match="end"):
        store.summary("t1", end=datetime(2025, 11, 19, 10))


def test_tenants_and_counters(store: Store) -> None:
    assert store.tenants() == []
    _seed(store)
    store.commit(Checkpoint("c", counters={"orphan_responses": 4}))
    assert store.tenants() == ["t1", "t2"]
    assert store.counters() == {"orphan_responses": 4}


@pytest.mark.parametrize("group_by", ["model", "route"])
def test_summary_groups_and_merges_histograms(store: Store, group_by: str) -> None:
    _seed(store)
    windows = store.query_windows("t1", limit=100)
    rows = store.summary("t1", start=D0, end=D0 + timedelta(minutes=5), group_by=group_by)  # type: ignore[arg-type]
    groups = sorted({getattr(w.key, group_by) for w in windows})
    assert [getattr(r, group_by) for r in rows] == groups
    for row in rows:
        mine = [w for w in windows if getattr(w.key, group_by) == getattr(row, group_by)]
        union = merged(w.delta.latency_hist for w in mine)
        assert row.delta.latency_hist == union
        assert quantile(row.delta.latency_hist, 0.95) == quantile(union, 0.95)
        assert row.delta.requests == sum(w.delta.requests for w in mine) == 20
        assert row.windows == len(mine) == 10
        assert (row.start, row.end) == (D0, D0 + timedelta(minutes=5))
        other = "route" if group_by == "model" else "model"
        assert getattr(row, other) is None


def test_summary_p95_is_not_an_average_of_window_p95s(store: Store) -> None:
    _seed(store)
    (before,) = store.summary("t1")
    assert before.windows == 20  # not rolled up yet: the minute windows are read
    roll_up(store, T0 + 2 * 86400)
    (row,) = store.summary("t1")
    union = merged(w.delta.latency_hist for w in store.query_windows("t1", limit=100))
    p95 = quantile(row.delta.latency_hist, 0.95)
    assert p95 == quantile(union, 0.95)
    window_p95s = [quantile(w.delta.latency_hist, 0.95) or 0.0 for w in store.query_windows("t1", limit=100)]
    assert p95 != pytest.approx(sum(window_p95s) / len(window_p95s))
    # Without bounds the range is that of the windows found.
    assert (row.start, row.end) == (D0, D0 + timedelta(minutes=5))
    # unbounded, the 20 minute windows (2 routes x 2 models) are read as the tenant's daily total
    assert (row.route, row.model, row.windows) == (None, None, 1)
    (by_model,) = store.summary("t1", model="m1")  # a filter reads the series' rows
    assert by_model.windows == 2
    assert row.delta.latency_hist == before.delta.latency_hist


def test_summary_with_filters_and_no_data(store: Store) -> None:
    _seed(store)
    (row,) = store.summary("t1", group_by="model", route="a-route", model="m1")
    assert (row.route, row.model, row.delta.requests) == ("a-route", "m1", 10)
    assert store.summary("t1", start=D0 + timedelta(hours=1)) == []
    with pytest.raises(ValueError, match="group_by"):
        store.summary("t1", group_by="tenant")  # type: ignore[arg-type]
