"""OTLPExporter against a loopback OTLP/HTTP receiver that decodes with opentelemetry-proto."""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from google.protobuf import json_format  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from llmpulse.events import to_dict
from llmpulse.events._sdk_schema import Span as SdkSpan
from llmpulse.exporters._env import ENV_SEMCONV_STABILITY_OPT_IN, genai_semconv
from llmpulse.exporters._genai_messages import genai_input_messages, genai_output_messages
from llmpulse.exporters._otlp import GENAI_ATTRIBUTES, OTLPExporter
from llmpulse.sdk import Collector, TelemetryConfig
from llmpulse.sdk._exporter import ExportError, ExportResult, RetryableError
from tests.sdk.test_pipeline import call

START = datetime(2026, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
START_NS = int((START - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000_000 + 250_000_000
TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"
CHILD = "00f067aa0ba902b7"


@dataclass
class Reply:
    """One scripted answer of the receiver."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Got:
    """One request as the receiver decoded it."""

    path: str
    headers: dict[str, str]
    raw: bytes
    request: ExportTraceServiceRequest
    at: float


class Receiver(ThreadingHTTPServer):
    """Answers from `script` (then 200 with an empty body) and records every decoded request."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[Reply] = []
        self.got: list[Got] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _hex_ids_to_base64(document: dict[str, Any]) -> dict[str, Any]:
    """OTLP/JSON hex ids back to the base64 the generic protobuf JSON parser expects."""
    for resource_spans in document.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if span.get(key):
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    return document


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Receiver

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
        request = ExportTraceServiceRequest()
        if self.headers.get("Content-Type") == "application/json":
            json_format.ParseDict(_hex_ids_to_base64(json.loads(body)), request)
        else:
            request.ParseFromString(body)
        with self.server.lock:
            self.server.got.append(Got(self.path, dict(self.headers.items()), raw, request, time.monotonic()))
            reply = self.server.script.pop(0) if self.server.script else Reply()
        self.send_response(reply.status)
        self.send_header("Content-Type", self.headers.get("Content-Type", "application/x-protobuf"))
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def make() -> Iterator[Any]:
    """Builds `OTLPExporter`s and closes their connections after the test."""
    made: list[OTLPExporter] = []

    def build(*args: Any, **kwargs: Any) -> OTLPExporter:
        exporter = OTLPExporter(*args, **kwargs)
        made.append(exporter)
        return exporter

    yield build
    for exporter in made:
        exporter.shutdown(1.0)


def value(any_value: AnyValue) -> Any:
    """An `AnyValue` as a Python value."""
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def attrs(span: Span) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in span.attributes}


def spans(got: Any) -> list[Span]:
    """The spans of a received request (`got.request`, any receiver's record)."""
    return [s for rs in got.request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def llm_item(**fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "timestamp": START,
        "provider": "openai",
        "response_model": "gpt-4o-mini-2024-07-18",
        "input_tokens": 1200,
        "output_tokens": 300,
        "cached_input_tokens": 800,
        "cache_write_tokens": 100,
        "reasoning_tokens": 120,
        "latency_ms": 1500.0,
        "ttft_ms": 250.0,
        "finish_reason": "stop",
        "tenant_id": "acme",
        "route": "support-bot",
        "cost": 0.0042,
        "user_id": "u-1",
        "session_id": "s-1",
        "org_id": "o-1",
        "trace_id": TRACE,
        "span_id": CHILD,
        "parent_span_id": PARENT,
        "metadata": {"ticket": 42, "lang": "fr", "nested": {"flag": True}, "tags": ["a"]},
    }
    values.update(fields)
    return to_dict(call(0, **values))


def sdk_span() -> dict[str, Any]:
    return to_dict(
        SdkSpan(
            name="handle-ticket",
            trace_id=TRACE,
            span_id=PARENT,
            start_time=START,
            end_time=START + timedelta(seconds=2),
            attributes={"ticket.priority": "high", "attempt": 2},
        )
    )


# -- wire format ---------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
def test_llm_calls_become_genai_client_spans(receiver: Receiver, make: Any, protocol: Any) -> None:
    exporter = make(
        receiver.url, protocol=protocol, service_name="checkout", resource_attributes={"deployment": "prod"}
    )
    assert exporter.export([llm_item(), sdk_span()]) is None
    (got,) = receiver.got
    assert got.path == "/v1/traces"
    assert got.headers["Content-Type"] == (
        "application/json" if protocol == "http/json" else "application/x-protobuf"
    )
    check_genai_request(got.request)


def check_genai_request(request: ExportTraceServiceRequest) -> None:
    """The assertions on `[llm_item(), sdk_span()]` exported by service "checkout" (all protocols)."""
    got = Got("", {}, b"", request, 0.0)
    resource = {kv.key: value(kv.value) for kv in got.request.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "checkout"
    assert resource["deployment"] == "prod"
    llm, parent = spans(got)
    assert llm.name == "chat gpt-4o-mini"
    assert llm.kind == Span.SpanKind.SPAN_KIND_CLIENT
    assert llm.start_time_unix_nano == START_NS
    assert llm.end_time_unix_nano == START_NS + 1_500_000_000
    assert (llm.trace_id.hex(), llm.span_id.hex(), llm.parent_span_id.hex()) == (TRACE, CHILD, PARENT)
    assert llm.status.code == Status.StatusCode.STATUS_CODE_UNSET
    a = attrs(llm)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert a["gen_ai.usage.input_tokens"] == 1200
    assert a["gen_ai.usage.output_tokens"] == 300
    assert a["gen_ai.usage.cache_read.input_tokens"] == 800
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 100
    assert a["gen_ai.usage.reasoning.output_tokens"] == 120
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.25)
    assert (a["llmpulse.tenant_id"], a["llmpulse.route"]) == ("acme", "support-bot")
    assert a["llmpulse.cost_usd"] == pytest.approx(0.0042)
    # the proposed cost set: a cost without a source is the sender's estimate, computed locally
    assert a["gen_ai.usage.cost.amount"] == pytest.approx(0.0042)
    assert (a["gen_ai.usage.cost.currency"], a["gen_ai.usage.cost.source"]) == ("USD", "local")
    assert a["llmpulse.cost_source"] == "estimate"
    # current names only by default: none of the previous ones
    assert not set(a) & {previous for _, previous in GENAI_ATTRIBUTES.values() if previous}
    assert (a["user.id"], a["session.id"], a["llmpulse.org_id"]) == ("u-1", "s-1", "o-1")
    assert a["llmpulse.metadata.ticket"] == 42
    assert a["llmpulse.metadata.lang"] == "fr"
    assert a["llmpulse.metadata.nested.flag"] is True
    assert "llmpulse.metadata.tags" not in a
    assert "error.type" not in a
    # the SDK span: plain, its attributes kept, the parent of the LLM call
    assert parent.name == "handle-ticket"
    assert parent.kind == Span.SpanKind.SPAN_KIND_INTERNAL
    assert (parent.trace_id.hex(), parent.span_id.hex(), parent.parent_span_id) == (TRACE, PARENT, b"")
    assert (parent.start_time_unix_nano, parent.end_time_unix_nano) == (START_NS, START_NS + 2_000_000_000)
    assert attrs(parent) == {"ticket.priority": "high", "attempt": 2}


def test_dup_sends_the_previous_names_beside_the_current_ones(receiver: Receiver, make: Any) -> None:
    make(receiver.url, semconv="dup").export([llm_item()])
    a = attrs(spans(receiver.got[0])[0])
    assert (a["gen_ai.system"], a["gen_ai.provider.name"]) == ("openai", "openai")
    assert (a["gen_ai.usage.prompt_tokens"], a["gen_ai.usage.completion_tokens"]) == (1200, 300)
    assert a["gen_ai.usage.cache_read_input_tokens"] == a["gen_ai.usage.cache_read.input_tokens"] == 800
    assert a["gen_ai.usage.cache_creation_input_tokens"] == 100
    assert a["gen_ai.server.time_to_first_token"] == pytest.approx(0.25)
    assert a["gen_ai.usage.input_tokens"] == 1200  # the current names are still there
    for current, previous in GENAI_ATTRIBUTES.values():
        if previous is not None and current in a:
            assert a[previous] == a[current], previous


def test_a_provider_cost_says_so(receiver: Receiver, make: Any) -> None:
    make(receiver.url).export([llm_item(cost=0.5, cost_source="provider"), llm_item(cost=None)])
    priced, unpriced = (attrs(s) for s in spans(receiver.got[0]))
    assert (priced["gen_ai.usage.cost.source"], priced["llmpulse.cost_source"]) == ("provider", "provider")
    assert priced["gen_ai.usage.cost.amount"] == 0.5
    assert not {k for k in unpriced if "cost" in k}  # unknown is absent, never a 0


def test_recorded_content_becomes_message_attributes_not_events(receiver: Receiver, make: Any) -> None:
    prompt = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "rainy"},
    ]
    metadata = {"input": prompt, "output": "Rainy, 14 C.", "ticket": 7}
    make(receiver.url).export([llm_item(metadata=metadata), llm_item(metadata={"prompt": "hi"})])
    (span, bare) = spans(receiver.got[0])
    a = attrs(span)
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "name": "weather", "arguments": {"city": "Paris"}, "id": "c1"}],
        },
        {"role": "tool", "parts": [{"type": "tool_call_response", "response": "rainy", "id": "c1"}]},
    ]
    assert json.loads(a["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Rainy, 14 C."}], "finish_reason": "stop"}
    ]
    assert list(span.events) == []
    assert a["llmpulse.metadata.ticket"] == 7
    assert not [k for k in a if k.startswith("llmpulse.metadata.") and k != "llmpulse.metadata.ticket"]
    assert json.loads(attrs(bare)["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]}
    ]
    assert "gen_ai.output.messages" not in attrs(bare)


def test_content_left_out_by_the_sdk_sends_no_messages(receiver: Receiver, make: Any) -> None:
    exporter = make(receiver.url)
    collector = Collector(
        TelemetryConfig(flush_interval_ms=10, record_inputs=False, record_outputs=False), exporters=[exporter]
    )
    try:
        collector.record(call(0, metadata={"input": "secret prompt", "output": "secret answer"}))
        assert collector.flush(5.0)
    finally:
        collector.shutdown(5.0)
    a = attrs(spans(receiver.got[0])[0])
    assert "gen_ai.input.messages" not in a
    assert "gen_ai.output.messages" not in a
    assert "secret" not in receiver.got[0].raw.decode("latin-1")


def test_output_messages_keep_each_choice_and_its_finish_reason() -> None:
    choices = [
        {"role": "assistant", "content": "a", "finish_reason": "length"},
        {"role": "assistant", "content": "b"},
    ]
    assert genai_output_messages(choices, "stop") == [
        {"role": "assistant", "parts": [{"type": "text", "content": "a"}], "finish_reason": "length"},
        {"role": "assistant", "parts": [{"type": "text", "content": "b"}], "finish_reason": "stop"},
    ]
    # already in the conventions' shape: kept as given
    shaped = [{"role": "user", "parts": [{"type": "text", "content": "x"}]}]
    assert genai_input_messages(shaped) == shaped
    # content parts of one message are not mistaken for choices
    assert genai_output_messages([{"type": "text", "text": "t"}], "stop") == [
        {"role": "assistant", "parts": [{"type": "text", "content": "t"}], "finish_reason": "stop"}
    ]


def test_otlp_json_uses_hex_ids_camel_case_and_integer_enums(receiver: Receiver, make: Any) -> None:
    exporter = make(receiver.url + "/", protocol="http/json")
    exporter.export([llm_item(status="error", error={"type": "RateLimitError", "message": "slow down"})])
    (got,) = receiver.got
    document = json.loads(got.raw)
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert (span["traceId"], span["spanId"], span["parentSpanId"]) == (TRACE, CHILD, PARENT)
    assert span["kind"] == 3
    assert span["status"] == {"code": 2, "message": "slow down"}
    assert "startTimeUnixNano" in span
    assert attrs(spans(got)[0])["error.type"] == "RateLimitError"


def test_errors_set_status_and_error_type(receiver: Receiver, make: Any) -> None:
    exporter = make(receiver.url)
    exporter.export([llm_item(error="boom", trace_id=None, span_id=None, parent_span_id=None)])
    (span,) = spans(receiver.got[0])
    assert span.status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert span.status.message == "boom"
    assert attrs(span)["error.type"] == "_OTHER"
    assert (len(span.trace_id), any(span.trace_id)) == (16, True)
    assert (len(span.span_id), any(span.span_id)) == (8, True)
    assert span.parent_span_id == b""


def test_other_kinds_are_skipped_and_an_empty_batch_sends_nothing(receiver: Receiver, make: Any) -> None:
    exporter = make(receiver.url)
    assert (
        exporter.export([{"type": "metric", "name": "m", "value": 1.0}, {"type": "log", "name": "x"}]) is None
    )
    assert receiver.got == []
    assert exporter.export([{"type": "metric", "name": "m", "value": 1.0}, llm_item()]) is None
    assert len(spans(receiver.got[0])) == 1


def test_a_full_traces_url_and_headers_are_used_as_given(receiver: Receiver, make: Any) -> None:
    exporter = make(receiver.url + "/otel/v1/traces", headers={"X-Api-Key": "k"})
    exporter.export([llm_item()])
    (got,) = receiver.got
    assert (got.path, got.headers["X-Api-Key"]) == ("/otel/v1/traces", "k")


def test_gzip_compresses_the_body_and_says_so(receiver: Receiver, make: Any) -> None:
    exporter = make(receiver.url, protocol="http/json", compression="gzip")
    exporter.export([llm_item()])
    (got,) = receiver.got
    assert got.headers["Content-Encoding"] == "gzip"
    assert got.raw[:2] == b"\x1f\x8b"
    assert json.loads(gzip.decompress(got.raw))["resourceSpans"]
    assert attrs(spans(got)[0])["gen_ai.request.model"] == "gpt-4o-mini"


# -- answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_answers_raise_retryable_error(receiver: Receiver, make: Any, status: int) -> None:
    receiver.script.append(Reply(status, {"Retry-After": "3"}))
    with pytest.raises(RetryableError) as info:
        make(receiver.url).export([llm_item()])
    assert info.value.retry_after_s == 3.0
    assert f"HTTP {status}" in str(info.value)


@pytest.mark.parametrize("status", [400, 401, 404, 413, 500])
def test_other_answers_are_permanent(receiver: Receiver, make: Any, status: int) -> None:
    receiver.script.append(Reply(status, body=b"bad request"))
    with pytest.raises(ExportError) as info:
        make(receiver.url, protocol="http/json").export([llm_item()])
    assert not isinstance(info.value, RetryableError)
    assert f"HTTP {status}" in str(info.value)


def test_partial_success_becomes_an_export_result(receiver: Receiver, make: Any) -> None:
    answer = ExportTraceServiceResponse()
    answer.partial_success.rejected_spans = 1
    answer.partial_success.error_message = "span too old"
    receiver.script.append(Reply(200, body=answer.SerializeToString()))
    result = make(receiver.url).export([llm_item(), llm_item()])
    assert result == ExportResult({"rejected_by_server": 1}, ("span too old",))


# -- through a real Collector ---------------------------------------------------------------------


def _collector(exporter: OTLPExporter) -> Collector:
    return Collector(TelemetryConfig(flush_interval_ms=60_000), exporters=[exporter])


def test_collector_retries_a_503_with_retry_after(receiver: Receiver, make: Any) -> None:
    receiver.script.append(Reply(503, {"Retry-After": "1"}))
    collector = _collector(make(receiver.url))
    for i in range(3):
        collector.record(call(i, tenant_id="acme"))
    assert collector.shutdown(timeout=10.0)
    first, second = receiver.got
    assert 0.9 <= second.at - first.at < 3.0
    assert second.raw == first.raw
    assert [attrs(s)["llmpulse.tenant_id"] for s in spans(second)] == ["acme"] * 3
    stats = collector.stats()["exporters"]["otlp"]
    assert (stats["exported"], stats["dropped"], stats["failed"], stats["retried"]) == (3, 0, 1, 1)
    assert "HTTP 503" in stats["last_error"]


def test_collector_drops_a_batch_refused_with_400(receiver: Receiver, make: Any) -> None:
    receiver.script.append(Reply(400, body=b"invalid"))
    collector = _collector(make(receiver.url))
    for i in range(2):
        collector.record(call(i))
    assert collector.shutdown(timeout=10.0)
    stats = collector.stats()["exporters"]["otlp"]
    assert (stats["exported"], stats["dropped"], stats["dropped_by_reason"]) == (0, 2, {"permanent_error": 2})
    assert (stats["failed"], stats["retried"]) == (1, 0)
    assert len(receiver.got) == 1


# -- configuration --------------------------------------------------------------------------------


def test_from_env_without_an_endpoint_is_none() -> None:
    assert OTLPExporter.from_env({}) is None


def test_from_env_reads_the_standard_variables(receiver: Receiver) -> None:
    made = OTLPExporter.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=abc%20def,x-team=ml",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
            "OTEL_SERVICE_NAME": "from-env",
        }
    )
    assert made is not None
    assert (made.protocol, made.service_name) == ("http/json", "from-env")
    try:
        made.export([llm_item()])
    finally:
        made.shutdown(1.0)
    (got,) = receiver.got
    assert got.path == "/v1/traces"
    assert (got.headers["x-api-key"], got.headers["x-team"]) == ("abc def", "ml")
    resource = {kv.key: value(kv.value) for kv in got.request.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "from-env"


def test_from_env_prefers_traces_variables_and_reads_timeout_and_compression(receiver: Receiver) -> None:
    made = OTLPExporter.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_EXPORTER_OTLP_HEADERS": "x-team=general",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-team=traces",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",  # gRPC only: ignored for HTTP
        }
    )
    assert made is not None
    assert (made.timeout_s, made.gzip) == (2.5, True)
    try:
        made.export([llm_item()])
    finally:
        made.shutdown(1.0)
    (got,) = receiver.got
    assert (got.headers["x-team"], got.headers["Content-Encoding"]) == ("traces", "gzip")


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "OTEL_EXPORTER_OTLP_TIMEOUT"),
        ({"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "0"}, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"),
        ({"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"}, "OTEL_EXPORTER_OTLP_COMPRESSION"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_EXPORTER_OTLP_CERTIFICATE": "/ca.pem"}, "OTEL_EXPORTER_OTLP_CERTIFICATE"),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_INSECURE": "yes"},
            "OTEL_EXPORTER_OTLP_INSECURE",
        ),
    ],
)
def test_from_env_names_the_bad_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ValueError, match=f"^{variable}[: ]"):
        OTLPExporter.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", **environ})


def test_from_env_uses_the_traces_endpoint_as_is(receiver: Receiver) -> None:
    made = OTLPExporter.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://unused:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url + "/custom",
        }
    )
    assert made is not None
    try:
        made.export([llm_item()])
    finally:
        made.shutdown(1.0)
    assert receiver.got[0].path == "/custom"


@pytest.mark.parametrize(
    ("opt_in", "expected"),
    [
        (None, "latest"),
        ("", "latest"),
        ("gen_ai_latest_experimental", "latest"),
        ("http, gen_ai_latest_experimental/dup", "dup"),
        ("gen_ai_latest_experimental,GEN_AI_LATEST_EXPERIMENTAL/DUP", "dup"),
        ("http/dup,database", "latest"),
    ],
)
def test_semconv_opt_in_is_read_from_the_environment(opt_in: str | None, expected: str) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    if opt_in is not None:
        environ[ENV_SEMCONV_STABILITY_OPT_IN] = opt_in
    assert genai_semconv(environ) == expected
    made = OTLPExporter.from_env(environ)
    assert made is not None
    assert made.semconv == expected
    overridden = OTLPExporter.from_env(environ, semconv="latest")
    assert overridden is not None
    assert overridden.semconv == "latest"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"endpoint": "http://x", "semconv": "old"}, "semconv"),
        ({"endpoint": "ftp://x"}, "endpoint"),
        ({"endpoint": "http://x", "protocol": "thrift"}, "protocol"),
        ({"endpoint": "http://x", "certificate_file": "ca.pem"}, "certificate_file"),
        ({"endpoint": "http://x", "insecure": True}, "insecure"),
        ({"endpoint": "http://x", "compression": "br"}, "compression"),
        ({"endpoint": "http://x", "timeout_s": 0}, "timeout_s"),
        ({"endpoint": "http://x", "headers": {"Content-Length": "1"}}, "headers"),
    ],
)
def test_bad_configuration_names_the_argument(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OTLPExporter(**kwargs)
