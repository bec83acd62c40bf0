"""The app as a whole: JSON errors everywhere, no leaked tracebacks, OpenAPI docs, the lifespan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from llmpulse.server import ServerSettings, create_app
from tests.server.conftest import MakeClient, call_body, request_body


def test_unknown_path_and_method_answer_json_errors(client: TestClient) -> None:
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404
    assert missing.json() == {"error": "Not Found"}
    wrong = client.get("/v1/events")
    assert wrong.status_code == 405
    assert "error" in wrong.json()


def test_an_unexpected_error_is_a_bare_500_without_traceback(make_client: MakeClient) -> None:
    class Exploding:
        async def append(self, events: Any, payload: bytes | None = None) -> None:
            raise RuntimeError("secret internals")

        def partitions(self) -> list[int]:
            return [0]

        def end_offset(self, partition: int) -> int:
            return 1

        def read(self, *args: Any) -> list[Any]:
            return []

        def close(self) -> None:
            pass

    client = make_client(log=Exploding())
    client2 = TestClient(client.app, raise_server_exceptions=False)
    response = client2.post("/v1/llm/request", json=request_body())
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error (logged on the server)"}
    assert "secret" not in response.text
    assert "Traceback" not in response.text


def test_openapi_documents_the_event_bodies(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert {"LLMRequest", "LLMResponse", "LLMCall"} <= set(components)
    assert "prompt_tokens" in components["LLMRequest"]["properties"]
    request_post = schema["paths"]["/v1/llm/request"]["post"]
    assert request_post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/LLMRequest"
    }
    events_post = schema["paths"]["/v1/events"]["post"]
    assert "application/x-ndjson" in events_post["requestBody"]["content"]
    assert "207" in events_post["responses"]
    assert client.get("/docs").status_code == 200


def test_lifespan_opens_and_closes_the_log_and_store_files(tmp_path: Path) -> None:
    settings = ServerSettings(db_url=f"sqlite:///{tmp_path / 'x.db'}", run_processor=False, log_sync="NORMAL")
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.post("/v1/events", json=[call_body()]).status_code == 200
        state = app.state.llmpulse
        assert state.log is not None
        assert state.store is not None
    assert (tmp_path / "x.db").exists()
    assert (tmp_path / "x.log.db").exists()
    assert app.state.llmpulse.log is None  # released on shutdown
    # a second start finds the acknowledged event in the log
    with TestClient(create_app(settings)) as client:
        log = client.app.state.llmpulse.log  # type: ignore[attr-defined]
        events = [e for r in log.read(0, 0, 10) for e in r.events]
        assert len(events) == 1


def test_app_json_responses_are_compact_json(client: TestClient) -> None:
    response = client.post("/v1/llm/request", json=request_body())
    assert response.content == b'{"accepted":1}'
    assert json.loads(response.content) == {"accepted": 1}
