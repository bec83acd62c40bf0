"""Smoke test of the alerts benchmark (`bench/alerts.py`): a tiny run, checked for shape only.

No timing is asserted (the machines are shared); only that every probe got exactly its one signed
firing notification, that each commit's pass judged the rules of the tenants it touched and the
full pass every rule, and that every figure and its reference are positive and finite.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench import alerts

pytestmark = pytest.mark.slow  # starts a server as a child process

PROBES = 3
RULES = 40
TENANTS = 4
COMMIT_TENANTS = 2


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_a_tiny_run_reports_every_figure_beside_its_reference() -> None:
    results = alerts.run(
        PROBES, RULES, TENANTS, hours=1, baseline_days=1, commits=3, commit_tenants=COMMIT_TENANTS
    )
    ack = results["ack_to_notification"]
    assert (ack["probes"], ack["missed"], ack["bad_signatures"]) == (PROBES, 0, 0)
    assert ack["notifications"] == PROBES + 2  # the warm-up probes' too; one each, nothing resolved yet
    for key in ("p50_s", "p95_s"):
        assert _positive(ack[key]), key
    assert ack["p95_s"] >= ack["p50_s"]

    ev = results["evaluation"]
    assert ev["store"]["windows"] == TENANTS * 4 * (60 + 71)  # 4 series: 1 h, and 71 minutes a day ago
    assert ev["store"]["windows"] <= ev["store"]["calls"] <= 4 * ev["store"]["windows"]
    assert ev["windows_per_commit"] == COMMIT_TENANTS * 4
    assert ev["rules_per_commit_pass"] == RULES // TENANTS * COMMIT_TENANTS
    assert ev["full_pass_rules"] == RULES
    for key in ("commit_s", "commit_per_window_ms"):
        assert _positive(ev[key]), key
    for path in ("rules",):
        for key in ("pass_s", "pass_per_window_ms", "pass_vs_commit", "full_pass_s", "full_pass_per_rule_ms"):
            assert _positive(ev[path][key]), (path, key)
