"""ConsoleExporter: one JSON line (or one short human line) per item."""

from __future__ import annotations

import io
import json

import pytest

from llmpulse.exporters import ConsoleExporter
from llmpulse.sdk._pipeline import ExportPipeline
from tests.sdk.test_pipeline import call


def test_json_lines_round_trip_through_the_pipeline() -> None:
    stream = io.StringIO()
    pipeline = ExportPipeline(ConsoleExporter(stream), flush_interval_s=60.0)
    for i in range(3):
        pipeline.offer(call(i, tenant_id="acme"))
    assert pipeline.shutdown(timeout=5.0)
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ["r0", "r1", "r2"]
    assert all(json.loads(line)["tenant_id"] == "acme" for line in lines)
    assert all(json.loads(line)["cost"] > 0 for line in lines)


def test_pretty_lines_summarise_a_call() -> None:
    stream = io.StringIO()
    exporter = ConsoleExporter(stream, pretty=True)
    exporter.export(
        [
            {
                "type": "llm.call",
                "timestamp": "2025-11-19T10:00:00Z",
                "model": "gpt-4o",
                "input_tokens": 10,
                "output_tokens": 5,
                "cached_input_tokens": 4,
                "cost": 0.00123,
                "latency_ms": 120.4,
                "ttft_ms": 40.0,
                "status": "ok",
                "tenant_id": "acme",
                "route": "chat",
            },
            {"type": "log", "timestamp": "2025-11-19T10:00:01Z", "severity": "warn", "message": "slow"},
        ]
    )
    first, second = stream.getvalue().splitlines()
    assert first == (
        "2025-11-19T10:00:00Z llm.call gpt-4o 10→5 tok (4 cached) $0.001230 120 ms ttft 40 ms ok acme/chat"
    )
    assert second == "2025-11-19T10:00:01Z log severity=warn message=slow"


def test_default_stream_is_stderr_at_export_time(capsys: pytest.CaptureFixture[str]) -> None:
    ConsoleExporter().export([{"type": "span", "name": "x"}])
    captured = capsys.readouterr()
    assert captured.out == ""
    assert json.loads(captured.err) == {"type": "span", "name": "x"}
