"""Smoke test of the history benchmark (`bench/history.py`): a tiny run, checked for shape only.

No timing is asserted (the machines are shared); only that the store holds every call generated,
that the summaries, the minute-window reference, the API and DuckDB agree with `costs`, and that
every figure is there, positive and finite.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench import history

pytestmark = pytest.mark.slow  # builds a store of a month of calls and starts the app in process

CALLS = 5_000
USERS = 500


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    """One tiny run of the whole benchmark (a few seconds), shared by the tests below."""
    return history.run(CALLS, USERS)


def test_the_store_holds_every_call_of_the_month(results: dict[str, Any]) -> None:
    built = results["build"]
    assert built["calls"] == CALLS
    assert built["days"] == history.DEFAULT_DAYS
    rows = built["table_rows"]
    assert rows["calls"] == CALLS
    # (at this size a series has about one call an hour: the rollups, which hold each tenant's total
    # beside its series, can outnumber the minute windows)
    assert rows["windows"] > 0
    assert rows["rollups_hour"] > rows["rollups_day"] > 0
    assert rows["rollups_day"] <= (50 + 1) * (history.DEFAULT_DAYS + 1)  # 50 series and the total
    assert _positive(built["build_calls_per_s"])


def test_summaries_agree_with_the_minute_windows_and_the_api(results: dict[str, Any]) -> None:
    summary = results["summary"]
    assert summary["agree"], summary["requests_counted"]
    counted = summary["requests_counted"]
    # the calls starting in the first seconds of the range's first minute are left out (its window
    # starts before the range), never more than a few
    assert CALLS - 5 <= counted["summary_29d"] <= CALLS
    assert counted["summary_1d"] < counted["summary_7d"] < counted["summary_29d"]
    for key in (
        "summary_1d_s",
        "summary_7d_s",
        "summary_29d_s",
        "api_summary_29d_s",
        "minute_windows_29d_s",
        "summary_ratio_longest_to_1d",
        "summary_vs_minute_windows",
    ):
        assert _positive(summary[key]), key
    # the rollups merge fewer rows than the minute windows hold
    assert summary["summary_29d_rows_merged"] < summary["minute_windows_29d_rows"]
    assert all(isinstance(v, bool) for v in summary["targets_met"].values())


def test_costs_agree_with_duckdb(results: dict[str, Any]) -> None:
    cost = results["costs"]
    assert cost["agree"]
    assert cost["groups"] == USERS  # every user calls
    assert cost["requests"] == results["summary"]["requests_counted"]["summary_29d"]
    for key in ("costs_s", "duckdb_s", "costs_vs_duckdb"):
        assert _positive(cost[key]), key
    assert cost["duckdb_source"]
