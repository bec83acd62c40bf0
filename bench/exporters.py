"""Benchmark 5: every exporter's throughput on one core, and the application's cost with all of them on.

In one run (`python -m bench.exporters`; ratios are what to read on a shared, noisy machine):

1. **Events per second per exporter, one core.** The benchmark process is pinned to one core and the
   receivers run in child processes pinned to the other (their CPU is not counted): the HTTP sink of
   `bench._sdk_servers` (webhook, Pulse, OTLP, Langfuse, Helicone), the TCP/UDP sink of
   `bench._stream_sink` (Logstash, syslog), a tansu broker (Kafka, `tests/kafka_broker.py`). Each
   exporter gets `n` calls through a real `Collector` (default config but a buffer that holds them
   all and the default batch of 512); the figure is calls exported per second of wall time, from the
   first `record` to the flush that returns with all of them exported, and the process CPU µs per
   call. Beside each, the same figure for its reference in the same run:
   - the **no-op pipeline** (an exporter that only counts): the SDK's own ceiling;
   - for the wire formats, the same bytes sent **without the SDK** (pre-encoded JSON bodies POSTed
     with `http.client`, JSON lines written with `sendall`, the call JSON produced with a bare
     `confluent_kafka.Producer`), the most a sender can do;
   - for OTLP, the **OpenTelemetry SDK** (`BatchSpanProcessor` + `OTLPSpanExporter`) with the same
     16 attributes; for syslog, the standard library's **`SysLogHandler`**; for Prometheus,
     **prometheus-client** updated directly with the same counters and histograms.
2. **Application-thread cost with every exporter on.** `collector.record(LLMCall(...))` per call,
   caller-thread CPU (`thread_time`) and wall time, with all the exporters above enabled at once
   (live receivers) beside a collector with none, in chunks of 2,000 with a flush after each.

`BENCH_EXPORTER_EVENTS` sets `n` (default 50,000; Helicone, which sends one request per call as its
API defines, gets a tenth). The run takes about a minute.
"""

from __future__ import annotations

import contextlib
import gc
import http.client
import logging
import logging.handlers
import os
import socket
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
from tests.kafka_broker import TansuBroker

from bench._sdk_servers import Server, sink_counts
from bench._stream_sink import StreamSink
from bench.sdk import _NoopExporter
from llmpulse.events import LLMCall
from llmpulse.exporters import (
    HeliconeExporter,
    KafkaExporter,
    LangfuseExporter,
    LogstashExporter,
    OTLPExporter,
    PrometheusExporter,
    PulseExporter,
    SyslogExporter,
    WebhookExporter,
)
from llmpulse.sdk import Collector, TelemetryConfig

BATCH = 512
CHUNK = 2_000
MODEL = "gpt-4o-mini"


def _events_from_env(default: int) -> int:
    value = os.environ.get("BENCH_EXPORTER_EVENTS")
    return int(value) if value else default


def _call(i: int, ts: datetime) -> LLMCall:
    return LLMCall(
        model=MODEL,
        timestamp=ts,
        input_tokens=100 + (i & 63),
        output_tokens=20,
        latency_ms=120.0,
        ttft_ms=30.0,
        provider="openai",
        tenant_id="acme",
        route="chat",
        user_id="u1",
        request_id=f"req-{i:012d}",
        finish_reason="stop",
        response_model="gpt-4o-mini-2024-07-18",
        environment="prod",
        feature="chat",
        session_id="s1",
    )


@contextlib.contextmanager
def _pinned(cpu: int) -> Iterator[None]:
    """Run this process (all its threads) on one core; restored after."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def measure_exporter(make: Callable[[], Any], n: int) -> dict[str, Any]:
    """Calls exported per second (wall) and process CPU µs per call, through a real Collector."""
    ts = datetime.now(UTC)
    exporter = make()
    config = TelemetryConfig(buffer_size=n + 1_000, max_batch_size=BATCH, flush_interval_ms=50)
    collector = Collector(config, exporters=[exporter])
    try:
        for i in range(200):  # warm-up: connection, price table, code paths
            collector.record(_call(i, ts))
        collector.flush(timeout=60.0)
        gc.collect()
        before = collector.stats()["exporters"][exporter.name]["exported"]
        wall0, cpu0 = time.perf_counter(), time.process_time()
        record = collector.record
        for i in range(n):
            record(_call(i, ts))
        done = collector.flush(timeout=300.0)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        stats = collector.stats()["exporters"][exporter.name]
    finally:
        collector.shutdown(timeout=10.0)
    exported = stats["exported"] - before
    return {
        "events_per_s": exported / wall,
        "cpu_us_per_event": cpu / n * 1e6,
        "exported": exported,
        "dropped": stats["dropped"],
        "complete": bool(done) and exported == n,
    }


def _encoded_batches(n: int) -> list[list[dict[str, Any]]]:
    from llmpulse.events import to_dict

    ts = datetime.now(UTC)
    items = [to_dict(_call(i, ts)) for i in range(n)]
    return [items[i : i + BATCH] for i in range(0, n, BATCH)]


def _rate(n: int, fn: Callable[[], None]) -> dict[str, Any]:
    gc.collect()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"events_per_s": n / wall, "cpu_us_per_event": cpu / n * 1e6}


def reference_http(url: str, n: int) -> dict[str, Any]:
    """Pre-built call dicts encoded as JSON arrays and POSTed with `http.client`, one per 512 calls."""
    batches = _encoded_batches(n)
    parts = urllib.parse.urlsplit(url)
    encoder = msgspec.json.Encoder()

    def send() -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        for batch in batches:
            conn.request(
                "POST", "/hook", body=encoder.encode(batch), headers={"Content-Type": "application/json"}
            )
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
        conn.close()

    return _rate(n, send)


def reference_tcp_lines(port: int, n: int) -> dict[str, Any]:
    """Pre-built call dicts encoded as JSON lines and written with `sendall`, 512 per write."""
    batches = _encoded_batches(n)
    encoder = msgspec.json.Encoder()

    def send() -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for batch in batches:
                sock.sendall(encoder.encode_lines(batch))

    return _rate(n, send)


def reference_otel(url: str, n: int) -> dict[str, Any]:
    """OpenTelemetry SDK spans with the same 16 attributes, BatchSpanProcessor + OTLP/HTTP exporter."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces"), max_queue_size=n + 1_000)
    )
    tracer = provider.get_tracer("bench")
    before = sink_counts(url)["spans"]

    def send() -> None:
        for i in range(n):
            span = tracer.start_span("chat gpt-4o-mini")
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": MODEL,
                    "gen_ai.usage.input_tokens": 100 + (i & 63),
                    "gen_ai.usage.output_tokens": 20,
                    "llm.latency_ms": 120.0,
                    "llm.ttft_ms": 30.0,
                    "gen_ai.provider.name": "openai",
                    "llmpulse.tenant_id": "acme",
                    "llmpulse.route": "chat",
                    "user.id": "u1",
                    "gen_ai.response.id": f"req-{i:012d}",
                    "gen_ai.response.finish_reasons": "stop",
                    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                    "deployment.environment": "prod",
                    "feature": "chat",
                    "session.id": "s1",
                }
            )
            span.end()
        provider.force_flush(300_000)

    try:
        result = _rate(n, send)
    finally:
        provider.shutdown()
    result["exported"] = sink_counts(url)["spans"] - before
    return result


def reference_syslog_handler(port: int, n: int) -> dict[str, Any]:
    """The standard library's `SysLogHandler` over TCP, one JSON message per call (its own format)."""
    batches = _encoded_batches(n)
    encoder = msgspec.json.Encoder()
    logger = logging.getLogger("llmpulse.bench.syslog")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.handlers.SysLogHandler(
        ("127.0.0.1", port), facility=logging.handlers.SysLogHandler.LOG_LOCAL0, socktype=socket.SOCK_STREAM
    )
    logger.addHandler(handler)

    def send() -> None:
        for batch in batches:
            for item in batch:
                logger.info(encoder.encode(item).decode())

    try:
        return _rate(n, send)
    finally:
        logger.removeHandler(handler)
        handler.close()


def reference_kafka(bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    """The same call JSON produced with a bare `confluent_kafka.Producer` (acks=all, idempotent)."""
    from confluent_kafka import Producer

    batches = _encoded_batches(n)
    encoder = msgspec.json.Encoder()
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    producer.produce(topic, b"warm-up")
    producer.flush(30)
    delivered = 0

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal delivered
        delivered += err is None

    def send() -> None:
        for batch in batches:
            for item in batch:
                producer.produce(topic, encoder.encode(item), key=item["user_id"], on_delivery=on_delivery)
            producer.flush(60)

    result = _rate(n, send)
    result["exported"] = delivered
    return result


def reference_prometheus(n: int) -> dict[str, Any]:
    """prometheus-client updated directly with what `PrometheusExporter` records per call."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry()
    labels = ("provider", "model", "route", "status")
    requests = Counter("llm_requests_total", "", labels, registry=registry)
    tokens = Counter("llm_tokens_total", "", (*labels, "type"), registry=registry)
    cost = Counter("llm_cost_usd_total", "", labels, registry=registry)
    latency = Histogram("llm_latency_seconds", "", labels, registry=registry)
    ttft = Histogram("llm_ttft_seconds", "", labels, registry=registry)
    batches = _encoded_batches(n)

    def send() -> None:
        for batch in batches:
            for item in batch:
                key = (item["provider"], item["model"], item["route"], item["status"])
                requests.labels(*key).inc()
                tokens.labels(*key, "input").inc(item["input_tokens"])
                tokens.labels(*key, "output").inc(item["output_tokens"])
                cost.labels(*key).inc(item.get("cost") or 0.0)
                latency.labels(*key).observe(item["latency_ms"] / 1000)
                ttft.labels(*key).observe(item["ttft_ms"] / 1000)

    return _rate(n, send)


def measure_app_cost(make_all: Callable[[], list[Any]], n: int) -> dict[str, dict[str, float]]:
    """Caller-thread CPU and wall µs per `record`, with every exporter on and with none (best of 3)."""
    ts = datetime.now(UTC)
    calls = [_call(i, ts) for i in range(CHUNK)]
    results: dict[str, dict[str, float]] = {}
    for name, make in (("none", list), ("all", make_all)):
        best_cpu = best_wall = float("inf")
        for _ in range(3):
            collector = Collector(TelemetryConfig(), exporters=make())
            try:
                for call in calls[:200]:
                    collector.record(call)
                collector.flush(timeout=60.0)
                cpu = wall = 0.0
                for _ in range(max(1, n // CHUNK)):
                    gc.collect()
                    c0, w0 = time.thread_time(), time.perf_counter()
                    for call in calls:
                        collector.record(call)
                    cpu += time.thread_time() - c0
                    wall += time.perf_counter() - w0
                    collector.flush(timeout=60.0)
            finally:
                collector.shutdown(timeout=10.0)
            per = max(1, n // CHUNK) * CHUNK
            best_cpu = min(best_cpu, cpu / per * 1e6)
            best_wall = min(best_wall, wall / per * 1e6)
        results[name] = {"caller_cpu_us": best_cpu, "caller_wall_us": best_wall}
    return results


def run(n_events: int | None = None) -> dict[str, Any]:
    """Run benchmark 5 and return its figures (also printed as a table)."""
    n = n_events if n_events is not None else _events_from_env(50_000)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    sender, receiver = cpus[0], cpus[-1]
    started = time.perf_counter()
    otel_logger = logging.getLogger("opentelemetry")
    level = otel_logger.level
    otel_logger.setLevel(logging.ERROR)
    figures: dict[str, dict[str, Any]] = {}
    references: dict[str, dict[str, Any]] = {}
    try:
        with (
            Server("sink") as http_sink,
            StreamSink(cpu=receiver) as stream,
            TansuBroker() as broker,
            tempfile.TemporaryDirectory(),
        ):
            url = http_sink.url
            if hasattr(os, "sched_setaffinity"):
                for child in (http_sink._proc, broker._proc):
                    if child is not None:
                        os.sched_setaffinity(child.pid, {receiver})
            broker.create_topic("llm-costs", partitions=6)
            exporters: dict[str, tuple[Callable[[], Any], int]] = {
                "noop": (_NoopExporter, n),
                "webhook": (lambda: WebhookExporter(f"{url}/hook"), n),
                "webhook ndjson+gzip": (
                    lambda: WebhookExporter(f"{url}/hook", format="ndjson", gzip=True, name="webhook-gz"),
                    n,
                ),
                "pulse": (lambda: PulseExporter(url), n),
                "otlp http/protobuf": (lambda: OTLPExporter(url), n),
                "otlp http/json": (lambda: OTLPExporter(url, protocol="http/json", name="otlp-json"), n),
                "langfuse": (lambda: LangfuseExporter("pk-lf-bench", "sk-lf-bench", host=url), n),
                "helicone": (lambda: HeliconeExporter("sk-helicone-bench", base_url=url), max(1, n // 10)),
                "logstash": (lambda: LogstashExporter("127.0.0.1", stream.tcp_port), n),
                "syslog udp": (lambda: SyslogExporter("127.0.0.1", stream.udp_port, name="syslog-udp"), n),
                "syslog tcp": (
                    lambda: SyslogExporter("127.0.0.1", stream.tcp_port, protocol="tcp", name="syslog-tcp"),
                    n,
                ),
                "kafka": (lambda: KafkaExporter(broker.bootstrap), n),
                "prometheus": (PrometheusExporter, n),
            }
            with _pinned(sender):
                for name, (make, count) in exporters.items():
                    figures[name] = measure_exporter(make, count)
                references["http.client POST (no SDK)"] = reference_http(url, n)
                references["sendall JSON lines (no SDK)"] = reference_tcp_lines(stream.tcp_port, n)
                references["OpenTelemetry SDK OTLP/HTTP"] = reference_otel(url, n)
                references["stdlib SysLogHandler TCP"] = reference_syslog_handler(stream.tcp_port, n)
                references["prometheus-client direct"] = reference_prometheus(n)
                references["confluent-kafka Producer"] = reference_kafka(broker.bootstrap, "llm-costs", n)

                def make_all() -> list[Any]:
                    return [
                        make()
                        for name, (make, _) in exporters.items()
                        if name not in ("noop", "helicone")  # helicone: one request per call
                    ]

                app = measure_app_cost(make_all, n)
    finally:
        otel_logger.setLevel(level)

    noop = figures["noop"]["events_per_s"]
    print("\n== Benchmark 5: exporters (one core; receivers on the other) ==")
    print(f"{'exporter':<24}{'events/s':>12}{'CPU µs/ev':>11}{'× no-op':>9}  complete")
    for name, fig in figures.items():
        print(
            f"{name:<24}{fig['events_per_s']:>12,.0f}{fig['cpu_us_per_event']:>11.1f}"
            f"{fig['events_per_s'] / noop:>9.2f}  {fig['complete']}"
        )
    print(f"{'reference':<36}{'events/s':>12}{'CPU µs/ev':>11}")
    for name, fig in references.items():
        print(f"{name:<36}{fig['events_per_s']:>12,.0f}{fig['cpu_us_per_event']:>11.1f}")
    ratios = {
        "webhook_x_http_client": figures["webhook"]["events_per_s"]
        / references["http.client POST (no SDK)"]["events_per_s"],
        "logstash_x_sendall": figures["logstash"]["events_per_s"]
        / references["sendall JSON lines (no SDK)"]["events_per_s"],
        "otlp_x_otel_sdk": figures["otlp http/protobuf"]["events_per_s"]
        / references["OpenTelemetry SDK OTLP/HTTP"]["events_per_s"],
        "prometheus_x_client_direct": figures["prometheus"]["events_per_s"]
        / references["prometheus-client direct"]["events_per_s"],
        "syslog_tcp_x_stdlib_handler": figures["syslog tcp"]["events_per_s"]
        / references["stdlib SysLogHandler TCP"]["events_per_s"],
        "kafka_x_bare_producer": figures["kafka"]["events_per_s"]
        / references["confluent-kafka Producer"]["events_per_s"],
        "app_cpu_all_x_none": app["all"]["caller_cpu_us"] / app["none"]["caller_cpu_us"],
        "app_wall_all_x_none": app["all"]["caller_wall_us"] / app["none"]["caller_wall_us"],
    }
    for key, value in ratios.items():
        print(f"  {key:<32}{value:>8.2f}")
    print(
        f"app thread per record: none {app['none']['caller_cpu_us']:.2f} µs CPU "
        f"({app['none']['caller_wall_us']:.2f} wall), all {len(exporters) - 2} exporters "
        f"{app['all']['caller_cpu_us']:.2f} µs CPU ({app['all']['caller_wall_us']:.2f} wall)"
    )
    print(f"(benchmark 5 took {time.perf_counter() - started:.0f} s)")
    return {"exporters": figures, "references": references, "app_cost": app, "ratios": ratios, "n": n}


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else None)
