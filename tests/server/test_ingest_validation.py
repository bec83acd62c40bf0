"""Bad input on the ingest endpoints: the right 4xx and a JSON message naming the field, never a 500."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llmpulse.events import Limits, LLMCall
from tests.server.conftest import MakeClient, call_body, logged, now_iso, request_body, response_body


def _post_json(client: TestClient, path: str, body: Any) -> Any:
    return client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


def _error(response: Any) -> str:
    assert response.headers["content-type"] == "application/json"
    message = response.json()["error"]
    assert isinstance(message, str)
    assert message
    return message


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/llm/request", request_body(prompt_tokens="321"), "prompt_tokens"),
        ("/v1/llm/request", request_body(prompt_tokens=1.5), "prompt_tokens"),
        ("/v1/llm/request", request_body(tenant_id=7), "tenant_id"),
        ("/v1/llm/response", response_body(latency_ms="12"), "latency_ms"),
        ("/v1/llm/response", response_body(completion_tokens=True), "completion_tokens"),
        ("/v1/llm/response", response_body(error=12), "error"),
    ],
)
def test_wrong_types_are_422_naming_the_field(client: TestClient, path: str, body: Any, field: str) -> None:
    response = _post_json(client, path, body)
    assert response.status_code == 422
    assert field in _error(response)


@pytest.mark.parametrize(
    ("path", "missing"),
    [
        ("/v1/llm/request", "model"),
        ("/v1/llm/request", "tenant_id"),
        ("/v1/llm/request", "timestamp"),
        ("/v1/llm/response", "request_id"),
        ("/v1/llm/response", "latency_ms"),
    ],
)
def test_missing_required_field_is_422_naming_it(client: TestClient, path: str, missing: str) -> None:
    body = request_body() if path.endswith("request") else response_body()
    del body[missing]
    response = _post_json(client, path, body)
    assert response.status_code == 422
    assert missing in _error(response)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/llm/request", request_body(prompt_tokens=-1), "prompt_tokens"),
        ("/v1/llm/request", request_body(prompt_tokens=10**9 + 1), "prompt_tokens"),
        ("/v1/llm/response", response_body(completion_tokens=-5), "completion_tokens"),
        ("/v1/llm/response", response_body(latency_ms=-0.5), "latency_ms"),
        ("/v1/llm/response", response_body(latency_ms=1e300), "latency_ms"),
        ("/v1/llm/response", response_body(ttft_ms=2e9), "ttft_ms"),
    ],
)
def test_out_of_range_numbers_are_422(client: TestClient, path: str, body: Any, field: str) -> None:
    response = _post_json(client, path, body)
    assert response.status_code == 422
    assert field in _error(response)


def test_infinite_latency_is_rejected(client: TestClient) -> None:
    raw = json.dumps(response_body(latency_ms=1)).replace('"latency_ms": 1', '"latency_ms": 1e999')
    response = client.post("/v1/llm/response", content=raw)
    assert response.status_code == 422
    assert "latency_ms" in _error(response)


def test_nan_literal_is_malformed_json(client: TestClient) -> None:
    raw = json.dumps(response_body(latency_ms=1)).replace('"latency_ms": 1', '"latency_ms": NaN')
    response = client.post("/v1/llm/response", content=raw)
    assert response.status_code == 400
    assert "malformed" in _error(response).lower()


def test_naive_timestamp_is_422(client: TestClient) -> None:
    response = _post_json(client, "/v1/llm/request", request_body(timestamp="2025-11-19T10:00:00"))
    assert response.status_code == 422
    assert "timestamp" in _error(response)


def test_timestamp_more_than_a_day_ahead_is_422(client: TestClient) -> None:
    response = _post_json(client, "/v1/llm/request", request_body(timestamp=now_iso(25 * 3600)))
    assert response.status_code == 422
    assert "future" in _error(response)
    assert "timestamp" in _error(response)


def test_timestamp_older_than_max_age_is_422_unless_the_age_is_raised(make_client: MakeClient) -> None:
    old = request_body(timestamp=now_iso(-40 * 24 * 3600))
    strict = make_client()
    response = _post_json(strict, "/v1/llm/request", old)
    assert response.status_code == 422
    assert "timestamp" in _error(response)
    lenient = make_client(limits=Limits(max_past_s=365 * 24 * 3600.0))
    assert _post_json(lenient, "/v1/llm/request", old).status_code == 200


def test_timestamp_with_an_offset_is_stored_in_utc(client: TestClient) -> None:
    utc = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    local = utc.astimezone(timezone(timedelta(hours=2)))
    assert local.isoformat().endswith("+02:00")
    response = _post_json(client, "/v1/llm/request", request_body(timestamp=local.isoformat()))
    assert response.status_code == 200
    (event,) = logged(client)
    assert event.timestamp.utcoffset() == timedelta(0)
    assert event.timestamp == utc


@pytest.mark.parametrize(("field", "length"), [("tenant_id", 257), ("route", 257), ("request_id", 129)])
def test_too_long_strings_are_422(client: TestClient, field: str, length: int) -> None:
    response = _post_json(client, "/v1/llm/request", request_body(**{field: "x" * length}))
    assert response.status_code == 422
    assert field in _error(response)


def test_empty_id_is_422(client: TestClient) -> None:
    response = _post_json(client, "/v1/llm/request", request_body(request_id=""))
    assert response.status_code == 422
    assert "request_id" in _error(response)


def test_metadata_too_big_is_422(client: TestClient) -> None:
    response = _post_json(client, "/v1/llm/request", request_body(metadata={"blob": "x" * 20_000}))
    assert response.status_code == 422
    assert "metadata" in _error(response)


def test_metadata_too_deep_is_422(client: TestClient) -> None:
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(6):
        deep = {"d": deep}
    response = _post_json(client, "/v1/llm/request", request_body(metadata=deep))
    assert response.status_code == 422
    assert "metadata" in _error(response)


def test_invalid_utf8_is_400(client: TestClient) -> None:
    raw = (
        json.dumps(request_body(route="café"), ensure_ascii=False).encode().replace("é".encode(), b"\xff\xfe")
    )
    for path in ("/v1/llm/request", "/v1/events"):
        response = client.post(path, content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 400
        assert "UTF-8" in _error(response)


@pytest.mark.parametrize("path", ["/v1/llm/request", "/v1/llm/response", "/v1/events"])
@pytest.mark.parametrize("raw", [b'{"request_id": ', b"{not json}", b"[1, 2,"])
def test_malformed_json_is_400(client: TestClient, path: str, raw: bytes) -> None:
    response = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "JSON" in _error(response) or "truncated" in _error(response)


@pytest.mark.parametrize("path", ["/v1/llm/request", "/v1/events"])
@pytest.mark.parametrize("raw", [b"", b"   \n"])
def test_empty_body_is_400(client: TestClient, path: str, raw: bytes) -> None:
    response = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "empty" in _error(response)


def test_call_with_cached_tokens_over_input_is_rejected(client: TestClient) -> None:
    bad = call_body(input_tokens=10, cached_input_tokens=11)
    response = _post_json(client, "/v1/events", [bad])
    assert response.status_code == 422
    rejected = response.json()["rejected"]
    assert rejected[0]["index"] == 0
    assert "cached_input_tokens" in rejected[0]["error"]


def test_call_with_reasoning_over_output_is_rejected(client: TestClient) -> None:
    response = _post_json(client, "/v1/events", [call_body(output_tokens=5, reasoning_tokens=6)])
    assert response.status_code == 422
    assert "reasoning_tokens" in response.json()["rejected"][0]["error"]


def test_item_without_type_is_rejected_with_a_hint(client: TestClient) -> None:
    body = request_body()
    response = _post_json(client, "/v1/events", [body])
    assert response.status_code == 422
    assert "type" in response.json()["rejected"][0]["error"]


def test_llm_cost_event_without_type_is_a_call(client: TestClient) -> None:
    body = call_body(event_type="llm_cost", cost=0.0042, user_id="u-9", feature="search")
    del body["type"]
    response = _post_json(client, "/v1/events", [body])
    assert response.status_code == 200
    assert response.json() == {"accepted": 1}
    (event,) = logged(client)
    assert isinstance(event, LLMCall)
    assert event.cost == 0.0042
    assert event.request_id  # the server names a call that came without an id


def test_nothing_is_appended_for_a_rejected_single_event(client: TestClient) -> None:
    assert _post_json(client, "/v1/llm/request", request_body(prompt_tokens=-1)).status_code == 422
    assert logged(client) == []
