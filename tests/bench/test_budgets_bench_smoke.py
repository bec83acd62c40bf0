"""Smoke test of the shared budgets benchmark (`bench/budgets.py`): a tiny run, checked for shape only.

No timing is asserted (the machines are shared); only that every figure and its reference are
there, positive and finite, that the ledger holds what the pairs committed, and that every SDK call
reserved and settled. Needs the machine's Postgres, as the store tests do; it fails, never skips,
without it.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench import budgets

pytestmark = pytest.mark.slow  # starts servers and the fake provider as child processes

PAIRS = 40
HTTP_CALLS = 30
SDK_CALLS = 20
THREADS = (1, 4)


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_a_tiny_run_reports_every_figure_beside_its_reference() -> None:
    results = budgets.run(PAIRS, HTTP_CALLS, SDK_CALLS, thread_counts=THREADS, postgres=True)
    assert set(results["ledger"]) == set(results["http"]) == {"sqlite", "postgres"}
    for dialect, ledger in results["ledger"].items():
        for threads in THREADS:
            fig = ledger[f"threads_{threads}"]
            for key in (
                "ledger_pairs_per_s",
                "bare_pairs_per_s",
                "ledger_vs_bare",
                "ledger_reserve_p50_ms",
                "ledger_reserve_p99_ms",
                "bare_reserve_p50_ms",
                "bare_reserve_p99_ms",
            ):
                assert _positive(fig[key]), (dialect, threads, key)
        # every reservation was committed: nothing is left reserved, and the pairs' costs are spent
        assert ledger["reserved_usd"] == pytest.approx(0.0), dialect
        assert ledger["committed_usd"] > 0, dialect
    for dialect, fig in results["http"].items():
        assert fig["calls"] == HTTP_CALLS
        for part in ("reserve", "commit", "bare"):
            assert _positive(fig[part]["p50_ms"]), (dialect, part)
            assert fig[part]["p99_ms"] >= fig[part]["p50_ms"], (dialect, part)
        assert _positive(fig["reserve_p50_vs_bare"]), dialect
    sdk = results["sdk"]
    assert sdk["settled"]
    stats = sdk["budget_stats"]
    assert stats["reserved"] == stats["committed"] >= SDK_CALLS
    assert stats["fail_open"] == stats["fail_closed"] == stats["settle_failed"] == 0
    for name in ("without", "shared", "reserve_only"):
        assert _positive(sdk[name]["p50_ms"]), name
        assert _positive(sdk[name]["p99_ms"]), name
    assert math.isfinite(sdk["added_p50_ms"])
    assert math.isfinite(sdk["added_p99_ms"])
