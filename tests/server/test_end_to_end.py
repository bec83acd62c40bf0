"""The embedded pipeline through the app: ingest → log → processor → store → query, and a real socket."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from llmpulse.events import Limits, LLMCall, LLMRequest, LLMResponse
from llmpulse.server import ServerSettings, create_app
from llmpulse.server._run import banner
from llmpulse.testing import encode_batch_json, generate_events
from tests.server.conftest import MakeClient, call_body
from tests.server.live_server import free_port, live_server


def _wait_processed(client: TestClient, timeout: float = 20.0) -> None:
    state = client.app.state.llmpulse  # type: ignore[attr-defined]
    end = state.log.end_offset(0)
    assert state.runner.wait_committed(0, end, timeout)


def test_posted_pairs_show_up_in_metrics_and_summary(make_client: MakeClient) -> None:
    client = make_client(run_processor=True, checkpoint_interval_s=0.05)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3)
    events = generate_events(200, tenants=2, routes=2, start=start, duration_s=120, error_rate=0.1, seed=7)
    for i in range(0, len(events), 50):
        response = client.post("/v1/events", content=encode_batch_json(events[i : i + 50]))
        assert response.status_code == 200
    _wait_processed(client)

    requests = [e for e in events if isinstance(e, LLMRequest)]
    by_tenant = Counter(e.tenant_id for e in requests)
    errors_of = {e.request_id for e in events if isinstance(e, LLMResponse) and e.error is not None}
    for tenant, expected in by_tenant.items():
        data = client.get("/v1/metrics", params={"tenant_id": tenant, "limit": 10000}).json()
        assert data["count"] == len(data["metrics"])
        assert sum(row["requests"] for row in data["metrics"]) == expected
        expected_errors = sum(1 for e in requests if e.tenant_id == tenant and e.request_id in errors_of)
        assert sum(row["errors"] for row in data["metrics"]) == expected_errors
        starts = [row["window_start"] for row in data["metrics"]]
        assert starts == sorted(starts, reverse=True)
        assert all(row["window_start"].endswith("Z") for row in data["metrics"])
        summary = client.get(
            "/v1/metrics/summary",
            params={
                "tenant_id": tenant,
                "group_by": "route",
                "from": (start - timedelta(minutes=1)).isoformat(),
            },
        ).json()
        assert sum(row["requests"] for row in summary["summary"]) == expected
        assert summary["count"] == len(summary["summary"])

    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["processor"]["alive"] is True
    assert health["processor"]["processed_events"] == len(events)


def test_metrics_limit_and_filters(make_client: MakeClient) -> None:
    client = make_client(run_processor=True, checkpoint_interval_s=0.05)
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    batch = [
        call_body(model=model, timestamp=(base + timedelta(minutes=m)).isoformat(), request_id=f"{model}-{m}")
        for m in range(5)
        for model in ("gpt-4o", "gpt-4o-mini")
    ]
    assert client.post("/v1/events", json=batch).status_code == 200
    _wait_processed(client)
    limited = client.get("/v1/metrics", params={"tenant_id": "acme", "limit": 3}).json()
    assert limited["count"] == 3
    only = client.get("/v1/metrics", params={"tenant_id": "acme", "model": "gpt-4o"}).json()
    assert only["count"] == 5
    assert {row["model"] for row in only["metrics"]} == {"gpt-4o"}
    ranged = client.get(
        "/v1/metrics",
        params={
            "tenant_id": "acme",
            "from": (base + timedelta(minutes=1)).isoformat(),
            "to": (base + timedelta(minutes=3)).isoformat(),
        },
    ).json()
    assert ranged["count"] == 4  # two minutes × two models
    # final once orphan_timeout_s (300) + 60 s have passed since the window's end
    now = datetime.now(UTC)
    for row in only["metrics"]:
        end = datetime.fromisoformat(row["window_end"])
        assert row["final"] is (end + timedelta(seconds=360) <= now)
    assert {row["final"] for row in only["metrics"]} == {True, False}


@pytest.fixture
def live_url(tmp_path: Path) -> Iterator[str]:
    settings = ServerSettings(
        db_url=f"sqlite:///{tmp_path / 'live.db'}",
        run_processor=False,
        log_sync="NORMAL",
        limits=Limits(max_body_bytes=8192),
    )
    with live_server(create_app(settings)) as url:
        yield url


def test_chunked_body_over_the_limit_is_413_over_a_real_socket(live_url: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(200):
            yield json.dumps(call_body()).encode() + b","
            time.sleep(0.001)
        yield b"{}]"

    response = httpx.post(f"{live_url}/v1/events", content=chunks(), timeout=10)
    assert response.status_code == 413
    assert "8192" in response.json()["error"]
    # the server still answers afterwards
    ok = httpx.post(f"{live_url}/v1/events", json=[call_body()], timeout=10)
    assert ok.status_code == 200


def test_declared_content_length_over_the_limit_is_refused_before_the_body(live_url: str) -> None:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(live_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n\r\n["
        )
        head = sock.recv(4096)  # answered although almost none of the body was sent
    assert head.startswith(b"HTTP/1.1 413")


def test_demo_mode_posts_live_traffic_to_the_server_itself(tmp_path: Path) -> None:
    port = free_port()
    settings = ServerSettings(
        db_url=f"sqlite:///{tmp_path / 'demo.db'}", log_sync="NORMAL", demo=True, port=port
    )
    app = create_app(settings)
    with live_server(app, port=port):
        state = app.state.llmpulse
        assert state.demo_url == f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while state.log.end_offset(0) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        events = [e for r in state.log.read(0, 0, 1000) for e in r.events]
    assert len(events) >= 4
    assert {e.tenant_id for e in events if isinstance(e, LLMRequest)} <= {"tenant-1", "tenant-2", "tenant-3"}
    newest = max(e.timestamp for e in events)
    assert abs((datetime.now(UTC) - newest).total_seconds()) < 60
    # attributed, so "who spent what" has something to show: calls name users, requests hash them
    assert any(isinstance(e, LLMCall) and e.user_id for e in events)
    assert any(isinstance(e, LLMRequest) and e.user_id_hash for e in events)


def test_banner_names_the_url_and_the_demo_hint() -> None:
    text = banner(ServerSettings(host="0.0.0.0", port=8080, demo=True))
    assert "http://127.0.0.1:8080" in text
    assert "curl 'http://127.0.0.1:8080/v1/metrics?tenant_id=tenant-1" in text
    assert "curl" not in banner(ServerSettings(port=8080))
