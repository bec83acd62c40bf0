"""LangfuseExporter against a local stdlib HTTP server checking Langfuse's ingestion wire format."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from llmpulse.events import to_dict
from llmpulse.events._sdk_schema import Span
from llmpulse.exporters._langfuse import (
    DEFAULT_HOST,
    INGESTION_PATH,
    LangfuseExporter,
    build_events,
)
from llmpulse.sdk import Collector, TelemetryConfig
from llmpulse.sdk._exporter import ExportError, ExportResult, RetryableError
from tests.exporters.stub_server import Received, Reply, StubServer, stub_server
from tests.sdk.test_pipeline import call

START = datetime(2024, 7, 7, 19, 30, 22, 500_000, tzinfo=UTC)
PK, SK = "pk-lf-test", "sk-lf-test"
EVENT_TYPES = {"trace-create", "generation-create", "span-create"}


def _batch(request: Received) -> list[dict[str, Any]]:
    """Assert the documented request shape (path, Basic auth, envelope); return the batch's events."""
    assert request.path == INGESTION_PATH
    scheme, _, token = request.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(token).decode() == f"{PK}:{SK}"
    assert request.headers["Content-Type"] == "application/json"
    body: Any = request.items
    assert isinstance(body, dict)
    assert set(body) == {"batch", "metadata"}
    for event in body["batch"]:
        assert set(event) == {"id", "timestamp", "type", "body"}
        assert event["type"] in EVENT_TYPES
        assert isinstance(event["body"]["id"], str)
        assert event["timestamp"].endswith("Z")
    events: list[dict[str, Any]] = body["batch"]
    return events


def _by_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["body"] for e in events if e["type"] == kind]


@pytest.fixture
def server() -> Iterator[StubServer]:
    with stub_server() as running:
        yield running


@pytest.fixture
def exporter(server: StubServer) -> Iterator[LangfuseExporter]:
    made = LangfuseExporter(PK, SK, host=server.url, timeout_s=2.0)
    yield made
    made.shutdown(1.0)


def _full_call(**fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "provider": "openai",
        "timestamp": START,
        "latency_ms": 1250.0,
        "ttft_ms": 300.0,
        "input_tokens": 1000,
        "cached_input_tokens": 600,
        "cache_write_tokens": 100,
        "output_tokens": 200,
        "reasoning_tokens": 50,
        "cost": 0.0123,
        "response_model": "gpt-4o-mini-2024-07-18",
        "finish_reason": "stop",
        "user_id": "u-1",
        "session_id": "s-1",
        "tenant_id": "acme",
        "route": "chat",
        "feature": "support",
        "environment": "prod",
        "trace_id": "t" * 32,
        "span_id": "c" * 16,
        "parent_span_id": "a" * 16,
        "metadata": {"input": [{"role": "user", "content": "hi"}], "output": "hello", "k": "v"},
    }
    values.update(fields)
    return to_dict(call(1, **values))


def test_a_call_and_its_spans_are_sent_in_one_documented_batch(
    server: StubServer, exporter: LangfuseExporter
) -> None:
    root = to_dict(
        Span(name="agent", trace_id="t" * 32, span_id="a" * 16, start_time=START, duration_ms=2000.0)
    )
    child = to_dict(
        Span(
            name="tool",
            trace_id="t" * 32,
            span_id="b" * 16,
            parent_span_id="a" * 16,
            start_time=START,
            end_time=datetime(2024, 7, 7, 19, 30, 23, tzinfo=UTC),
            status="error",
            error={"type": "Timeout", "message": "slow"},
            attributes={"tool": "search"},
        )
    )
    assert exporter.export([root, child, _full_call()]) is None
    (request,) = server.received
    events = _batch(request)
    assert [e["type"] for e in events] == [
        "trace-create",
        "span-create",
        "span-create",
        "trace-create",
        "generation-create",
    ]
    root_trace, call_trace = _by_type(events, "trace-create")
    assert root_trace == {"id": "t" * 32, "name": "agent", "timestamp": "2024-07-07T19:30:22.500Z"}
    assert call_trace == {
        "id": "t" * 32,
        "timestamp": "2024-07-07T19:30:22.500Z",
        "userId": "u-1",
        "sessionId": "s-1",
        "tags": ["tenant:acme", "route:chat", "feature:support", "environment:prod"],
        "metadata": {"tenant_id": "acme", "route": "chat", "feature": "support", "environment": "prod"},
    }  # no name: a call inside a span tree leaves it to the root span
    span_root, span_child = _by_type(events, "span-create")
    assert span_root == {
        "id": "a" * 16,
        "traceId": "t" * 32,
        "name": "agent",
        "startTime": "2024-07-07T19:30:22.500Z",
        "endTime": "2024-07-07T19:30:24.500Z",
    }
    assert span_child["parentObservationId"] == "a" * 16
    assert span_child["endTime"] == "2024-07-07T19:30:23.000Z"
    assert (span_child["level"], span_child["statusMessage"]) == ("ERROR", "Timeout: slow")
    assert span_child["metadata"] == {"tool": "search"}
    (generation,) = _by_type(events, "generation-create")
    assert generation == {
        "id": "c" * 16,
        "traceId": "t" * 32,
        "parentObservationId": "a" * 16,
        "name": "llm.call",
        "startTime": "2024-07-07T19:30:22.500Z",
        "endTime": "2024-07-07T19:30:23.750Z",
        "completionStartTime": "2024-07-07T19:30:22.800Z",
        "model": "gpt-4o-mini-2024-07-18",
        "usageDetails": {
            "input": 300,
            "output": 150,
            "total": 1200,
            "cache_read_input_tokens": 600,
            "cache_creation_input_tokens": 100,
            "output_reasoning_tokens": 50,
        },
        "costDetails": {"total": 0.0123},
        "input": [{"role": "user", "content": "hi"}],
        "output": "hello",
        "metadata": {
            "tenant_id": "acme",
            "route": "chat",
            "feature": "support",
            "environment": "prod",
            "provider": "openai",
            "request_id": "r1",
            "finish_reason": "stop",
            "requested_model": "gpt-4o-mini",
            "attributes": {"k": "v"},
        },
    }


def test_a_call_without_trace_id_uses_its_request_id_and_errors_are_level_error() -> None:
    item = to_dict(call(7, timestamp=START, status="error", error="rate limited"))
    trace, generation = (e["body"] for e in build_events(item))
    assert trace["id"] == "r7"
    assert trace["name"] == "llm.call"
    assert "userId" not in trace
    assert "sessionId" not in trace
    assert generation["traceId"] == "r7"
    assert generation["id"] == "r7-generation"
    assert "parentObservationId" not in generation
    assert "costDetails" not in generation
    assert (generation["level"], generation["statusMessage"]) == ("ERROR", "rate limited")
    assert generation["usageDetails"] == {"input": 100, "output": 20, "total": 120}


def test_event_ids_are_deterministic_and_other_kinds_skipped(
    server: StubServer, exporter: LangfuseExporter
) -> None:
    item = _full_call()
    first, second = build_events(item), build_events(dict(item))
    assert [e["id"] for e in first] == [e["id"] for e in second]
    assert len({e["id"] for e in first}) == 2
    assert build_events({"type": "metric", "name": "x", "value": 1.0}) == []
    assert exporter.export([{"type": "metric", "name": "x", "value": 1.0}]) is None
    assert server.received == []  # nothing to send: no POST


def test_a_207_with_errors_counts_the_rejected_items(server: StubServer, exporter: LangfuseExporter) -> None:
    items = [to_dict(call(i, timestamp=START)) for i in range(3)]
    ids = [[e["id"] for e in build_events(item)] for item in items]
    server.script.append(
        Reply(
            207,
            {
                "successes": [{"id": ids[0][0], "status": 201}, {"id": ids[0][1], "status": 201}],
                "errors": [
                    {"id": ids[1][1], "status": 400, "message": "Invalid request data"},
                    {"id": ids[2][0], "status": 400, "message": "Invalid request data"},
                    {"id": ids[2][1], "status": 400, "message": "Invalid request data"},
                ],
            },
        )
    )
    result = exporter.export(items)
    assert isinstance(result, ExportResult)
    assert result.dropped == {"rejected_by_server": 2}
    assert "Invalid request data" in result.errors[0]
    server.script.append(Reply(207, {"successes": [], "errors": []}))
    assert exporter.export(items) is None


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_transient_answers_are_retryable_with_retry_after(
    server: StubServer, exporter: LangfuseExporter, status: int
) -> None:
    server.script.append(Reply(status, {"message": "busy"}, {"Retry-After": "3"}))
    with pytest.raises(RetryableError) as caught:
        exporter.export([to_dict(call(0))])
    assert caught.value.retry_after_s == 3.0
    assert f"HTTP {status}" in str(caught.value)


@pytest.mark.parametrize("status", [400, 401, 403])
def test_refusals_are_permanent(server: StubServer, exporter: LangfuseExporter, status: int) -> None:
    server.script.append(Reply(status, {"message": "Invalid credentials"}))
    with pytest.raises(ExportError) as caught:
        exporter.export([to_dict(call(0))])
    assert not isinstance(caught.value, RetryableError)
    assert SK not in str(caught.value)


def test_a_refused_connection_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    made = LangfuseExporter(PK, SK, host=f"http://127.0.0.1:{port}", timeout_s=1.0)
    with pytest.raises(RetryableError):
        made.export([to_dict(call(0))])


def test_a_host_path_prefix_is_kept(server: StubServer) -> None:
    made = LangfuseExporter(PK, SK, host=server.url + "/langfuse/")
    try:
        made.export([to_dict(call(0))])
    finally:
        made.shutdown(1.0)
    assert server.received[0].path == "/langfuse" + INGESTION_PATH


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"public_key": ""}, "public_key"),
        ({"secret_key": "a\nb"}, "secret_key"),
        ({"host": "ftp://x"}, "host"),
        ({"host": "https://u:p@x"}, "host"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_configuration_is_refused_naming_the_argument(kwargs: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"public_key": PK, "secret_key": SK, **kwargs}
    with pytest.raises(ValueError, match=field):
        LangfuseExporter(**args)


def test_defaults_and_from_env() -> None:
    made = LangfuseExporter(PK, SK)
    assert (made.host, made.name, made.timeout_s) == (DEFAULT_HOST, "langfuse", 10.0)
    assert LangfuseExporter.from_env({}) is None
    assert LangfuseExporter.from_env({"LANGFUSE_PUBLIC_KEY": PK}) is None
    env = {"LANGFUSE_PUBLIC_KEY": PK, "LANGFUSE_SECRET_KEY": SK, "LANGFUSE_HOST": "http://127.0.0.1:3000"}
    built = LangfuseExporter.from_env(env, name="lf")
    assert built is not None
    assert (built.host, built.name) == ("http://127.0.0.1:3000", "lf")
    with pytest.raises(ValueError, match="LANGFUSE_HOST"):
        LangfuseExporter.from_env({**env, "LANGFUSE_HOST": "nope"})


# -- through a real Collector ---------------------------------------------------------------------


def _collector(exporter: LangfuseExporter) -> Collector:
    return Collector(TelemetryConfig(flush_interval_ms=60_000), exporters=[exporter])


def test_collector_delivers_once_after_a_429_with_retry_after(server: StubServer) -> None:
    server.script.append(Reply(429, {"message": "rate limited"}, {"Retry-After": "1"}))
    collector = _collector(LangfuseExporter(PK, SK, host=server.url))
    collector.record(call(0))
    assert collector.shutdown(timeout=10.0)
    first, second = server.received
    assert 0.9 <= second.at - first.at < 3.0
    assert second.body == first.body  # same event ids: Langfuse deduplicates a resend
    assert [e["type"] for e in _batch(second)] == ["trace-create", "generation-create"]
    stats = collector.stats()["exporters"]["langfuse"]
    assert (stats["emitted"], stats["exported"], stats["dropped"]) == (1, 1, 0)
    assert (stats["failed"], stats["retried"]) == (1, 1)
    assert "HTTP 429" in stats["last_error"]


def test_collector_drops_a_batch_refused_with_401_without_retrying(server: StubServer) -> None:
    server.script.append(Reply(401, {"message": "Invalid credentials"}))
    collector = _collector(LangfuseExporter(PK, SK, host=server.url))
    collector.record(call(0))
    collector.record(call(1))
    assert collector.shutdown(timeout=10.0)
    stats = collector.stats()["exporters"]["langfuse"]
    assert (stats["exported"], stats["dropped"], stats["dropped_by_reason"]) == (0, 2, {"permanent_error": 2})
    assert stats["retried"] == 0
    assert "HTTP 401" in stats["last_error"]
    assert len(server.received) == 1


def test_collector_counts_a_207_rejection(server: StubServer) -> None:
    item = to_dict(call(0, timestamp=START))
    rejected = build_events(item)[1]["id"]
    server.script.append(Reply(207, {"successes": [], "errors": [{"id": rejected, "status": 400}]}))
    collector = _collector(LangfuseExporter(PK, SK, host=server.url))
    collector.record(call(0, timestamp=START))
    collector.record(call(1, timestamp=START))
    assert collector.shutdown(timeout=10.0)
    stats = collector.stats()["exporters"]["langfuse"]
    assert (stats["exported"], stats["dropped_by_reason"]) == (1, {"rejected_by_server": 1})
