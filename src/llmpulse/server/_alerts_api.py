"""Alerts in the server: the evaluator's life with the app's, SIGHUP reloads of the rules file, and
``GET /v1/alerts/rules`` and ``GET /v1/alerts``.

The evaluator (`llmpulse.alerts.Evaluator`) starts with the server when a rules file is given
(``serve --alerts FILE``, ``LLMPULSE_ALERTS_FILE``), is woken by the in-process processor's commits
and runs a full pass every ``alerts_interval_s``; notifications go through a
`llmpulse.alerts.Dispatcher`. SIGHUP reads the file again: a valid file replaces the rules, an
invalid one is logged and counted (``/health``'s ``alerts.reload_errors``) and the rules in force
stay.

With API keys, both endpoints show only the key's tenant's rules and alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from llmpulse.alerts import Dispatcher, Evaluator, Rule, Rules, load_rules
from llmpulse.server._auth import scoped_tenant_or_all
from llmpulse.server._errors import ApiError, json_response
from llmpulse.server._state import ServerState, server_state

_log = logging.getLogger("llmpulse.server")

router = APIRouter(tags=["alerts"])


@dataclass(slots=True)
class AlertsRuntime:
    """The server's evaluator and dispatcher, and what its reloads did."""

    evaluator: Evaluator
    dispatcher: Dispatcher
    path: str | None
    reloads: int = 0
    reload_errors: int = 0
    last_reload_error: str | None = None
    loaded_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def reload(self) -> bool:
        """Read the rules file again; True when its rules are now in force. Blocks (reads the file)."""
        if self.path is None:
            return False
        try:
            rules = load_rules(self.path)
        except ValueError as exc:
            self.reload_errors += 1
            self.last_reload_error = str(exc)
            _log.error("alerts: the rules file was not reloaded, the rules in force stay: %s", exc)
            return False
        old, self.dispatcher = self.dispatcher, Dispatcher(rules.notifiers)
        self.evaluator.sink = self.dispatcher
        self.evaluator.reload(rules)
        old.close(10.0)  # what it still holds goes out to the notifiers it was for
        self.reloads += 1
        self.last_reload_error = None
        _log.info("alerts: %d rules reloaded from %s", len(rules.rules), self.path)
        return True

    def health(self) -> dict[str, Any]:
        """The ``alerts`` section of ``/health``."""
        ev = self.evaluator
        last = ev.last_pass
        return {
            "rules": len(ev.rules.rules),
            "leader": bool(last and last.leader),
            "passes": ev.passes,
            "pass_errors": ev.errors,
            "last_pass_ms": None if last is None else round(last.seconds * 1000, 3),
            "reloads": self.reloads,
            "reload_errors": self.reload_errors,
            "last_reload_error": self.last_reload_error,
            "notifiers": self.dispatcher.stats(),
        }


@contextlib.asynccontextmanager
async def alerts_runtime(state: ServerState) -> AsyncIterator[AlertsRuntime | None]:
    """Start the evaluator and dispatcher when the settings hold rules, stop them at the end (the
    evaluator first, then the dispatcher, which drains its queues for up to 10 s)."""
    settings = state.settings
    rules = settings.alerts
    if rules is None or state.store is None:
        yield None
        return
    dispatcher = Dispatcher(rules.notifiers)
    evaluator = Evaluator(
        state.store, rules, dispatcher, clock=state.clock, interval_s=settings.alerts_interval_s
    )
    runtime = AlertsRuntime(evaluator, dispatcher, settings.alerts_file, loaded_at=state.clock())
    evaluator.start()
    loop = asyncio.get_running_loop()
    hooked = False
    if settings.alerts_file is not None:
        try:
            loop.add_signal_handler(
                signal.SIGHUP, lambda: loop.create_task(to_thread.run_sync(runtime.reload))
            )
            hooked = True
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests), Windows
            _log.info("alerts: no SIGHUP handler here; reload through the runtime")
    try:
        yield runtime
    finally:
        if hooked:
            loop.remove_signal_handler(signal.SIGHUP)
        await to_thread.run_sync(evaluator.stop)
        await to_thread.run_sync(lambda: runtime.dispatcher.close(10.0))


def _rule_json(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": rule.name,
        "kind": rule.kind,
        "scope": {"tenant_id": rule.tenant_id, **dict(rule.scope)},
        "labels": dict(rule.labels),
        "annotations": dict(rule.annotations),
        "notify": list(rule.notify),
        "repeat_s": rule.repeat_s,
    }
    condition = getattr(rule, rule.kind)
    out[rule.kind] = _plain(condition)
    return out


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _time(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _runtime(request: Request) -> AlertsRuntime:
    runtime = getattr(server_state(request), "alerts", None)
    if runtime is None:
        raise ApiError(404, "no alert rules are loaded (serve --alerts FILE)")
    assert isinstance(runtime, AlertsRuntime)
    return runtime


def _rules_of(rules: Rules, tenant: str | None) -> list[Rule]:
    return [r for r in rules.rules if tenant is None or r.tenant_id == tenant]


TenantQuery = Annotated[str | None, Query(max_length=256, description="Only this tenant's (a key: its own).")]


@router.get("/v1/alerts/rules", summary="The alert rules in force")
async def get_rules(request: Request, tenant_id: TenantQuery = None) -> Response:
    """``{"rules": [...], "notifiers": [names], "loaded_at"}``: each rule with its scope, labels,
    condition (``threshold``, ``slo``, ``anomaly`` or ``runway``, durations in seconds) and
    notifiers. Secrets and URLs of notifiers are not shown."""
    runtime = _runtime(request)
    tenant = scoped_tenant_or_all(request, tenant_id)
    rules = runtime.evaluator.rules
    return json_response(
        {
            "rules": [_rule_json(r) for r in _rules_of(rules, tenant)],
            "notifiers": sorted(rules.notifiers),
            "loaded_at": _time(runtime.loaded_at),
        }
    )


@router.get("/v1/alerts", summary="Every alert's state and the recent transitions")
async def get_alerts(
    request: Request,
    tenant_id: TenantQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most transitions of the history.")] = 100,
) -> Response:
    """``{"alerts": [{"rule", "tenant_id", "kind", "status", "since", "fired_at", "notified_at",
    "value", "summary", "labels"}], "firing": N, "history": [{"rule", "tenant_id", "status", "at",
    "value", "summary"}]}``: one alert per rule in force (``inactive`` until first judged), history
    newest first."""
    runtime = _runtime(request)
    tenant = scoped_tenant_or_all(request, tenant_id)
    rules = _rules_of(runtime.evaluator.rules, tenant)
    states = await to_thread.run_sync(runtime.evaluator.states)
    history = await to_thread.run_sync(lambda: runtime.evaluator.store.alerts.history(tenant, limit))
    alerts = []
    for rule in rules:
        s = states.get(rule.name)
        alerts.append(
            {
                "rule": rule.name,
                "tenant_id": rule.tenant_id,
                "kind": rule.kind,
                "status": "inactive" if s is None else s.status,
                "since": None if s is None else _time(s.since),
                "fired_at": None if s is None else _time(s.fired_at),
                "notified_at": None if s is None else _time(s.notified_at),
                "value": None if s is None else s.value,
                "summary": None if s is None else s.summary,
                "labels": rule.alert_labels(),
            }
        )
    return json_response(
        {
            "alerts": alerts,
            "firing": sum(1 for a in alerts if a["status"] == "firing"),
            "history": [
                {
                    "rule": h.rule,
                    "tenant_id": h.tenant_id,
                    "status": h.status,
                    "at": _time(h.at),
                    "value": h.value,
                    "summary": h.summary,
                }
                for h in history
            ],
        }
    )
