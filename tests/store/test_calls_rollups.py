"""Call records and hourly/daily rollups written by `Store.commit`, on SQLite and Postgres."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from llmpulse.store import ROLL_SETTLE_S, Checkpoint, ColdProbe, Store, WindowDelta, WindowKey, roll_up
from llmpulse.store._tables import calls, delta_from_row, rollups_day, rollups_hour
from tests.store.conftest import make_delta, make_record

DAY = 1_763_510_400  # 2025-11-19T00:00:00Z


def _records(store: Store) -> dict[tuple[str, str], dict[str, object]]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(calls)).mappings().all()
    return {(r["tenant_id"], r["request_id"]): dict(r) for r in rows}


def _rollup(store: Store, table: sa.Table) -> dict[WindowKey, WindowDelta]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(table)).mappings().all()
    return {
        WindowKey(r["tenant_id"], r["route"], r["model"], int(r["window_start"])): delta_from_row(r)
        for r in rows
    }


def test_call_records_are_inserted_then_replaced_by_key(store: Store) -> None:
    awkward = 'quote " backslash \\ comma , brace } {NULL}'
    first = make_record("t1", "r1", status="timeout", latency_ms=None, cost_usd=None, cost_source=None)
    other = make_record("t2", "r1", user_id=awkward, metadata='{"k":"v \\" x"}', error_message="a\nb")
    store.commit(Checkpoint("c", calls={("t1", "r1"): first, ("t2", "r1"): other}))
    got = _records(store)
    assert got[("t1", "r1")]["status"] == "timeout"
    assert got[("t1", "r1")]["latency_ms"] is None
    assert got[("t1", "r1")]["cost_usd"] is None
    assert got[("t2", "r1")]["user_id"] == awkward
    assert got[("t2", "r1")]["metadata"] == '{"k":"v \\" x"}'
    assert got[("t2", "r1")]["error_message"] == "a\nb"

    joined = make_record("t1", "r1", output_tokens=55, cost_usd=0.5, updated_at=2e9)
    store.commit(Checkpoint("c", calls={("t1", "r1"): joined}))
    got = _records(store)
    assert len(got) == 2
    assert (got[("t1", "r1")]["status"], got[("t1", "r1")]["output_tokens"]) == ("ok", 55)
    assert got[("t1", "r1")]["cost_usd"] == 0.5


def _series_and_totals(rows: dict[WindowKey, WindowDelta]) -> dict[WindowKey, WindowDelta]:
    """The series' rows of a rollup, after checking that its tenant total rows (route and model "")
    are exactly the sums of the series' rows of each tenant and bucket."""
    series = {k: d for k, d in rows.items() if k.route != ""}
    totals = {k: d for k, d in rows.items() if k.route == ""}
    expected: dict[WindowKey, WindowDelta] = {}
    for k, d in series.items():
        expected.setdefault(WindowKey(k.tenant_id, "", "", k.window_start), WindowDelta()).merge(d)
    assert totals == expected
    return series


def test_rollups_hold_the_sum_of_their_minute_windows(store: Store) -> None:
    windows = {
        WindowKey("t1", "chat", "m", DAY + 60 * 5): make_delta(
            requests=2, latencies=[10.0, 20.0], cost_usd=0.25
        ),
        WindowKey("t1", "chat", "m", DAY + 60 * 59): make_delta(requests=1, errors=1, latencies=[30.0]),
        WindowKey("t1", "chat", "m", DAY + 3600 + 60): make_delta(requests=4, latencies=[5.0] * 4),
        WindowKey("t1", "rag", "m", DAY + 86400 + 7): make_delta(requests=1, ttfts=[2.0]),
    }
    first = dict(list(windows.items())[:2])
    second = dict(list(windows.items())[2:])
    store.commit(Checkpoint("a", windows=first))
    store.commit(Checkpoint("b", windows=second))
    assert _rollup(store, rollups_hour) == {}  # an hour is rolled up once it is over, not per commit
    result = roll_up(store, DAY + 3 * 86400)
    # one transaction per hour of the tenant, and one to move it past the hours with no minutes
    assert (result.hours, result.windows, result.transactions, result.complete) == (3, 4, 4, True)
    # a late delta for an hour already rolled up goes to the rollups in its own commit
    store.commit_many(
        [
            Checkpoint(
                "a",
                windows={
                    WindowKey("t1", "chat", "m", DAY + 60 * 5): make_delta(requests=1, latencies=[40.0])
                },
            )
        ]
    )

    hours = _series_and_totals(_rollup(store, rollups_hour))
    assert set(hours) == {
        WindowKey("t1", "chat", "m", DAY),
        WindowKey("t1", "chat", "m", DAY + 3600),
        WindowKey("t1", "rag", "m", DAY + 86400),
    }
    h0 = hours[WindowKey("t1", "chat", "m", DAY)]
    assert (h0.requests, h0.errors, h0.latency_count) == (4, 1, 4)
    assert h0.latency_hist == make_delta(latencies=[10.0, 20.0, 30.0, 40.0]).latency_hist
    assert h0.cost_usd == 0.25

    days = _series_and_totals(_rollup(store, rollups_day))
    assert set(days) == {WindowKey("t1", "chat", "m", DAY), WindowKey("t1", "rag", "m", DAY + 86400)}
    d0 = days[WindowKey("t1", "chat", "m", DAY)]
    assert (d0.requests, d0.latency_count) == (8, 8)
    assert d0.latency_hist == make_delta(latencies=[10.0, 20.0, 30.0, 40.0] + [5.0] * 4).latency_hist
    assert days[WindowKey("t1", "rag", "m", DAY + 86400)].ttft_count == 1


def test_lookup_cold_finds_a_request_id_where_its_record_starts_whatever_the_tenant(store: Store) -> None:
    at = DAY + 1234.75
    store.commit(
        Checkpoint(
            "c",
            calls={
                ("t1", "r1"): make_record("t1", "r1", started_at=at),
                ("t2", "r1"): make_record("t2", "r1", started_at=at + 0.5),
                ("t1", "r2"): make_record("t1", "r2", started_at=at + 30),
            },
        )
    )

    def found(*probes: ColdProbe, since: float = 0.0) -> list[tuple[str, str]]:
        return [(t, r) for t, r, _ in store.lookup_cold("c", probes, since).counted]

    assert found(ColdProbe("r1", at, at)) == [("t1", "r1")]  # a re-sent request: its own instant
    assert found(ColdProbe("r1", at - 60, at + 60)) == [("t1", "r1"), ("t2", "r1")]  # a response: a span
    assert found(ColdProbe("r1", at + 1, at + 1)) == []  # another instant: another call
    assert found(ColdProbe("r2", at - 60, at + 29.9)) == []
    assert found(ColdProbe("r2", at + 29, at + 31), ColdProbe("r1", at, at)) == [("t1", "r1"), ("t1", "r2")]
    assert found(ColdProbe("r1", at, at), since=1e12) == []  # written before the horizon


def test_one_roll_up_transaction_covers_many_tenants_and_stops_near_max_rows(store: Store) -> None:
    windows = {
        WindowKey(f"t{i:02d}", "chat", "m", DAY + 60 * m): make_delta(requests=1, latencies=[10.0 * (m + 1)])
        for i in range(30)
        for m in range(10)
    }
    store.commit(Checkpoint("c", windows=windows))
    bound = DAY + 3 * 3600
    assert store.roll_hours(bound, 0.0, max_rows=25) == (3, 30, False)  # a tenant's hour is never split
    result = roll_up(store, bound + ROLL_SETTLE_S)
    # one transaction rolls the 27 others' hour, one moves all 30 past the empty hours to the bound
    assert (result.hours, result.windows, result.transactions, result.complete) == (27, 270, 2, True)
    assert store.roll_hours(bound, 0.0) == (0, 0, True)
    hours = _series_and_totals(_rollup(store, rollups_hour))
    assert len(hours) == 30
    assert all(d.requests == 10 and d.latency_count == 10 for d in hours.values())
    with pytest.raises(ValueError, match="whole hour"):
        store.roll_hours(bound + 1, 0.0)
