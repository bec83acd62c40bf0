"""PrometheusExporter: calls through a real Collector become counters and histograms, scraped over HTTP."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from llmpulse.events import LLMCall, LogEvent, Metric, Span
from llmpulse.exporters import PrometheusExporter
from llmpulse.sdk import Collector, TelemetryConfig
from tests.exporters.certs import require

OK = {"provider": "openai", "model": "gpt-4o-mini", "route": "chat", "status": "ok"}


def call(**fields: Any) -> LLMCall:
    values: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "provider": "openai",
        "route": "chat",
        "timestamp": datetime.now(UTC),
        "input_tokens": 100,
        "output_tokens": 20,
    }
    values.update(fields)
    return LLMCall(**values)


def record(exporter: PrometheusExporter, *items: Any) -> dict[str, Any]:
    """Record the items through a real collector, flush, and return the exporter's stats."""
    collector = Collector(TelemetryConfig(flush_interval_ms=60_000), exporters=[exporter])
    try:
        for item in items:
            collector.record(item)
        assert collector.flush(timeout=10.0)
        stats: dict[str, Any] = collector.stats()["exporters"][exporter.name]
    finally:
        collector.shutdown(timeout=5.0)
    return stats


@pytest.fixture
def exporter() -> PrometheusExporter:
    return PrometheusExporter()


@pytest.fixture
def served() -> Iterator[PrometheusExporter]:
    exporter = PrometheusExporter(port=0)
    yield exporter
    exporter.shutdown(timeout=5.0)


def scrape(exporter: PrometheusExporter) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        body: bytes = response.read()
    return body.decode()


def test_calls_update_requests_tokens_cost_and_histograms(exporter: PrometheusExporter) -> None:
    stats = record(
        exporter,
        call(
            input_tokens=1000,
            cached_input_tokens=600,
            cache_write_tokens=100,
            output_tokens=300,
            reasoning_tokens=120,
            cost=0.25,
            latency_ms=1500.0,
            ttft_ms=400.0,
        ),
        call(input_tokens=10, output_tokens=5, cost=0.5, latency_ms=40.0),
    )
    assert stats["exported"] == 2
    assert stats["dropped"] == 0
    value = exporter.registry.get_sample_value
    assert value("llm_requests_total", OK) == 2.0
    assert value("llm_errors_total", OK) is None
    tokens = {"input": 1010, "output": 305, "cached_input": 600, "cache_write": 100, "reasoning": 120}
    for kind, expected in tokens.items():
        assert value("llm_tokens_total", {**OK, "type": kind}) == expected, kind
    assert value("llm_cost_usd_total", OK) == pytest.approx(0.75)
    assert value("llm_cost_unknown_total", OK) is None
    assert value("llm_latency_seconds_count", OK) == 2.0
    assert value("llm_latency_seconds_sum", OK) == pytest.approx(1.54)
    assert value("llm_latency_seconds_bucket", {**OK, "le": "0.05"}) == 1.0
    assert value("llm_latency_seconds_bucket", {**OK, "le": "1.0"}) == 1.0
    assert value("llm_latency_seconds_bucket", {**OK, "le": "2.0"}) == 2.0
    assert value("llm_latency_seconds_bucket", {**OK, "le": "120.0"}) == 2.0
    assert value("llm_ttft_seconds_count", OK) == 1.0
    assert value("llm_ttft_seconds_sum", OK) == pytest.approx(0.4)
    assert value("llm_ttft_seconds_bucket", {**OK, "le": "0.3"}) == 0.0
    assert value("llm_ttft_seconds_bucket", {**OK, "le": "0.5"}) == 1.0


def test_errors_are_counted_under_status_error(exporter: PrometheusExporter) -> None:
    record(exporter, call(error="rate limited", cost=0.0), call(cost=0.1))
    error = {**OK, "status": "error"}
    value = exporter.registry.get_sample_value
    assert value("llm_errors_total", error) == 1.0
    assert value("llm_requests_total", error) == 1.0
    assert value("llm_requests_total", OK) == 1.0
    assert value("llm_errors_total", OK) is None


def test_unknown_cost_is_counted_apart_never_as_zero(exporter: PrometheusExporter) -> None:
    unknown = {**OK, "model": "no-such-model-xyz"}
    record(exporter, call(model="no-such-model-xyz"), call())
    value = exporter.registry.get_sample_value
    assert value("llm_cost_unknown_total", unknown) == 1.0
    assert value("llm_cost_usd_total", unknown) is None
    assert value("llm_requests_total", unknown) == 1.0
    # gpt-4o-mini is priced by the collector's pipeline.
    priced = value("llm_cost_usd_total", OK)
    assert priced is not None
    assert priced > 0
    assert value("llm_cost_unknown_total", OK) is None


def test_other_kinds_are_delivered_but_not_counted(exporter: PrometheusExporter) -> None:
    stats = record(
        exporter,
        Span(name="handle"),
        LogEvent(name="slow", message="slow"),
        Metric(name="queue_depth", value=3.0),
        call(cost=0.1),
    )
    assert stats["exported"] == 4
    assert stats["dropped"] == 0
    assert stats["failed"] == 0
    samples = [
        s
        for family in exporter.registry.collect()
        if family.name == "llm_requests"
        for s in family.samples
        if s.name == "llm_requests_total"
    ]
    assert [(s.labels, s.value) for s in samples] == [(OK, 1.0)]


def test_missing_label_values_are_empty_strings(exporter: PrometheusExporter) -> None:
    assert (
        exporter.export([{"type": "llm.call", "model": "m", "input_tokens": 1, "output_tokens": 2}]) is None
    )
    empty = {"provider": "", "model": "m", "route": "", "status": ""}
    value = exporter.registry.get_sample_value
    assert value("llm_requests_total", empty) == 1.0
    assert value("llm_cost_unknown_total", empty) == 1.0
    assert value("llm_latency_seconds_count", empty) is None


def test_label_sets_beyond_the_cap_collapse_into_other() -> None:
    exporter = PrometheusExporter(max_label_sets=2)
    exporter.export([{"type": "llm.call", "model": f"m{i}", "status": "ok", "cost": 1.0} for i in range(5)])
    exporter.export([{"type": "llm.call", "model": "m0", "status": "error", "cost": 1.0}])
    value = exporter.registry.get_sample_value
    other = {"provider": "__other__", "model": "__other__", "route": "__other__", "status": "ok"}
    assert value("llm_requests_total", other) == 3.0
    assert value("llm_label_overflow_total") == 3.0
    # A label set already seen keeps its labels, whatever its status.
    assert value("llm_requests_total", {"provider": "", "model": "m0", "route": "", "status": "error"}) == 1.0


def test_given_registry_and_namespace_are_used() -> None:
    registry = CollectorRegistry()
    exporter = PrometheusExporter(registry=registry, namespace="myapp")
    assert exporter.registry is registry
    exporter.export([{"type": "llm.call", **OK, "cost": 0.5}])
    assert registry.get_sample_value("myapp_llm_requests_total", OK) == 1.0
    assert registry.get_sample_value("myapp_llm_cost_usd_total", OK) == 0.5
    with pytest.raises(ValueError, match="Duplicated"):
        PrometheusExporter(registry=registry, namespace="myapp")


def test_each_exporter_gets_its_own_registry_by_default() -> None:
    first, second = PrometheusExporter(), PrometheusExporter()
    assert first.registry is not second.registry


def test_max_label_sets_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_label_sets"):
        PrometheusExporter(max_label_sets=0)


def test_http_endpoint_serves_parseable_exposition(served: PrometheusExporter) -> None:
    assert served.port is not None
    assert served.port > 0
    collector = Collector(TelemetryConfig(flush_interval_ms=60_000), exporters=[served])
    try:
        collector.record(call(cost=0.25, latency_ms=800.0, ttft_ms=120.0, reasoning_tokens=5))
        collector.record(call(error="boom", cost=0.0, latency_ms=50.0))
        collector.record(call(model="no-such-model-xyz"))
        collector.record(LogEvent(name="ignored"))
        assert collector.flush(timeout=10.0)
        text = scrape(served)
    finally:
        collector.shutdown(timeout=5.0)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected_types = {
        "llm_requests": "counter",
        "llm_errors": "counter",
        "llm_tokens": "counter",
        "llm_cost_usd": "counter",
        "llm_cost_unknown": "counter",
        "llm_label_overflow": "counter",
        "llm_latency_seconds": "histogram",
        "llm_ttft_seconds": "histogram",
    }
    assert {name: families[name].type for name in expected_types} == expected_types

    def samples(family: str, sample: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {
            tuple(sorted(s.labels.items())): s.value for s in families[family].samples if s.name == sample
        }

    def key(**labels: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(labels.items()))

    error = {**OK, "status": "error"}
    unknown = {**OK, "model": "no-such-model-xyz"}
    assert samples("llm_requests", "llm_requests_total") == {
        key(**OK): 1.0,
        key(**error): 1.0,
        key(**unknown): 1.0,
    }
    assert samples("llm_errors", "llm_errors_total") == {key(**error): 1.0}
    assert samples("llm_cost_usd", "llm_cost_usd_total") == {key(**OK): 0.25, key(**error): 0.0}
    assert samples("llm_cost_unknown", "llm_cost_unknown_total") == {key(**unknown): 1.0}
    tokens = samples("llm_tokens", "llm_tokens_total")
    assert tokens[key(**OK, type="input")] == 100.0
    assert tokens[key(**OK, type="output")] == 20.0
    assert tokens[key(**OK, type="reasoning")] == 5.0
    assert tokens[key(**OK, type="cached_input")] == 0.0
    assert {dict(k)["type"] for k in tokens} == {
        "input",
        "output",
        "cached_input",
        "cache_write",
        "reasoning",
    }
    assert samples("llm_latency_seconds", "llm_latency_seconds_count") == {key(**OK): 1.0, key(**error): 1.0}
    assert samples("llm_latency_seconds", "llm_latency_seconds_sum") == {key(**OK): 0.8, key(**error): 0.05}
    buckets = samples("llm_latency_seconds", "llm_latency_seconds_bucket")
    assert buckets[key(**OK, le="0.5")] == 0.0
    assert buckets[key(**OK, le="1.0")] == 1.0
    assert buckets[key(**OK, le="+Inf")] == 1.0
    assert samples("llm_ttft_seconds", "llm_ttft_seconds_count") == {key(**OK): 1.0}
    assert samples("llm_label_overflow", "llm_label_overflow_total") == {(): 0.0}


def test_collector_shutdown_stops_the_http_server() -> None:
    exporter = PrometheusExporter(port=0)
    collector = Collector(exporters=[exporter])
    assert "# TYPE llm_requests_total counter" in scrape(exporter)
    assert collector.shutdown(timeout=5.0)
    with pytest.raises(urllib.error.URLError):
        scrape(exporter)
    exporter.shutdown(timeout=1.0)  # a second shutdown does nothing


def test_importing_the_exporters_does_not_import_prometheus_client() -> None:
    code = "import sys, llmpulse.exporters; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def promtool() -> str:
    return require("promtool", "prometheus")


def test_promtool_accepts_the_exposition_and_rejects_a_broken_one(served: PrometheusExporter) -> None:
    collector = Collector(TelemetryConfig(flush_interval_ms=60_000), exporters=[served])
    try:
        collector.record(call(cost=0.25, latency_ms=800.0, ttft_ms=120.0, cached_input_tokens=30))
        collector.record(call(error="boom", model='quote"and\\backslash', latency_ms=50.0))
        assert collector.flush(timeout=10.0)
        text = scrape(served)
    finally:
        collector.shutdown(timeout=5.0)
    checked = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")
    # a bucket bound that is not a number fails the same check (promtool really parses the text)
    broken = text.replace('le="0.5"', 'le="x"', 1)
    assert broken != text
    rejected = subprocess.run(
        [promtool(), "check", "metrics"], input=broken, capture_output=True, text=True, timeout=30
    )
    assert rejected.returncode != 0
