"""The alert rules file: the issue's example parses to the model, every invalid field is refused with
an error naming the file, the rule (or notifier) and the field, and durations."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import pytest

from llmpulse.alerts import (
    DEFAULT_BURN_WINDOWS,
    Anomaly,
    BurnWindow,
    Notifier,
    Rule,
    Rules,
    Runway,
    Slo,
    Threshold,
    _rules,
    load_rules,
    parse_duration,
    parse_rules,
)

WHERE = "alerts file 'x.yaml'"

EXAMPLE = """\
notifiers:
  - {name: am, type: alertmanager, url: "http://127.0.0.1:9093"}
  - {name: hook, type: webhook, url: "https://ops.example/hooks/llm", secret: "s3cret"}
  - {name: chat, type: slack, url: "https://hooks.slack.example/T0/B0/X"}
rules:
  - name: cost-spike
    scope: {tenant_id: acme}                 # tenant_id required
    labels: {severity: page}
    annotations: {runbook: "https://ops.example/runbooks/cost"}
    threshold: {metric: cost_usd, window: 5m, above: 20.0, for: 0s}
    notify: [am, hook]
    repeat: 4h
  - name: availability
    scope: {tenant_id: acme, route: chat}
    slo: {objective: 0.99, good: ok_calls}
    notify: [am]
  - name: cost-anomaly
    scope: {tenant_id: acme}
    anomaly: {metric: cost_usd, window: 1h, baseline: 7d, factor: 3, min_requests: 50}
    notify: [chat]
  - name: month-runway
    scope: {tenant_id: acme}
    runway: {period: month, amount_usd: 500, timezone: UTC, at: [0.5, 0.8, 1.0], projection: true}
    notify: [hook]
"""


def test_the_issue_example_parses_to_the_model(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(EXAMPLE, encoding="utf-8")
    rules = load_rules(path)
    assert rules == Rules(
        notifiers={
            "am": Notifier(name="am", kind="alertmanager", url="http://127.0.0.1:9093"),
            "hook": Notifier(
                name="hook", kind="webhook", url="https://ops.example/hooks/llm", secret="s3cret"
            ),
            "chat": Notifier(name="chat", kind="slack", url="https://hooks.slack.example/T0/B0/X"),
        },
        rules=(
            Rule(
                name="cost-spike",
                tenant_id="acme",
                scope={"tenant_id": "acme"},
                labels={"severity": "page"},
                annotations={"runbook": "https://ops.example/runbooks/cost"},
                threshold=Threshold(metric="cost_usd", window_s=300.0, above=20.0, for_s=0.0),
                notify=("am", "hook"),
                repeat_s=14400.0,
            ),
            Rule(
                name="availability",
                tenant_id="acme",
                scope={"tenant_id": "acme", "route": "chat"},
                slo=Slo(objective=0.99, good="ok_calls", windows=DEFAULT_BURN_WINDOWS),
                notify=("am",),
            ),
            Rule(
                name="cost-anomaly",
                tenant_id="acme",
                scope={"tenant_id": "acme"},
                anomaly=Anomaly(
                    metric="cost_usd", window_s=3600.0, baseline_s=7 * 86400.0, factor=3.0, min_requests=50
                ),
                notify=("chat",),
            ),
            Rule(
                name="month-runway",
                tenant_id="acme",
                scope={"tenant_id": "acme"},
                runway=Runway(period="month", amount_usd=500.0, timezone="UTC", at=(0.5, 0.8, 1.0)),
                notify=("hook",),
            ),
        ),
    )
    assert list(rules.notifiers) == ["am", "hook", "chat"]
    assert [r.kind for r in rules.rules] == ["threshold", "slo", "anomaly", "runway"]
    assert rules.rules[1].alert_labels() == {
        "alertname": "availability",
        "tenant_id": "acme",
        "route": "chat",
    }


def test_the_optional_forms_parse() -> None:
    doc = {
        "notifiers": [
            {
                "name": "am",
                "type": "alertmanager",
                "url": "https://am.example:9443/base",
                "timeout": "30s",
                "headers": {"Authorization": "Bearer t"},
            }
        ],
        "rules": [
            {
                "name": "slow.chat:v2",
                "scope": {"tenant_id": "acme", "model": "gpt-4o", "user_id": "u1", "environment": "prod"},
                "threshold": {"metric": "p95_latency_ms", "window": "1h30m", "below": 5, "for": 90},
                "repeat": "0s",
            },
            {
                "name": "latency-slo",
                "scope": {"tenant_id": "acme"},
                "slo": {
                    "objective": 0.95,
                    "good": "latency_below_ms",
                    "value": 2000,
                    "windows": [{"long": "2h", "short": "10m", "factor": 10}],
                },
                "notify": ["am"],
            },
            {
                "name": "shared-runway",
                "scope": {"tenant_id": "acme", "feature": "chat"},
                "runway": {
                    "period": "week",
                    "budget_id": "acme-weekly",
                    "timezone": "Europe/Paris",
                    "at": [],
                },
            },
        ],
    }
    rules = parse_rules(doc, WHERE)
    assert rules.notifiers["am"] == Notifier(
        name="am",
        kind="alertmanager",
        url="https://am.example:9443/base",
        timeout_s=30.0,
        headers={"Authorization": "Bearer t"},
    )
    threshold, slo, runway = rules.rules
    assert threshold.threshold == Threshold(metric="p95_latency_ms", window_s=5400.0, below=5.0, for_s=90.0)
    assert threshold.repeat_s == 0.0
    assert threshold.notify == ()
    assert threshold.scope == {"tenant_id": "acme", "model": "gpt-4o", "user_id": "u1", "environment": "prod"}
    assert slo.slo == Slo(
        objective=0.95, good="latency_below_ms", value=2000.0, windows=(BurnWindow(7200.0, 600.0, 10.0),)
    )
    assert runway.runway == Runway(
        period="week", budget_id="acme-weekly", timezone="Europe/Paris", at=(), projection=True
    )


@pytest.mark.parametrize("doc", [None, {}, {"rules": []}, {"rules": None, "notifiers": None}])
def test_a_document_without_rules_is_valid(doc: object) -> None:
    assert parse_rules(doc, WHERE) == Rules()


def test_notifiers_without_rules_are_valid() -> None:
    doc = {"notifiers": [{"name": "am", "type": "alertmanager", "url": "http://am:9093"}]}
    rules = parse_rules(doc, WHERE)
    assert rules.rules == ()
    assert list(rules.notifiers) == ["am"]


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "rules: []\n"])
def test_an_empty_file_is_valid(tmp_path: Path, text: str) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_rules(path) == Rules()


# ---- invalid rules ---------------------------------------------------------------------------

NOTIFIERS = [
    {"name": "am", "type": "alertmanager", "url": "http://127.0.0.1:9093"},
    {"name": "hook", "type": "webhook", "url": "https://ops.example/hook", "secret": "k"},
]
BASE: dict[str, dict[str, Any]] = {
    "threshold": {"metric": "cost_usd", "window": "5m", "above": 20.0},
    "slo": {"objective": 0.99},
    "anomaly": {"metric": "cost_usd", "window": "1h", "baseline": "7d", "factor": 3},
    "runway": {"period": "month", "amount_usd": 500},
}


def _rule(
    kind: str = "threshold", *, condition: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    """A valid rule named r1 of `kind`, its condition updated with `condition` and its fields with
    `fields` (a value of None removes the key)."""
    cond = {**BASE[kind], **(condition or {})}
    rule: dict[str, Any] = {"name": "r1", "scope": {"tenant_id": "acme"}, kind: cond, "notify": ["am"]}
    rule.update(fields)
    for key in [k for k, v in cond.items() if v is None]:
        del cond[key]
    return {k: v for k, v in rule.items() if v is not None}


def test_the_base_rules_are_valid() -> None:
    for kind in BASE:
        assert parse_rules({"notifiers": NOTIFIERS, "rules": [_rule(kind)]}, WHERE).rules[0].kind == kind


RULE_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # (id, rule, the error's prefix after the file, a fragment of the rest)
    ("name-chars", _rule(name="cost spike"), "rules[0]: name", "letters, digits and ._:-"),
    ("name-long", _rule(name="a" * 129), "rules[0]: name", "1 to 128"),
    ("name-missing", _rule(name=None), "rules[0]: name", "is required"),
    ("name-not-string", _rule(name=7), "rules[0]: name", "got 7"),
    ("unknown-field", _rule(thresold={}), "rule 'r1': thresold", "unknown field"),
    ("no-condition", _rule(threshold=None), "rule 'r1'", "exactly one of threshold, slo, anomaly, runway"),
    ("two-conditions", _rule(slo={"objective": 0.9}), "rule 'r1'", "got threshold and slo"),
    ("notify-undeclared", _rule(notify=["am", "pager"]), "rule 'r1': notify[1]", '"pager" is not a declared'),
    ("notify-twice", _rule(notify=["am", "am"]), "rule 'r1': notify[1]", "given twice"),
    ("notify-not-list", _rule(notify="am"), "rule 'r1': notify", "must be a list"),
    ("repeat-bad", _rule(repeat="4 hours"), "rule 'r1': repeat", '"4 hours" is not a duration'),
    ("repeat-negative", _rule(repeat=-60), "rule 'r1': repeat", "not negative"),
    ("scope-missing", _rule(scope=None), "rule 'r1': scope", "is required"),
    ("scope-not-mapping", _rule(scope="acme"), "rule 'r1': scope", "must be a mapping"),
    ("scope-no-tenant", _rule(scope={"route": "chat"}), "rule 'r1': scope.tenant_id", "is required"),
    ("scope-unknown", _rule(scope={"tenant_id": "a", "region": "eu"}), "rule 'r1': scope.region", "unknown"),
    ("scope-not-string", _rule(scope={"tenant_id": "a", "route": 5}), "rule 'r1': scope.route", "string"),
    ("scope-empty", _rule(scope={"tenant_id": ""}), "rule 'r1': scope.tenant_id", "non-empty string"),
    ("labels-not-mapping", _rule(labels=["a"]), "rule 'r1': labels", "must be a mapping"),
    ("label-name", _rule(labels={"sev-erity": "page"}), "rule 'r1': labels.sev-erity", "not a valid name"),
    ("label-digit", _rule(labels={"1x": "page"}), "rule 'r1': labels.1x", "not a valid name"),
    ("label-dunder", _rule(labels={"__x": "page"}), "rule 'r1': labels.__x", "not a valid name"),
    ("label-alertname", _rule(labels={"alertname": "x"}), "rule 'r1': labels.alertname", "reserved"),
    ("label-tenant", _rule(labels={"tenant_id": "x"}), "rule 'r1': labels.tenant_id", "reserved"),
    ("label-scope", _rule(labels={"route": "x"}), "rule 'r1': labels.route", "reserved"),
    ("label-value", _rule(labels={"severity": 1}), "rule 'r1': labels.severity", "must be a string"),
    (
        "annotation-name",
        _rule(annotations={"run-book": "x"}),
        "rule 'r1': annotations.run-book",
        "valid name",
    ),
    ("annotation-value", _rule(annotations={"runbook": None}), "rule 'r1': annotations.runbook", "a string"),
    # threshold
    ("th-unknown", _rule(condition={"windw": "5m"}), "rule 'r1': threshold.windw", "unknown field"),
    ("th-metric", _rule(condition={"metric": "dollars"}), "rule 'r1': threshold.metric", "must be one of"),
    ("th-metric-missing", _rule(condition={"metric": None}), "rule 'r1': threshold.metric", "is required"),
    (
        "th-both",
        _rule(condition={"below": 1}),
        "rule 'r1': threshold",
        "above and below is required, got both",
    ),
    ("th-neither", _rule(condition={"above": None}), "rule 'r1': threshold", "got neither"),
    ("th-above-nan", _rule(condition={"above": math.nan}), "rule 'r1': threshold.above", "finite number"),
    ("th-above-text", _rule(condition={"above": "20"}), "rule 'r1': threshold.above", "finite number"),
    ("th-above-bool", _rule(condition={"above": True}), "rule 'r1': threshold.above", "finite number"),
    ("th-window", _rule(condition={"window": "5q"}), "rule 'r1': threshold.window", '"5q" is not a duration'),
    ("th-window-missing", _rule(condition={"window": None}), "rule 'r1': threshold.window", "is required"),
    ("th-window-zero", _rule(condition={"window": "0s"}), "rule 'r1': threshold.window", "more than 0"),
    ("th-window-long", _rule(condition={"window": "7d1s"}), "rule 'r1': threshold.window", "at most 7d"),
    ("th-for", _rule(condition={"for": "-1m"}), "rule 'r1': threshold.for", "is not a duration"),
    ("th-not-mapping", _rule(threshold=[1]), "rule 'r1': threshold", "must be a mapping"),
    # slo
    ("slo-unknown", _rule("slo", condition={"target": 1}), "rule 'r1': slo.target", "unknown field"),
    ("slo-objective-1", _rule("slo", condition={"objective": 1}), "rule 'r1': slo.objective", "less than 1"),
    ("slo-objective-0", _rule("slo", condition={"objective": 0}), "rule 'r1': slo.objective", "more than 0"),
    (
        "slo-objective-missing",
        _rule("slo", condition={"objective": None}),
        "rule 'r1': slo.objective",
        "required",
    ),
    ("slo-good", _rule("slo", condition={"good": "fast_calls"}), "rule 'r1': slo.good", "must be one of"),
    (
        "slo-value-missing",
        _rule("slo", condition={"good": "latency_below_ms"}),
        "rule 'r1': slo.value",
        "is required",
    ),
    (
        "slo-value-zero",
        _rule("slo", condition={"good": "latency_below_ms", "value": 0}),
        "rule 'r1': slo.value",
        "more than 0",
    ),
    (
        "slo-value-ok-calls",
        _rule("slo", condition={"value": 2000}),
        "rule 'r1': slo.value",
        "latency_below_ms",
    ),
    (
        "slo-windows-empty",
        _rule("slo", condition={"windows": []}),
        "rule 'r1': slo.windows",
        "non-empty list",
    ),
    (
        "slo-short-not-less",
        _rule("slo", condition={"windows": [{"long": "1h", "short": "1h", "factor": 2}]}),
        "rule 'r1': slo.windows[0].short",
        "less than long (1h)",
    ),
    (
        "slo-short-zero",
        _rule("slo", condition={"windows": [{"long": "1h", "short": 0, "factor": 2}]}),
        "rule 'r1': slo.windows[0].short",
        "more than 0",
    ),
    (
        "slo-long-too-long",
        _rule("slo", condition={"windows": [{"long": "8d", "short": "1h", "factor": 2}]}),
        "rule 'r1': slo.windows[0].long",
        "at most 7d",
    ),
    (
        "slo-factor",
        _rule(
            "slo",
            condition={
                "windows": [
                    {"long": "1h", "short": "5m", "factor": 14.4},
                    {"long": "6h", "short": "30m", "factor": 0},
                ]
            },
        ),
        "rule 'r1': slo.windows[1].factor",
        "more than 0",
    ),
    (
        "slo-window-unknown",
        _rule("slo", condition={"windows": [{"long": "1h", "short": "5m", "factor": 2, "ratio": 1}]}),
        "rule 'r1': slo.windows[0].ratio",
        "unknown field",
    ),
    # anomaly
    (
        "an-metric",
        _rule("anomaly", condition={"metric": "calls"}),
        "rule 'r1': anomaly.metric",
        "must be one of",
    ),
    (
        "an-window-zero",
        _rule("anomaly", condition={"window": "0s"}),
        "rule 'r1': anomaly.window",
        "more than 0",
    ),
    (
        "an-window-long",
        _rule("anomaly", condition={"window": "25h"}),
        "rule 'r1': anomaly.window",
        "at most 1d",
    ),
    (
        "an-baseline-partial",
        _rule("anomaly", condition={"baseline": "36h"}),
        "rule 'r1': anomaly.baseline",
        "whole",
    ),
    (
        "an-baseline-long",
        _rule("anomaly", condition={"baseline": "29d"}),
        "rule 'r1': anomaly.baseline",
        "28d",
    ),
    (
        "an-baseline-hours",
        _rule("anomaly", condition={"baseline": "12h"}),
        "rule 'r1': anomaly.baseline",
        "days",
    ),
    ("an-factor", _rule("anomaly", condition={"factor": 1}), "rule 'r1': anomaly.factor", "more than 1"),
    (
        "an-factor-missing",
        _rule("anomaly", condition={"factor": None}),
        "rule 'r1': anomaly.factor",
        "required",
    ),
    (
        "an-min-negative",
        _rule("anomaly", condition={"min_requests": -1}),
        "rule 'r1': anomaly.min_requests",
        ">= 0",
    ),
    (
        "an-min-fraction",
        _rule("anomaly", condition={"min_requests": 2.5}),
        "rule 'r1': anomaly.min_requests",
        "whole",
    ),
    (
        "an-unknown",
        _rule("anomaly", condition={"median": True}),
        "rule 'r1': anomaly.median",
        "unknown field",
    ),
    # runway
    (
        "rw-period",
        _rule("runway", condition={"period": "year"}),
        "rule 'r1': runway.period",
        "must be one of",
    ),
    (
        "rw-timezone",
        _rule("runway", condition={"timezone": "Mars/Base"}),
        "rule 'r1': runway.timezone",
        "IANA",
    ),
    ("rw-both", _rule("runway", condition={"budget_id": "b1"}), "rule 'r1': runway", "got both"),
    ("rw-neither", _rule("runway", condition={"amount_usd": None}), "rule 'r1': runway", "got neither"),
    (
        "rw-amount",
        _rule("runway", condition={"amount_usd": 0}),
        "rule 'r1': runway.amount_usd",
        "more than 0",
    ),
    (
        "rw-budget-id",
        _rule("runway", condition={"amount_usd": None, "budget_id": "a b"}),
        "rule 'r1': runway.budget_id",
        "letters, digits",
    ),
    ("rw-at-zero", _rule("runway", condition={"at": [0, 1]}), "rule 'r1': runway.at[0]", "more than 0"),
    ("rw-at-high", _rule("runway", condition={"at": [0.5, 2.5]}), "rule 'r1': runway.at[1]", "at most 2"),
    (
        "rw-at-order",
        _rule("runway", condition={"at": [0.8, 0.5]}),
        "rule 'r1': runway.at[1]",
        "more than the",
    ),
    (
        "rw-at-repeat",
        _rule("runway", condition={"at": [0.5, 0.5]}),
        "rule 'r1': runway.at[1]",
        "more than the",
    ),
    ("rw-at-not-list", _rule("runway", condition={"at": 0.5}), "rule 'r1': runway.at", "must be a list"),
    (
        "rw-at-empty-no-projection",
        _rule("runway", condition={"at": [], "projection": False}),
        "rule 'r1': runway.at",
        "projection",
    ),
    (
        "rw-projection",
        _rule("runway", condition={"projection": "yes"}),
        "rule 'r1': runway.projection",
        "true",
    ),
    ("rw-unknown", _rule("runway", condition={"amount": 5}), "rule 'r1': runway.amount", "unknown field"),
]


@pytest.mark.parametrize(
    ("rule", "prefix", "fragment"), [c[1:] for c in RULE_CASES], ids=[c[0] for c in RULE_CASES]
)
def test_an_invalid_rule_is_refused_naming_rule_and_field(
    rule: dict[str, Any], prefix: str, fragment: str
) -> None:
    doc = {"notifiers": copy.deepcopy(NOTIFIERS), "rules": [_rule("slo", name="first"), rule]}
    if prefix.startswith("rules[0]"):
        prefix = prefix.replace("rules[0]", "rules[1]")
    with pytest.raises(ValueError, match="^" + re.escape(f"{WHERE}: {prefix}: ")) as caught:
        parse_rules(doc, WHERE)
    assert fragment in str(caught.value).removeprefix(f"{WHERE}: {prefix}: "), str(caught.value)


def test_a_rule_name_defined_twice_is_refused() -> None:
    doc = {"notifiers": NOTIFIERS, "rules": [_rule(), _rule("slo")]}
    with pytest.raises(ValueError, match=r"^alerts file 'x\.yaml': rule 'r1': name: defined twice$"):
        parse_rules(doc, WHERE)


def _notifier(**fields: Any) -> dict[str, Any]:
    notifier = {"name": "n1", "type": "webhook", "url": "https://ops.example/hook", **fields}
    return {k: v for k, v in notifier.items() if v is not None}


NOTIFIER_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("name-chars", _notifier(name="my hook"), "notifiers[0]: name", "letters, digits"),
    ("name-missing", _notifier(name=None), "notifiers[0]: name", "is required"),
    ("type", _notifier(type="email"), "notifier 'n1': type", "webhook, slack, alertmanager"),
    ("type-missing", _notifier(type=None), "notifier 'n1': type", "is required"),
    ("url-scheme", _notifier(url="ftp://ops.example/x"), "notifier 'n1': url", "http(s) URL with a host"),
    ("url-no-host", _notifier(url="https:///x"), "notifier 'n1': url", "with a host"),
    ("url-relative", _notifier(url="/hooks/llm"), "notifier 'n1': url", "with a host"),
    ("url-bad-port", _notifier(url="http://am:99999"), "notifier 'n1': url", "with a host"),
    ("url-space", _notifier(url="http://am /x"), "notifier 'n1': url", "with a host"),
    ("url-missing", _notifier(url=None), "notifier 'n1': url", "is required"),
    ("secret-on-slack", _notifier(type="slack", secret="k"), "notifier 'n1': secret", "only a webhook"),
    ("secret-empty", _notifier(secret=""), "notifier 'n1': secret", "non-empty string"),
    ("unknown", _notifier(token="t"), "notifier 'n1': token", "unknown field"),
    ("timeout-zero", _notifier(timeout="0s"), "notifier 'n1': timeout", "more than 0"),
    ("timeout-long", _notifier(timeout="2m"), "notifier 'n1': timeout", "at most 1m"),
    ("header-name", _notifier(headers={"X Auth": "t"}), "notifier 'n1': headers.X Auth", "header name"),
    (
        "header-newline",
        _notifier(headers={"X-Auth": "a\r\nb"}),
        "notifier 'n1': headers.X-Auth",
        "line break",
    ),
    ("not-mapping", "am", "notifiers[0]", "must be a mapping"),
]


@pytest.mark.parametrize(
    ("notifier", "prefix", "fragment"), [c[1:] for c in NOTIFIER_CASES], ids=[c[0] for c in NOTIFIER_CASES]
)
def test_an_invalid_notifier_is_refused_naming_it_and_the_field(
    notifier: Any, prefix: str, fragment: str
) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(f"{WHERE}: {prefix}: ")) as caught:
        parse_rules({"notifiers": [notifier]}, WHERE)
    assert fragment in str(caught.value).removeprefix(f"{WHERE}: {prefix}: "), str(caught.value)


def test_a_notifier_name_defined_twice_is_refused() -> None:
    doc = {"notifiers": [_notifier(), _notifier(type="slack")]}
    with pytest.raises(ValueError, match=r"^alerts file 'x\.yaml': notifier 'n1': name: defined twice$"):
        parse_rules(doc, WHERE)


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ([{"name": "r1"}], "must be a mapping of notifiers and rules"),
        ("rules", "must be a mapping of notifiers and rules"),
        ({"rules": [], "alerts": []}, "alerts: unknown key"),
        ({"rules": {"r1": {}}}, "rules: must be a list"),
        ({"notifiers": {"am": {}}}, "notifiers: must be a list"),
        ({"rules": ["r1"]}, "rules[0]: must be a mapping"),
    ],
)
def test_a_malformed_document_is_refused(doc: object, fragment: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(f"{WHERE}: {fragment}")):
        parse_rules(doc, WHERE)


# ---- the file --------------------------------------------------------------------------------


def test_an_error_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(EXAMPLE.replace("window: 5m", "window: 5q"), encoding="utf-8")
    expected = f"alerts file {str(path)!r}: rule 'cost-spike': threshold.window: \"5q\" is not a duration"
    with pytest.raises(ValueError, match="^" + re.escape(expected)):
        load_rules(path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ValueError, match=r"cannot be read") as caught:
        load_rules(path)
    assert str(caught.value).startswith(f"alerts file {str(path)!r}: ")


def test_invalid_yaml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text("rules: [\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"^alerts file .*: not valid YAML"):
        load_rules(path)


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(EXAMPLE.replace("    repeat: 4h\n", "    repeat: 4h\n    repeat: 1h\n"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"not valid YAML \(key 'repeat' is given twice"):
        load_rules(path)


def test_an_oversized_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(EXAMPLE, encoding="utf-8")
    monkeypatch.setattr(_rules, "MAX_RULES_FILE_BYTES", len(EXAMPLE.encode()) - 1)
    with pytest.raises(ValueError, match=r"larger than"):
        load_rules(path)


# ---- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("1d2h3m4s", 93784.0),
        ("90", 90.0),
        ("2.5", 2.5),
        (" 5m ", 300.0),
        (0, 0.0),
        (90, 90.0),
        (0.25, 0.25),
    ],
)
def test_durations_parse_to_seconds(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["5q", "", "s", "5M", "1m1h", "1h1h", "1 h", "-5s", "5s-", "1e3", "h1", "1.h"],
)
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [-1, -0.5, math.inf, math.nan, True, None, [5], {"m": 5}])
def test_negative_infinite_and_non_numeric_durations_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match=r"is not a duration"):
        parse_duration(value)


def test_the_duration_error_quotes_the_text() -> None:
    with pytest.raises(ValueError, match=r'^"5q" is not a duration'):
        parse_duration("5q")
