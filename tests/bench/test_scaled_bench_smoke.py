"""Smoke test of the scale-out benchmark (`bench/scaled.py`): a tiny run, checked for shape only.

No timing is asserted (the machines are shared); only that both modes counted every request sent,
that the live worker and the drains processed every record, and that every figure is positive and
finite. Needs tansu and the machine's Postgres, as the worker tests do; it fails, never skips,
without them.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench import scaled

pytestmark = pytest.mark.slow  # starts a broker, servers and workers as child processes

PAIRS = 1_500


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_a_tiny_run_counts_every_request_in_both_modes_and_reports_every_figure() -> None:
    results = scaled.run(PAIRS)
    kafka, embedded = results["kafka"], results["embedded"]
    assert results["events"] == 2 * PAIRS
    for mode in (kafka, embedded):
        assert mode["acked_events"] == 2 * PAIRS
        assert mode["failures"] == 0
        assert mode["stored_requests"] == PAIRS
        assert mode["probes"] >= 1
        for key in (
            "ack_events_per_s",
            "aggregated_events_per_s",
            "ack_to_queryable_p50_s",
            "ack_to_queryable_p95_s",
        ):
            assert _positive(mode[key]), key
    assert _positive(embedded["drain_events_per_s"])
    assert kafka["records"] >= 2 * PAIRS + kafka["probes"]
    assert [d["workers"] for d in kafka["drains"]] == [1, 2]
    for drain in kafka["drains"]:
        assert drain["stored_requests"] == PAIRS, drain
        assert sum(drain["processed_by_worker"]) >= kafka["records"], drain
        assert _positive(drain["events_per_s_per_worker"]), drain
    assert all(_positive(v) for v in results["ratios"].values()), results["ratios"]
