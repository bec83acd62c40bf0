"""Smoke test of the SDK benchmark (`bench/sdk.py`): a tiny run, checked for shape and sanity only.

No timing is asserted (the machines are shared); only that every figure is there, positive and
finite, that every system delivered what it recorded, and that llmpulse accounts for every event.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench import sdk

pytestmark = pytest.mark.slow  # starts child processes (a sink, the fake provider, fresh interpreters)


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    """One tiny run of the whole benchmark (a few seconds), shared by the tests below."""
    return sdk.run(1_500, burst_events=3_000, openai_calls=6, memory_buffer=256, import_repeat=1)


def test_hot_path_figures_for_every_system(results: dict[str, Any]) -> None:
    hot = results["hot_path"]
    assert set(hot) == {
        "baseline",
        "baseline+jsonl",
        "llmpulse noop",
        "llmpulse file",
        "otel noop",
        "otel otlp",
    }
    for name, figures in hot.items():
        for key in ("caller_cpu_us", "caller_wall_us", "total_cpu_us"):
            assert _positive(figures[key]), (name, key, figures[key])
        assert figures["delivered"] == figures["recorded"], name
    assert hot["llmpulse noop"]["dropped"] == 0
    assert hot["llmpulse file"]["dropped"] == 0
    for value in results["ratios"].values():
        assert _positive(value)


def test_burst_is_accounted(results: dict[str, Any]) -> None:
    burst = results["burst"]
    assert set(burst) == {"llmpulse-file-cold", "llmpulse-file", "llmpulse-pulse", "otel-otlp"}
    for name, figures in burst.items():
        assert figures["events"] == 3_000
        assert 0.0 <= figures["lost_pct"] <= 100.0
        if name.startswith("llmpulse"):
            assert figures["accounted"], figures
            assert figures["emitted"] == 3_000
    assert burst["llmpulse-pulse"]["reached_sink"] == burst["llmpulse-pulse"]["exported"]
    assert 0 < burst["otel-otlp"]["reached_sink"] <= 3_000


def test_openai_overhead_figures(results: dict[str, Any]) -> None:
    for label in ("chat", "chat_stream"):
        figures = results["openai"][label]
        for key in ("plain_p50_us", "plain_p99_us", "instrumented_p50_us", "instrumented_p99_us"):
            assert _positive(figures[key]), (label, key)
        assert figures["instrumented_p99_us"] >= figures["instrumented_p50_us"]
        # one event per instrumented call, warm-up included
        assert figures["events_exported"] == figures["calls"] + figures["warm_up_calls"]


def test_memory_stays_bounded(results: dict[str, Any]) -> None:
    for mode in ("failing", "blocking"):
        figures = results["memory"][mode]
        assert figures["recorded"] == 5 * 256
        assert figures["bounded_with_in_flight"], figures
        assert figures["accounted"]
        assert figures["accounted_after_shutdown"]
        assert figures["exported"] == 0
        assert figures["dropped"] > 0


def test_import_times_and_targets(results: dict[str, Any]) -> None:
    assert set(results["imports"]) == set(sdk.IMPORT_SNIPPETS)
    for figures in results["imports"].values():
        assert _positive(figures["wall_ms"])
        assert figures["importtime_ms"] > 0
    assert all(isinstance(v, bool) for v in results["targets"].values())
    assert results["events"] == 1_500
