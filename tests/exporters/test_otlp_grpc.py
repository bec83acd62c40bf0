"""OTLPExporter over gRPC against loopback receivers generated from opentelemetry-proto (grpcio)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from llmpulse.exporters._otlp import OTLPExporter
from llmpulse.exporters._otlp_grpc import STATUS_DETAILS_KEY, parse_grpc_endpoint, retry_delay_s
from llmpulse.sdk import Collector, TelemetryConfig
from llmpulse.sdk._exporter import ExportError, ExportResult, RetryableError
from tests.exporters.certs import make_cert
from tests.exporters.test_otlp import attrs, check_genai_request, llm_item, sdk_span, spans
from tests.sdk.test_pipeline import call

# -- a receiver generated from the OTLP proto -----------------------------------------------------


@dataclass
class Answer:
    """One scripted answer: OK with `response`, or `code` (+ a RetryInfo when `retry_delay_s`)."""

    code: grpc.StatusCode | None = None
    details: str = ""
    retry_delay_s: float | None = None
    response: ExportTraceServiceResponse | None = None


@dataclass
class Got:
    """One Export call as the receiver decoded it."""

    request: ExportTraceServiceRequest
    metadata: dict[str, str]
    at: float


@dataclass
class Receiver(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """`TraceService` answering from `script` (then OK) and recording every request."""

    script: list[Answer] = field(default_factory=list)
    got: list[Got] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def Export(self, request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:
        with self.lock:
            self.got.append(Got(request, dict(context.invocation_metadata()), time.monotonic()))
            answer = self.script.pop(0) if self.script else Answer()
        if answer.code is None:
            return answer.response or ExportTraceServiceResponse()
        if answer.retry_delay_s is not None:
            status = status_pb2.Status(code=answer.code.value[0], message=answer.details)
            info = error_details_pb2.RetryInfo()
            info.retry_delay.FromTimedelta(timedelta(seconds=answer.retry_delay_s))
            status.details.add().Pack(info)
            context.set_trailing_metadata(((STATUS_DETAILS_KEY, status.SerializeToString()),))
        context.abort(answer.code, answer.details)
        raise AssertionError("unreachable")


def serve(
    receiver: Receiver, credentials: Any = None, options: tuple[tuple[str, Any], ...] = ()
) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=options)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    if credentials is None:
        receiver.port = server.add_insecure_port("127.0.0.1:0")
    else:
        receiver.port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server


@pytest.fixture
def servers() -> Iterator[list[grpc.Server]]:
    """Servers to stop after the test."""
    started: list[grpc.Server] = []
    yield started
    for server in started:
        server.stop(None).wait(5)


@pytest.fixture
def receiver(servers: list[grpc.Server]) -> Receiver:
    made = Receiver()
    servers.append(serve(made))
    return made


@pytest.fixture
def make() -> Iterator[Any]:
    """Builds gRPC `OTLPExporter`s and closes their channels after the test."""
    made: list[OTLPExporter] = []

    def build(endpoint: str, **kwargs: Any) -> OTLPExporter:
        kwargs.setdefault("protocol", "grpc")
        kwargs.setdefault("timeout_s", 2.0)
        exporter = OTLPExporter(endpoint, **kwargs)
        made.append(exporter)
        return exporter

    yield build
    for exporter in made:
        exporter.shutdown(1.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- wire format ---------------------------------------------------------------------------------


def test_llm_calls_and_spans_arrive_as_genai_spans(receiver: Receiver, make: Any) -> None:
    exporter = make(receiver.url, service_name="checkout", resource_attributes={"deployment": "prod"})
    assert exporter.export([llm_item(), sdk_span()]) is None
    (got,) = receiver.got
    check_genai_request(got.request)  # the same assertions as over OTLP/HTTP
    assert got.metadata["user-agent"].startswith("llmpulse-sdk/")


def test_the_grpc_message_is_the_otlp_http_protobuf_body(receiver: Receiver, make: Any) -> None:
    items = [llm_item(), sdk_span()]
    make(receiver.url, service_name="checkout").export(items)
    http = OTLPExporter("http://127.0.0.1:9", service_name="checkout")
    assert receiver.got[0].request.SerializeToString() == http.encode(http.build_request(items))


def test_opt_in_dup_names_and_content_arrive_over_grpc_too(receiver: Receiver) -> None:
    made = OTLPExporter.from_env(
        {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental/dup",
        }
    )
    assert made is not None
    try:
        made.export([llm_item(metadata={"input": "hi", "output": "hello"}, cost_source="provider")])
    finally:
        made.shutdown(1.0)
    a = attrs(spans(receiver.got[0])[0])
    assert (a["gen_ai.provider.name"], a["gen_ai.system"]) == ("openai", "openai")
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.prompt_tokens"]) == (1200, 1200)
    assert (a["gen_ai.usage.cost.source"], a["llmpulse.cost_source"]) == ("provider", "provider")
    assert json.loads(a["gen_ai.output.messages"])[0]["parts"] == [{"type": "text", "content": "hello"}]
    assert list(spans(receiver.got[0])[0].events) == []


def test_errors_set_status_and_an_empty_batch_sends_nothing(receiver: Receiver, make: Any) -> None:
    exporter = make(receiver.url)
    assert exporter.export([{"type": "metric", "name": "m", "value": 1.0}]) is None
    assert receiver.got == []
    exporter.export([llm_item(status="error", error={"type": "RateLimitError", "message": "slow"})])
    (span,) = spans(receiver.got[0])
    assert (attrs(span)["error.type"], span.status.message) == ("RateLimitError", "slow")


def test_headers_arrive_as_lower_cased_metadata(receiver: Receiver, make: Any) -> None:
    make(receiver.url, headers={"X-Api-Key": "k", "x-team": "ml"}).export([llm_item()])
    metadata = receiver.got[0].metadata
    assert (metadata["x-api-key"], metadata["x-team"]) == ("k", "ml")


def test_gzip_compresses_each_message(make: Any, servers: list[grpc.Server]) -> None:
    identity_only = Receiver()  # refuses gzip: proves the exporter compressed
    servers.append(serve(identity_only, options=(("grpc.compression_enabled_algorithms_bitset", 1),)))
    with pytest.raises(ExportError, match="UNIMPLEMENTED") as info:
        make(identity_only.url, compression="gzip").export([llm_item()])
    assert not isinstance(info.value, RetryableError)
    assert make(identity_only.url, compression="none").export([llm_item()]) is None
    plain = Receiver()
    servers.append(serve(plain))
    make(plain.url, compression="gzip").export([llm_item()])
    assert attrs(spans(plain.got[0])[0])["gen_ai.request.model"] == "gpt-4o-mini"


# -- answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [None, 2.5])
def test_unavailable_is_retryable_and_honours_retry_info(
    receiver: Receiver, make: Any, delay: float | None
) -> None:
    receiver.script.append(Answer(grpc.StatusCode.UNAVAILABLE, "collector busy", retry_delay_s=delay))
    with pytest.raises(RetryableError, match="UNAVAILABLE collector busy") as info:
        make(receiver.url).export([llm_item()])
    assert info.value.retry_after_s == delay


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.DATA_LOSS,
    ],
)
def test_the_specs_retryable_codes_raise_retryable_error(
    receiver: Receiver, make: Any, code: grpc.StatusCode
) -> None:
    receiver.script.append(Answer(code, "try later"))
    with pytest.raises(RetryableError, match=code.name):
        make(receiver.url).export([llm_item()])


def test_resource_exhausted_is_retryable_only_with_retry_info(receiver: Receiver, make: Any) -> None:
    exporter = make(receiver.url)
    receiver.script.append(Answer(grpc.StatusCode.RESOURCE_EXHAUSTED, "throttled", retry_delay_s=1.5))
    with pytest.raises(RetryableError) as retryable:
        exporter.export([llm_item()])
    assert retryable.value.retry_after_s == 1.5
    receiver.script.append(Answer(grpc.StatusCode.RESOURCE_EXHAUSTED, "message too large"))
    with pytest.raises(ExportError, match="RESOURCE_EXHAUSTED message too large") as permanent:
        exporter.export([llm_item()])
    assert not isinstance(permanent.value, RetryableError)


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    ],
)
def test_other_codes_are_permanent(receiver: Receiver, make: Any, code: grpc.StatusCode) -> None:
    receiver.script.append(Answer(code, "refused", retry_delay_s=1.0))  # RetryInfo does not matter
    with pytest.raises(ExportError) as info:
        make(receiver.url).export([llm_item()])
    assert not isinstance(info.value, RetryableError)
    assert str(info.value) == f"Export http://127.0.0.1:{receiver.port}: gRPC {code.name} refused"


def test_a_server_without_the_trace_service_is_permanent(make: Any, servers: list[grpc.Server]) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servers.append(server)
    with pytest.raises(ExportError, match="UNIMPLEMENTED") as info:
        make(f"http://127.0.0.1:{port}").export([llm_item()])
    assert not isinstance(info.value, RetryableError)


def test_partial_success_becomes_an_export_result(receiver: Receiver, make: Any) -> None:
    answer = ExportTraceServiceResponse()
    answer.partial_success.rejected_spans = 1
    answer.partial_success.error_message = "span too old"
    receiver.script.append(Answer(response=answer))
    result = make(receiver.url).export([llm_item(), llm_item()])
    assert result == ExportResult({"rejected_by_server": 1}, ("span too old",))


def test_a_closed_port_is_retryable_at_once(make: Any) -> None:
    started = time.monotonic()
    with pytest.raises(RetryableError, match="UNAVAILABLE"):
        make(f"http://127.0.0.1:{free_port()}", timeout_s=5.0).export([llm_item()])
    assert time.monotonic() - started < 2.0


def test_a_receiver_that_never_answers_times_out_within_timeout_s(make: Any) -> None:
    with socket.socket() as silent:  # completes TCP handshakes, never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        with pytest.raises(RetryableError, match="DEADLINE_EXCEEDED"):
            make(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.5).export([llm_item()])
        assert 0.4 <= time.monotonic() - started < 1.5


# -- the channel ----------------------------------------------------------------------------------


def test_one_channel_made_lazily_closed_on_shutdown_and_remade(receiver: Receiver, make: Any) -> None:
    exporter = make(receiver.url)
    transport = exporter._grpc
    assert transport._channel is None  # nothing connects before the first export
    exporter.export([llm_item()])
    channel, export_call = transport._channel, transport._call
    exporter.export([llm_item()])
    assert transport._channel is channel
    exporter.shutdown(1.0)
    assert transport._channel is None
    with pytest.raises(ValueError, match="closed channel"):
        export_call(ExportTraceServiceRequest(), timeout=1.0)
    exporter.export([llm_item()])
    assert transport._channel is not None
    assert transport._channel is not channel
    assert len(receiver.got) == 3


def test_another_pid_gets_a_new_channel(receiver: Receiver, make: Any) -> None:
    exporter = make(receiver.url)
    exporter.export([llm_item()])
    transport = exporter._grpc
    inherited = transport._channel
    transport._pid = -1  # as in a forked child
    exporter.export([llm_item()])
    assert transport._channel is not inherited
    assert transport._pid == os.getpid()
    inherited.close()
    assert len(receiver.got) == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_exports_on_its_own_channel(receiver: Receiver, make: Any) -> None:
    exporter = make(receiver.url)
    exporter.export([llm_item(request_id="parent-1")])
    channel = exporter._grpc._channel
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's outcome is its exit status
        code = 1
        try:
            code = 0 if exporter.export([llm_item(request_id="child")]) is None else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 10.0
    while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert waited[0] == pid, "the child hung"
    assert os.waitstatus_to_exitcode(waited[1]) == 0
    exporter.export([llm_item(request_id="parent-2")])
    assert exporter._grpc._channel is channel  # the parent's channel survived the child
    ids = sorted(attrs(spans(got)[0])["llmpulse.request_id"] for got in receiver.got)
    assert ids == ["child", "parent-1", "parent-2"]


# -- through a real Collector ---------------------------------------------------------------------


def _collector(exporter: OTLPExporter) -> Collector:
    return Collector(TelemetryConfig(flush_interval_ms=60_000), exporters=[exporter])


def test_collector_delivers_every_call_as_one_span(receiver: Receiver, make: Any) -> None:
    collector = _collector(make(receiver.url))
    for i in range(40):
        collector.record(call(i, tenant_id="acme"))
    assert collector.shutdown(timeout=10.0)
    delivered = [span for got in receiver.got for span in spans(got)]
    assert sorted(attrs(s)["llmpulse.request_id"] for s in delivered) == sorted(f"r{i}" for i in range(40))
    stats = collector.stats()["exporters"]["otlp"]
    assert (stats["exported"], stats["dropped"], stats["failed"], stats["retried"]) == (40, 0, 0, 0)


def test_collector_retries_unavailable_after_the_retry_info_delay(receiver: Receiver, make: Any) -> None:
    receiver.script.append(Answer(grpc.StatusCode.UNAVAILABLE, "restarting", retry_delay_s=1.0))
    collector = _collector(make(receiver.url))
    for i in range(3):
        collector.record(call(i))
    assert collector.shutdown(timeout=10.0)
    first, second = receiver.got
    assert 0.9 <= second.at - first.at < 3.0
    assert second.request == first.request
    stats = collector.stats()["exporters"]["otlp"]
    assert (stats["exported"], stats["dropped"], stats["failed"], stats["retried"]) == (3, 0, 1, 1)
    assert "UNAVAILABLE restarting" in stats["last_error"]


def test_collector_drops_a_batch_refused_with_invalid_argument(receiver: Receiver, make: Any) -> None:
    receiver.script.append(Answer(grpc.StatusCode.INVALID_ARGUMENT, "bad span"))
    collector = _collector(make(receiver.url))
    for i in range(2):
        collector.record(call(i))
    assert collector.shutdown(timeout=10.0)
    stats = collector.stats()["exporters"]["otlp"]
    assert (stats["exported"], stats["dropped"], stats["dropped_by_reason"]) == (0, 2, {"permanent_error": 2})
    assert (stats["failed"], stats["retried"], len(receiver.got)) == (1, 0, 1)


# -- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("tls"))


def test_https_verifies_against_certificate_file(
    cert: tuple[Path, Path], make: Any, servers: list[grpc.Server]
) -> None:
    key, crt = cert
    tls = Receiver()
    servers.append(serve(tls, grpc.ssl_server_credentials([(key.read_bytes(), crt.read_bytes())])))
    endpoint = f"https://127.0.0.1:{tls.port}"
    assert make(endpoint, certificate_file=crt).export([llm_item()]) is None
    with pytest.raises(RetryableError, match="UNAVAILABLE"):  # default roots: the self-signed cert fails
        make(endpoint, timeout_s=1.0).export([llm_item()])
    assert len(tls.got) == 1
    made = OTLPExporter.from_env(
        {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"127.0.0.1:{tls.port}",  # no scheme: TLS
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE": str(crt),
        }
    )
    assert made is not None
    try:
        made.export([llm_item()])
    finally:
        made.shutdown(1.0)
    assert len(tls.got) == 2


def test_mutual_tls_sends_the_client_certificate(
    cert: tuple[Path, Path], make: Any, servers: list[grpc.Server]
) -> None:
    key, crt = cert
    mtls = Receiver()
    credentials = grpc.ssl_server_credentials(
        [(key.read_bytes(), crt.read_bytes())], root_certificates=crt.read_bytes(), require_client_auth=True
    )
    servers.append(serve(mtls, credentials))
    endpoint = f"https://127.0.0.1:{mtls.port}"
    make(endpoint, certificate_file=crt, client_key_file=key, client_certificate_file=crt).export(
        [llm_item()]
    )
    assert len(mtls.got) == 1
    with pytest.raises(RetryableError):
        make(endpoint, certificate_file=crt, timeout_s=1.0).export([llm_item()])
    assert len(mtls.got) == 1


def test_an_endpoint_without_scheme_is_tls_unless_insecure(receiver: Receiver, make: Any) -> None:
    with pytest.raises(RetryableError, match="UNAVAILABLE"):  # a TLS handshake with a plaintext server
        make(f"127.0.0.1:{receiver.port}", timeout_s=1.0).export([llm_item()])
    assert make(f"127.0.0.1:{receiver.port}", insecure=True).export([llm_item()]) is None
    assert len(receiver.got) == 1


# -- configuration --------------------------------------------------------------------------------


def test_grpcio_is_imported_only_for_a_grpc_exporter() -> None:
    code = (
        "import sys\n"
        "from llmpulse.exporters import OTLPExporter\n"
        "OTLPExporter('http://127.0.0.1:4318')\n"
        "before = 'grpc' in sys.modules\n"
        "OTLPExporter('http://127.0.0.1:4317', protocol='grpc')\n"
        "print(before, 'grpc' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True"]


def test_from_env_with_grpc(receiver: Receiver) -> None:
    made = OTLPExporter.from_env(
        {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url + "/ignored/v1/traces",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=abc%20def",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "3000",
            "OTEL_SERVICE_NAME": "from-env",
        }
    )
    assert made is not None
    assert (made.protocol, made.timeout_s) == ("grpc", 3.0)
    assert repr(made) == f"<OTLPExporter 'otlp' http://127.0.0.1:{receiver.port} protocol=grpc>"
    try:
        made.export([llm_item()])
    finally:
        made.shutdown(1.0)
    (got,) = receiver.got
    assert got.metadata["x-api-key"] == "abc def"
    resource = got.request.resource_spans[0].resource.attributes
    assert {kv.key: kv.value.string_value for kv in resource}["service.name"] == "from-env"


def test_from_env_insecure_applies_to_an_endpoint_without_scheme(receiver: Receiver) -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"127.0.0.1:{receiver.port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "TRUE",
    }
    made = OTLPExporter.from_env(environ)
    assert made is not None
    try:
        assert made.export([llm_item()]) is None
    finally:
        made.shutdown(1.0)
    assert len(receiver.got) == 1


@pytest.mark.parametrize(
    ("endpoint", "insecure", "expected"),
    [
        ("http://collector", False, ("collector:4317", False, "http://collector:4317")),
        ("https://collector:4317", True, ("collector:4317", True, "https://collector:4317")),
        ("http://collector:1234/v1/traces", False, ("collector:1234", False, "http://collector:1234")),
        ("collector:4317", False, ("collector:4317", True, "https://collector:4317")),
        ("collector", True, ("collector:4317", False, "http://collector:4317")),
        ("http://[::1]:5", False, ("[::1]:5", False, "http://[::1]:5")),
    ],
)
def test_grpc_endpoint_rules(endpoint: str, insecure: bool, expected: tuple[str, bool, str]) -> None:
    assert parse_grpc_endpoint(endpoint, insecure) == expected


def test_retry_delay_is_read_from_the_status_details() -> None:
    status = status_pb2.Status(code=14, message="busy")
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromTimedelta(timedelta(seconds=1, milliseconds=250))
    status.details.add().Pack(info)
    assert retry_delay_s(((STATUS_DETAILS_KEY, status.SerializeToString()),)) == 1.25
    assert retry_delay_s(((STATUS_DETAILS_KEY, b"\xff\xff not a status"),)) is None
    assert retry_delay_s((("other", b""),)) is None
    assert retry_delay_s(None) is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"endpoint": "ftp://x"}, "endpoint"),
        ({"endpoint": "http://user:secret@x"}, "endpoint"),
        ({"endpoint": "http://x:99999"}, "endpoint"),
        ({"endpoint": "http://x", "headers": {"Bad Key": "v"}}, "headers"),
        ({"endpoint": "http://x", "headers": {"grpc-timeout": "1"}}, "headers"),
        ({"endpoint": "http://x", "headers": {"user-agent": "me"}}, "headers"),
        ({"endpoint": "http://x", "headers": {"trace-bin": "v"}}, "headers"),
        ({"endpoint": "http://x", "headers": {"x-a": "caf\u00e9"}}, "headers"),
        ({"endpoint": "http://x", "compression": "deflate"}, "compression"),
        ({"endpoint": "http://x", "timeout_s": -1}, "timeout_s"),
        ({"endpoint": "https://x", "certificate_file": "/no/such/ca.pem"}, "certificate_file"),
        ({"endpoint": "http://x", "certificate_file": "/no/such/ca.pem"}, "certificate_file"),
        ({"endpoint": "https://x", "client_key_file": "/k.pem"}, "client_key_file"),
    ],
)
def test_bad_grpc_configuration_names_the_argument(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OTLPExporter(protocol="grpc", **kwargs)
