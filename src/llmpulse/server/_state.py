"""The running server's dependencies, kept in ``app.state.llmpulse`` (never in module globals)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request

from llmpulse.server._errors import ApiError
from llmpulse.server._settings import ServerSettings

if TYPE_CHECKING:
    from llmpulse.pipeline import EventLog, ProcessorRunner
    from llmpulse.server._alerts_api import AlertsRuntime
    from llmpulse.server._auth import Gate
    from llmpulse.server._lag import GroupLag
    from llmpulse.server._metrics import ServerMetrics
    from llmpulse.store import RetentionPruner, Store


@dataclass(slots=True)
class OTLPCounters:
    """What the OTLP receiver (``POST /v1/traces``) acknowledged since this process started.

    Counted once an export is answered 200 (an export refused with a 4xx or 503 counts nothing, as
    the client sends it again): `exports` requests, `spans_received` spans in them, of which `calls`
    became `LLMCall` events, `spans_ignored` were not model calls (tools, agents, HTTP, ...) and
    `spans_rejected` failed validation (reported in ``partial_success``). A re-sent export is counted
    again here; the processor drops the duplicate calls. Written on the event loop only; reading
    from another thread (a metrics scrape) is safe. Not persisted.
    """

    exports: int = 0
    spans_received: int = 0
    calls: int = 0
    spans_ignored: int = 0
    spans_rejected: int = 0

    def snapshot(self) -> dict[str, int]:
        """The counters as a dict (for ``/v1/stats`` and metrics). Does not block."""
        return {
            "exports": self.exports,
            "spans_received": self.spans_received,
            "calls": self.calls,
            "spans_ignored": self.spans_ignored,
            "spans_rejected": self.spans_rejected,
        }


@dataclass(slots=True)
class IngestCounters:
    """What ``/v1/events`` accepted since this process started that deserves a note (not persisted).

    `naive_timestamps`: accepted call events whose timestamp had no UTC offset and was read in
    `Limits.naive_timestamp_tz` (token-copilot's webhook sends such timestamps). Written on the
    event loop only.
    """

    naive_timestamps: int = 0

    def snapshot(self) -> dict[str, int]:
        """The counters as a dict (for ``/v1/stats``). Does not block."""
        return {"naive_timestamps": self.naive_timestamps}


@dataclass(slots=True)
class ServerState:
    """The running server's dependencies, kept in ``app.state.llmpulse``.

    `log` and `store` are set before requests are served (at startup, or by the caller); `runner` is
    None unless the processor runs in this process; `group_lag` measures the ``llmpulse process``
    workers' lag in Kafka mode without it; `pruner` deletes expired records (None when this server
    prunes nothing). `otlp` counts what the OTLP receiver saw.
    """

    settings: ServerSettings
    log: EventLog | None = None
    store: Store | None = None
    runner: ProcessorRunner | None = None
    group_lag: GroupLag | None = None
    pruner: RetentionPruner | None = None
    started_at: float = field(default_factory=time.time)
    demo_url: str | None = None
    otlp: OTLPCounters = field(default_factory=OTLPCounters)
    ingest: IngestCounters = field(default_factory=IngestCounters)
    #: API keys and rate limits (set by `create_app`); the app's metrics registry and counters.
    gate: Gate | None = None
    metrics: ServerMetrics | None = None
    #: The alert evaluator and its dispatcher when rules are loaded (`AlertsRuntime`).
    alerts: AlertsRuntime | None = None
    #: The wall clock of budget periods and reservation expiry (epoch seconds; tests inject theirs).
    clock: Callable[[], float] = time.time

    def require_log(self) -> EventLog:
        """The event log, or an `ApiError` 503 while the server is not ready."""
        if self.log is None:
            raise ApiError(503, "the event log is not open yet", headers={"Retry-After": "1"})
        return self.log

    def require_store(self) -> Store:
        """The store, or an `ApiError` 503 while the server is not ready."""
        if self.store is None:
            raise ApiError(503, "the store is not open yet", headers={"Retry-After": "1"})
        return self.store


def server_state(request: Request) -> ServerState:
    """The `ServerState` of the app serving `request`."""
    state: ServerState = request.app.state.llmpulse
    return state
