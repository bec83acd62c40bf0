"""The pipeline: the event log, the processor core (join and window), and the runner between them.

Errors: `PipelineError` is the base; `LogBackpressure` (the log cannot keep up: answer 503 with
Retry-After) and `LogClosed` (the log is shutting down) derive from it.
"""

from __future__ import annotations

from llmpulse.pipeline._errors import LogBackpressure, LogClosed, PipelineError
from llmpulse.pipeline._log import EventLog, LogRecord
from llmpulse.pipeline._processor import ProcessorConfig, ProcessorCore
from llmpulse.pipeline._runner import CheckpointStore, ProcessorRunner
from llmpulse.pipeline._sqlite_log import SQLiteEventLog

__all__ = [
    "CheckpointStore",
    "EventLog",
    "LogBackpressure",
    "LogClosed",
    "LogRecord",
    "PipelineError",
    "ProcessorConfig",
    "ProcessorCore",
    "ProcessorRunner",
    "SQLiteEventLog",
]
