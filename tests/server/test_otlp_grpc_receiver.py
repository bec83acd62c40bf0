"""The OTLP/gRPC receiver (``serve --otlp-grpc-port``): OpenTelemetry's own gRPC exporter in, the same
windows, counters, auth, limits and partial success as ``POST /v1/traces`` out."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

from llmpulse.cli import build_parser
from llmpulse.cli._serve import settings_from_args
from llmpulse.events import Event, Limits, LLMCall
from llmpulse.exporters._otlp_grpc import retry_delay_s
from llmpulse.pipeline import LogBackpressure
from llmpulse.server import ServerSettings, create_app
from llmpulse.server._limits import RequestLimits
from llmpulse.server._otlp_grpc import METHOD, SERVICE, peer_host, retry_trailers
from llmpulse.server._run import banner
from llmpulse.server._settings import ENV_OTLP_GRPC_PORT
from tests.server.conftest import RaisingLog, backpressure, closed_log
from tests.server.keyed import create_keys
from tests.server.live_server import free_port, live_server
from tests.server.test_otlp_receiver import BASE_NS, chat, pb_export, pb_span

EXPORT = f"/{SERVICE}/{METHOD}"


def _ns(offset_s: float) -> int:
    return BASE_NS + round(offset_s * 1e9)


def genai_spans(tenant: str) -> list[ReadableSpan]:
    """The same six spans for any tenant (made by the OpenTelemetry SDK): an agent, four chat calls
    (one failed), a tool; the calls on two routes and two models."""
    memory = InMemorySpanExporter()
    resource = Resource.create({"service.name": "bot", "llmpulse.tenant_id": tenant})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    agent = tracer.start_span(
        "invoke_agent", start_time=_ns(0), attributes={"gen_ai.operation.name": "invoke_agent"}
    )
    inside = set_span_in_context(agent)
    for i in range(4):
        span = tracer.start_span(
            "chat",
            context=inside,
            kind=SpanKind.CLIENT,
            start_time=_ns(i),
            attributes={
                **chat("gpt-4o" if i < 3 else "gpt-4o-mini", **{"gen_ai.usage.input_tokens": 100 + i}),
                "gen_ai.usage.cache_read.input_tokens": 40,
                "gen_ai.response.time_to_first_chunk": 0.25,
                "llmpulse.route": "support" if i % 2 == 0 else "search",
            },
        )
        if i == 2:
            span.set_status(Status(StatusCode.ERROR, "rate limited"))
        span.end(end_time=_ns(i) + (i + 1) * 100_000_000)
    tool = tracer.start_span("execute_tool", context=inside, start_time=_ns(5))
    tool.set_attribute("gen_ai.operation.name", "execute_tool")
    tool.end(end_time=_ns(6))
    agent.end(end_time=_ns(9))
    spans = list(memory.get_finished_spans())
    assert len(spans) == 6
    return spans


def grpc_exporter(port: int, **kwargs: Any) -> GrpcSpanExporter:
    kwargs.setdefault("timeout", 5)
    return GrpcSpanExporter(endpoint=f"http://127.0.0.1:{port}", insecure=True, **kwargs)


def export_with(exporter: Any, spans: Sequence[ReadableSpan]) -> SpanExportResult:
    try:
        result: SpanExportResult = exporter.export(spans)
        return result
    finally:
        exporter.shutdown()


def raw_export(
    port: int,
    body: bytes,
    *,
    metadata: Sequence[tuple[str, str]] = (),
    compression: grpc.Compression | None = None,
) -> ExportTraceServiceResponse:
    """One Export call with the message bytes as given; raises `grpc.RpcError` for an error status."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(EXPORT)  # bytes in, bytes out: malformed messages too
        answer = call(body, metadata=tuple(metadata), compression=compression, timeout=5)
    return ExportTraceServiceResponse.FromString(answer)


def refused(port: int, body: bytes, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        raw_export(port, body, **kwargs)
    return info.value


def rows_of(url: str, app: FastAPI, tenant: str) -> list[dict[str, Any]]:
    state = app.state.llmpulse
    for partition in state.log.partitions():
        assert state.runner.wait_committed(partition, state.log.end_offset(partition), 20.0)
    with urllib.request.urlopen(f"{url}/v1/metrics?tenant_id={tenant}&limit=100", timeout=5) as response:
        data: list[dict[str, Any]] = json.loads(response.read())["metrics"]
    return sorted(data, key=lambda r: (r["route"], r["model"]))


def logged(client: TestClient) -> list[Event]:
    log = client.app.state.llmpulse.log  # type: ignore[attr-defined]
    return [event for record in log.read(0, 0, 100_000) for event in record.events]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, FastAPI]]:
    """One uvicorn server (its own event loop, uvloop when installed) with the processor and a gRPC
    port: (HTTP base URL, gRPC port, app)."""
    path: Path = tmp_path_factory.mktemp("otlp-grpc-live")
    port = free_port()
    settings = ServerSettings(
        db_url=f"sqlite:///{path / 'store.db'}",
        checkpoint_interval_s=0.05,
        log_sync="NORMAL",
        otlp_grpc_port=port,
    )
    app = create_app(settings)
    with live_server(app) as url:
        yield url, port, app


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[Any]:
    """``make(log=None, keys=(), **settings)``: a started TestClient whose app has a gRPC port."""
    with ExitStack() as stack:
        counter = iter(range(1000))

        def make(*, log: Any = None, keys: Sequence[str] = (), **overrides: Any) -> tuple[TestClient, int]:
            url = f"sqlite:///{tmp_path / f'store{next(counter)}.db'}"
            made = create_keys(url, keys)[0] if keys else {}
            port = free_port()
            values: dict[str, Any] = {
                "db_url": url,
                "run_processor": False,
                "log_sync": "NORMAL",
                "otlp_grpc_port": port,
                **overrides,
            }
            client = stack.enter_context(TestClient(create_app(ServerSettings(**values), log=log)))
            client.keys = made  # type: ignore[attr-defined]
            return client, port

        yield make


# -- real clients: the same windows as over HTTP --------------------------------------------------------


def test_grpc_exports_with_and_without_gzip_make_the_same_windows_as_http(
    live: tuple[str, int, FastAPI],
) -> None:
    url, port, app = live
    before = app.state.llmpulse.otlp.snapshot()
    assert export_with(grpc_exporter(port), genai_spans("grpc")) == SpanExportResult.SUCCESS
    gzipped = grpc_exporter(port, compression=grpc.Compression.Gzip)
    assert export_with(gzipped, genai_spans("grpc-gzip")) == SpanExportResult.SUCCESS
    http = HttpSpanExporter(endpoint=f"{url}/v1/traces", compression=Compression.Gzip, timeout=5)
    assert export_with(http, genai_spans("http")) == SpanExportResult.SUCCESS

    def without_tenant(tenant: str) -> list[dict[str, Any]]:
        found = rows_of(url, app, tenant)
        assert {r.pop("tenant_id") for r in found} == {tenant}
        return found

    over_http = without_tenant("http")
    assert without_tenant("grpc") == over_http
    assert without_tenant("grpc-gzip") == over_http
    by_key = {(r["route"], r["model"]): r for r in over_http}
    assert set(by_key) == {("support", "gpt-4o"), ("search", "gpt-4o"), ("search", "gpt-4o-mini")}
    support = by_key["support", "gpt-4o"]  # calls 0 and 2 (failed): 100 and 300 ms
    assert (support["requests"], support["errors"], support["prompt_tokens"]) == (2, 1, 202)
    assert (support["completion_tokens"], support["cached_input_tokens"]) == (40, 80)
    assert support["avg_latency_ms"] == pytest.approx(200.0)
    assert support["avg_ttft_ms"] == pytest.approx(250.0)
    after = app.state.llmpulse.otlp.snapshot()
    assert {k: after[k] - before[k] for k in after} == {
        "exports": 3,
        "spans_received": 18,
        "calls": 12,
        "spans_ignored": 6,
        "spans_rejected": 0,
    }


def test_a_resent_grpc_export_is_counted_once(live: tuple[str, int, FastAPI]) -> None:
    url, port, app = live
    spans = genai_spans("resent")
    for _ in range(2):
        assert export_with(grpc_exporter(port), spans) == SpanExportResult.SUCCESS
    assert sum(r["requests"] for r in rows_of(url, app, "resent")) == 4


def test_partial_success_names_the_rejected_spans_and_keeps_the_rest(live: tuple[str, int, FastAPI]) -> None:
    _, port, app = live
    spans = [
        pb_span(0, chat()),
        pb_span(1, chat(**{"gen_ai.usage.input_tokens": -5})),
        pb_span(2, chat(**{"llmpulse.cost_usd": "free"})),
        pb_span(3, {"gen_ai.operation.name": "execute_tool"}),
    ]
    before = app.state.llmpulse.otlp.snapshot()
    answer = raw_export(port, pb_export(spans, {"llmpulse.tenant_id": "partial"}))
    assert answer.partial_success.rejected_spans == 2
    message = answer.partial_success.error_message
    assert message.startswith("2 of 4 spans rejected: span 0000000000000002 ('span-1'): ")
    assert "`gen_ai.usage.input_tokens` must be in 0..1000000000, got -5" in message
    assert "`llmpulse.cost_usd` must be a non-negative number, got 'free'" in message
    after = app.state.llmpulse.otlp.snapshot()
    assert (after["calls"] - before["calls"], after["spans_rejected"] - before["spans_rejected"]) == (1, 2)
    # a clean export has no partial_success at all, as the spec asks
    clean = raw_export(port, pb_export([pb_span(9, chat())], {"llmpulse.tenant_id": "partial"}))
    assert not clean.HasField("partial_success")


def test_the_sdk_exporter_counts_a_partially_rejected_export_as_sent(live: tuple[str, int, FastAPI]) -> None:
    url, port, app = live
    spans = genai_spans("sdk-partial")
    bad = next(s for s in spans if s.name == "chat")
    bad._attributes = {**bad.attributes, "gen_ai.usage.output_tokens": -1}  # type: ignore[has-type]
    assert export_with(grpc_exporter(port), spans) == SpanExportResult.SUCCESS
    assert sum(r["requests"] for r in rows_of(url, app, "sdk-partial")) == 3


# -- bad input ------------------------------------------------------------------------------------------


def test_a_malformed_message_is_invalid_argument_and_counts_nothing(live: tuple[str, int, FastAPI]) -> None:
    _, port, app = live
    before = app.state.llmpulse.otlp.snapshot()
    error = refused(port, b"\x0a\xff\xff\xff\xff\x0f")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a protobuf ExportTraceServiceRequest" in (error.details() or "")
    assert app.state.llmpulse.otlp.snapshot() == before


def test_size_and_span_limits_are_invalid_argument_naming_the_limit(apps: Any) -> None:
    limit = 64 * 1024
    client, port = apps(limits=Limits(max_body_bytes=limit, max_batch_items=20))
    big = pb_export([pb_span(0, chat(**{"llmpulse.metadata.note": "x" * 100_000}))])
    assert limit < len(big) < 2 * limit
    error = refused(port, big)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"bytes (decompressed); the limit is {limit} (max_body_bytes)" in (error.details() or "")
    # gzip: small on the wire, too large once decompressed
    assert len(gzip.compress(big)) < limit
    error = refused(port, big, compression=grpc.Compression.Gzip)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "(max_body_bytes)" in (error.details() or "")
    # grpcio itself refuses what is over twice the limit before the receiver reads it
    huge = pb_export([pb_span(0, chat(**{"llmpulse.metadata.note": "x" * (3 * limit)}))])
    assert refused(port, huge).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    many = pb_export([pb_span(n, chat()) for n in range(21)])
    error = refused(port, many)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "export has 21 spans; the limit is 20 (max_batch_items)" in (error.details() or "")
    assert logged(client) == []
    assert client.app.state.llmpulse.otlp.exports == 0  # type: ignore[attr-defined]


def test_the_sdk_exporter_gives_up_on_a_too_large_export_at_once(apps: Any) -> None:
    _, port = apps(limits=Limits(max_body_bytes=64 * 1024, max_batch_items=3))
    started = time.monotonic()
    assert export_with(grpc_exporter(port), genai_spans("too-many")) == SpanExportResult.FAILURE
    assert time.monotonic() - started < 0.8  # INVALID_ARGUMENT is not retried (the first backoff is ~1 s)


# -- keys -----------------------------------------------------------------------------------------------


def test_keys_come_as_bearer_metadata_and_set_the_tenant(apps: Any) -> None:
    client, port = apps(keys=("alpha",))
    key = client.keys["alpha"]
    spans = genai_spans("claimed-by-the-body")
    authorized = grpc_exporter(port, headers={"authorization": f"Bearer {key}"})
    assert export_with(authorized, spans) == SpanExportResult.SUCCESS
    calls = logged(client)
    assert len(calls) == 4
    assert {c.tenant_id for c in calls if isinstance(c, LLMCall)} == {"alpha"}

    assert export_with(grpc_exporter(port), spans) == SpanExportResult.FAILURE
    body = pb_export([pb_span(0, chat())])
    for metadata, says in (
        ((), "an API key is required"),
        ((("authorization", "Bearer lp_not-a-key"),), "unknown or revoked API key"),
        ((("authorization", f"Basic {key}"),), "must be `Bearer <key>`"),
    ):
        error = refused(port, body, metadata=metadata)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert says in (error.details() or "")
    assert len(logged(client)) == 4
    assert client.app.state.llmpulse.gate.unauthorized >= 4  # type: ignore[attr-defined]


def test_over_the_rate_limit_is_resource_exhausted_with_retry_info(apps: Any) -> None:
    client, port = apps(
        keys=("alpha",), request_limits=RequestLimits(rate_limit_per_s=0.5, rate_limit_burst=1)
    )
    auth = (("authorization", f"Bearer {client.keys['alpha']}"),)
    body = pb_export([pb_span(0, chat())])
    raw_export(port, body, metadata=auth)
    error = refused(port, body, metadata=auth)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rate limit" in (error.details() or "")
    assert retry_delay_s(error.trailing_metadata()) == 2.0


# -- overload and shutdown ------------------------------------------------------------------------------


def _retry_info(error: grpc.RpcError) -> float:
    trailers = dict(error.trailing_metadata() or ())
    info = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == error.code().value[0]
    assert status.message == error.details()
    return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)


def test_a_busy_log_is_unavailable_with_retry_info_and_counts_nothing(apps: Any) -> None:
    client, port = apps(log=backpressure(2.5))
    error = refused(port, pb_export([pb_span(0, chat())]))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "the event log is busy" in (error.details() or "")
    assert _retry_info(error) == 3.0  # Retry-After's whole seconds, in both trailers
    assert retry_delay_s(error.trailing_metadata()) == 3.0  # as llmpulse's own exporter reads it
    assert client.app.state.llmpulse.otlp.exports == 0  # type: ignore[attr-defined]
    _, closed_port = apps(log=closed_log())
    error = refused(closed_port, pb_export([pb_span(0, chat())]))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in (error.details() or "")


class BusyOnceLog(RaisingLog):
    """Pushes back on the first append (Retry-After 2 s), then keeps what it is given."""

    def __init__(self) -> None:
        super().__init__(LogBackpressure("busy", retry_after_s=1.5))
        self.kept: list[Event] = []
        self.appends = 0

    async def append(self, events: Sequence[Event], payload: bytes | None = None) -> None:
        self.appends += 1
        if self.appends == 1:
            raise self.error
        self.kept.extend(events)


def test_the_sdk_exporter_waits_as_the_retry_info_says_then_succeeds(apps: Any) -> None:
    log = BusyOnceLog()
    _, port = apps(log=log)
    started = time.monotonic()
    assert export_with(grpc_exporter(port, timeout=10), genai_spans("retry")) == SpanExportResult.SUCCESS
    waited = time.monotonic() - started
    assert log.appends == 2
    assert len(log.kept) == 4
    assert waited >= 1.9  # the RetryInfo's 2 s, not the exporter's own first backoff (0.8-1.2 s)


class SlowLog(RaisingLog):
    """Takes `delay_s` to append; says when an append has begun."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(RuntimeError("unused"))
        self.delay_s = delay_s
        self.begun = threading.Event()
        self.kept: list[Event] = []

    async def append(self, events: Sequence[Event], payload: bytes | None = None) -> None:
        self.begun.set()
        await asyncio.sleep(self.delay_s)
        self.kept.extend(events)


def test_shutdown_lets_a_call_in_flight_finish_then_closes_the_port(tmp_path: Path) -> None:
    log = SlowLog(0.5)
    port = free_port()
    settings = ServerSettings(
        db_url=f"sqlite:///{tmp_path / 's.db'}", run_processor=False, log_sync="NORMAL", otlp_grpc_port=port
    )
    answers: list[Any] = []
    client = TestClient(create_app(settings, log=log))
    with client:
        caller = threading.Thread(
            target=lambda: answers.append(raw_export(port, pb_export([pb_span(0, chat())]))), daemon=True
        )
        caller.start()
        assert log.begun.wait(5)
    # the lifespan has shut down: the call in flight was answered and its call kept
    caller.join(5)
    assert len(answers) == 1
    assert not answers[0].HasField("partial_success")
    assert len(log.kept) == 1
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_a_taken_port_fails_the_startup_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = ServerSettings(db_url=f"sqlite:///{tmp_path / 's.db'}", otlp_grpc_port=port)
        expected = rf"cannot listen for OTLP/gRPC on 127\.0\.0\.1:{port}"
        with pytest.raises(RuntimeError, match=expected), TestClient(create_app(settings)):
            pass


# -- settings and CLI -----------------------------------------------------------------------------------


def test_the_port_comes_from_the_flag_or_the_environment_and_is_off_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parser = build_parser()
    monkeypatch.delenv(ENV_OTLP_GRPC_PORT, raising=False)
    assert settings_from_args(parser.parse_args(["serve"])).otlp_grpc_port is None
    assert settings_from_args(parser.parse_args(["serve", "--otlp-grpc-port", "4317"])).otlp_grpc_port == 4317
    monkeypatch.setenv(ENV_OTLP_GRPC_PORT, "14317")
    assert settings_from_args(parser.parse_args(["serve"])).otlp_grpc_port == 14317
    assert settings_from_args(parser.parse_args(["serve", "--otlp-grpc-port", "4317"])).otlp_grpc_port == 4317
    monkeypatch.setenv(ENV_OTLP_GRPC_PORT, "grpc")
    with pytest.raises(ValueError, match="LLMPULSE_OTLP_GRPC_PORT must be an integer, got 'grpc'"):
        settings_from_args(parser.parse_args(["serve"]))


def test_bad_ports_are_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match=r"otlp_grpc_port must be in 0\.\.65535, got 70000"):
        ServerSettings(otlp_grpc_port=70000)
    with pytest.raises(ValueError, match="otlp_grpc_port must differ from port"):
        ServerSettings(port=4317, otlp_grpc_port=4317)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--otlp-grpc-port", "-1"])


def test_the_banner_names_the_grpc_port_only_when_set() -> None:
    assert "OTLP/gRPC: 127.0.0.1:4317" in banner(ServerSettings(otlp_grpc_port=4317))
    assert "OTLP/gRPC" not in banner(ServerSettings())


def test_grpc_peer_strings_become_client_addresses() -> None:
    assert peer_host("ipv4:127.0.0.1:52044") == "127.0.0.1"
    assert peer_host("ipv6:[::1]:52044") == "::1"
    assert peer_host("unix:/tmp/s") == "unix:/tmp/s"


def test_retry_trailers_carry_fractions_of_a_second() -> None:
    trailers = dict(retry_trailers(grpc.StatusCode.UNAVAILABLE, "busy", 1.25))
    info = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
    assert (info.retry_delay.seconds, info.retry_delay.nanos) == (1, 250_000_000)


# -- Kafka mode -----------------------------------------------------------------------------------------


def test_in_kafka_mode_grpc_exports_reach_the_windows_and_stop_with_the_server(tmp_path: Path) -> None:
    from tests.kafka_broker import TansuBroker

    port = free_port()
    with TansuBroker() as broker:
        settings = ServerSettings(
            broker_url=f"kafka://{broker.bootstrap}",
            db_url=f"sqlite:///{tmp_path / 'store.db'}",
            kafka_partitions=1,
            kafka_delivery_timeout_s=5.0,
            checkpoint_interval_s=0.1,
            otlp_grpc_port=port,
        )
        with TestClient(create_app(settings)) as client:
            assert export_with(grpc_exporter(port), genai_spans("kafka")) == SpanExportResult.SUCCESS
            deadline = time.monotonic() + 30
            found: list[dict[str, Any]] = []
            while sum(r["requests"] for r in found) < 4:
                assert time.monotonic() < deadline, f"the calls never reached the windows: {found}"
                time.sleep(0.1)
                found = client.get("/v1/metrics", params={"tenant_id": "kafka", "limit": 100}).json()[
                    "metrics"
                ]
            assert {(r["route"], r["model"], r["requests"]) for r in found} == {
                ("support", "gpt-4o", 2),
                ("search", "gpt-4o", 1),
                ("search", "gpt-4o-mini", 1),
            }
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
