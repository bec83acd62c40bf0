"""Smoke test of the exporter benchmark (`bench/exporters.py`): a tiny run, checked for shape only.

No timing is asserted (the machines are shared); only that every exporter delivered everything it was
given, through a real Collector into its real receiver, and that every figure is there and finite.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench import exporters

pytestmark = pytest.mark.slow  # starts receivers and a Kafka broker as child processes


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_a_tiny_run_delivers_everything_and_reports_every_figure() -> None:
    results = exporters.run(600)
    figures = results["exporters"]
    assert set(figures) >= {"noop", "webhook", "otlp http/protobuf", "logstash", "syslog tcp", "kafka"}
    for name, fig in figures.items():
        assert fig["complete"], (name, fig)
        assert fig["dropped"] == 0, name
        assert _positive(fig["events_per_s"]), name
        assert _positive(fig["cpu_us_per_event"]), name
    for name, fig in results["references"].items():
        assert _positive(fig["events_per_s"]), name
    assert results["references"]["OpenTelemetry SDK OTLP/HTTP"]["exported"] == 600
    assert results["references"]["confluent-kafka Producer"]["exported"] == 600
    for key in ("none", "all"):
        assert _positive(results["app_cost"][key]["caller_cpu_us"]), key
    assert all(_positive(v) for v in results["ratios"].values())
