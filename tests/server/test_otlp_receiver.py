"""The OTLP receiver, ``POST /v1/traces``: real OTLP clients in, windows out of ``/v1/metrics``."""

from __future__ import annotations

import base64
import gzip
import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

from llmpulse.events import Limits, LLMCall
from llmpulse.exporters import OTLPExporter
from llmpulse.sdk import Collector, TelemetryConfig
from llmpulse.server import ServerSettings, _otlp_decode, create_app
from llmpulse.server._otlp_calls import _tenant_of
from llmpulse.server._otlp_decode import OTLPUnavailable
from tests.server.conftest import MakeClient, backpressure, logged
from tests.server.live_server import live_server

PB = {"Content-Type": "application/x-protobuf"}
#: A fixed second inside a window that ended minutes ago: every test's calls land in one window.
BASE = datetime.now(UTC).replace(second=10, microsecond=0) - timedelta(minutes=3)
BASE_NS = int(BASE.timestamp()) * 1_000_000_000
TRACE = "5b8efff798038103d269b633813fc60c"


def _ns(offset_s: float) -> int:
    return BASE_NS + round(offset_s * 1e9)


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        result = AnyValue()
        result.array_value.values.extend(_any(v) for v in value)
        return result
    return AnyValue(string_value=str(value))


def _kvs(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_any(v)) for k, v in attrs.items()]


def pb_span(
    n: int, attrs: dict[str, Any], *, start_s: float = 0.0, duration_ms: float = 500.0, error: bool = False
) -> PbSpan:
    span = PbSpan(
        trace_id=bytes.fromhex(TRACE),
        span_id=(n + 1).to_bytes(8, "big"),
        name=f"span-{n}",
        kind=PbSpan.SpanKind.SPAN_KIND_CLIENT,
        start_time_unix_nano=_ns(start_s),
        end_time_unix_nano=_ns(start_s) + round(duration_ms * 1e6),
    )
    span.attributes.extend(_kvs(attrs))
    if error:
        span.status.code = PbStatus.StatusCode.STATUS_CODE_ERROR
        span.status.message = "upstream 500"
    return span


def pb_export(spans: list[PbSpan], resource: dict[str, Any] | None = None) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(_kvs({"service.name": "checkout", **(resource or {})}))
    resource_spans.scope_spans.add().spans.extend(spans)
    return request.SerializeToString()


def chat(model: str = "gpt-4o-mini", **attrs: Any) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 20,
        **attrs,
    }


def post_pb(client: TestClient, body: bytes, **headers: str) -> tuple[int, ExportTraceServiceResponse]:
    response = client.post("/v1/traces", content=body, headers={**PB, **headers})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-protobuf"
    return response.status_code, ExportTraceServiceResponse.FromString(response.content)


def wait_processed(app: FastAPI) -> None:
    state = app.state.llmpulse
    assert state.runner.wait_committed(0, state.log.end_offset(0), 20.0)


def rows(client: TestClient, tenant: str) -> list[dict[str, Any]]:
    wait_processed(client.app)  # type: ignore[arg-type]
    data = client.get("/v1/metrics", params={"tenant_id": tenant, "limit": 100}).json()
    return sorted(data["metrics"], key=lambda r: (r["route"], r["model"]))


@pytest.fixture
def pclient(make_client: MakeClient) -> TestClient:
    """A client whose app runs the processor, so windows show up in /v1/metrics."""
    return make_client(run_processor=True, checkpoint_interval_s=0.05)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FastAPI]]:
    """One uvicorn server with the processor for the tests that need a socket (one tenant each)."""
    path: Path = tmp_path_factory.mktemp("otlp-live")
    settings = ServerSettings(
        db_url=f"sqlite:///{path / 'store.db'}", checkpoint_interval_s=0.05, log_sync="NORMAL"
    )
    app = create_app(settings)
    with live_server(app) as url:
        yield url, app


def live_rows(url: str, app: FastAPI, tenant: str) -> list[dict[str, Any]]:
    wait_processed(app)
    with urllib.request.urlopen(f"{url}/v1/metrics?tenant_id={tenant}&limit=100", timeout=5) as response:
        data: list[dict[str, Any]] = json.loads(response.read())["metrics"]
    return sorted(data, key=lambda r: (r["route"], r["model"]))


# -- real clients ------------------------------------------------------------------------------------


def test_opentelemetry_sdk_exporter_genai_spans_become_windows(live: tuple[str, FastAPI]) -> None:
    url, app = live
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bot", "llmpulse.tenant_id": "otel"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    agent = tracer.start_span(
        "invoke_agent support", start_time=_ns(0), attributes={"gen_ai.operation.name": "invoke_agent"}
    )
    inside = set_span_in_context(agent)
    for i in range(4):
        span = tracer.start_span(
            "chat gpt-4o",
            context=inside,
            kind=SpanKind.CLIENT,
            start_time=_ns(i),
            attributes={
                **chat("gpt-4o", **{"gen_ai.usage.input_tokens": 100 + i}),
                "gen_ai.provider.name": "openai",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.cache_read.input_tokens": 40,
                "gen_ai.usage.reasoning.output_tokens": 5,
                "gen_ai.response.time_to_first_chunk": 0.25,
                "gen_ai.response.finish_reasons": ["stop"],
                "llmpulse.route": "support",
            },
        )
        if i == 3:
            span.set_status(Status(StatusCode.ERROR, "rate limited"))
        span.end(end_time=_ns(i) + (i + 1) * 100_000_000)  # 100, 200, 300, 400 ms
    tool = tracer.start_span("execute_tool search", context=inside, start_time=_ns(5))
    tool.set_attribute("gen_ai.operation.name", "execute_tool")
    tool.end(end_time=_ns(6))
    # a span naming its own tenant wins over the resource's
    other = tracer.start_span(
        "chat", start_time=_ns(7), attributes={**chat(), "llmpulse.tenant_id": "otel-b"}
    )
    other.end(end_time=_ns(8))
    agent.end(end_time=_ns(9))
    spans = memory.get_finished_spans()
    assert len(spans) == 7

    exporter = OTLPSpanExporter(endpoint=f"{url}/v1/traces", compression=Compression.Gzip, timeout=5)
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        assert exporter.export(spans) == SpanExportResult.SUCCESS  # a retry sends the same spans again
    finally:
        exporter.shutdown()

    (row,) = live_rows(url, app, "otel")
    assert (row["route"], row["model"], row["requests"], row["errors"]) == ("support", "gpt-4o", 4, 1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (406, 80)
    assert (row["cached_input_tokens"], row["reasoning_tokens"]) == (160, 20)
    assert row["avg_latency_ms"] == pytest.approx(250.0)
    assert row["avg_ttft_ms"] == pytest.approx(250.0)
    (b,) = live_rows(url, app, "otel-b")
    assert (b["route"], b["model"], b["requests"]) == ("default", "gpt-4o-mini", 1)
    stats = json.loads(urllib.request.urlopen(f"{url}/v1/stats", timeout=5).read())
    assert stats["counters"]["duplicates"] >= 5
    assert stats["otlp"]["spans_ignored"] >= 4  # agent + tool, twice


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
def test_llmpulse_otlp_exporter_through_a_collector_matches_what_was_recorded(
    live: tuple[str, FastAPI], protocol: str
) -> None:
    url, app = live
    tenant = f"sdk-{protocol.split('/')[1]}"
    calls = [
        LLMCall(
            model="gpt-4o-mini" if i % 3 else "claude-sonnet-4",
            provider="openai" if i % 3 else "anthropic",
            timestamp=BASE + timedelta(seconds=i),
            tenant_id=tenant,
            route="chat" if i % 2 else "search",
            request_id=f"{tenant}-{i}",
            input_tokens=200 + i,
            output_tokens=30 + i,
            cached_input_tokens=10,
            reasoning_tokens=i,
            latency_ms=100.0 * (i + 1),
            ttft_ms=50.0,
            cost=0.001 * (i + 1),
            # the provider's figure counts as sent (an estimate would be re-priced by the server)
            cost_source="provider",
            error={"type": "timeout"} if i == 4 else None,
            user_id="u-1",
        )
        for i in range(9)
    ]
    collector = Collector(
        TelemetryConfig(flush_interval_ms=50),
        exporters=[OTLPExporter(url, protocol=protocol, compression="gzip")],
    )
    for call in calls:
        collector.record(call)
    assert collector.shutdown(timeout=10.0)
    assert collector.stats()["exporters"]["otlp"]["exported"] == len(calls)

    got = {(r["route"], r["model"]): r for r in live_rows(url, app, tenant)}
    expected: dict[tuple[str, str], list[LLMCall]] = {}
    for call in calls:
        expected.setdefault((call.route, call.model), []).append(call)
    assert set(got) == set(expected)
    for key, group in expected.items():
        row = got[key]
        assert row["requests"] == len(group)
        assert row["errors"] == sum(c.is_error for c in group)
        assert row["prompt_tokens"] == sum(c.input_tokens for c in group)
        assert row["completion_tokens"] == sum(c.output_tokens for c in group)
        assert row["cached_input_tokens"] == sum(c.cached_input_tokens for c in group)
        assert row["reasoning_tokens"] == sum(c.reasoning_tokens for c in group)
        assert row["estimated_cost_usd"] == pytest.approx(sum(c.cost or 0 for c in group))
        assert row["avg_latency_ms"] == pytest.approx(sum(c.latency_ms or 0 for c in group) / len(group))
        assert row["avg_ttft_ms"] == pytest.approx(50.0)


def test_otlp_json_as_the_spec_writes_it(pclient: TestClient) -> None:
    start = str(_ns(0))  # 64-bit integers as strings, enums as integers, ids as hex, camelCase keys

    def span(n: int, attrs: list[dict[str, Any]], end_ms: int, status: int = 1) -> dict[str, Any]:
        return {
            "traceId": TRACE,
            "spanId": f"{n:016x}",
            "parentSpanId": "",
            "name": f"chat {n}",
            "kind": 3,
            "startTimeUnixNano": start,
            "endTimeUnixNano": str(_ns(0) + end_ms * 1_000_000),
            "attributes": attrs,
            "status": {"code": status},
            "droppedEventsCount": 0,
            "someFutureField": {"x": 1},  # unknown fields are ignored, as the spec requires
        }

    attrs = [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "mistral-large"}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "300"}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 40}},
        {
            "key": "gen_ai.response.finish_reasons",
            "value": {"arrayValue": {"values": [{"stringValue": "stop"}]}},
        },
    ]
    document = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "llmpulse.tenant_id", "value": {"stringValue": "json"}},
                        {"key": "llmpulse.route", "value": {"stringValue": "rag"}},
                    ]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "manual"},
                        "spans": [span(1, attrs, 800), span(2, attrs, 1200, status=2)],
                    }
                ],
            }
        ]
    }
    response = pclient.post("/v1/traces", json=document)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    json_format.Parse(response.content, ExportTraceServiceResponse())
    (row,) = rows(pclient, "json")
    assert (row["route"], row["model"], row["requests"], row["errors"]) == ("rag", "mistral-large", 2, 1)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (600, 80)
    assert row["avg_latency_ms"] == pytest.approx(1000.0)
    first = logged(pclient)[0]
    assert isinstance(first, LLMCall)
    assert (first.trace_id, first.span_id, first.finish_reason) == (TRACE, f"{1:016x}", "stop")
    assert first.request_id == f"otlp-{TRACE}-{1:016x}"


# -- what becomes a call -----------------------------------------------------------------------------


def test_openinference_llm_spans_are_calls_and_its_other_kinds_are_ignored(client: TestClient) -> None:
    llm = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "claude-3-5-sonnet",
        "llm.provider": "anthropic",
        "llm.token_count.prompt": 500,
        "llm.token_count.completion": 60,
        "llm.token_count.prompt_details.cache_read": 300,
        "user.id": "alice",
        "session.id": "s-9",
    }
    spans = [
        pb_span(0, llm, duration_ms=900),
        pb_span(1, {"openinference.span.kind": "TOOL", "tool.name": "search"}),
        pb_span(2, {"openinference.span.kind": "CHAIN"}),
    ]
    _, answer = post_pb(client, pb_export(spans))
    assert not answer.HasField("partial_success")
    (call,) = logged(client)
    assert isinstance(call, LLMCall)
    assert (call.model, call.provider, call.input_tokens, call.output_tokens) == (
        "claude-3-5-sonnet",
        "anthropic",
        500,
        60,
    )
    assert (call.cached_input_tokens, call.user_id, call.session_id) == (300, "alice", "s-9")
    assert call.latency_ms == pytest.approx(900.0)
    assert client.get("/v1/stats").json()["otlp"] == {
        "exports": 1,
        "spans_received": 3,
        "calls": 1,
        "spans_ignored": 2,
        "spans_rejected": 0,
    }


def test_legacy_genai_attribute_names(client: TestClient) -> None:
    legacy = {
        "gen_ai.operation.name": "text_completion",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-3.5-turbo-instruct",
        "gen_ai.usage.prompt_tokens": 70,
        "gen_ai.usage.completion_tokens": 9,
    }
    openllmetry = {  # before gen_ai.operation.name existed
        "llm.request.type": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4",
        "gen_ai.usage.prompt_tokens": 11,
    }
    embeddings = {
        "gen_ai.operation.name": "embeddings",
        "gen_ai.request.model": "text-embedding-3-small",
        "gen_ai.usage.input_tokens": 8,
    }
    failed = {**chat(), "error.type": "rate_limit_exceeded"}  # an error without an ERROR status
    spans = [pb_span(0, legacy), pb_span(1, openllmetry), pb_span(2, embeddings), pb_span(3, failed)]
    post_pb(client, pb_export(spans))
    events = logged(client)
    assert all(isinstance(e, LLMCall) for e in events)
    got = [(e.model, e.provider, e.input_tokens, e.output_tokens, e.status) for e in events]  # type: ignore[union-attr]
    assert got == [
        ("gpt-3.5-turbo-instruct", "openai", 70, 9, "ok"),
        ("gpt-4", "openai", 11, 0, "ok"),
        ("text-embedding-3-small", None, 8, 0, "ok"),
        ("gpt-4o-mini", None, 100, 20, "error"),
    ]
    assert events[3].error == {"type": "rate_limit_exceeded"}  # type: ignore[union-attr]


def test_non_llm_spans_are_accepted_ignored_and_counted(client: TestClient) -> None:
    spans = [
        pb_span(0, {"http.request.method": "GET", "url.full": "https://example.com"}),
        pb_span(1, {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}),
        pb_span(2, {"gen_ai.operation.name": "invoke_agent"}),
        pb_span(3, {"gen_ai.operation.name": "create_agent", "gen_ai.request.model": "gpt-4o"}),
        pb_span(4, {"llm.request.type": "chat"}),  # no model or system: not recognisably a call
    ]
    _, answer = post_pb(client, pb_export(spans))
    assert answer.partial_success.rejected_spans == 0
    assert logged(client) == []
    otlp = client.get("/v1/stats").json()["otlp"]
    assert (otlp["spans_received"], otlp["spans_ignored"], otlp["calls"]) == (5, 5, 0)


def test_tenant_and_route_precedence_and_configured_defaults(make_client: MakeClient) -> None:
    settings = ServerSettings.from_env(
        {"LLMPULSE_OTLP_DEFAULT_TENANT": "unassigned", "LLMPULSE_OTLP_DEFAULT_ROUTE": "otlp"}
    )
    assert _tenant_of({"llmpulse.tenant_id": "span"}, {"llmpulse.tenant_id": "res"}, settings) == "span"
    assert _tenant_of({}, {"llmpulse.tenant_id": "res"}, settings) == "res"
    assert _tenant_of({"llmpulse.tenant_id": ""}, {}, settings) == "unassigned"
    client = make_client(otlp_default_tenant="unassigned", otlp_default_route="otlp")
    spans = [pb_span(0, chat()), pb_span(1, chat(**{"llmpulse.route": "span-route"}))]
    post_pb(client, pb_export(spans, resource={"llmpulse.route": "res-route"}))
    post_pb(client, pb_export([pb_span(2, chat())]))
    got = [(e.tenant_id, e.route) for e in logged(client)]  # type: ignore[union-attr]
    assert got == [("unassigned", "res-route"), ("unassigned", "span-route"), ("unassigned", "otlp")]


def test_default_settings_name_the_default_tenant_and_bad_ones_are_refused() -> None:
    assert (ServerSettings().otlp_default_tenant, ServerSettings().otlp_default_route) == (
        "default",
        "default",
    )
    with pytest.raises(ValueError, match="otlp_default_tenant"):
        ServerSettings(otlp_default_tenant="")
    with pytest.raises(ValueError, match="otlp_default_route"):
        ServerSettings.from_env({"LLMPULSE_OTLP_DEFAULT_ROUTE": "r" * 300})


# -- partial success, duplicates, back-pressure ----------------------------------------------------


def test_invalid_call_spans_are_rejected_and_the_rest_accepted(client: TestClient) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    spans = [
        pb_span(0, chat()),
        pb_span(1, chat(**{"gen_ai.usage.input_tokens": -5})),
        pb_span(2, chat(**{"gen_ai.usage.cache_read.input_tokens": 500})),  # more cached than input
        pb_span(3, chat(), start_s=(old - BASE).total_seconds()),
        pb_span(4, chat(**{"llmpulse.tenant_id": 42})),
        pb_span(5, chat(**{"gen_ai.usage.output_tokens": "many"})),
        pb_span(6, chat(), duration_ms=-10),
        pb_span(7, chat(**{"gen_ai.response.time_to_first_chunk": -1.0})),
        pb_span(8, {"openinference.span.kind": "TOOL"}),
        pb_span(9, chat("m" * 300)),
    ]
    _, answer = post_pb(client, pb_export(spans))
    assert answer.partial_success.rejected_spans == 8
    message = answer.partial_success.error_message
    assert message.startswith("8 of 10 spans rejected: ")
    assert "`gen_ai.usage.input_tokens` must be in 0..1000000000, got -5" in message
    assert "cached_input_tokens" in message
    assert "`startTimeUnixNano`) is more than 2.592e+06 s in the past" in message
    assert "`llmpulse.tenant_id` must be a string" in message
    assert "; ..." in message  # only the first few reasons are quoted
    assert [e.request_id for e in logged(client)] == [f"otlp-{TRACE}-{1:016x}"]  # type: ignore[union-attr]
    otlp = client.get("/v1/stats").json()["otlp"]
    assert (otlp["calls"], otlp["spans_rejected"], otlp["spans_ignored"]) == (1, 8, 1)


def test_every_rejection_reason_names_the_problem(client: TestClient) -> None:
    cases = {
        "`gen_ai.usage.output_tokens` must be an integer": chat(**{"gen_ai.usage.output_tokens": "many"}),
        "`endTimeUnixNano` is before `startTimeUnixNano`": None,
        "`gen_ai.response.time_to_first_chunk` must be a non-negative number": chat(
            **{"gen_ai.response.time_to_first_chunk": -1.0}
        ),
        "at `$.model`": chat("m" * 300),
    }
    for expected, attrs in cases.items():
        span = pb_span(0, chat(), duration_ms=-10) if attrs is None else pb_span(0, attrs)
        _, answer = post_pb(client, pb_export([span]))
        assert answer.partial_success.rejected_spans == 1
        assert expected in answer.partial_success.error_message
    zero = pb_span(0, chat())
    zero.trace_id = bytes(16)
    _, answer = post_pb(client, pb_export([zero]))
    assert "`traceId` must be 16 bytes and not all zero" in answer.partial_success.error_message


def test_partial_success_in_json(client: TestClient) -> None:
    body = json_format.MessageToDict(
        ExportTraceServiceRequest.FromString(
            pb_export([pb_span(0, chat()), pb_span(1, chat(**{"gen_ai.usage.input_tokens": -1}))])
        )
    )
    for span in body["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        for key in ("traceId", "spanId"):
            span[key] = base64.b64decode(span[key]).hex()
    response = client.post("/v1/traces", json=body)
    assert response.status_code == 200
    data = response.json()
    assert int(data["partialSuccess"]["rejectedSpans"]) == 1
    assert "`gen_ai.usage.input_tokens`" in data["partialSuccess"]["errorMessage"]
    parsed = json_format.Parse(response.content, ExportTraceServiceResponse())
    assert parsed.partial_success.rejected_spans == 1


def test_a_resent_export_is_counted_once(pclient: TestClient) -> None:
    body = pb_export([pb_span(i, chat(**{"llmpulse.tenant_id": "resend"}), start_s=i) for i in range(3)])
    for _ in range(3):
        post_pb(pclient, body)
    (row,) = rows(pclient, "resend")
    assert (row["requests"], row["prompt_tokens"]) == (3, 300)
    assert pclient.get("/v1/stats").json()["counters"]["duplicates"] == 6


def test_backpressure_is_503_with_retry_after_and_counts_nothing(make_client: MakeClient) -> None:
    client = make_client(log=backpressure(2.5))
    response = client.post("/v1/traces", content=pb_export([pb_span(0, chat())]), headers=PB)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert "event log is busy" in response.json()["error"]
    assert response.json()["code"] == 14
    assert client.get("/v1/stats").json()["otlp"]["exports"] == 0


# -- bodies ------------------------------------------------------------------------------------------


def test_gzip_bodies_in_both_encodings(client: TestClient) -> None:
    _, answer = post_pb(
        client, gzip.compress(pb_export([pb_span(0, chat())])), **{"Content-Encoding": "gzip"}
    )
    assert answer.partial_success.rejected_spans == 0
    document = json.dumps(
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": TRACE,
                                    "spanId": "00000000000000aa",
                                    "name": "chat",
                                    "startTimeUnixNano": str(_ns(0)),
                                    "endTimeUnixNano": str(_ns(1)),
                                    "attributes": [
                                        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}
                                    ],
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    ).encode()
    response = client.post(
        "/v1/traces",
        content=gzip.compress(document),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 200
    assert [e.span_id for e in logged(client)] == [f"{1:016x}", "00000000000000aa"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("content", "headers", "status", "needle"),
    [
        (b"{}", {"Content-Type": "text/plain"}, 415, "`Content-Type` must be application/x-protobuf"),
        (b"{}", {}, 415, "got none"),
        (b"{}", {"Content-Type": "application/x-ndjson"}, 415, "`Content-Type`"),
        (b"x", {**PB, "Content-Encoding": "br"}, 415, "`Content-Encoding`"),
        (b"\x0a\xff\xff\xff\xff\x0f", PB, 400, "not a protobuf ExportTraceServiceRequest"),
        (b"\x1f\x8b\x08\x00garbage", {**PB, "Content-Encoding": "gzip"}, 400, "not valid gzip"),
        (b'{"resourceSpans": [', {"Content-Type": "application/json"}, 400, "not valid JSON"),
        (b"[1, 2]", {"Content-Type": "application/json"}, 400, "must be a JSON object"),
        (b'{"resourceSpans": 5}', {"Content-Type": "application/json"}, 400, "resourceSpans"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
            {"Content-Type": "application/json"},
            400,
            "`resourceSpans[0].scopeSpans[0].spans[0].traceId` must be a hex string",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}',
            {"Content-Type": "application/json"},
            400,
            "startTimeUnixNano",
        ),
    ],
)
def test_bad_requests_are_4xx_json_naming_the_problem(
    client: TestClient, content: bytes, headers: dict[str, str], status: int, needle: str
) -> None:
    response = client.post("/v1/traces", content=content, headers=headers)
    assert response.status_code == status, response.text
    body = response.json()
    assert needle in body["error"]
    assert body["message"] == body["error"]
    assert body["code"] == 3
    assert logged(client) == []


def test_too_large_bodies_and_exports_are_413(make_client: MakeClient) -> None:
    client = make_client(limits=Limits(max_body_bytes=4096, max_batch_items=3))
    big = pb_export([pb_span(0, chat(**{"llmpulse.metadata.note": "x" * 5000}))])
    response = client.post("/v1/traces", content=big, headers=PB)
    assert response.status_code == 413
    assert "max_body_bytes" in response.json()["error"]
    bomb = gzip.compress(b"\x00" * 1_000_000)
    response = client.post("/v1/traces", content=bomb, headers={**PB, "Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "decompressed request body" in response.json()["error"]
    response = client.post(
        "/v1/traces", content=pb_export([pb_span(i, chat()) for i in range(4)]), headers=PB
    )
    assert response.status_code == 413
    assert "export has 4 spans; the limit is 3 (max_batch_items)" in response.json()["error"]
    assert logged(client) == []


def test_an_empty_export_is_accepted(client: TestClient) -> None:
    _, answer = post_pb(client, b"")
    assert answer == ExportTraceServiceResponse()
    response = client.post("/v1/traces", content=b"{}", headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (200, {})


def test_without_opentelemetry_proto_the_answer_is_501(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> None:
        raise OTLPUnavailable("the OTLP receiver needs opentelemetry-proto (pip install 'llmpulse[otlp]')")

    monkeypatch.setattr(_otlp_decode, "_proto", missing)
    response = client.post("/v1/traces", content=b"", headers=PB)
    assert response.status_code == 501
    assert "opentelemetry-proto" in response.json()["error"]


def test_openapi_documents_the_receiver(client: TestClient) -> None:
    post = client.get("/openapi.json").json()["paths"]["/v1/traces"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/x-protobuf", "application/json"}
    assert {"200", "400", "413", "415", "503"} <= set(post["responses"])
