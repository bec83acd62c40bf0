"""A burst of N records on one thread, as fast as possible, with default settings, in a fresh process.

`python -m bench._sdk_burst SYSTEM N [SINK_URL]` prints one JSON object. Systems:

- ``llmpulse-file-cold``: a new `Collector()` with a `FileExporter`; the burst is the first thing it
  sees, so the worker loads the price table (genai-prices) while the burst is running, as in an
  application that gets traffic right after starting;
- ``llmpulse-file`` / ``llmpulse-pulse``: the same once one event has been exported (price table
  loaded, file open / connection made), with the `FileExporter` or a `PulseExporter` to the sink;
- ``otel-otlp``: OpenTelemetry's defaults (`BatchSpanProcessor`, queue 2048) with the OTLP/HTTP
  exporter to the sink, one span with the same 16 attributes per event.

Each runs in its own interpreter so that nothing an earlier benchmark loaded (the price table, a
warm heap) or left running changes the result. `measure` runs one and returns its dict.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._sdk_servers import sink_counts

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ("llmpulse-file-cold", "llmpulse-file", "llmpulse-pulse", "otel-otlp")


def _sink_count(url: str, key: str) -> int:
    return sink_counts(url)[key]


def _llmpulse(system: str, n: int, sink_url: str | None, tmp: str) -> dict[str, Any]:
    from llmpulse.events import LLMCall
    from llmpulse.exporters import FileExporter, PulseExporter
    from llmpulse.sdk import Collector, TelemetryConfig

    if system == "llmpulse-pulse":
        if sink_url is None:
            raise ValueError("llmpulse-pulse needs the sink URL")
        exporter: Any = PulseExporter(sink_url, name="pulse")
    else:
        exporter = FileExporter(os.path.join(tmp, "calls.jsonl"), name="file")
    collector = Collector(TelemetryConfig(), [exporter])
    ts = datetime.now(UTC)
    warm = int(system != "llmpulse-file-cold")
    sunk_before = _sink_count(sink_url, "events") if sink_url and system == "llmpulse-pulse" else 0
    if warm:
        collector.record(LLMCall(model="gpt-4o-mini", timestamp=ts, input_tokens=1, output_tokens=1))
        collector.flush(30)
    record = collector.record
    started = time.perf_counter()
    for i in range(n):
        record(
            LLMCall(
                model="gpt-4o-mini",
                timestamp=ts,
                input_tokens=100 + (i & 63),
                output_tokens=20,
                latency_ms=120.0,
                ttft_ms=30.0,
                provider="openai",
                tenant_id="acme",
                route="chat",
                user_id="u1",
                request_id="req-0123456789abcdef",
                finish_reason="stop",
                response_model="gpt-4o-mini-2024-07-18",
                environment="prod",
                feature="chat",
                session_id="s1",
            )
        )
    burst_s = time.perf_counter() - started
    during = collector.stats()["exporters"][exporter.name]
    flushed = collector.flush(60)
    after = collector.stats()["exporters"][exporter.name]
    collector.shutdown(10)
    emitted, exported, queued, dropped = (after[k] for k in ("emitted", "exported", "queued", "dropped"))
    result: dict[str, Any] = {
        "system": system,
        "events": n,
        "burst_s": burst_s,
        "events_per_s": n / burst_s,
        "emitted": emitted - warm,
        "exported": exported - warm,
        "queued": queued,
        "dropped": dropped,
        "dropped_by_reason": after["dropped_by_reason"],
        "dropped_during_burst": during["dropped"],
        "flushed": flushed,
        "lost_pct": 100.0 * dropped / n,
        "accounted": emitted == exported + queued + dropped,
    }
    if system == "llmpulse-pulse" and sink_url:
        result["reached_sink"] = _sink_count(sink_url, "events") - sunk_before - warm
    return result


def _otel(n: int, sink_url: str) -> dict[str, Any]:
    import logging

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    logging.disable(logging.WARNING)  # a "Queue full" warning per dropped span
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{sink_url}/v1/traces")))
    tracer = provider.get_tracer("bench")
    start_span = tracer.start_span
    provider.force_flush()
    with start_span("warm-up"):
        pass
    provider.force_flush()
    before = _sink_count(sink_url, "spans")
    started = time.perf_counter()
    for i in range(n):
        span = start_span("chat gpt-4o-mini")
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 100 + (i & 63),
                "gen_ai.usage.output_tokens": 20,
                "llm.latency_ms": 120.0,
                "llm.ttft_ms": 30.0,
                "gen_ai.system": "openai",
                "tenant_id": "acme",
                "route": "chat",
                "user.id": "u1",
                "gen_ai.response.id": "req-0123456789abcdef",
                "gen_ai.response.finish_reasons": "stop",
                "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                "deployment.environment": "prod",
                "feature": "chat",
                "session.id": "s1",
            }
        )
        span.end()
    burst_s = time.perf_counter() - started
    provider.force_flush(60_000)
    provider.shutdown()
    reached = _sink_count(sink_url, "spans") - before
    return {
        "system": "otel-otlp",
        "events": n,
        "burst_s": burst_s,
        "events_per_s": n / burst_s,
        "reached_sink": reached,
        "lost_pct": 100.0 * (n - reached) / n,
        "accounted": False,  # nothing in OTel's API says how many spans it dropped
    }


def _measure_here(system: str, n: int, sink_url: str | None) -> dict[str, Any]:
    if system == "otel-otlp":
        if sink_url is None:
            raise ValueError("otel-otlp needs the sink URL")
        return _otel(n, sink_url)
    with tempfile.TemporaryDirectory(prefix="llmpulse-bench-") as tmp:
        return _llmpulse(system, n, sink_url, tmp)


def measure(system: str, n: int, sink_url: str | None = None) -> dict[str, Any]:
    """Run one burst in a fresh interpreter and return its figures (blocks a few seconds)."""
    if system not in SYSTEMS:
        raise ValueError(f"system must be one of {SYSTEMS}, got {system!r}")
    args = [sys.executable, "-m", "bench._sdk_burst", system, str(n)]
    if sink_url:
        args.append(sink_url)
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True, timeout=300)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    import logging

    logging.disable(logging.WARNING)  # the pipeline's "queue full" warning is what is being measured
    print(
        json.dumps(_measure_here(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None))
    )
