"""Smoke test of the soak benchmark (`bench/soak.py`): a tiny run, checked for shape only.

No timing nor memory bound is asserted (the machines are shared, and 40k events are far too few for
the state to level off); only that every event was acknowledged and processed, that a sample was
taken every `SAMPLE` events with positive RSS and file sizes, and that every figure is there.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench import soak

pytestmark = pytest.mark.slow  # starts `llmpulse serve` as a child process

EVENTS = 40_000
SAMPLE = 10_000


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    """One tiny run (a few seconds), shared by the tests below."""
    return soak.run(EVENTS, SAMPLE)


def test_every_event_is_acknowledged_and_sampled(results: dict[str, Any]) -> None:
    assert results["events"] == EVENTS
    assert results["failures"] == 0
    samples = results["samples"]
    assert [s["events"] for s in samples] == list(range(SAMPLE, EVENTS + 1, SAMPLE))
    assert results["quarter_events"] == SAMPLE
    assert [s["elapsed_s"] for s in samples] == sorted(s["elapsed_s"] for s in samples)
    for s in samples:
        for key in ("rss_mib", "hwm_mib", "anon_mib", "store_bytes", "log_bytes"):
            assert _positive(s[key]), (key, s)
        assert s["hwm_mib"] >= s["rss_mib"]
        # sampled as the acknowledged count passed a mark, with a few batches more in flight
        assert 0 <= s["processor"]["processed_events"] <= s["events"] + soak.CONCURRENCY * soak.BATCH
        assert "filter_bytes" in s["processor"]
        assert "pruned_records" in s["log"]


def test_the_ratios_and_the_disk_figures_are_reported(results: dict[str, Any]) -> None:
    for key in (
        "idle_rss_mib",
        "rss_at_quarter_mib",
        "rss_at_end_mib",
        "peak_rss_mib",
        "rss_ratio",
        "disk_ratio",
        "store_ratio",
        "log_ratio",
        "ack_events_per_s",
        "call_records_per_s",
        "steady_state_bytes",
        "projected_30d_bytes_at_this_rate",
        "projected_30d_bytes_per_million_calls_a_day",
    ):
        assert _positive(results[key]), key
    assert isinstance(results["rss_target_met"], bool)
    assert results["rss_target"] == soak.TARGET_RSS_RATIO
    # the call records the store holds: nothing expired within seconds (they live KEEP_S)
    records = results["call_records"]
    assert records["rows"] > EVENTS // 3
    assert _positive(records["bytes_per_record"])
    assert records["free_pages"] <= records["file_pages"]
    assert results["call_records_written"] >= records["rows"]
    assert results["call_records_deleted"] == results["call_records_written"] - records["rows"]
    assert results["call_records_expired_estimate"] == 0  # the run is shorter than a record lives
    assert results["server_env"]["LLMPULSE_RETENTION_LOG_S"] == str(soak.LOG_KEEP_S)
    assert results["server_env"]["LLMPULSE_RETENTION_CALLS_DAYS"] == "1"
