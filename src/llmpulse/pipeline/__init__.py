"""The pipeline: the event log, the processor core (join and window), and the runner between them.

Errors: `PipelineError` is the base; `LogBackpressure` (the log cannot keep up: answer 503 with
Retry-After) and `LogClosed` (the log is shutting down) derive from it; `LogUnavailable` (the Kafka
broker is unreachable or did not acknowledge in time) is a `LogBackpressure`.

`KafkaEventLog` and `KafkaLogConfig` need the ``llmpulse[kafka]`` extra (confluent-kafka) and are
imported on first use, so the embedded server never loads it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from llmpulse.pipeline._errors import LogBackpressure, LogClosed, LogUnavailable, PipelineError
from llmpulse.pipeline._log import EventLog, LogRecord
from llmpulse.pipeline._processor import ProcessorConfig, ProcessorCore
from llmpulse.pipeline._records import ESTIMATE_COSTS, EstimateCost
from llmpulse.pipeline._runner import CheckpointStore, ProcessorRunner
from llmpulse.pipeline._sqlite_log import SQLiteEventLog

if TYPE_CHECKING:
    from llmpulse.pipeline._kafka_log import KafkaEventLog, KafkaLogConfig

_LAZY: dict[str, str] = {
    "KafkaEventLog": "llmpulse.pipeline._kafka_log",
    "KafkaLogConfig": "llmpulse.pipeline._kafka_log",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmpulse.pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ESTIMATE_COSTS",
    "CheckpointStore",
    "EstimateCost",
    "EventLog",
    "KafkaEventLog",
    "KafkaLogConfig",
    "LogBackpressure",
    "LogClosed",
    "LogRecord",
    "LogUnavailable",
    "PipelineError",
    "ProcessorConfig",
    "ProcessorCore",
    "ProcessorRunner",
    "SQLiteEventLog",
]
