"""The in-application half of llmpulse: collector, processors, tracing, export pipelines, budgets, streams.

Quick start::

    from llmpulse.sdk import Collector, TelemetryConfig
    collector = Collector(TelemetryConfig(tags={"env": "prod"}), exporters=[my_exporter])
    collector.record(call)          # hot path: never blocks, never raises
    collector.shutdown(timeout=5.0)

Importing this package stays light (no genai-prices, no HTTP client): prices are loaded by the export
workers on first use. `Budget`, `Budgets`, `BudgetExceeded`, `SharedBudget` (a budget kept on the
llmpulse server, shared by every process), `StreamMeter` and `Usage` load on first access.

Errors: `DropItem` / `SampledOut` (raised by processors to drop an item; never escape `record`);
`RetryableError` / `ExportError` (raised by exporters, handled by the pipeline); `BudgetExceeded`
(budgets with ``on_exceed="raise"``; `SharedBudgetExceeded` and `BudgetUnavailable` from shared
ones); `ValueError` from `TelemetryConfig` naming the field.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llmpulse.sdk._collector import Collector
from llmpulse.sdk._config import (
    DEFAULT_REDACT,
    ENV_VARS,
    REDACTORS,
    SamplingMode,
    SharedBudgetConfig,
    TelemetryConfig,
)
from llmpulse.sdk._exporter import Exporter, ExportError, ExportResult, RetryableError, as_exporter
from llmpulse.sdk._pipeline import ExportPipeline
from llmpulse.sdk._processors import (
    INPUT_KEYS,
    OUTPUT_KEYS,
    SAMPLE_RATE_KEY,
    ContentFilter,
    DropItem,
    GlobalTags,
    Processor,
    Redactor,
    SampledOut,
    Sampler,
    SampleWeight,
    UserIdHasher,
    build_processors,
)
from llmpulse.sdk._tracing import (
    Binding,
    GenerationHandle,
    SpanContext,
    SpanHandle,
    current_collector,
    current_span,
    observe,
)

if TYPE_CHECKING:
    from llmpulse.sdk._budget import Budget, BudgetExceeded, Budgets
    from llmpulse.sdk._shared_budget import (
        BudgetUnavailable,
        SharedBudget,
        SharedBudgetExceeded,
        SharedReservation,
    )
    from llmpulse.sdk._stream import StreamMeter
    from llmpulse.sdk._usage import Usage

_LAZY: dict[str, str] = {
    "Budget": "llmpulse.sdk._budget",
    "BudgetExceeded": "llmpulse.sdk._budget",
    "Budgets": "llmpulse.sdk._budget",
    "BudgetUnavailable": "llmpulse.sdk._shared_budget",
    "SharedBudget": "llmpulse.sdk._shared_budget",
    "SharedBudgetExceeded": "llmpulse.sdk._shared_budget",
    "SharedReservation": "llmpulse.sdk._shared_budget",
    "StreamMeter": "llmpulse.sdk._stream",
    "Usage": "llmpulse.sdk._usage",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmpulse.sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_REDACT",
    "ENV_VARS",
    "INPUT_KEYS",
    "OUTPUT_KEYS",
    "REDACTORS",
    "SAMPLE_RATE_KEY",
    "Binding",
    "Budget",
    "BudgetExceeded",
    "BudgetUnavailable",
    "Budgets",
    "Collector",
    "ContentFilter",
    "DropItem",
    "ExportError",
    "ExportPipeline",
    "ExportResult",
    "Exporter",
    "GenerationHandle",
    "GlobalTags",
    "Processor",
    "Redactor",
    "RetryableError",
    "SampleWeight",
    "SampledOut",
    "Sampler",
    "SamplingMode",
    "SharedBudget",
    "SharedBudgetConfig",
    "SharedBudgetExceeded",
    "SharedReservation",
    "SpanContext",
    "SpanHandle",
    "StreamMeter",
    "TelemetryConfig",
    "Usage",
    "UserIdHasher",
    "as_exporter",
    "build_processors",
    "current_collector",
    "current_span",
    "observe",
]
