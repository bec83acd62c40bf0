"""The public face: `llmpulse.__all__` is sorted, complete, and every name resolves (httpx's check)."""

from __future__ import annotations

import subprocess
import sys

import llmpulse


def test_all_is_sorted_and_resolves() -> None:
    assert llmpulse.__all__ == sorted(llmpulse.__all__)
    for name in llmpulse.__all__:
        assert getattr(llmpulse, name) is not None, name


def test_the_issue_contract_names_import() -> None:
    from llmpulse import Budget, BudgetExceeded, Collector, StreamMeter, TelemetryConfig, instrument, observe
    from llmpulse.events import LLMCall, LogEvent, Metric, Orchestration, Span, ToolExecution
    from llmpulse.exporters import ConsoleExporter, FileExporter, PulseExporter
    from llmpulse.testing import InMemoryExporter

    assert callable(instrument)
    assert callable(observe)
    assert issubclass(BudgetExceeded, Exception)
    for cls in (Budget, Collector, StreamMeter, TelemetryConfig, LLMCall, LogEvent, Metric, Orchestration):
        assert isinstance(cls, type)
    for cls in (Span, ToolExecution, ConsoleExporter, FileExporter, PulseExporter, InMemoryExporter):
        assert isinstance(cls, type)


def test_import_llmpulse_loads_no_sdk_until_asked() -> None:
    code = "import sys, llmpulse; print('llmpulse.sdk' in sys.modules, 'msgspec' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
