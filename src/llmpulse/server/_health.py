"""Health and statistics: ``GET /health`` and ``GET /v1/stats``.

``/health`` answers 200 ``{"status": "ok", ...}`` while the server can accept and process events, and
503 ``{"status": "degraded", ...}`` when the embedded processor's thread has died (ingest still works:
events wait in the log until a processor reads them). The figures come from the log, the processor
runner and the store; collecting them blocks briefly, so it runs on a worker thread.

``log.end_offsets`` are the offsets the next record of each partition will get: with the SQLite log
one partition whose offsets count appended batches; with Kafka one entry per topic-partition
(``3 * p + t``, `llmpulse.pipeline._kafka_log`), each counting events, so their sum is the number of
events the topics hold (everything acknowledged, by any ingest node, plus anything produced to the
topics by other clients). ``processor.lag_records`` is, per partition, the end offset minus the
processor's committed offset. In Kafka mode without the processor, ``workers`` has the consumer
group's ``lag_events`` (end offsets minus the offsets its workers committed to the store; null while
unknown), the figure ingest's admission uses.

``retention`` shows what is kept: ``policy`` (the `RetentionPolicy` fields), ``kept_days`` per table
(null: forever), ``log_kept_s`` (the embedded log's consumed records; null in Kafka mode, where
``log_kept_by`` names the topics' ``retention.ms``), and ``pruner``: this server's pruner (null when
``interval_s`` is 0) with its runs, failures, rows deleted per table since start and the ``last``
prune: when (``at``), its ``cutoffs``, rows ``deleted`` and the ``oldest_kept`` per table.
``alerts`` (null without a rules file): the rules loaded, whether this server evaluates them now
(``leader``), its passes and their errors, the last pass's duration, reloads and their errors, and each
notifier's counts (sent, failed, retried, dropped, queued, last error).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol, runtime_checkable

from anyio import to_thread
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from llmpulse.pipeline._log import end_offsets
from llmpulse.server._errors import json_response
from llmpulse.server._state import ServerState, server_state

_log = logging.getLogger("llmpulse.server")

router = APIRouter(tags=["health"])


@runtime_checkable
class _HasStats(Protocol):
    def stats(self) -> dict[str, Any]:
        """Figures to show in /health."""
        ...


def _log_info(state: ServerState) -> dict[str, Any]:
    log = state.log
    if log is None:
        return {"open": False}
    info: dict[str, Any] = {"open": True}
    try:
        info["end_offsets"] = {str(p): o for p, o in end_offsets(log).items()}
        if isinstance(log, _HasStats):
            info.update(log.stats())
    except Exception as exc:  # a health probe reports a broken log, it does not fail on it
        info["error"] = f"{type(exc).__name__}: {exc}"
    return info


def _counters(state: ServerState) -> dict[str, Any]:
    if state.store is None:
        return {}
    try:
        return dict(state.store.counters())
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _retention(state: ServerState) -> dict[str, Any]:
    policy = state.settings.retention
    kafka = bool(state.settings.broker_url)
    tables = ("calls", "windows", "rollups_hour", "rollups_day")
    info: dict[str, Any] = {
        "policy": policy.as_dict(),
        "kept_days": {t: None if (s := policy.retention_s(t)) is None else s / 86400 for t in tables},
        "log_kept_s": None if kafka else policy.log_s,
    }
    if kafka:
        info["log_kept_by"] = "the Kafka topics' retention.ms (the broker deletes old records)"
    info["pruner"] = state.pruner.stats() if state.pruner is not None else None
    return info


def collect(state: ServerState) -> tuple[bool, dict[str, Any]]:
    """(healthy, body) of ``/health``. Blocks briefly (reads the log and the store)."""
    runner = state.runner
    processor: dict[str, Any] | None = None
    healthy = state.log is not None and state.store is not None
    if runner is not None:
        try:
            processor = runner.stats()
        except Exception as exc:
            processor = {"alive": runner.alive, "error": f"{type(exc).__name__}: {exc}"}
        healthy = healthy and runner.alive
    elif state.settings.run_processor:
        healthy = False
    # a processor that is retrying after a failed step is degraded but alive: ingest still works
    failing = bool(processor and processor.get("failing"))
    body = {
        "status": "ok" if healthy and not failing else "degraded",
        "uptime_s": round(time.time() - state.started_at, 3),
        "log": _log_info(state),
        "processor": processor,
        "counters": _counters(state),
        "retention": _retention(state),
        "alerts": state.alerts.health() if state.alerts is not None else None,
    }
    if state.group_lag is not None:
        body["workers"] = {
            "group": state.group_lag.group,
            "lag_events": state.group_lag.lag_events(),
            "error": state.group_lag.last_error,
        }
    return healthy, body


@router.get(
    "/health",
    summary="Liveness and figures of the log, the processor and the store",
    responses={503: {"description": "The processor thread died or the server is not ready"}},
)
async def health(request: Request) -> Response:
    """200 while healthy, 503 when the embedded processor died; the body has the figures either way."""
    state = server_state(request)
    healthy, body = await to_thread.run_sync(collect, state)
    if not healthy:
        _log.warning("health check failed: %s", body.get("processor"))
    return json_response(body, 200 if healthy else 503)


@router.get("/v1/stats", summary="Server-wide counters (orphan responses, duplicates, unknown costs, ...)")
async def stats(request: Request) -> Response:
    """The store's server-wide counters, the log's figures and the OTLP receiver's counters."""
    state = server_state(request)

    def gather() -> dict[str, Any]:
        """Read the counters and the log's figures (blocks)."""
        return {
            "counters": _counters(state),
            "log": _log_info(state),
            "otlp": state.otlp.snapshot(),
            "ingest": state.ingest.snapshot(),
        }

    return json_response(await to_thread.run_sync(gather))
