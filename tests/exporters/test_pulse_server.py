"""PulseExporter → the real llmpulse server (uvicorn on loopback) → `/v1/metrics` shows the calls."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from llmpulse.events import Span
from llmpulse.exporters import PulseExporter
from llmpulse.pricing import Pricer
from llmpulse.sdk._pipeline import ExportPipeline
from llmpulse.server import ServerSettings, create_app
from tests.sdk.test_pipeline import call
from tests.server.live_server import live_server


def _rows(url: str, tenant: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/v1/metrics?tenant_id={tenant}&limit=100", timeout=5) as response:
        rows: list[dict[str, Any]] = json.loads(response.read())["metrics"]
    return rows


def test_exported_calls_show_up_in_the_servers_metrics(tmp_path: Path) -> None:
    settings = ServerSettings(db_url=f"sqlite:///{tmp_path / 'store.db'}", checkpoint_interval_s=0.05)
    at = datetime.now(UTC).replace(second=30, microsecond=0) - timedelta(minutes=2)
    with live_server(create_app(settings)) as url:
        pipeline = ExportPipeline(PulseExporter(url), max_batch=4, flush_interval_s=0.05)
        for i in range(10):
            pipeline.offer(call(i, tenant_id="sdk-e2e", route="chat", timestamp=at, latency_ms=100.0 + i))
        pipeline.offer(Span(name="not-ingested"))
        assert pipeline.shutdown(timeout=10.0)
        stats = pipeline.stats()
        assert (stats["exported"], stats["dropped_by_reason"]) == (10, {"unsupported_kind": 1})
        deadline = time.monotonic() + 20
        rows = _rows(url, "sdk-e2e")
        while sum(r["requests"] for r in rows) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
            rows = _rows(url, "sdk-e2e")
    (row,) = rows
    assert (row["requests"], row["route"], row["model"]) == (10, "chat", "gpt-4o-mini")
    assert row["prompt_tokens"] == 1000
    one = Pricer().cost("gpt-4o-mini", input_tokens=100, output_tokens=20)
    assert one is not None
    assert row["estimated_cost_usd"] == pytest.approx(10 * one)
