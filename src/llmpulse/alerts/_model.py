"""The alerting model: rules, notifiers, alert states and the notifications they produce.

Plain frozen dataclasses, validated where they are built (`llmpulse.alerts._rules` parses the rules
file into them). Durations are seconds; times are epoch seconds (UTC).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

#: What a threshold or anomaly rule measures over its window.
Metric = Literal["cost_usd", "requests", "errors", "error_rate", "p95_latency_ms", "p95_ttft_ms", "tokens"]
METRICS: Final[tuple[Metric, ...]] = (
    "cost_usd",
    "requests",
    "errors",
    "error_rate",
    "p95_latency_ms",
    "p95_ttft_ms",
    "tokens",
)
#: The attributes a rule's scope may name besides its tenant. ``route`` and ``model`` are the
#: windows' own keys; the others are read from call records.
SCOPE_ATTRIBUTES: Final = ("route", "model", "user_id", "org_id", "feature", "environment")
WINDOW_SCOPE: Final = frozenset({"route", "model"})

NotifierKind = Literal["webhook", "slack", "alertmanager"]
AlertStatus = Literal["inactive", "pending", "firing", "resolved"]


@dataclass(frozen=True, slots=True)
class Notifier:
    """Where notifications go: a generic JSON webhook (signed with HMAC-SHA256 when `secret` is set,
    header ``X-Llmpulse-Signature: sha256=<hex>``), a Slack-compatible incoming webhook, or an
    Alertmanager (v2 API, ``POST {url}/api/v2/alerts``)."""

    name: str
    kind: NotifierKind
    url: str
    secret: str | None = None
    timeout_s: float = 10.0
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Threshold:
    """`metric` over the last `window_s` compared with `above` (or `below`), held `for_s` before it
    fires."""

    metric: Metric
    window_s: float
    above: float | None = None
    below: float | None = None
    for_s: float = 0.0


@dataclass(frozen=True, slots=True)
class BurnWindow:
    """One pair of the multi-window, multi-burn-rate policy: the alert fires while the error budget
    burns faster than `factor` over both `long_s` and `short_s`."""

    long_s: float
    short_s: float
    factor: float


#: The SRE workbook's default policy for a page (2 % of a 30-day budget in 1 h, 5 % in 6 h).
DEFAULT_BURN_WINDOWS: Final = (BurnWindow(3600.0, 300.0, 14.4), BurnWindow(21600.0, 1800.0, 6.0))


@dataclass(frozen=True, slots=True)
class Slo:
    """An objective: the share of good calls, a call being good when it is ``ok_calls`` (status ok)
    or ``latency_below_ms`` (latency under `value` ms, errors being bad too)."""

    objective: float
    good: Literal["ok_calls", "latency_below_ms"] = "ok_calls"
    value: float | None = None
    windows: tuple[BurnWindow, ...] = DEFAULT_BURN_WINDOWS


@dataclass(frozen=True, slots=True)
class Anomaly:
    """`metric` over the last `window_s` above `factor` × the median of the same metric over the
    same stretch of time at the same time of day on each of the previous `baseline_s / 86400`
    days; quiet while the window holds fewer than `min_requests` calls."""

    metric: Metric
    window_s: float
    baseline_s: float
    factor: float
    min_requests: int = 0


@dataclass(frozen=True, slots=True)
class Runway:
    """Spend over a calendar period (``day``, ``week``, ``month`` in `timezone`) against
    `amount_usd` (or a shared budget's amount, `budget_id`): fires at each fraction of `at` crossed,
    and when the current rate projects exhaustion before the period ends."""

    period: Literal["day", "week", "month"]
    amount_usd: float | None = None
    budget_id: str | None = None
    timezone: str = "UTC"
    at: tuple[float, ...] = (0.5, 0.8, 1.0)
    projection: bool = True


@dataclass(frozen=True, slots=True)
class Rule:
    """One alert rule. `scope` may hold ``tenant_id`` (the same as `tenant_id`) and any of
    `SCOPE_ATTRIBUTES` (`filters` is it without the tenant); `labels` are added
    to the alert's (with ``alertname`` = `name` and the scope's fields); exactly one of `threshold`,
    `slo`, `anomaly`, `runway` is set; `notify` names notifiers; `repeat_s` is how often a firing
    alert is notified again (0: never)."""

    name: str
    tenant_id: str
    scope: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    threshold: Threshold | None = None
    slo: Slo | None = None
    anomaly: Anomaly | None = None
    runway: Runway | None = None
    notify: tuple[str, ...] = ()
    repeat_s: float = 4 * 3600.0

    @property
    def filters(self) -> dict[str, str]:
        """The scope's attributes besides the tenant (``route``, ``model``, ``user_id`` ...)."""
        return {k: v for k, v in self.scope.items() if k != "tenant_id"}

    @property
    def kind(self) -> str:
        """``threshold``, ``slo``, ``anomaly`` or ``runway``."""
        for name in ("threshold", "slo", "anomaly", "runway"):
            if getattr(self, name) is not None:
                return name
        raise AssertionError(f"rule {self.name!r} has no condition")

    def alert_labels(self) -> dict[str, str]:
        """The labels every notification of this rule carries."""
        return {
            **dict(self.labels),
            "alertname": self.name,
            "tenant_id": self.tenant_id,
            **{k: self.scope[k] for k in SCOPE_ATTRIBUTES if k in self.scope},
        }


@dataclass(frozen=True, slots=True)
class Rules:
    """A rules file: its notifiers (by name) and rules (names unique)."""

    notifiers: Mapping[str, Notifier] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True, slots=True)
class Notification:
    """One transition (or repeat) of an alert, to send to each of `rule.notify`.

    `status` is ``firing`` or ``resolved``; `value` the measured value that decided it (the burn
    rate for an SLO, the spend for a runway); `starts_at` when it started firing, `ends_at` when it
    resolved (None while firing); `summary` one human line; `details` what else the evaluation
    knew (threshold, baseline, projected exhaustion ...).
    """

    rule: str
    tenant_id: str
    status: Literal["firing", "resolved"]
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    value: float | None
    starts_at: float
    ends_at: float | None
    summary: str
    details: Mapping[str, object] = field(default_factory=dict)
    notify: tuple[str, ...] = ()
