"""Errors of the `pipeline` package."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of the `pipeline` package's errors."""


class LogBackpressure(PipelineError):
    """The event log cannot take more now; the caller should answer 503 with `Retry-After`."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LogUnavailable(LogBackpressure):
    """The event log's backend (the Kafka broker) is unreachable or did not acknowledge in time.

    A `LogBackpressure`, so ingest answers 503 with `Retry-After` and clients send again.
    """


class LogClosed(PipelineError):
    """The event log has been closed (the server is shutting down)."""
