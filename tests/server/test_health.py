"""``/health`` and ``/v1/stats``."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.server.conftest import MakeClient, call_body


def test_health_without_processor_reports_the_log_and_counters(client: TestClient) -> None:
    assert client.post("/v1/events", json=[call_body(), call_body()]).status_code == 200
    response = client.get("/health")
    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "ok"
    assert data["processor"] is None
    assert data["log"]["open"] is True
    assert data["log"]["end_offsets"] == {"0": 2}
    assert data["log"]["appended_events"] == 2
    assert isinstance(data["counters"], dict)


def test_stats_has_the_counters(client: TestClient) -> None:
    data = client.get("/v1/stats").json()
    assert set(data) == {"counters", "log", "otlp", "ingest"}
    assert data["otlp"]["spans_received"] == 0
    assert data["ingest"]["naive_timestamps"] == 0


class _DeadRunner:
    alive = False

    def stats(self) -> dict[str, Any]:
        return {"alive": False, "last_error": "RuntimeError: boom"}


def test_health_is_503_when_the_processor_thread_died(make_client: MakeClient) -> None:
    client = make_client()
    client.app.state.llmpulse.runner = _DeadRunner()  # type: ignore[attr-defined]
    response = client.get("/health")
    assert response.status_code == 503
    data = response.json()
    assert data["status"] == "degraded"
    assert data["processor"]["last_error"] == "RuntimeError: boom"
