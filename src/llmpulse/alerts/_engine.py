"""Rule evaluation (what the figures say) and the alert state machine (what to notify). Pure: the
figures come from a `FigureSource`, the time is an argument.

**Windows.** A rule's window of W seconds ending at `now` is the minute windows starting in the last
``ceil(W / 60)`` minutes, the current (partial) minute included, when the scope is made of window
keys only (tenant, route, model); for a scope naming call attributes (user, organisation, feature,
environment) it is the calls that started in ``(now − W, now]``.

**Conditions.**

- *threshold*: the metric over the window compared with ``above`` (strictly greater) or ``below``
  (strictly less); a metric without data (a p95 of no call, an error rate of no request) breaches
  nothing.
- *slo*: the SRE workbook's multi-window, multi-burn-rate alert. The burn rate over a window is its
  bad share of calls divided by the error budget ``1 − objective``; a pair (long, short, factor)
  breaches while both windows burn faster than ``factor``; the rule breaches while any pair does.
  ``ok_calls``: a call is bad when its status is an error or a timeout. ``latency_below_ms``: a call
  is good when it did not fail and its latency is under the value; the windows keep a latency
  histogram of all calls (1 % buckets), not of good ones, so the bad count is ``max(calls − calls
  faster than the value, errors)``: every slow call and every error counts, a fast error at most
  once. The value is the highest burn rate among
  the breaching pairs' long windows (else of the first pair's).
- *anomaly*: the metric over the window against the median of the same window at the same time on
  each of the previous days of the baseline; quiet while the window has fewer than
  ``min_requests`` calls, or while fewer than half of those days had any call; breaches when the
  value is above ``factor`` × the median.
- *runway*: the spend of the calendar period so far against its amount; the level is the highest
  fraction of ``at`` reached; with ``projection``, it also breaches when the period's average rate
  so far runs the amount out before the period ends (the projected time is in the details).

**States.** inactive → pending (breaching, waiting ``for``) → firing (notified) → resolved (notified)
→ pending … A pending alert that stops breaching goes back to inactive without a word. A firing one
is notified again every ``repeat`` (0: never) and, for a runway, whenever it reaches a higher
level.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from llmpulse.alerts._model import WINDOW_SCOPE, Metric, Notification, Rule
from llmpulse.store import AlertState, WindowDelta, period_bounds, quantile, value_of

MINUTE = 60.0
#: Ranges that ended this long before now are kept between evaluations (`Evaluation`'s `history`),
#: at most `MAX_CACHED` of them.
HISTORY_AGE_S: Final = 3600.0
MAX_CACHED: Final = 200_000


class FigureSource(Protocol):
    """Where rules read their figures from (the store; a test's own)."""

    def figures(
        self, tenant_id: str, filters: Mapping[str, str], start: float, end: float, *, histograms: bool
    ) -> WindowDelta:
        """The figures of the tenant's calls matching `filters` over ``[start, end)`` (epoch
        seconds): minute windows starting there when the filters name only window keys (route,
        model), else calls started there; latency and TTFT histograms only when `histograms`."""
        ...

    def budget_amount(self, budget_id: str) -> float | None:
        """A shared budget's amount (USD), None when there is no such budget."""
        ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one evaluation found: whether the rule breaches, the value that decided it, a human line,
    the runway level reached, and what else is worth showing."""

    breached: bool
    value: float | None
    summary: str
    level: float | None = None
    details: Mapping[str, object] = field(default_factory=dict)


#: The metrics read from histograms (the others are counts and sums, added up in SQL).
HISTOGRAM_METRICS: Final = frozenset({"p95_latency_ms", "p95_ttft_ms"})


def metric_value(metric: Metric, d: WindowDelta) -> float | None:
    """A metric of a set of calls; None where it has no data."""
    if metric == "cost_usd":
        return d.cost_usd
    if metric == "requests":
        return float(d.requests)
    if metric == "errors":
        return float(d.errors)
    if metric == "error_rate":
        return None if d.requests <= 0 else d.errors / d.requests
    if metric == "tokens":
        return float(d.prompt_tokens + d.completion_tokens)
    if metric == "p95_latency_ms":
        return quantile(d.latency_hist, 0.95)
    return quantile(d.ttft_hist, 0.95)


def window_bounds(rule: Rule, now: float, seconds: float) -> tuple[float, float]:
    """``[start, end)`` of a rule's window of `seconds` ending at `now` (see the module's doc)."""
    if set(rule.filters) <= WINDOW_SCOPE:
        current = math.floor(now / MINUTE) * MINUTE
        minutes = max(1, math.ceil(seconds / MINUTE))
        return current - (minutes - 1) * MINUTE, current + MINUTE
    return now - seconds, now + 1e-6


def _fmt(value: float | None) -> str:
    return "no data" if value is None else f"{value:.6g}"


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


class Evaluation:
    """Evaluates rules against a source at one instant, reading each (tenant, scope, range) once."""

    def __init__(
        self, source: FigureSource, now: float, *, history: dict[Any, WindowDelta] | None = None
    ) -> None:
        """`now`: the instant every rule of this evaluation is judged at (epoch seconds); `history`:
        figures of ranges that ended a day or more before, kept between evaluations (anomaly
        baselines: the past changes only by late events)."""
        self.source = source
        self.now = now
        self._cache: dict[Any, WindowDelta] = {}
        self._history = history if history is not None else {}

    def figures(self, rule: Rule, start: float, end: float, *, histograms: bool = False) -> WindowDelta:
        """The rule's scope over ``[start, end)``, read once per evaluation (with histograms only
        when asked; figures with them serve a reader that needs none)."""
        key = (rule.tenant_id, tuple(sorted(rule.filters.items())), start, end)
        cache = self._history if end <= self.now - HISTORY_AGE_S else self._cache
        found = cache.get((*key, True))
        if found is None and not histograms:
            found = cache.get((*key, False))
        if found is None:
            found = self.source.figures(rule.tenant_id, rule.filters, start, end, histograms=histograms)
            if len(cache) >= MAX_CACHED and cache is self._history:
                cache.clear()
            cache[(*key, histograms)] = found
        return found

    def window(
        self, rule: Rule, seconds: float, *, ago: float = 0.0, histograms: bool = False
    ) -> WindowDelta:
        """The rule's figures over its window of `seconds` ending `ago` seconds before now."""
        start, end = window_bounds(rule, self.now - ago, seconds)
        return self.figures(rule, start, end, histograms=histograms)

    def verdict(self, rule: Rule) -> Verdict:
        """Whether `rule` breaches now, and why."""
        if rule.threshold is not None:
            return self._threshold(rule)
        if rule.slo is not None:
            return self._slo(rule)
        if rule.anomaly is not None:
            return self._anomaly(rule)
        return self._runway(rule)

    def _threshold(self, rule: Rule) -> Verdict:
        t = rule.threshold
        assert t is not None
        value = metric_value(
            t.metric, self.window(rule, t.window_s, histograms=t.metric in HISTOGRAM_METRICS)
        )
        if value is None:
            return Verdict(False, None, f"{t.metric} over {t.window_s:g} s: no data")
        if t.above is not None:
            breached, op, limit = value > t.above, ">", t.above
        else:
            assert t.below is not None
            breached, op, limit = value < t.below, "<", t.below
        text = (
            f"{t.metric} over {t.window_s:g} s is {_fmt(value)} ({'' if breached else 'not '}{op} {limit:g})"
        )
        return Verdict(breached, value, text, details={"threshold": limit, "window_s": t.window_s})

    def _bad_share(self, rule: Rule, seconds: float) -> tuple[float | None, int]:
        slo = rule.slo
        assert slo is not None
        d = self.window(rule, seconds, histograms=slo.good == "latency_below_ms")
        if d.requests <= 0:
            return None, 0
        if slo.good == "ok_calls":
            bad = d.errors
        else:
            assert slo.value is not None
            fast = sum(n for b, n in d.latency_hist.items() if value_of(b) < slo.value)
            bad = max(d.requests - fast, d.errors, 0)
        return bad / d.requests, d.requests

    def _slo(self, rule: Rule) -> Verdict:
        slo = rule.slo
        assert slo is not None
        budget = 1.0 - slo.objective
        pairs: list[dict[str, object]] = []
        firing: list[float] = []
        first: float | None = None
        for w in slo.windows:
            long_share, long_n = self._bad_share(rule, w.long_s)
            short_share, _ = self._bad_share(rule, w.short_s)
            long_burn = None if long_share is None else long_share / budget
            short_burn = None if short_share is None else short_share / budget
            hit = (
                long_burn is not None
                and short_burn is not None
                and long_burn > w.factor
                and short_burn > w.factor
            )
            pairs.append(
                {"long_s": w.long_s, "short_s": w.short_s, "factor": w.factor, "long_burn": long_burn,
                 "short_burn": short_burn, "long_requests": long_n, "breached": hit}
            )  # fmt: skip
            if first is None:
                first = long_burn
            if hit and long_burn is not None:
                firing.append(long_burn)
        value = max(firing) if firing else first
        text = f"error budget of a {slo.objective:g} objective burning {_fmt(value)}x" + (
            " (above its burn-rate threshold)" if firing else ""
        )
        return Verdict(bool(firing), value, text, details={"objective": slo.objective, "windows": pairs})

    def _anomaly(self, rule: Rule) -> Verdict:
        a = rule.anomaly
        assert a is not None
        hist = a.metric in HISTOGRAM_METRICS
        current = self.window(rule, a.window_s, histograms=hist)
        value = metric_value(a.metric, current)
        days = round(a.baseline_s / 86400)
        history: list[float] = []
        for day in range(1, days + 1):
            past = self.window(rule, a.window_s, ago=day * 86400.0, histograms=hist)
            v = metric_value(a.metric, past)
            if past.requests > 0 and v is not None:
                history.append(v)
        details: dict[str, object] = {
            "baseline_days": days,
            "days_with_data": len(history),
            "factor": a.factor,
        }
        if current.requests < a.min_requests:
            return Verdict(
                False, value, f"{current.requests} calls, fewer than {a.min_requests}: quiet", details=details
            )
        if value is None or len(history) * 2 < days:
            return Verdict(
                False,
                value,
                f"{a.metric}: not enough history ({len(history)} of {days} days)",
                details=details,
            )
        median = statistics.median(history)
        details["baseline"] = median
        breached = value > a.factor * median
        where = "above" if breached else "within"
        text = (
            f"{a.metric} over {a.window_s:g} s is {_fmt(value)}, "
            f"{where} {a.factor:g}x its median {_fmt(median)}"
        )
        return Verdict(breached, value, text, details=details)

    def _runway(self, rule: Rule) -> Verdict:
        r = rule.runway
        assert r is not None
        amount = r.amount_usd if r.budget_id is None else self.source.budget_amount(r.budget_id)
        if amount is None or amount <= 0:
            return Verdict(False, None, f"budget {r.budget_id!r} not found: nothing to compare")
        start, end = period_bounds(r.period, r.timezone, self.now)
        assert end is not None
        spent = self.figures(rule, start, self.now + 1e-6).cost_usd
        fraction = spent / amount
        reached = [f for f in r.at if fraction >= f]
        level = max(reached) if reached else None
        details: dict[str, object] = {
            "amount_usd": amount,
            "fraction": fraction,
            "period_start": _rfc3339(start),
            "period_end": _rfc3339(end),
        }
        projected = None
        elapsed = self.now - start
        if r.projection and spent > 0 and elapsed > 0 and spent < amount:
            at = self.now + (amount - spent) / (spent / elapsed)
            if at < end:
                projected = at
                details["projected_exhaustion_at"] = _rfc3339(at)
        breached = level is not None or projected is not None
        text = f"spent ${spent:.2f} of ${amount:.2f} ({fraction:.0%}) this {r.period}"
        if projected is not None:
            text += f"; at this rate it runs out at {_rfc3339(projected)}"
        return Verdict(breached, spent, text, level=level, details=details)


def step(
    rule: Rule, state: AlertState | None, verdict: Verdict, now: float
) -> tuple[AlertState, Notification | None]:
    """The alert's next state after `verdict`, and the notification to send (None: nothing to say)."""
    prior = state or AlertState(rule=rule.name, tenant_id=rule.tenant_id, status="inactive", since=now)
    status = prior.status
    hold = rule.threshold.for_s if rule.threshold is not None else 0.0
    base = replace(prior, tenant_id=rule.tenant_id, value=verdict.value, summary=verdict.summary)
    if verdict.breached:
        if status in ("inactive", "resolved"):
            if hold > 0:
                return replace(base, status="pending", since=now, level=None), None
            status = "pending"
            prior = replace(prior, since=now)
        if status == "pending":
            if now - prior.since < hold:
                return replace(base, status="pending"), None
            fired = replace(
                base, status="firing", since=now, fired_at=now, notified_at=now, level=verdict.level
            )
            return fired, _notification(rule, fired, verdict, "firing", now)
        # firing: notify again on a higher runway level, or every `repeat`
        higher = verdict.level is not None and (prior.level is None or verdict.level > prior.level)
        due = rule.repeat_s > 0 and prior.notified_at is not None and now - prior.notified_at >= rule.repeat_s
        if higher or due:
            again = replace(
                base, notified_at=now, level=max(verdict.level or 0.0, prior.level or 0.0) or None
            )
            return again, _notification(rule, again, verdict, "firing", now)
        return replace(base, level=prior.level), None
    if status == "firing":
        resolved = replace(base, status="resolved", since=now, notified_at=now, level=None)
        return resolved, _notification(rule, resolved, verdict, "resolved", now)
    if status == "pending":
        return replace(base, status="inactive", since=now, level=None), None
    return replace(base, level=None), None


def _notification(rule: Rule, state: AlertState, verdict: Verdict, status: str, now: float) -> Notification:
    starts = state.fired_at if state.fired_at is not None else now
    return Notification(
        rule=rule.name,
        tenant_id=rule.tenant_id,
        status="firing" if status == "firing" else "resolved",
        labels=rule.alert_labels(),
        annotations=dict(rule.annotations),
        value=verdict.value,
        starts_at=starts,
        ends_at=now if status == "resolved" else None,
        summary=f"{rule.name}: {verdict.summary}",
        details={
            "kind": rule.kind,
            **verdict.details,
            **({"level": verdict.level} if verdict.level is not None else {}),
        },
        notify=rule.notify,
    )
