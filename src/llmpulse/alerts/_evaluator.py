"""The evaluator: a background thread that judges every rule as windows commit and on a timer, keeps
alert states in the store and hands notifications to a dispatcher.

**When.** `poke(tenants)` (the processor's commit hook, in the server that runs the processor) wakes
the thread for those tenants' rules, at most every `min_gap_s`; every `interval_s` it judges every
rule, so an alert resolves when the traffic behind it stops and alerts fed by other processes'
commits (Kafka mode's ``llmpulse process`` workers) fire within `interval_s`.

**Who.** Exactly one evaluator acts at a time across every server on one store: each pass first takes
or renews the store's lease ``alerts`` (`AlertStore.try_lease`) for `lease_ttl_s`; a server that does
not hold it skips the pass. A server that stops releases it; one that dies loses it when it expires,
and the next server to pass takes over with the states the store holds, so nothing is notified
twice and nothing is forgotten.

**Alertmanager.** Alertmanager resolves an alert it has not heard of for its ``resolve_timeout``
(5 minutes by default), so, as Prometheus does, a firing alert is sent again to the Alertmanager
notifiers of its rule every `ALERTMANAGER_RESEND_S` (these resends are not transitions: no history
row, no webhook).

**Order.** A pass writes the new states and the transitions to the store first, then submits the
notifications: a crash between the two loses those notifications rather than sending them twice.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from llmpulse.alerts._engine import Evaluation, FigureSource, step
from llmpulse.alerts._model import WINDOW_SCOPE, Notification, Rule, Rules
from llmpulse.store import (
    AlertState,
    AlertTransition,
    BudgetNotFound,
    CallFilter,
    Store,
    StoreError,
    WindowDelta,
    call_delta,
)

_log = logging.getLogger("llmpulse.alerts")

LEASE_NAME = "alerts"
#: How often a firing alert is sent again to Alertmanager (Prometheus' default resend delay).
ALERTMANAGER_RESEND_S = 60.0


class Sink(Protocol):
    """Where notifications go (`llmpulse.alerts._notify`'s dispatcher): never blocks, never raises."""

    def submit(self, notification: Notification) -> None:
        """Queue `notification` for its notifiers."""
        ...


class StoreSource:
    """Figures from the store: minute windows and rollups (`Store.summary`) for scopes of window keys,
    call records (`call_delta`) for scopes naming call attributes."""

    #: How long a tenant's rollup progress is reused (it only grows, and an older value still reads
    #: exact figures: minutes instead of a just-rolled hour).
    ROLLED_TTL_S = 5.0

    def __init__(self, store: Store) -> None:
        """Read from `store`. Does not block."""
        self.store = store
        self._rolled: dict[str, tuple[float, int]] = {}

    def _rolled_through(self, tenant_id: str) -> int:
        now = time.monotonic()
        found = self._rolled.get(tenant_id)
        if found is None or now - found[0] > self.ROLLED_TTL_S:
            found = self._rolled[tenant_id] = (now, self.store.rolled_through(tenant_id))
        return found[1]

    def figures(
        self, tenant_id: str, filters: Mapping[str, str], start: float, end: float, *, histograms: bool
    ) -> WindowDelta:
        """See `FigureSource.figures`. Blocks."""
        lo = datetime.fromtimestamp(start, UTC)
        hi = datetime.fromtimestamp(end, UTC)
        scope = filters
        if set(scope) <= WINDOW_SCOPE:
            route, model = scope.get("route"), scope.get("model")
            if not histograms:
                rolled = self._rolled_through(tenant_id)
                return self.store.sums(tenant_id, start=lo, end=hi, route=route, model=model, rolled=rolled)
            rows = self.store.summary(tenant_id, start=lo, end=hi, route=route, model=model)
            return rows[0].delta if rows else WindowDelta()
        flt = CallFilter(
            tenant_id,
            start=lo,
            end=hi,
            route=scope.get("route"),
            model=scope.get("model"),
            user_id=scope.get("user_id"),
            org_id=scope.get("org_id"),
            feature=scope.get("feature"),
            environment=scope.get("environment"),
        )
        return call_delta(self.store, flt, histograms=histograms)

    def budget_amount(self, budget_id: str) -> float | None:
        """See `FigureSource.budget_amount`. Blocks."""
        try:
            return self.store.budgets.get(budget_id, time.time()).spec.amount_usd
        except BudgetNotFound:
            return None


@dataclass(frozen=True, slots=True)
class PassResult:
    """What one pass did: whether it held the lease, the rules judged, the notifications sent, the
    rules whose evaluation failed, and how long it took."""

    leader: bool
    evaluated: int
    notifications: tuple[Notification, ...]
    failed: tuple[str, ...]
    seconds: float


def evaluation_rules(rules: Rules, tenants: set[str] | None) -> list[Rule]:
    """The rules a pass judges: all, or only `tenants`' ones."""
    return [r for r in rules.rules if tenants is None or r.tenant_id in tenants]


class Evaluator:
    """Judges rules and keeps their alerts. `run_once` is one pass (tests call it with their clock);
    `start` runs passes on a thread. Thread-safe."""

    def __init__(
        self,
        store: Store,
        rules: Rules,
        sink: Sink,
        *,
        clock: Callable[[], float] = time.time,
        interval_s: float = 10.0,
        min_gap_s: float = 0.25,
        lease_ttl_s: float = 30.0,
        holder: str | None = None,
        source: FigureSource | None = None,
    ) -> None:
        """Evaluate `rules` on `store`'s figures (or `source`'s), notifying through `sink`."""
        if interval_s <= 0 or min_gap_s < 0 or lease_ttl_s <= interval_s:
            raise ValueError("need interval_s > 0, min_gap_s >= 0 and lease_ttl_s > interval_s")
        self.store = store
        self.sink = sink
        self.clock = clock
        self.interval_s = interval_s
        self.min_gap_s = min_gap_s
        self.lease_ttl_s = lease_ttl_s
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.source = source if source is not None else StoreSource(store)
        self._rules = rules
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._poked: set[str] = set()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._states: dict[str, AlertState] | None = None
        self._leader = False
        self._resent: dict[str, float] = {}
        self._history: dict[Any, WindowDelta] = {}
        self.passes = 0
        self.errors = 0
        self.last_pass: PassResult | None = None

    # -- rules ------------------------------------------------------------------------------------

    @property
    def rules(self) -> Rules:
        """The rules in force."""
        return self._rules

    def reload(self, rules: Rules) -> None:
        """Put `rules` in force from the next pass (a SIGHUP); states of rules kept stay, those of
        rules removed are forgotten at the next pass."""
        with self._lock:
            self._rules = rules
            self._states = None  # re-read, then forget the removed rules' states
            self._wake.notify()

    # -- passes -----------------------------------------------------------------------------------

    def poke(self, tenants: Iterable[str]) -> None:
        """Windows of `tenants` were committed: judge their rules soon. Does not block."""
        with self._lock:
            before = len(self._poked)
            self._poked.update(tenants)
            if len(self._poked) != before:
                self._wake.notify()

    def run_once(self, tenants: Iterable[str] | None = None) -> PassResult:
        """One pass over every rule (only `tenants`' when given), at the clock's now. Blocks."""
        started = time.perf_counter()
        now = self.clock()
        rules = self._rules
        if not self.store.alerts.try_lease(LEASE_NAME, self.holder, now, self.lease_ttl_s):
            if self._leader:
                _log.info("alerts: another server evaluates the rules now")
            self._leader = False
            self._states = None  # the other one moves them on: read them again when leading again
            result = PassResult(False, 0, (), (), time.perf_counter() - started)
            self.last_pass = result
            return result
        if not self._leader:
            _log.info("alerts: this server evaluates the rules (%s)", self.holder)
        self._leader = True
        if self._states is None:
            names = [r.name for r in rules.rules]
            forgotten = self.store.alerts.forget(names)
            if forgotten:
                _log.info("alerts: forgot the state of %d rules no longer defined", forgotten)
            self._states = self.store.alerts.states()
        wanted = None if tenants is None else set(tenants)
        evaluation = Evaluation(self.source, now, history=self._history)
        changed: list[AlertState] = []
        transitions: list[AlertTransition] = []
        notes: list[Notification] = []
        failed: list[str] = []
        judged = 0
        for rule in evaluation_rules(rules, wanted):
            try:
                verdict = evaluation.verdict(rule)
            except (StoreError, ValueError) as exc:
                failed.append(rule.name)
                _log.warning("alerts: rule %r could not be evaluated: %s", rule.name, exc)
                continue
            judged += 1
            before = self._states.get(rule.name)
            state, note = step(rule, before, verdict, now)
            if state != before:
                changed.append(state)
            if note is not None:
                notes.append(note)
                transitions.append(
                    AlertTransition(rule.name, rule.tenant_id, note.status, now, note.value, note.summary)
                )
        if changed or transitions:
            self.store.alerts.save(changed, transitions, now)  # before notifying: never twice
            for s in changed:
                self._states[s.rule] = s
        for note in notes:
            self.sink.submit(note)
        for note in self._resends(rules, evaluation_rules(rules, wanted), notes, now):
            self.sink.submit(note)
        self.passes += 1
        result = PassResult(True, judged, tuple(notes), tuple(failed), time.perf_counter() - started)
        self.last_pass = result
        return result

    def _resends(
        self, rules: Rules, judged: list[Rule], sent: list[Notification], now: float
    ) -> list[Notification]:
        """Firing alerts to send again to their rules' Alertmanager notifiers."""
        assert self._states is not None
        for note in sent:
            self._resent[note.rule] = now
        out: list[Notification] = []
        for rule in judged:
            managers = tuple(
                n for n in rule.notify if n in rules.notifiers and rules.notifiers[n].kind == "alertmanager"
            )
            state = self._states.get(rule.name)
            if not managers or state is None or state.status != "firing":
                continue
            last = self._resent.get(rule.name, state.notified_at or now)
            if now - last < ALERTMANAGER_RESEND_S:
                continue
            self._resent[rule.name] = now
            out.append(
                Notification(
                    rule=rule.name,
                    tenant_id=rule.tenant_id,
                    status="firing",
                    labels=rule.alert_labels(),
                    annotations=dict(rule.annotations),
                    value=state.value,
                    starts_at=state.fired_at if state.fired_at is not None else state.since,
                    ends_at=None,
                    summary=f"{rule.name}: {state.summary or ''}",
                    details={"kind": rule.kind, "resend": True},
                    notify=managers,
                )
            )
        return out

    def states(self) -> dict[str, AlertState]:
        """The states as this evaluator last saw them (read from the store when it holds none)."""
        states = self._states
        return dict(states) if states is not None else self.store.alerts.states()

    # -- the thread -------------------------------------------------------------------------------

    def start(self) -> None:
        """Run passes on a daemon thread until `stop`. Does not block."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="llmpulse-alerts", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread after its pass under way, and give up the lease. Blocks up to `timeout`."""
        with self._lock:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._leader:
            try:
                self.store.alerts.release_lease(LEASE_NAME, self.holder)
            except StoreError as exc:
                _log.warning("alerts: could not release the lease: %s", exc)
            self._leader = False

    def _run(self) -> None:
        next_full = 0.0
        while True:
            with self._lock:
                while not self._stop and not self._poked and time.monotonic() < next_full:
                    self._wake.wait(max(0.0, next_full - time.monotonic()))
                if self._stop:
                    return
                full = time.monotonic() >= next_full
                tenants = None if full else set(self._poked)
                self._poked.clear()
            try:
                self.run_once(tenants)
            except Exception:  # a pass must never kill the thread: count, log, go on
                self.errors += 1
                _log.exception("alerts: a pass failed")
            if full:
                next_full = time.monotonic() + self.interval_s
            time.sleep(self.min_gap_s)
