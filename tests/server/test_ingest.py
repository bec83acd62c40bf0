"""The ingest endpoints accept good events durably, batches report per item, and the log's back
pressure becomes 503 with Retry-After."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llmpulse.events import Limits, LLMCall, LLMRequest, LLMResponse
from llmpulse.server import ServerSettings, create_app
from tests.server.conftest import (
    MakeClient,
    backpressure,
    call_body,
    closed_log,
    logged,
    request_body,
    response_body,
)


def _typed(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, **body}


def test_streamlens_request_and_response_are_accepted_and_logged(client: TestClient) -> None:
    first = client.post("/v1/llm/request", json=request_body())
    second = client.post("/v1/llm/response", json=response_body())
    assert (first.status_code, first.json()) == (200, {"accepted": 1})
    assert (second.status_code, second.json()) == (200, {"accepted": 1})
    request, response = logged(client)
    assert isinstance(request, LLMRequest)
    assert request.prompt_tokens == 321
    assert request.metadata == {"experiment": "v3"}
    assert isinstance(response, LLMResponse)
    assert response.latency_ms == 1123.5


def test_a_response_with_an_error_object_is_accepted(client: TestClient) -> None:
    body = response_body(error={"type": "rate_limit", "code": 429}, completion_tokens=0)
    assert client.post("/v1/llm/response", json=body).status_code == 200
    (event,) = logged(client)
    assert isinstance(event, LLMResponse)
    assert event.is_error


def test_batch_of_all_kinds_is_200(client: TestClient) -> None:
    batch = [
        _typed("llm.request", request_body()),
        _typed("llm.response", response_body()),
        call_body(),
    ]
    response = client.post("/v1/events", json=batch)
    assert response.status_code == 200
    assert response.json() == {"accepted": 3}
    kinds = [type(e) for e in logged(client)]
    assert kinds == [LLMRequest, LLMResponse, LLMCall]


def test_single_object_on_the_batch_endpoint_is_a_batch_of_one(client: TestClient) -> None:
    response = client.post("/v1/events", json=call_body())
    assert (response.status_code, response.json()) == (200, {"accepted": 1})


def test_empty_array_accepts_nothing(client: TestClient) -> None:
    response = client.post("/v1/events", json=[])
    assert (response.status_code, response.json()) == (200, {"accepted": 0})
    assert logged(client) == []


def test_mixed_batch_is_207_with_the_indices_and_appends_the_good_ones(client: TestClient) -> None:
    batch = [
        _typed("llm.request", request_body(request_id="ok-0")),
        _typed("llm.request", request_body(request_id="bad-1", prompt_tokens="12")),
        call_body(request_id="ok-2"),
        _typed("llm.response", response_body(request_id="bad-3", latency_ms=-1)),
        {"type": "llm.unknown"},
    ]
    response = client.post("/v1/events", json=batch)
    assert response.status_code == 207
    data = response.json()
    assert data["accepted"] == 2
    assert [r["index"] for r in data["rejected"]] == [1, 3, 4]
    assert "prompt_tokens" in data["rejected"][0]["error"]
    assert "latency_ms" in data["rejected"][1]["error"]
    assert "type" in data["rejected"][2]["error"]
    assert [e.request_id for e in logged(client)] == ["ok-0", "ok-2"]


def test_batch_with_every_item_bad_is_422_with_the_same_shape(client: TestClient) -> None:
    batch = [call_body(input_tokens=-1), 42]
    response = client.post("/v1/events", json=batch)
    assert response.status_code == 422
    data = response.json()
    assert data["accepted"] == 0
    assert [r["index"] for r in data["rejected"]] == [0, 1]
    assert "input_tokens" in data["rejected"][0]["error"]
    assert "rejected" in data["error"]
    assert logged(client) == []


def test_ndjson_batch_is_accepted(client: TestClient) -> None:
    lines = [
        json.dumps(_typed("llm.request", request_body(request_id="n1"))),
        "",
        json.dumps(_typed("llm.response", response_body(request_id="n1"))),
        json.dumps(call_body()),
    ]
    response = client.post(
        "/v1/events", content="\n".join(lines) + "\n", headers={"content-type": "application/x-ndjson"}
    )
    assert response.status_code == 200
    assert response.json() == {"accepted": 3}
    assert len(logged(client)) == 3


def test_ndjson_with_a_malformed_line_is_207(client: TestClient) -> None:
    body = json.dumps(call_body()) + "\n{broken\n" + json.dumps(call_body()) + "\n"
    response = client.post("/v1/events", content=body, headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 207
    assert response.json()["accepted"] == 2
    assert response.json()["rejected"][0]["index"] == 1


def test_batch_over_max_items_is_413(make_client: MakeClient) -> None:
    client = make_client(limits=Limits(max_batch_items=3))
    response = client.post("/v1/events", json=[call_body() for _ in range(4)])
    assert response.status_code == 413
    assert "limit is 3" in response.json()["error"]
    ndjson = "\n".join(json.dumps(call_body()) for _ in range(4))
    response = client.post("/v1/events", content=ndjson, headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 413
    assert logged(client) == []


def test_large_batches_are_decoded_off_the_event_loop_and_accepted(client: TestClient) -> None:
    batch = [call_body(request_id=f"big-{i}", metadata={"pad": "x" * 100}) for i in range(3000)]
    raw = json.dumps(batch).encode()
    assert len(raw) > 512 * 1024
    response = client.post("/v1/events", content=raw)
    assert (response.status_code, response.json()) == (200, {"accepted": 3000})


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/llm/request", request_body()),
        ("/v1/llm/response", response_body()),
        ("/v1/events", [call_body()]),
    ],
)
def test_log_backpressure_is_503_with_retry_after(make_client: MakeClient, path: str, body: Any) -> None:
    client = make_client(log=backpressure(retry_after_s=2.5))
    response = client.post(path, json=body)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    assert "busy" in response.json()["error"]


def test_retry_after_is_at_least_one_second(make_client: MakeClient) -> None:
    client = make_client(log=backpressure(retry_after_s=0.01))
    response = client.post("/v1/llm/request", json=request_body())
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


def test_closed_log_is_503(make_client: MakeClient) -> None:
    client = make_client(log=closed_log())
    response = client.post("/v1/events", json=[call_body()])
    assert response.status_code == 503
    assert "shutting down" in response.json()["error"]
    assert int(response.headers["retry-after"]) >= 1


def test_a_log_passed_in_is_not_closed_by_the_app(settings: ServerSettings) -> None:
    log = backpressure()
    with TestClient(create_app(settings, log=log)) as client:
        assert client.post("/v1/llm/request", json=request_body()).status_code == 503
    assert log.closed is False
