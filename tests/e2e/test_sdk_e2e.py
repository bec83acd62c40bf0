"""End to end from the application: instrumented openai/anthropic clients → PulseExporter → serve.

The real client libraries call a fake provider on loopback; the collector exports to a real
`llmpulse serve` subprocess; `/v1/metrics` must show exactly the calls the application made.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from llmpulse import Collector, TelemetryConfig, instrument
from llmpulse.exporters import PulseExporter
from llmpulse.testing import InMemoryExporter
from tests.e2e._server import ServerProcess
from tests.instrument.fake_provider import FakeProvider

pytestmark = pytest.mark.slow

TENANT = "sdk-e2e"
MESSAGES = [{"role": "user", "content": "hello"}]


def _metrics(url: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{url}/v1/metrics", params={"tenant_id": TENANT, "limit": 1000}, timeout=10).json()
    rows: list[dict[str, Any]] = body["metrics"]
    return rows


def test_instrumented_calls_reach_the_server_and_are_counted(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, "--db", f"sqlite:///{tmp_path / 'sdk.db'}").start()
    memory = InMemoryExporter()
    collector = Collector(
        TelemetryConfig(flush_interval_ms=50), exporters=[PulseExporter(server.url), memory]
    )
    try:
        with FakeProvider() as provider:
            oai = instrument(
                openai.OpenAI(base_url=provider.openai_url, api_key="test", max_retries=0),
                collector=collector,
                tenant_id=TENANT,
                route="chat",
                user_id="u1",
            )
            for _ in range(4):
                oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
            for _ in range(2):
                stream = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
                assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            with pytest.raises(openai.InternalServerError):
                oai.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=MESSAGES,  # type: ignore[arg-type]
                    extra_headers={"x-fake": "error=500"},
                )
            ant = instrument(
                anthropic.Anthropic(base_url=provider.url, api_key="test", max_retries=0),
                collector=collector,
                tenant_id=TENANT,
                route="summarise",
            )
            for _ in range(3):
                ant.messages.create(
                    model="claude-haiku-4-5",
                    max_tokens=50,
                    messages=MESSAGES,  # type: ignore[arg-type]
                    extra_headers={"x-fake": "cached=8"},
                )
        assert collector.shutdown(timeout=10.0)
        stats = collector.stats()["exporters"]
        assert all(s["exported"] == 10 and s["dropped"] == 0 for s in stats.values()), stats

        sent = memory.items
        deadline = time.monotonic() + 30
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = _metrics(server.url)
            if sum(r["requests"] for r in rows) >= 10:
                break
            time.sleep(0.2)
        by_route: dict[str, dict[str, float]] = {}
        for row in rows:
            agg = by_route.setdefault(
                row["route"], {"requests": 0, "errors": 0, "prompt": 0, "cached": 0, "cost": 0}
            )
            agg["requests"] += row["requests"]
            agg["errors"] += row["errors"]
            agg["prompt"] += row["prompt_tokens"]
            agg["cached"] += row["cached_input_tokens"]
            agg["cost"] += row["estimated_cost_usd"] or 0.0
        assert by_route["chat"]["requests"] == 7
        assert by_route["chat"]["errors"] == 1
        assert by_route["summarise"]["requests"] == 3
        assert by_route["summarise"]["cached"] == 3 * 8
        for route in ("chat", "summarise"):
            items = [i for i in sent if i["route"] == route]
            assert by_route[route]["prompt"] == sum(i["input_tokens"] for i in items)
            assert by_route[route]["cost"] == pytest.approx(sum(i["cost"] or 0.0 for i in items), rel=1e-9)
            assert by_route[route]["cost"] > 0
        assert {i["user_id"] for i in sent if i["route"] == "chat"} == {"u1"}
    finally:
        collector.shutdown(timeout=1.0)
        server.stop()
