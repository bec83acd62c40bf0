"""``GET /metrics``: the server's own figures, scraped after real traffic and checked with promtool."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import MakeClient, call_body, now_iso, request_body, response_body
from tests.server.keyed import MakeKeyed, keyed_factory, wait_until

PROMTOOL = shutil.which("promtool")


@pytest.fixture
def make_keyed(tmp_path: Path) -> Iterator[MakeKeyed]:
    with ExitStack() as stack:
        yield keyed_factory(stack, tmp_path)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) → value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def promtool_check(text: str) -> None:
    assert PROMTOOL is not None, "promtool is missing (make test-deps installs Debian's prometheus package)"
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout  # no lint findings


def _traffic(client: TestClient) -> int:
    """Post a mix of traffic; the number of events accepted."""
    app = client.app
    accepted = 0
    ok = [call_body(request_id=f"c{i}", timestamp=now_iso(-2)) for i in range(5)]
    ok.append(call_body(request_id="late", timestamp=now_iso(-900)))  # late: 15 minutes behind
    ok.append({**request_body(request_id="orphan", timestamp=now_iso(-1)), "type": "llm.request"})
    bad = [{"type": "llm.call", "model": "m"}, {**call_body(), "input_tokens": -1}]
    response = client.post("/v1/events", json=ok + bad)
    assert response.status_code == 207
    accepted += response.json()["accepted"]
    assert client.post("/v1/llm/response", json=response_body(request_id="nobody")).status_code == 200
    accepted += 1
    assert (
        client.post("/v1/events", content=b"{nope", headers={"content-type": "application/json"}).status_code
        == 400
    )
    assert (
        client.post("/v1/llm/request", content=b"x" * 10, headers={"content-type": "text/plain"}).status_code
        == 415
    )
    assert client.get("/v1/metrics").status_code == 400
    state = app.state.llmpulse  # type: ignore[attr-defined]
    # the orphan request times out on the processor's clock; then everything is committed
    wait_until(lambda: state.runner.stats().get("timeouts", 0) >= 1, 10)
    assert state.runner.wait_committed(0, state.log.end_offset(0), 10)
    return accepted


def test_metrics_after_real_traffic_pass_promtool_and_count_what_happened(make_client: MakeClient) -> None:
    client = make_client(run_processor=True, checkpoint_interval_s=0.05, orphan_timeout_s=0.2, dedup_ttl_s=60)
    accepted = _traffic(client)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    promtool_check(response.text)
    found = samples(response.text)
    assert found[("llmpulse_events_accepted_total", ())] == accepted == 8
    assert found[("llmpulse_events_rejected_total", (("reason", "invalid"),))] == 2
    assert found[("llmpulse_http_requests_refused_total", (("reason", "bad_request"),))] == 2
    assert found[("llmpulse_http_requests_refused_total", (("reason", "unsupported_media_type"),))] == 1
    assert found[("llmpulse_log_appended_events_total", ())] == accepted
    assert found[("llmpulse_processor_up", ())] == 1
    assert found[("llmpulse_processor_events_total", ())] == accepted
    assert found[("llmpulse_processor_processed_events_total", ())] == accepted
    assert found[("llmpulse_processor_lag_events", ())] == 0
    assert found[("llmpulse_processor_lag_records", ())] == 0
    assert found[("llmpulse_processor_late_events_total", ())] == 1
    assert found[("llmpulse_processor_timeouts_total", ())] == 1
    assert found[("llmpulse_processor_orphan_responses_total", ())] >= 0
    assert found[("llmpulse_store_windows_written_total", ())] >= 2
    assert found[("llmpulse_processor_checkpoints_total", ())] >= 1
    assert found[("llmpulse_api_keys_required", ())] == 0
    assert ("llmpulse_otlp_spans_ignored_total", ()) in found


def test_otlp_spans_ignored_are_counted(client: TestClient) -> None:
    start = time.time_ns() - 1_000_000_000
    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "name": "GET /",
        "kind": 2,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 1000),
        "attributes": [{"key": "http.request.method", "value": {"stringValue": "GET"}}],
    }
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    assert client.post("/v1/traces", json=document).status_code == 200
    found = samples(client.get("/metrics").text)
    assert found[("llmpulse_otlp_spans_ignored_total", ())] == 1
    assert found[("llmpulse_events_accepted_total", ())] == 0


def test_metrics_need_a_key_once_keys_exist_unless_public(make_keyed: MakeKeyed) -> None:
    keyed = make_keyed()
    assert keyed.client.get("/metrics").status_code == 401
    response = keyed.client.get("/metrics", headers=keyed.auth("beta"))
    assert response.status_code == 200
    promtool_check(response.text)
    found = samples(response.text)
    assert found[("llmpulse_api_keys_required", ())] == 1
    assert found[("llmpulse_http_requests_refused_total", (("reason", "unauthorized"),))] == 1
    public = make_keyed(metrics_public=True)
    assert public.client.get("/metrics").status_code == 200
    assert public.client.get("/v1/stats").status_code == 401  # only /metrics is opened


def test_rate_limited_and_unauthorized_requests_are_counted(make_keyed: MakeKeyed) -> None:
    from llmpulse.server._limits import RequestLimits

    keyed = make_keyed(
        request_limits=RequestLimits(rate_limit_per_s=0.1, rate_limit_burst=1), metrics_public=True
    )
    keyed.client.get("/v1/stats", headers=keyed.auth("alpha"))
    keyed.client.get("/v1/stats", headers=keyed.auth("alpha"))
    keyed.client.get("/v1/stats")
    found = samples(keyed.client.get("/metrics").text)
    assert found[("llmpulse_http_requests_refused_total", (("reason", "rate_limited"),))] == 1
    assert found[("llmpulse_http_requests_refused_total", (("reason", "unauthorized"),))] == 1


def test_each_app_has_its_own_registry(make_client: MakeClient) -> None:
    first, second = make_client(), make_client()
    assert first.post("/v1/events", json=[call_body()]).status_code == 200
    assert samples(first.get("/metrics").text)[("llmpulse_events_accepted_total", ())] == 1
    assert samples(second.get("/metrics").text)[("llmpulse_events_accepted_total", ())] == 0
