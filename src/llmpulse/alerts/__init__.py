"""Alerts evaluated on the stream: rules (thresholds, SLO burn rates, anomalies, budget runway),
their state, and notifications to webhooks, Slack and Alertmanager.

The server loads a rules file (``serve --alerts FILE``), evaluates every rule as windows commit and
on a timer, keeps each alert's state in the store (so a restart neither re-notifies nor forgets),
and sends one notification per transition through the exporters' delivery core.
"""

from __future__ import annotations

from llmpulse.alerts._engine import Evaluation, FigureSource, Verdict, step
from llmpulse.alerts._evaluator import Evaluator, PassResult, StoreSource
from llmpulse.alerts._model import (
    DEFAULT_BURN_WINDOWS,
    METRICS,
    SCOPE_ATTRIBUTES,
    AlertStatus,
    Anomaly,
    BurnWindow,
    Metric,
    Notification,
    Notifier,
    NotifierKind,
    Rule,
    Rules,
    Runway,
    Slo,
    Threshold,
)
from llmpulse.alerts._notify import Dispatcher, signature
from llmpulse.alerts._rules import load_rules, parse_duration, parse_rules

__all__ = [
    "DEFAULT_BURN_WINDOWS",
    "METRICS",
    "SCOPE_ATTRIBUTES",
    "AlertStatus",
    "Anomaly",
    "BurnWindow",
    "Dispatcher",
    "Evaluation",
    "Evaluator",
    "FigureSource",
    "Metric",
    "Notification",
    "Notifier",
    "NotifierKind",
    "PassResult",
    "Rule",
    "Rules",
    "Runway",
    "Slo",
    "StoreSource",
    "Threshold",
    "Verdict",
    "load_rules",
    "parse_duration",
    "parse_rules",
    "signature",
    "step",
]
