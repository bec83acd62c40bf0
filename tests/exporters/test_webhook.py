"""WebhookExporter against a scripted local HTTP server: body formats, headers, status mapping, retries."""

from __future__ import annotations

import gzip
import io
import json
import socket
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from llmpulse.events import to_dict
from llmpulse.exporters import ExportError, RetryableError, WebhookExporter
from llmpulse.sdk import Collector, TelemetryConfig
from llmpulse.sdk._exporter import EncodedBatch
from tests.exporters.stub_server import Reply, StubServer, _Handler, stub_server
from tests.sdk.test_pipeline import call


def events(n: int) -> list[dict[str, Any]]:
    return [
        {"type": "llm.call", "model": "gpt-4o-mini", "request_id": f"r{i}", "input_tokens": i}
        for i in range(n)
    ]


class _NdjsonHandler(_Handler):
    """The stub's handler, fed NDJSON bodies as the JSON array they stand for (raw lines kept)."""

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        self.server.ndjson_bodies.append(raw)  # type: ignore[attr-defined]
        array = b"[" + b",".join(raw.splitlines()) + b"]"
        del self.headers["Content-Encoding"]
        self.headers.replace_header("Content-Length", str(len(array)))
        self.rfile = io.BytesIO(array)
        super().do_POST()


@pytest.fixture
def server() -> Iterator[StubServer]:
    with stub_server() as running:
        yield running


@pytest.fixture
def ndjson_server() -> Iterator[StubServer]:
    with stub_server() as running:
        running.RequestHandlerClass = _NdjsonHandler
        running.ndjson_bodies = []  # type: ignore[attr-defined]
        yield running


@pytest.fixture
def exporter(server: StubServer) -> Iterator[WebhookExporter]:
    made = WebhookExporter(server.url + "/hook", timeout_s=2.0)
    yield made
    made.shutdown(1.0)


def _encoded(items: list[Any]) -> EncodedBatch:
    return EncodedBatch(items, msgspec.json.Encoder().encode_lines(items))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- wire format ---------------------------------------------------------------------------------


def test_the_body_is_a_json_array_equal_to_the_exported_items(
    server: StubServer, exporter: WebhookExporter
) -> None:
    items = events(5)
    assert exporter.export(items) is None
    (request,) = server.received
    assert request.path == "/hook"
    assert request.items == items
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("llmpulse-sdk/")
    assert "Content-Encoding" not in request.headers
    assert "Authorization" not in request.headers


def test_the_query_string_is_kept(server: StubServer) -> None:
    exporter = WebhookExporter(server.url + "/in/hook?source=llm&x=1")
    exporter.export(events(1))
    exporter.shutdown(1.0)
    assert server.received[0].path == "/in/hook?source=llm&x=1"


def test_ndjson_sends_one_json_object_per_line(ndjson_server: StubServer) -> None:
    items = events(4)
    exporter = WebhookExporter(ndjson_server.url, format="ndjson")
    assert exporter.export(items) is None
    exporter.shutdown(1.0)
    (raw,) = ndjson_server.ndjson_bodies  # type: ignore[attr-defined]
    lines = raw.split(b"\n")
    assert lines[-1] == b""  # every line ends in a newline
    assert [json.loads(line) for line in lines[:-1]] == items
    (request,) = ndjson_server.received
    assert request.path == "/"
    assert request.headers["Content-Type"] == "application/x-ndjson"


def test_gzip_bodies_decompress_to_the_same_json(server: StubServer) -> None:
    items = events(3)  # small: gzip=True compresses whatever the size
    plain = WebhookExporter(server.url)
    zipped = WebhookExporter(server.url, gzip=True)
    plain.export(items)
    zipped.export(items)
    plain.shutdown(1.0)
    zipped.shutdown(1.0)
    unzipped, compressed = server.received
    assert compressed.headers["Content-Encoding"] == "gzip"
    assert int(compressed.headers["Content-Length"]) != len(compressed.body)
    assert compressed.body == unzipped.body
    assert compressed.items == items


def test_gzip_works_with_ndjson(ndjson_server: StubServer) -> None:
    exporter = WebhookExporter(ndjson_server.url, format="ndjson", gzip=True)
    exporter.export(events(2))
    exporter.shutdown(1.0)
    (raw,) = ndjson_server.ndjson_bodies  # type: ignore[attr-defined]
    assert [json.loads(line) for line in raw.splitlines()] == events(2)


def test_auth_token_and_custom_headers_arrive(server: StubServer) -> None:
    exporter = WebhookExporter(
        server.url,
        headers={"X-Team": "ml-platform", "Authorization": "Basic ignored"},
        auth_token="tok-123",
    )
    exporter.export(events(1))
    exporter.shutdown(1.0)
    headers = server.received[0].headers
    assert headers["Authorization"] == "Bearer tok-123"
    assert headers["X-Team"] == "ml-platform"


def test_a_custom_authorization_header_is_sent_without_auth_token(server: StubServer) -> None:
    exporter = WebhookExporter(server.url, headers={"Authorization": "Basic dTpw"})
    exporter.export(events(1))
    exporter.shutdown(1.0)
    assert server.received[0].headers["Authorization"] == "Basic dTpw"


def test_an_encoded_batch_is_sent_as_the_same_bytes_as_its_dicts(
    server: StubServer, ndjson_server: StubServer
) -> None:
    items = [call(i, cost=0.5, metadata={"k": "v\nw"}) for i in range(10)]
    for fmt, receiver in (("json", server), ("ndjson", ndjson_server)):
        exporter = WebhookExporter(receiver.url, format=fmt)  # type: ignore[arg-type]
        assert exporter.export([to_dict(item) for item in items]) is None
        assert exporter.export_encoded(_encoded(items)) is None
        exporter.shutdown(1.0)
        by_dicts, by_lines = receiver.received
        assert by_lines.body == by_dicts.body
        assert [r["request_id"] for r in by_lines.items] == [f"r{i}" for i in range(10)]
    by_dicts_raw, by_lines_raw = ndjson_server.ndjson_bodies  # type: ignore[attr-defined]
    assert by_lines_raw == by_dicts_raw
    assert by_lines_raw.count(b"\n") == 10


def test_an_empty_batch_sends_nothing(server: StubServer, exporter: WebhookExporter) -> None:
    assert exporter.export([]) is None
    assert exporter.export_encoded(_encoded([])) is None
    assert server.received == []


def test_the_connection_is_kept_alive_and_reopened_after_the_server_closes_it(
    server: StubServer, exporter: WebhookExporter
) -> None:
    for _ in range(3):
        exporter.export(events(1))
    server.script.append(Reply(close=True))
    exporter.export(events(1))
    exporter.export(events(1))
    ports = [r.client_port for r in server.received]
    assert len(set(ports[:4])) == 1
    assert ports[4] != ports[3]


# -- answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_any_2xx_is_success(server: StubServer, exporter: WebhookExporter, status: int) -> None:
    server.script.append(Reply(status, {}))
    assert exporter.export(events(1)) is None


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [(503, {"Retry-After": "7"}, 7.0), (429, {"Retry-After": "2"}, 2.0), (500, {}, None), (408, {}, None)],
)
def test_transient_answers_are_retryable_with_retry_after(
    server: StubServer,
    exporter: WebhookExporter,
    status: int,
    headers: dict[str, str],
    retry_after: float | None,
) -> None:
    server.script.append(Reply(status, {"error": "busy"}, headers))
    with pytest.raises(RetryableError, match=f"HTTP {status}") as caught:
        exporter.export(events(2))
    assert caught.value.retry_after_s == retry_after


@pytest.mark.parametrize("status", [301, 400, 401, 403, 404, 413, 422, 425])
def test_every_other_status_is_permanent_and_names_status_and_body(
    server: StubServer, exporter: WebhookExporter, status: int
) -> None:
    server.script.append(Reply(status, {"error": "no such hook"}))
    with pytest.raises(ExportError, match=f"HTTP {status}.*no such hook") as caught:
        exporter.export(events(2))
    assert not isinstance(caught.value, RetryableError)


def test_errors_name_the_origin_only_never_the_secret_path(server: StubServer) -> None:
    server.script.append(Reply(404, {"error": "gone"}))
    exporter = WebhookExporter(server.url + "/hooks/T0000/s3cr3t?token=abc")
    with pytest.raises(ExportError) as caught:
        exporter.export(events(1))
    exporter.shutdown(1.0)
    assert server.url in str(caught.value)
    assert "s3cr3t" not in str(caught.value)
    assert "abc" not in str(caught.value)


def test_a_refused_connection_is_retryable() -> None:
    exporter = WebhookExporter(f"http://127.0.0.1:{_free_port()}/hook")
    with pytest.raises(RetryableError, match=r"POST http://127\.0\.0\.1"):
        exporter.export(events(1))
    exporter.shutdown(1.0)


def test_a_slow_server_times_out_as_retryable(server: StubServer) -> None:
    server.script.append(Reply(delay_s=1.0))
    exporter = WebhookExporter(server.url, timeout_s=0.2)
    with pytest.raises(RetryableError, match="timed out"):
        exporter.export(events(1))
    exporter.shutdown(1.0)


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "http:///nohost"}, "url"),
        ({"url": "https://user:pw@example.com/x"}, "url"),
        ({"url": "http://example.com:99999/x"}, "port"),
        ({"format": "xml"}, "format"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"auth_token": ""}, "auth_token"),
        ({"headers": {"X-A": "b\r\nInjected: 1"}}, "headers"),
        ({"headers": {"Content-Length": "3"}}, "headers"),
        ({"headers": {"Bad Name": "v"}}, "headers"),
    ],
)
def test_bad_configuration_is_refused_naming_the_argument(kwargs: dict[str, Any], field: str) -> None:
    kwargs.setdefault("url", "https://example.com/hook")
    with pytest.raises(ValueError, match=field):
        WebhookExporter(**kwargs)


def test_https_urls_use_an_https_connection() -> None:
    import http.client

    exporter = WebhookExporter("https://example.com/hook")
    assert type(exporter._client._connection()) is http.client.HTTPSConnection  # built, not connected
    exporter.shutdown(1.0)
    assert exporter.name == "webhook"
    assert WebhookExporter("https://example.com/hook", name="audit").name == "audit"


def test_from_env_returns_none_without_a_url() -> None:
    assert WebhookExporter.from_env({}) is None
    assert WebhookExporter.from_env({"WEBHOOK_URL": "  ", "WEBHOOK_AUTH_TOKEN": "t"}) is None


def test_from_env_reads_url_and_token(server: StubServer) -> None:
    made = WebhookExporter.from_env({"WEBHOOK_URL": server.url + "/env", "WEBHOOK_AUTH_TOKEN": "t-env"})
    assert made is not None
    made.export(events(1))
    made.shutdown(1.0)
    (request,) = server.received
    assert (request.path, request.headers["Authorization"]) == ("/env", "Bearer t-env")


def test_from_env_reads_os_environ_and_takes_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_URL", "https://example.com/hook")
    monkeypatch.delenv("WEBHOOK_AUTH_TOKEN", raising=False)
    made = WebhookExporter.from_env(format="ndjson", gzip=True)
    assert made is not None
    assert (made.url, made.format, made.gzip) == ("https://example.com/hook", "ndjson", True)


def test_from_env_names_the_variable_for_a_bad_url() -> None:
    with pytest.raises(ValueError, match="WEBHOOK_URL"):
        WebhookExporter.from_env({"WEBHOOK_URL": "not a url"})


# -- through a real Collector ---------------------------------------------------------------------


def _collector(exporter: WebhookExporter) -> Collector:
    return Collector(TelemetryConfig(flush_interval_ms=60_000), exporters=[exporter])


def test_collector_delivers_once_after_a_503_with_retry_after(server: StubServer) -> None:
    server.script.append(Reply(503, {"error": "lagging"}, {"Retry-After": "1"}))
    collector = _collector(WebhookExporter(server.url, auth_token="tok"))
    for i in range(4):
        collector.record(call(i))
    assert collector.shutdown(timeout=10.0)
    first, second = server.received
    assert 0.9 <= second.at - first.at < 3.0
    assert second.items == first.items
    assert [item["request_id"] for item in second.items] == ["r0", "r1", "r2", "r3"]
    assert all(item["type"] == "llm.call" and item["model"] == "gpt-4o-mini" for item in second.items)
    stats = collector.stats()["exporters"]["webhook"]
    assert (stats["emitted"], stats["exported"], stats["dropped"]) == (4, 4, 0)
    assert (stats["failed"], stats["retried"]) == (1, 1)
    assert "HTTP 503" in stats["last_error"]


def test_collector_drops_a_batch_refused_with_400_without_retrying(server: StubServer) -> None:
    server.script.append(Reply(400, {"error": "malformed payload"}))
    collector = _collector(WebhookExporter(server.url, format="json"))
    for i in range(3):
        collector.record(call(i))
    assert collector.shutdown(timeout=10.0)
    stats = collector.stats()["exporters"]["webhook"]
    assert (stats["exported"], stats["dropped"], stats["dropped_by_reason"]) == (0, 3, {"permanent_error": 3})
    assert (stats["failed"], stats["retried"]) == (1, 0)
    assert "HTTP 400" in stats["last_error"]
    assert "malformed payload" in stats["last_error"]
    assert len(server.received) == 1


def test_collector_retries_a_refused_connection_and_accounts_for_every_item() -> None:
    exporter = WebhookExporter(f"http://127.0.0.1:{_free_port()}/hook", timeout_s=1.0)
    collector = Collector(TelemetryConfig(flush_interval_ms=20, shutdown_timeout_s=1.0), exporters=[exporter])
    for i in range(5):
        collector.record(call(i))
    collector.shutdown(timeout=1.5)
    stats = collector.stats()["exporters"]["webhook"]
    assert stats["exported"] == 0
    assert stats["failed"] >= 1
    assert stats["emitted"] == stats["exported"] + stats["queued"] + stats["dropped"] == 5
    assert "ConnectionRefusedError" in stats["last_error"]
