"""The OTLP receiver with the real GenAI instrumentations: one call per model call, whoever sent it.

Each instrumentation runs in ``.venv-otlp-clients`` (built, or found cached, by
``scripts/otlp-clients-venv.sh``: they need ``openai<3`` and their own OpenTelemetry), driven by
``otlp_clients/drive.py``: the real ``openai`` client makes a non-streamed, a streamed and two
failing chat completions against the fake provider, and the instrumentation exports its spans over
OTLP/HTTP to a live llmpulse server. Everything is on 127.0.0.1: the driver's proxy variables point
at a closed loopback port, so a request to any other address fails instead of leaving the machine.

`MAPPED` is what each instrumentation gives llmpulse; the test asserts exactly that, so a release
that starts (or stops) sending a figure fails here, and docs/compatibility.md is updated with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from llmpulse.server import ServerSettings, create_app
from tests.instrument.fake_provider import FakeProvider
from tests.server.live_server import live_server

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv-otlp-clients" / "bin" / "python"
DRIVER = Path(__file__).with_name("otlp_clients") / "drive.py"


@dataclass(frozen=True)
class Mapped:
    """What an instrumentation's spans carry, as llmpulse reads them (docs/compatibility.md)."""

    #: cached input tokens on the (non-streamed, streamed) calls
    cached: tuple[bool, bool]
    #: reasoning tokens on the (non-streamed, streamed) calls
    reasoning: tuple[bool, bool]
    #: time to first token on the streamed call
    ttft: bool


MAPPED = {
    "openllmetry": Mapped(cached=(True, True), reasoning=(True, False), ttft=True),
    "openai-v2": Mapped(cached=(False, False), reasoning=(False, False), ttft=False),
    "openinference": Mapped(cached=(True, True), reasoning=(True, True), ttft=True),
    "openlit": Mapped(cached=(True, True), reasoning=(False, False), ttft=True),
    "traceloop": Mapped(cached=(True, True), reasoning=(True, False), ttft=True),
    "logfire": Mapped(cached=(True, True), reasoning=(True, True), ttft=False),
}


@pytest.fixture(scope="module")
def clients_python() -> Path:
    """The client virtualenv's python, built by the script on first use (a minute), cached after."""
    subprocess.run(["bash", str(ROOT / "scripts" / "otlp-clients-venv.sh"), sys.executable], check=True)
    assert VENV_PYTHON.exists()
    return VENV_PYTHON


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FastAPI]]:
    path = tmp_path_factory.mktemp("otlp-clients")
    settings = ServerSettings(
        db_url=f"sqlite:///{path / 'store.db'}", checkpoint_interval_s=0.05, log_sync="NORMAL"
    )
    app = create_app(settings)
    with live_server(app) as url:
        yield url, app


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


def _calls(url: str, app: FastAPI, tenant: str) -> list[dict[str, Any]]:
    state = app.state.llmpulse
    assert state.runner.wait_committed(0, state.log.end_offset(0), 20.0)
    calls: list[dict[str, Any]] = _get(f"{url}/v1/calls?tenant_id={tenant}&limit=100")["calls"]
    return sorted(calls, key=lambda c: c["started_at"])


def _drive(python: Path, client: str, provider: FakeProvider, url: str, tenant: str) -> dict[str, Any]:
    env = {
        **os.environ,
        # every address but loopback goes to a closed port: nothing leaves the machine
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
        "OTEL_RESOURCE_ATTRIBUTES": f"llmpulse.tenant_id={tenant},llmpulse.route=clients",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "TRACELOOP_TELEMETRY": "false",
        "TRACELOOP_METRICS_ENABLED": "false",
        "PYTHONWARNINGS": "ignore",
    }
    for key in ("VIRTUAL_ENV", "PYTHONPATH"):
        env.pop(key, None)
    done = subprocess.run(
        [str(python), str(DRIVER), client, provider.openai_url, url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def _wait_for(url: str, app: FastAPI, tenant: str, count: int) -> list[dict[str, Any]]:
    """The tenant's calls once `count` have arrived (exporters flush on shutdown, but a batch may
    still be in the ingest path), or what there is after 10 s."""
    deadline = time.monotonic() + 10
    calls = _calls(url, app, tenant)
    while len(calls) < count and time.monotonic() < deadline:
        time.sleep(0.05)
        calls = _calls(url, app, tenant)
    return calls


@pytest.mark.parametrize("client", list(MAPPED))
def test_each_model_call_is_counted_once_with_what_the_instrumentation_sent(
    client: str, clients_python: Path, provider: FakeProvider, server: tuple[str, FastAPI]
) -> None:
    url, app = server
    tenant = f"otlp-{client}"
    before = _get(f"{url}/v1/stats")["otlp"]
    report = _drive(clients_python, client, provider, url, tenant)
    assert report["client"] == client
    after = _get(f"{url}/v1/stats")["otlp"]
    sent = {key: after[key] - before[key] for key in ("spans_received", "calls", "spans_rejected")}
    assert sent["calls"] == 4, sent
    assert sent["spans_rejected"] == 0, sent
    if client == "logfire":
        # plain, stream request span, "streaming response" log, fail, fail-stream: the request span
        # of the stream is ignored, its log is the call
        assert sent["spans_received"] == 5
        assert after["spans_ignored"] - before["spans_ignored"] == 1
    calls = _wait_for(url, app, tenant, 4)
    shown = [(c["model"], c["status"], c["input_tokens"], c["latency_ms"]) for c in calls]
    assert len(calls) == 4, shown  # plain, stream, fail, fail-stream: no more, no less
    plain, stream, fail, fail_stream = calls
    mapped = MAPPED[client]

    for call, (prompt, output, cached, reasoning), has_cached, has_reasoning in (
        (plain, (30, 8, 10, 3), mapped.cached[0], mapped.reasoning[0]),
        (stream, (25, 6, 5, 2), mapped.cached[1], mapped.reasoning[1]),
    ):
        assert call["route"] == "clients"
        assert (call["model"], call["status"], call["error_type"]) == ("gpt-4o-mini", "ok", None)
        assert (call["input_tokens"], call["output_tokens"]) == (prompt, output)
        assert call["cached_input_tokens"] == (cached if has_cached else 0)
        assert call["reasoning_tokens"] == (reasoning if has_reasoning else 0)
        assert call["cost_usd"] is not None
        assert call["cost_usd"] > 0
        assert call["cost_source"] == "genai-prices"
        assert call["trace_id"]
        assert call["span_id"]

    # the fake provider waits 0.3 s inside the stream: the call's latency holds it
    assert stream["latency_ms"] >= 300.0
    assert plain["latency_ms"] < stream["latency_ms"]
    assert plain["ttft_ms"] is None  # a non-streamed call has no time to first token
    if mapped.ttft:
        assert 0.0 < stream["ttft_ms"] <= stream["latency_ms"]
    else:
        assert stream["ttft_ms"] is None

    for call in (fail, fail_stream):
        # OpenInference names a failed call's model only in llm.invocation_parameters
        assert (call["model"], call["status"]) == ("gpt-4o", "error")
        assert call["error_type"] or call["error_message"]
        assert (call["input_tokens"], call["output_tokens"]) == (0, 0)
        assert call["latency_ms"] < 300.0
