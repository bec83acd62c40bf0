"""HeliconeExporter against a local stdlib HTTP server checking Helicone's async-log wire format."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from llmpulse.events import to_dict
from llmpulse.exporters._helicone import (
    DEFAULT_BASE_URL,
    HeliconeExporter,
    build_log_request,
    helicone_headers,
)
from llmpulse.sdk import Collector, TelemetryConfig
from llmpulse.sdk._exporter import RetryableError
from tests.exporters.stub_server import Received, Reply, StubServer, stub_server
from tests.sdk.test_pipeline import call

START = datetime(2024, 7, 7, 19, 30, 22, 500_000, tzinfo=UTC)  # 1720380622.5


def _body(request: Received) -> dict[str, Any]:
    """The request's JSON body (one object per POST, though the stub types it as a list)."""
    body: Any = request.items
    assert isinstance(body, dict)
    return body


def _check_documented_shape(request: Received) -> dict[str, Any]:
    """Assert the HeliconeAsyncLogRequest shape the manual-logger reference defines; return the body."""
    assert request.headers["Authorization"] == "Bearer sk-helicone-test"
    assert request.headers["Content-Type"] == "application/json"
    body = _body(request)
    assert set(body) == {"providerRequest", "providerResponse", "timing"}
    assert set(body["providerRequest"]) == {"url", "json", "meta"}
    assert set(body["providerResponse"]) == {"json", "status", "headers"}
    assert isinstance(body["providerResponse"]["status"], int)
    for edge in ("startTime", "endTime"):
        assert set(body["timing"][edge]) == {"seconds", "milliseconds"}
        assert 0 <= body["timing"][edge]["milliseconds"] <= 999
    assert all(isinstance(v, str) for v in body["providerRequest"]["meta"].values())
    return body


@pytest.fixture
def server() -> Iterator[StubServer]:
    with stub_server() as running:
        yield running


@pytest.fixture
def exporter(server: StubServer) -> Iterator[HeliconeExporter]:
    made = HeliconeExporter("sk-helicone-test", base_url=server.url, timeout_s=2.0)
    yield made
    made.shutdown(1.0)


def test_an_openai_call_is_logged_in_the_documented_shape(
    server: StubServer, exporter: HeliconeExporter
) -> None:
    item = to_dict(
        call(
            1,
            provider="openai",
            timestamp=START,
            latency_ms=1250.0,
            ttft_ms=300.4,
            input_tokens=1000,
            cached_input_tokens=600,
            output_tokens=200,
            reasoning_tokens=50,
            response_model="gpt-4o-mini-2024-07-18",
            finish_reason="stop",
            user_id="u-1",
            session_id="s-1",
            tenant_id="acme",
            route="chat",
            feature="summarise",
            environment="prod",
            metadata={"input": [{"role": "user", "content": "hi"}]},
        )
    )
    assert exporter.export([item]) is None
    (request,) = server.received
    assert request.path == "/oai/v1/log"
    body = _check_documented_shape(request)
    provider_request = body["providerRequest"]
    assert provider_request["url"] == "https://api.openai.com/v1/chat/completions"
    assert provider_request["json"] == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert provider_request["meta"] == {
        "Helicone-User-Id": "u-1",
        "Helicone-Session-Id": "s-1",
        "Helicone-Property-Tenant-Id": "acme",
        "Helicone-Property-Route": "chat",
        "Helicone-Property-Feature": "summarise",
        "Helicone-Property-Environment": "prod",
        "Helicone-Property-Request-Id": "r1",
    }
    response = body["providerResponse"]
    assert response["status"] == 200
    assert response["json"]["model"] == "gpt-4o-mini-2024-07-18"
    assert response["json"]["usage"] == {
        "prompt_tokens": 1000,
        "completion_tokens": 200,
        "total_tokens": 1200,
        "prompt_tokens_details": {"cached_tokens": 600},
        "completion_tokens_details": {"reasoning_tokens": 50},
    }
    assert response["json"]["choices"] == [{"index": 0, "finish_reason": "stop"}]
    assert body["timing"] == {
        "startTime": {"seconds": 1720380622, "milliseconds": 500},
        "endTime": {"seconds": 1720380623, "milliseconds": 750},
        "timeToFirstToken": 300,
    }


def test_an_anthropic_call_has_exclusive_input_tokens_and_cache_fields(
    server: StubServer, exporter: HeliconeExporter
) -> None:
    item = to_dict(
        call(
            2,
            provider="anthropic",
            model="claude-sonnet-4",
            timestamp=START,
            latency_ms=999.6,
            input_tokens=1000,
            cached_input_tokens=600,
            cache_write_tokens=150,
            output_tokens=80,
        )
    )
    exporter.export([item])
    (request,) = server.received
    assert request.path == "/anthropic/v1/log"
    body = _check_documented_shape(request)
    assert body["providerRequest"]["url"] == "https://api.anthropic.com/v1/messages"
    assert body["providerRequest"]["json"] == {"model": "claude-sonnet-4"}  # no input recorded
    assert body["providerResponse"]["json"]["usage"] == {
        "input_tokens": 250,
        "output_tokens": 80,
        "cache_read_input_tokens": 600,
        "cache_creation_input_tokens": 150,
    }
    assert body["timing"]["endTime"] == {"seconds": 1720380623, "milliseconds": 499}


def test_other_providers_use_the_custom_log_endpoint_and_failed_calls_their_status(
    server: StubServer, exporter: HeliconeExporter
) -> None:
    item = to_dict(
        call(3, provider="mistral", timestamp=START, error={"status": 429, "message": "rate limited"})
    )
    exporter.export([item])
    (request,) = server.received
    assert request.path == "/custom/v1/log"
    body = _check_documented_shape(request)
    assert body["providerRequest"]["url"] == "custom-model-nopath"
    assert body["providerResponse"]["status"] == 429
    assert body["providerResponse"]["json"]["error"] == {"status": 429, "message": "rate limited"}
    assert body["timing"]["endTime"] == body["timing"]["startTime"]  # no latency known


def test_a_string_error_is_a_500(server: StubServer, exporter: HeliconeExporter) -> None:
    exporter.export([to_dict(call(4, error="boom"))])
    assert _body(server.received[0])["providerResponse"]["status"] == 500


def test_other_kinds_are_skipped_and_a_batch_sends_one_post_per_call(
    server: StubServer, exporter: HeliconeExporter
) -> None:
    batch = [
        to_dict(call(0)),
        {"type": "span", "name": "retrieve"},
        to_dict(call(1)),
    ]
    assert exporter.export(batch) is None
    assert [_body(r)["providerResponse"]["json"]["id"] for r in server.received] == ["r0", "r1"]
    assert exporter.export([{"type": "span"}]) is None
    assert len(server.received) == 2


def test_a_base_url_path_prefix_is_kept(server: StubServer) -> None:
    made = HeliconeExporter("sk-helicone-test", base_url=server.url + "/helicone/")
    made.export([to_dict(call(0, provider="openai"))])
    made.shutdown(1.0)
    assert server.received[0].path == "/helicone/oai/v1/log"


def test_transient_answers_are_retryable_with_retry_after(
    server: StubServer, exporter: HeliconeExporter
) -> None:
    server.script.append(Reply(503, {"error": "busy"}, {"Retry-After": "7"}))
    with pytest.raises(RetryableError) as caught:
        exporter.export([to_dict(call(0))])
    assert caught.value.retry_after_s == 7.0
    assert "HTTP 503" in str(caught.value)


def test_a_retried_batch_does_not_resend_calls_already_logged(
    server: StubServer, exporter: HeliconeExporter
) -> None:
    batch = [to_dict(call(i)) for i in range(3)]
    server.script.extend([Reply(200), Reply(429, {"error": "slow down"}, {"Retry-After": "1"})])
    with pytest.raises(RetryableError):
        exporter.export(batch)
    assert exporter.export(batch) is None
    ids = [_body(r)["providerResponse"]["json"]["id"] for r in server.received]
    assert ids == ["r0", "r1", "r1", "r2"]  # r1 was refused once; r0 was not resent


def test_a_permanent_refusal_drops_only_that_call(server: StubServer, exporter: HeliconeExporter) -> None:
    server.script.extend([Reply(200), Reply(401, {"error": "bad key"})])
    result = exporter.export([to_dict(call(i)) for i in range(3)])
    assert result is not None
    assert dict(result.dropped) == {"permanent_error": 1}
    assert "HTTP 401" in result.errors[0]
    assert len(server.received) == 3


def test_a_refused_connection_is_retryable() -> None:
    made = HeliconeExporter("k", base_url="http://127.0.0.1:9", timeout_s=1.0)
    with pytest.raises(RetryableError):
        made.export([to_dict(call(0))])


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"api_key": ""}, "api_key"),
        ({"api_key": "a\nb"}, "api_key"),
        ({"api_key": "k", "base_url": "ftp://x"}, "base_url"),
        ({"api_key": "k", "base_url": "https://u:p@x"}, "base_url"),
        ({"api_key": "k", "timeout_s": 0}, "timeout_s"),
    ],
)
def test_bad_configuration_is_refused_naming_the_argument(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        HeliconeExporter(**kwargs)


def test_defaults() -> None:
    made = HeliconeExporter("k")
    assert (made.name, made.base_url, made.timeout_s) == ("helicone", DEFAULT_BASE_URL, 10.0)
    assert DEFAULT_BASE_URL == "https://api.worker.helicone.ai"


def test_from_env() -> None:
    assert HeliconeExporter.from_env({}) is None
    assert HeliconeExporter.from_env({"HELICONE_API_KEY": "  "}) is None
    made = HeliconeExporter.from_env(
        {"HELICONE_API_KEY": "k", "HELICONE_BASE_URL": "http://127.0.0.1:1"}, name="h2"
    )
    assert made is not None
    assert (made.base_url, made.name) == ("http://127.0.0.1:1", "h2")
    with pytest.raises(ValueError, match="HELICONE_BASE_URL"):
        HeliconeExporter.from_env({"HELICONE_API_KEY": "k", "HELICONE_BASE_URL": "nope"})


# -- proxy headers --------------------------------------------------------------------------------


def test_helicone_headers_exactly() -> None:
    assert helicone_headers(
        api_key="sk-1",
        user_id="u-1",
        session_id="s-1",
        session_path="/plan/step",
        session_name="Course Plan",
        properties={"App": "web", "tenant id": "acme", "Ünï/x": "1"},
    ) == {
        "Helicone-Auth": "Bearer sk-1",
        "Helicone-User-Id": "u-1",
        "Helicone-Session-Id": "s-1",
        "Helicone-Session-Path": "/plan/step",
        "Helicone-Session-Name": "Course Plan",
        "Helicone-Property-App": "web",
        "Helicone-Property-tenant-id": "acme",
        "Helicone-Property-n-x": "1",
    }
    assert helicone_headers() == {}
    assert helicone_headers(user_id="u") == {"Helicone-User-Id": "u"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"user_id": "u\r\nX-Evil: 1"},
        {"session_name": "a\nb"},
        {"properties": {"App": "a\rb"}},
        {"properties": {"\n": "v"}},
        {"api_key": ""},
    ],
)
def test_helicone_headers_refuses_unsafe_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"Helicone-|properties"):
        helicone_headers(**kwargs)


def test_build_log_request_is_pure_and_strips_line_breaks_from_meta() -> None:
    item = to_dict(call(0, user_id="u\nx"))
    path, body = build_log_request(item)
    assert path == "/custom/v1/log"
    assert body["providerRequest"]["meta"]["Helicone-User-Id"] == "u x"


# -- through a real Collector ---------------------------------------------------------------------


def _collector(exporter: HeliconeExporter) -> Collector:
    return Collector(TelemetryConfig(flush_interval_ms=60_000), exporters=[exporter])


def test_collector_delivers_once_after_a_429_with_retry_after(server: StubServer) -> None:
    server.script.append(Reply(429, {"error": "rate limited"}, {"Retry-After": "1"}))
    collector = _collector(HeliconeExporter("sk-helicone-test", base_url=server.url))
    collector.record(call(0, provider="openai"))
    assert collector.shutdown(timeout=10.0)
    first, second = server.received
    assert 0.9 <= second.at - first.at < 3.0
    assert second.items == first.items
    _check_documented_shape(second)
    stats = collector.stats()["exporters"]["helicone"]
    assert (stats["emitted"], stats["exported"], stats["dropped"]) == (1, 1, 0)
    assert (stats["failed"], stats["retried"]) == (1, 1)
    assert "HTTP 429" in stats["last_error"]


def test_collector_drops_a_call_refused_with_400_without_retrying(server: StubServer) -> None:
    server.script.append(Reply(400, {"error": "malformed payload"}))
    collector = _collector(HeliconeExporter("sk-helicone-test", base_url=server.url))
    collector.record(call(0))
    assert collector.shutdown(timeout=10.0)
    stats = collector.stats()["exporters"]["helicone"]
    assert (stats["exported"], stats["dropped"], stats["dropped_by_reason"]) == (0, 1, {"permanent_error": 1})
    assert stats["retried"] == 0
    assert "HTTP 400" in stats["last_error"]
    assert len(server.received) == 1
