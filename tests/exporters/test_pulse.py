"""PulseExporter against a scripted local server: body, headers, status mapping, connection reuse."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from llmpulse.events import Metric, Span, to_dict
from llmpulse.exporters import ExportError, ExportResult, PulseExporter, RetryableError
from llmpulse.sdk._exporter import EncodedBatch
from llmpulse.sdk._pipeline import ExportPipeline
from llmpulse.sdk._retry import RetryPolicy
from tests.exporters.stub_server import Reply, StubServer, stub_server
from tests.sdk.test_pipeline import call


def calls(n: int) -> list[dict[str, Any]]:
    return [
        {"type": "llm.call", "model": "gpt-4o-mini", "request_id": f"r{i}", "pad": "x" * 80} for i in range(n)
    ]


@pytest.fixture
def server() -> Iterator[StubServer]:
    with stub_server() as running:
        yield running


@pytest.fixture
def exporter(server: StubServer) -> Iterator[PulseExporter]:
    made = PulseExporter(server.url, timeout_s=2.0)
    yield made
    made.shutdown(1.0)


def test_posts_a_gzipped_json_array_with_a_bearer_token(server: StubServer) -> None:
    exporter = PulseExporter(server.url + "/base/", api_key="k-123")
    assert exporter.export(calls(20)) is None
    exporter.shutdown(1.0)
    (request,) = server.received
    assert request.path == "/base/v1/events"
    assert request.headers["Authorization"] == "Bearer k-123"
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.headers["Content-Type"] == "application/json"
    assert [item["request_id"] for item in request.items] == [f"r{i}" for i in range(20)]


def test_small_bodies_go_uncompressed_and_without_authorization(
    server: StubServer, exporter: PulseExporter
) -> None:
    exporter.export(calls(1))
    (request,) = server.received
    assert "Content-Encoding" not in request.headers
    assert "Authorization" not in request.headers
    assert request.items[0]["request_id"] == "r0"


def test_the_connection_is_kept_alive_and_reopened_after_the_server_closes_it(
    server: StubServer, exporter: PulseExporter
) -> None:
    for _ in range(3):
        exporter.export(calls(1))
    server.script.append(Reply(close=True))
    exporter.export(calls(1))
    exporter.export(calls(1))
    ports = [r.client_port for r in server.received]
    assert len(set(ports[:4])) == 1
    assert ports[4] != ports[3]


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [(503, {"Retry-After": "7"}, 7.0), (429, {}, None), (500, {}, None), (408, {}, None)],
)
def test_transient_answers_are_retryable_with_retry_after(
    server: StubServer,
    exporter: PulseExporter,
    status: int,
    headers: dict[str, str],
    retry_after: float | None,
) -> None:
    server.script.append(Reply(status, {"error": "busy"}, headers))
    with pytest.raises(RetryableError, match=str(status)) as caught:
        exporter.export(calls(2))
    assert caught.value.retry_after_s == retry_after


@pytest.mark.parametrize("status", [400, 401, 404, 413, 415])
def test_other_client_errors_are_permanent(server: StubServer, exporter: PulseExporter, status: int) -> None:
    server.script.append(Reply(status, {"error": "no"}))
    with pytest.raises(ExportError, match=f"HTTP {status}") as caught:
        exporter.export(calls(2))
    assert not isinstance(caught.value, RetryableError)


def test_207_names_the_rejected_items(server: StubServer, exporter: PulseExporter) -> None:
    server.script.append(Reply(207, {"accepted": 2, "rejected": [{"index": 1, "error": "bad model"}]}))
    result = exporter.export(calls(3))
    assert isinstance(result, ExportResult)
    assert dict(result.dropped) == {"rejected_by_server": 1}
    assert result.errors == ("item 1: bad model",)


def test_422_rejects_the_whole_batch_item_by_item(server: StubServer, exporter: PulseExporter) -> None:
    rejected = [{"index": i, "error": "too old"} for i in range(2)]
    server.script.append(Reply(422, {"error": "nothing accepted", "accepted": 0, "rejected": rejected}))
    result = exporter.export(calls(2))
    assert result is not None
    assert dict(result.dropped) == {"rejected_by_server": 2}


def test_kinds_the_server_does_not_ingest_are_not_sent(server: StubServer, exporter: PulseExporter) -> None:
    result = exporter.export([{"type": "span", "name": "s"}, *calls(1), {"type": "metric", "name": "m"}])
    assert result is not None
    assert dict(result.dropped) == {"unsupported_kind": 2}
    assert "metric, span" in result.errors[0]
    assert [item["type"] for item in server.received[0].items] == ["llm.call"]
    exporter.export([{"type": "log", "message": "x"}])
    assert len(server.received) == 1


def test_a_refused_connection_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exporter = PulseExporter(f"http://127.0.0.1:{port}")
    with pytest.raises(RetryableError, match="POST"):
        exporter.export(calls(1))
    exporter.shutdown(1.0)


def test_a_slow_server_times_out_as_retryable(server: StubServer) -> None:
    server.script.append(Reply(delay_s=1.0))
    exporter = PulseExporter(server.url, timeout_s=0.2)
    with pytest.raises(RetryableError, match="timed out"):
        exporter.export(calls(1))
    exporter.shutdown(1.0)


def test_bad_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="url"):
        PulseExporter("ftp://example")


def test_pipeline_waits_retry_after_then_delivers(server: StubServer) -> None:
    server.script.append(Reply(503, {"error": "lagging"}, {"Retry-After": "1"}))
    pipeline = ExportPipeline(PulseExporter(server.url), flush_interval_s=60.0)
    for i in range(4):
        pipeline.offer(call(i))
    assert pipeline.shutdown(timeout=10.0)
    first, second = server.received
    assert 0.9 <= second.at - first.at < 3.0
    assert second.items == first.items
    stats = pipeline.stats()
    assert (stats["exported"], stats["failed"], stats["retried"], stats["dropped"]) == (4, 1, 1, 0)


def test_pipeline_drops_a_batch_the_server_refuses(server: StubServer) -> None:
    server.script.append(Reply(400, {"error": "malformed"}))
    pipeline = ExportPipeline(PulseExporter(server.url), flush_interval_s=60.0, retry=RetryPolicy(jitter=0))
    for i in range(4):
        pipeline.offer(call(i))
    assert pipeline.shutdown(timeout=10.0)
    stats = pipeline.stats()
    assert (stats["dropped_by_reason"], stats["failed"], stats["retried"]) == ({"permanent_error": 4}, 1, 0)
    assert "malformed" in stats["last_error"]
    assert len(server.received) == 1


def test_pipeline_counts_items_rejected_in_a_207(server: StubServer) -> None:
    server.script.append(Reply(207, {"accepted": 3, "rejected": [{"index": 0, "error": "bad"}]}))
    pipeline = ExportPipeline(PulseExporter(server.url), flush_interval_s=60.0)
    for i in range(4):
        pipeline.offer(call(i))
    assert pipeline.shutdown(timeout=10.0)
    stats = pipeline.stats()
    assert (stats["exported"], stats["dropped_by_reason"]) == (3, {"rejected_by_server": 1})
    assert "item 0: bad" in stats["last_error"]


def _encoded(items: list[Any]) -> EncodedBatch:
    import msgspec

    return EncodedBatch(items, msgspec.json.Encoder().encode_lines(items))


def test_an_encoded_batch_is_sent_as_the_same_bytes_as_its_dicts(server: StubServer) -> None:
    items = [call(i, cost=0.5, metadata={"k": "v\nw"}) for i in range(30)]
    for gzip in (True, False):
        exporter = PulseExporter(server.url, gzip=gzip)
        assert exporter.export([to_dict(item) for item in items]) is None
        assert exporter.export_encoded(_encoded(items)) is None
        exporter.shutdown(1.0)
        by_dicts, by_lines = server.received[-2:]
        assert by_lines.body == by_dicts.body
        assert by_lines.headers.get("Content-Encoding") == ("gzip" if gzip else None)
        assert [item["request_id"] for item in by_lines.items] == [f"r{i}" for i in range(30)]


def test_an_encoded_batch_leaves_out_kinds_the_server_does_not_ingest(
    server: StubServer, exporter: PulseExporter
) -> None:
    span = Span(name="s")
    metric = Metric(name="m", value=1.0)
    result = exporter.export_encoded(_encoded([span, call(1), metric, call(2)]))
    assert result is not None
    assert dict(result.dropped) == {"unsupported_kind": 2}
    assert "metric, span" in result.errors[0]
    assert [item["request_id"] for item in server.received[0].items] == ["r1", "r2"]
    assert exporter.export_encoded(_encoded([span])) is not None
    assert exporter.export_encoded(_encoded([])) is None
    assert len(server.received) == 1
