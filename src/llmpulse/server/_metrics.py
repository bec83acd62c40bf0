"""``GET /metrics``: the server's own metrics in the Prometheus text format (prometheus-client).

Each app has its own `CollectorRegistry` (never the global one), so several apps in one process (tests,
embedding) do not mix their figures. Two kinds of figures:

* counted as requests are answered (`ServerMetrics`, plain integers): events accepted (durably in
  the log), events rejected by reason (``invalid``: broke the schema or a limit; ``malformed``: not
  JSON), events whose tenant was rewritten to their key's, and refused requests by reason
  (``unauthorized``, ``rate_limited``, ``too_large``, ``timeout``, ``unavailable``, ...; one per
  refused request, whatever it carried);
* read at each scrape from what already keeps them (`_StateCollector`): the event log (appended,
  queued), the processor (events processed, lag, checkpoints, failures, timeouts, late events,
  duplicates, orphan responses), the store (window rows written), the OTLP receiver (spans received,
  calls, spans ignored, spans rejected) and the key gate.

Process-level figures are those of this process since it started; a restart resets them (Prometheus
handles counter resets). Who may scrape is described in docs/security.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from anyio import to_thread
from fastapi import APIRouter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from llmpulse._version import __version__
from llmpulse.server._state import server_state

if TYPE_CHECKING:
    from llmpulse.server._state import ServerState

router = APIRouter(tags=["health"])

#: The classic text format every Prometheus version scrapes (the names here need no UTF-8 escaping).
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

#: Reasons of refused requests, by status (other 4xx: ``client_error``; 5xx: ``server_error``).
REFUSAL_REASONS: Final[Mapping[int, str]] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}
#: Reasons an event inside a body is rejected.
EVENT_REJECTIONS: Final = ("invalid", "malformed")


def refusal_reason(status: int) -> str:
    """The ``reason`` label of a refused request with this status."""
    return REFUSAL_REASONS.get(status) or ("server_error" if status >= 500 else "client_error")


class ServerMetrics:
    """The app's metrics registry and the counters request handlers increment.

    The counters are plain integers written on the event loop only (CPU only, no lock); a scrape
    reads them from a worker thread, which is safe for integers. They are exported without the
    ``_created`` series prometheus-client would add to its own `Counter`.
    """

    def __init__(self, state: ServerState) -> None:
        """A private registry with a collector reading these counters and `state` at each scrape."""
        self.registry = CollectorRegistry(auto_describe=False)
        self.events_accepted = 0
        self.events_rewritten = 0
        self.events_rejected: dict[str, int] = dict.fromkeys(EVENT_REJECTIONS, 0)
        self.requests_refused: dict[str, int] = {}
        self.registry.register(_StateCollector(state, self))

    def accepted(self, n: int) -> None:
        """Count `n` events appended to the log."""
        self.events_accepted += n

    def rejected(self, reason: str, n: int = 1) -> None:
        """Count `n` events rejected for `reason` (``invalid`` or ``malformed``)."""
        self.events_rejected[reason] = self.events_rejected.get(reason, 0) + n

    def rewritten(self, n: int) -> None:
        """Count `n` events whose tenant was rewritten to their key's."""
        self.events_rewritten += n

    def refused(self, status: int) -> None:
        """Count one request answered with an error `status`."""
        reason = refusal_reason(status)
        self.requests_refused[reason] = self.requests_refused.get(reason, 0) + 1

    def collect(self) -> Iterator[Metric]:
        """The request counters as metric families. CPU only."""
        yield _counter(
            "llmpulse_events_accepted",
            "Events acknowledged: durably appended to the event log by ingest (HTTP and OTLP).",
            self.events_accepted,
        )
        rejected = CounterMetricFamily(
            "llmpulse_events_rejected",
            "Events rejected inside a request body: invalid (schema or limit) or malformed (not JSON).",
            labels=["reason"],
        )
        for reason, count in sorted(self.events_rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        yield _counter(
            "llmpulse_events_tenant_rewritten",
            "Accepted events that named another tenant than their API key's and were rewritten to it.",
            self.events_rewritten,
        )
        refused = CounterMetricFamily(
            "llmpulse_http_requests_refused",
            "Requests answered with an error status, by reason (one per request, whatever it carried).",
            labels=["reason"],
        )
        for reason, count in sorted(self.requests_refused.items()):
            refused.add_metric([reason], count)
        yield refused

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format. Blocks briefly (reads the log and the runner)."""
        return generate_latest(self.registry)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


#: Processor counters exported as they are: (stats key, metric name without _total, help).
_PROCESSOR_COUNTERS: Final = (
    ("events", "llmpulse_processor_events", "Events the processor has read from the log (throughput)."),
    ("joined", "llmpulse_processor_joined", "Requests joined with their response."),
    ("calls", "llmpulse_processor_calls", "Whole-call events counted."),
    ("duplicates", "llmpulse_processor_duplicates", "Duplicate events dropped (same request id and kind)."),
    ("late_events", "llmpulse_processor_late_events", "Events that arrived after their window's lateness."),
    ("unknown_cost", "llmpulse_processor_unknown_cost", "Calls whose cost could not be computed."),
    ("timeouts_corrected", "llmpulse_processor_timeouts_corrected", "Timeouts undone by a late response."),
    (
        "orphan_responses_resolved",
        "llmpulse_processor_orphan_responses_resolved",
        "Orphan responses whose request arrived later.",
    ),
)


class _StateCollector(Collector):
    """Reads the log, the runner, the store, the OTLP counters and the gate at each scrape."""

    def __init__(self, state: ServerState, counters: ServerMetrics) -> None:
        self._state = state
        self._counters = counters

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the figures present depend on what runs (no processor, no OTLP, ...)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The figures as metric families. Blocks briefly (the runner reads the log's offsets)."""
        state = self._state
        yield from self._counters.collect()
        info = GaugeMetricFamily("llmpulse_build_info", "The llmpulse version serving.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield _gauge(
            "llmpulse_uptime_seconds", "Seconds since the server started.", time.time() - state.started_at
        )
        gate = state.gate
        if gate is not None:
            yield _gauge(
                "llmpulse_api_keys_required",
                "1 while requests need an API key (a non-revoked key exists), else 0.",
                1.0 if gate.keys_required else 0.0,
            )
        yield from self._log(state)
        yield from self._processor(state)
        if state.store is not None:
            yield _counter(
                "llmpulse_store_windows_written",
                "Window rows upserted by the processor's checkpoints (one per window per checkpoint).",
                state.store.windows_written,
            )
        otlp = getattr(state, "otlp", None)
        snapshot = getattr(otlp, "snapshot", None)
        if callable(snapshot):
            counts: Mapping[str, int] = snapshot()
            for name, value in sorted(counts.items()):
                yield _counter(
                    f"llmpulse_otlp_{name}",
                    f"OTLP receiver (POST /v1/traces): {name.replace('_', ' ')} since start.",
                    value,
                )

    @staticmethod
    def _log(state: ServerState) -> Iterator[Metric]:
        log = state.log
        stats = getattr(log, "stats", None)
        if not callable(stats):
            return
        figures: Mapping[str, int] = stats()
        if "appended_events" in figures:
            yield _counter(
                "llmpulse_log_appended_events",
                "Events this process appended to the event log.",
                figures["appended_events"],
            )
        if "commits" in figures:
            yield _counter("llmpulse_log_commits", "Group commits of the event log.", figures["commits"])
        if "queued_events" in figures:
            yield _gauge(
                "llmpulse_log_queued_events",
                "Events waiting for the event log's writer.",
                figures["queued_events"],
            )

    @staticmethod
    def _processor(state: ServerState) -> Iterator[Metric]:
        runner = state.runner
        if runner is None:
            return
        stats: dict[str, Any] = runner.stats()
        yield _gauge(
            "llmpulse_processor_up", "1 while the processor thread is alive.", 1.0 if stats["alive"] else 0.0
        )
        lag = runner.lag_events()
        if lag is not None:
            yield _gauge(
                "llmpulse_processor_lag_events", "Events in the log the processor has not read.", lag
            )
        if stats.get("lag_records", -1) >= 0:
            yield _gauge(
                "llmpulse_processor_lag_records",
                "Log records appended but not yet committed by the processor (log lag).",
                stats["lag_records"],
            )
        yield _counter(
            "llmpulse_processor_processed_events",
            "Events processed and committed by the processor's runner.",
            stats.get("processed_events", 0),
        )
        yield _counter(
            "llmpulse_processor_checkpoints", "Checkpoints committed.", stats.get("checkpoints", 0)
        )
        yield _counter(
            "llmpulse_processor_commit_failures", "Checkpoint commits that failed.", stats.get("failures", 0)
        )
        # timeouts and orphan responses go down when corrected: export what was ever declared
        yield _counter(
            "llmpulse_processor_timeouts",
            "Requests declared timed out (no response within orphan_timeout_s), corrected or not.",
            stats.get("timeouts", 0) + stats.get("timeouts_corrected", 0),
        )
        yield _counter(
            "llmpulse_processor_orphan_responses",
            "Responses declared orphans (no request within orphan_timeout_s), resolved or not.",
            stats.get("orphan_responses", 0) + stats.get("orphan_responses_resolved", 0),
        )
        for key, name, doc in _PROCESSOR_COUNTERS:
            if key in stats:
                yield _counter(name, doc, stats[key])
        for key in ("pending_requests", "pending_responses"):
            if key in stats:
                yield _gauge(
                    f"llmpulse_processor_{key}",
                    f"{key.replace('_', ' ').capitalize()} awaiting a join.",
                    stats[key],
                )


@router.get(
    "/metrics",
    summary="The server's own metrics (Prometheus text format)",
    responses={
        200: {"description": "Prometheus text exposition", "content": {CONTENT_TYPE: {}}},
        401: {"description": "Keys are configured and metrics_public is off: an API key is needed"},
    },
    response_class=Response,
)
async def metrics(request: Request) -> Response:
    """Every metric of this server, for a Prometheus scrape. Reads the figures on a worker thread."""
    state = server_state(request)
    if state.metrics is None:
        return Response(b"", media_type=CONTENT_TYPE)
    body = await to_thread.run_sync(state.metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE)
