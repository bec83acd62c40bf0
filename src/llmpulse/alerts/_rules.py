"""The alert rules file of ``serve --alerts FILE`` (``LLMPULSE_ALERTS_FILE``).

YAML (or JSON, which is YAML) with two lists, both optional; an empty file, or one without rules,
is valid and defines no alerts::

    notifiers:
      - {name: am, type: alertmanager, url: "http://127.0.0.1:9093"}
      - {name: hook, type: webhook, url: "https://ops.example/hooks/llm", secret: "s3cret"}
      - {name: chat, type: slack, url: "https://hooks.slack.example/T000/B000/XXXX"}
    rules:
      - name: cost-spike
        scope: {tenant_id: acme}
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

**Durations** are a string of whole or decimal numbers each followed by a unit, largest unit first,
each unit at most once: ``d`` (days), ``h``, ``m``, ``s`` — ``0s``, ``30s``, ``5m``, ``1h30m``,
``1.5h``, ``7d``. A plain number (``90`` or ``"90"``) is seconds. Durations are never negative.

**Names** (of rules and notifiers) are 1 to 128 letters, digits and ``._:-``, unique in their list.

``notifiers[]`` — where notifications go:

- ``name`` (required): what a rule's ``notify`` calls it.
- ``type`` (required): ``webhook`` (a JSON body, signed when ``secret`` is set with the header
  ``X-Llmpulse-Signature: sha256=<hex HMAC-SHA256 of the raw body>``), ``slack`` (a Slack-compatible
  incoming-webhook payload) or ``alertmanager`` (the Alertmanager v2 API, ``POST {url}/api/v2/alerts``).
- ``url`` (required): an ``http`` or ``https`` URL with a host.
- ``secret`` (``webhook`` only): the HMAC key; a non-empty string.
- ``timeout`` (optional, default 10s): a duration, more than 0 and at most 60s.
- ``headers`` (optional): a mapping of HTTP header names to string values (for example an
  ``Authorization`` header for an Alertmanager behind a proxy).

``rules[]`` — one alert each:

- ``name`` (required).
- ``scope`` (required): ``tenant_id`` (required), and optionally ``route``, ``model``, ``user_id``,
  ``org_id``, ``feature``, ``environment``; each a non-empty string. The rule measures only the calls
  that match every field given.
- ``labels`` (optional): string to string, added to every notification's labels beside
  ``alertname`` (the rule's name), ``tenant_id`` and the scope's other fields. As they reach
  Alertmanager, label names follow Prometheus' rule ``[a-zA-Z_][a-zA-Z0-9_]*`` and may not start
  with ``__``; ``alertname``, ``tenant_id``, ``route``, ``model``, ``user_id``, ``org_id``,
  ``feature`` and ``environment`` are reserved.
- ``annotations`` (optional): string to string, names as for labels (none reserved); sent as they are
  (a runbook link, a description).
- exactly one condition: ``threshold``, ``slo``, ``anomaly`` or ``runway`` (below).
- ``notify`` (optional, default none): a list of notifier names, each declared under ``notifiers``
  and given once. A rule that notifies nobody still shows its state at ``GET /v1/alerts``.
- ``repeat`` (optional, default 4h): a duration; how often a firing alert is notified again. ``0s``:
  never.

``threshold`` — a metric over a rolling window compared with a value:

- ``metric`` (required): ``cost_usd``, ``requests``, ``errors``, ``error_rate``, ``p95_latency_ms``,
  ``p95_ttft_ms`` or ``tokens``.
- ``window`` (required): a duration, more than 0 and at most 7d.
- exactly one of ``above`` or ``below``: a finite number; the alert is pending while the metric is
  above (below) it.
- ``for`` (optional, default 0s): a duration the condition must hold before the alert fires.

``slo`` — an objective, alerted on by the multi-window, multi-burn-rate policy of the Google SRE
workbook:

- ``objective`` (required): the share of good calls, strictly between 0 and 1 (``0.99``).
- ``good`` (optional, default ``ok_calls``): ``ok_calls`` (a call is good when it did not fail) or
  ``latency_below_ms`` (a call is good when it did not fail and took less than ``value`` ms;
  see `llmpulse.alerts._engine` for how the windows' histograms count it).
- ``value`` (required with ``latency_below_ms``, refused otherwise): milliseconds, more than 0.
- ``windows`` (optional, default ``[{long: 1h, short: 5m, factor: 14.4}, {long: 6h, short: 30m,
  factor: 6}]``): a non-empty list of ``{long, short, factor}``; the alert fires while the error
  budget burns faster than ``factor`` over both ``long`` and ``short``. ``long`` is more than
  ``short``, which is more than 0; ``long`` is at most 7d; ``factor`` is more than 0.

``anomaly`` — a metric over a window against its own baseline (``factor`` × the median of the same
metric over the same stretch of time on each of the previous days):

- ``metric`` (required): as for ``threshold``.
- ``window`` (required): a duration, more than 0 and at most 1d.
- ``baseline`` (required): a whole number of days from 1d to 28d, and at least ``window``.
- ``factor`` (required): more than 1.
- ``min_requests`` (optional, default 0): a whole number ≥ 0; fewer calls in the window keep the
  rule quiet.

``runway`` — spend over a calendar period against an amount:

- ``period`` (required): ``day``, ``week`` (from Monday) or ``month``, in ``timezone``.
- exactly one of ``amount_usd`` (a number more than 0) or ``budget_id`` (a shared budget's id,
  whose amount is used).
- ``timezone`` (optional, default ``UTC``): an IANA zone name (``Europe/Paris``).
- ``at`` (optional, default ``[0.5, 0.8, 1.0]``): fractions of the amount, each more than 0 and at
  most 2, strictly ascending; the alert fires as spend crosses each.
- ``projection`` (optional, default true): also fire when the current rate projects exhaustion
  before the period ends. ``at`` may be empty only while ``projection`` is true.

Any other key, anywhere, is an error, and so is a key given twice in one mapping. The whole file is
checked before the server starts: an error is a `ValueError` naming the file, the rule (or notifier)
by name (else by its place in the list) and the field, for example::

    alerts file 'alerts.yaml': rule 'cost-spike': threshold.window: "5q" is not a duration (...)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar, cast
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from llmpulse.alerts._model import (
    DEFAULT_BURN_WINDOWS,
    METRICS,
    SCOPE_ATTRIBUTES,
    Anomaly,
    BurnWindow,
    Metric,
    Notifier,
    NotifierKind,
    Rule,
    Rules,
    Runway,
    Slo,
    Threshold,
)

#: Largest rules file read (a typo pointing at a log file should not be parsed for minutes).
MAX_RULES_FILE_BYTES: Final = 4 << 20
MAX_NAME_LEN: Final = 128
_NAME: Final = re.compile(r"[A-Za-z0-9._:-]+")
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_NUMBER: Final = r"(\d+(?:\.\d+)?)"
_DURATION: Final = re.compile(rf"(?:{_NUMBER}d)?(?:{_NUMBER}h)?(?:{_NUMBER}m)?(?:{_NUMBER}s)?")
_UNITS: Final = (86400.0, 3600.0, 60.0, 1.0)
_DAY: Final = 86400.0
_RESERVED_LABELS: Final = frozenset({"alertname", "tenant_id", *SCOPE_ATTRIBUTES})
_KINDS: Final = ("threshold", "slo", "anomaly", "runway")
_NOTIFIER_KINDS: Final = ("webhook", "slack", "alertmanager")

_T = TypeVar("_T")


def load_rules(path: str | Path) -> Rules:
    """The notifiers and rules the file at `path` defines, validated. Blocks (reads the file).

    Raises:
        ValueError: the file cannot be read or parsed, or something in it is invalid; the message
            names the file, the rule or notifier and the field.
    """
    where = f"alerts file {str(path)!r}"
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_RULES_FILE_BYTES:
        raise ValueError(f"{where}: larger than {MAX_RULES_FILE_BYTES} bytes")
    try:
        doc = yaml.load(raw, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ValueError(f"{where}: not valid YAML ({exc})") from None
    return parse_rules(doc, where)


def parse_rules(doc: object, where: str) -> Rules:
    """The `Rules` a decoded rules document (``None`` or a mapping) defines. Pure.

    `where` starts every error message (``alerts file 'x.yaml'``, ``request body``).

    Raises:
        ValueError: anything invalid; the message names `where`, the rule or notifier and the field.
    """
    if doc is None:
        return Rules()
    if not isinstance(doc, Mapping):
        raise ValueError(f"{where}: must be a mapping of notifiers and rules (lists)")
    unknown = sorted(str(k) for k in doc if k not in ("notifiers", "rules"))
    if unknown:
        raise ValueError(f"{where}: {unknown[0]}: unknown key (expected notifiers, rules)")
    notifiers: dict[str, Notifier] = {}
    for label, item in _items(doc, "notifiers", "notifier", where):
        try:
            notifier = _notifier(item)
        except ValueError as exc:
            raise ValueError(f"{where}: {label}: {exc}") from None
        if notifier.name in notifiers:
            raise ValueError(f"{where}: {label}: name: defined twice")
        notifiers[notifier.name] = notifier
    rules: list[Rule] = []
    seen: set[str] = set()
    for label, item in _items(doc, "rules", "rule", where):
        try:
            rule = _rule(item, notifiers)
        except ValueError as exc:
            raise ValueError(f"{where}: {label}: {exc}") from None
        if rule.name in seen:
            raise ValueError(f"{where}: {label}: name: defined twice")
        seen.add(rule.name)
        rules.append(rule)
    return Rules(notifiers=notifiers, rules=tuple(rules))


def parse_duration(text: object) -> float:
    """Seconds in a duration: ``"0s"``, ``"30s"``, ``"5m"``, ``"1h30m"``, ``"1.5h"``, ``"7d"``, or a plain
    number of seconds (``90``, ``"90"``). Pure.

    Raises:
        ValueError: `text` is not a duration, or is negative or not finite.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    elif isinstance(text, str):
        value = text.strip()
        plain = re.fullmatch(_NUMBER, value)
        match = _DURATION.fullmatch(value)
        if plain:
            seconds = float(value)
        elif value and match:
            seconds = sum(float(n) * unit for n, unit in zip(match.groups(), _UNITS, strict=True) if n)
        else:
            raise ValueError(
                f"{_show(text)} is not a duration (such as 30s, 5m, 1h30m or 7d; a plain number is seconds)"
            )
    else:
        raise ValueError(f"{_show(text)} is not a duration (such as 30s, 5m, 1h30m or 7d)")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{_show(text)} is not a duration (durations are finite and not negative)")
    return seconds


class _StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping (the safe loader keeps the last)."""


def _no_duplicate_keys(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, str | int | float | bool) or key is None:
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def _items(doc: Mapping[Any, Any], key: str, noun: str, where: str) -> list[tuple[str, object]]:
    """The entries of list `key` of `doc`, each with the label its errors carry: its name when that is a
    valid name, else its place in the list."""
    items = doc.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise ValueError(f"{where}: {key}: must be a list")
    labelled = []
    for index, item in enumerate(items):
        name = item.get("name") if isinstance(item, Mapping) else None
        label = f"{noun} {name!r}" if _is_name(name) else f"{key}[{index}]"
        labelled.append((label, item))
    return labelled


def _is_name(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_NAME_LEN and _NAME.fullmatch(value) is not None


def _show(value: object) -> str:
    """`value` as the file would spell it: strings quoted, ``true``/``false``/``null`` as in YAML."""
    return json.dumps(value) if isinstance(value, str | bool) or value is None else repr(value)


class _FieldError(ValueError):
    """A `ValueError` about the field at `path` (relative to where it was raised: ``name``,
    ``threshold.window``, ``[2]``, ``.severity``); parents prefix their own path on the way up."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class _Section:
    """One mapping of the file, read field by field; every error names the field's path."""

    def __init__(self, value: object, path: str, fields: tuple[str, ...]) -> None:
        self.path = path
        if not isinstance(value, Mapping):
            message = f"must be a mapping of {', '.join(fields)}, got {_show(value)}"
            raise _FieldError(path, message) if path else ValueError(message)
        unknown = sorted(str(k) for k in value if k not in fields)
        if unknown:
            raise self.error(unknown[0], f"unknown field (expected one of {', '.join(fields)})")
        self.value: Mapping[Any, Any] = value

    def field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path and not key.startswith("[") else f"{self.path}{key}"

    def error(self, key: str, message: str) -> _FieldError:
        return _FieldError(self.field(key), message)

    def has(self, key: str) -> bool:
        return self.value.get(key) is not None

    def read(self, key: str, parse: Callable[[object], _T], default: _T | None = None) -> _T:
        """`parse` of the field, its error prefixed with the field's path; `default` when the field
        is absent (or null), and an error if there is no default."""
        raw = self.value.get(key)
        if raw is None:
            if default is None:
                raise self.error(key, "is required")
            return default
        try:
            return parse(raw)
        except _FieldError as exc:
            raise _FieldError(self.field(key) + exc.path, exc.message) from None
        except ValueError as exc:
            raise self.error(key, str(exc)) from None


def _string(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {_show(value)}")
    return value


def _name(value: object) -> str:
    if not _is_name(value):
        raise ValueError(
            f"must be 1 to {MAX_NAME_LEN} characters of letters, digits and ._:-, got {_show(value)}"
        )
    return cast(str, value)


def _one_of(choices: tuple[str, ...]) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {_show(value)}")
        return value

    return parse


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {_show(value)}")
    return value


def _number(
    *, gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None
) -> Callable[[object], float]:
    """A parser of finite numbers within the bounds given."""

    def parse(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {_show(value)}")
        _check_bounds(float(value), _show(value), gt, ge, lt, le)
        return float(value)

    return parse


def _whole(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be a whole number >= 0, got {_show(value)}")
    return value


def _duration(*, gt: float | None = None, le: float | None = None) -> Callable[[object], float]:
    """A parser of durations (`parse_duration`) within the bounds given."""

    def parse(value: object) -> float:
        seconds = parse_duration(value)
        _check_bounds(seconds, _show(value), gt, None, None, le, _format_duration)
        return seconds

    return parse


def _check_bounds(
    value: float,
    shown: str,
    gt: float | None,
    ge: float | None,
    lt: float | None,
    le: float | None,
    fmt: Callable[[float], str] = "{:g}".format,
) -> None:
    if gt is not None and not value > gt:
        raise ValueError(f"must be more than {fmt(gt)}, got {shown}")
    if ge is not None and not value >= ge:
        raise ValueError(f"must be at least {fmt(ge)}, got {shown}")
    if lt is not None and not value < lt:
        raise ValueError(f"must be less than {fmt(lt)}, got {shown}")
    if le is not None and not value <= le:
        raise ValueError(f"must be at most {fmt(le)}, got {shown}")


def _format_duration(seconds: float) -> str:
    for unit, size in (("d", _DAY), ("h", 3600.0), ("m", 60.0)):
        if seconds and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _string_map(check_key: Callable[[str], None]) -> Callable[[object], dict[str, str]]:
    """A parser of string → string mappings whose keys pass `check_key`."""

    def parse(value: object) -> dict[str, str]:
        if not isinstance(value, Mapping):
            raise ValueError(f"must be a mapping of strings to strings, got {_show(value)}")
        out: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _FieldError(f".{key}", "names must be strings")
            try:
                check_key(key)
            except ValueError as exc:
                raise _FieldError(f".{key}", str(exc)) from None
            if not isinstance(item, str):
                raise _FieldError(f".{key}", f"must be a string, got {_show(item)}")
            out[key] = item
        return out

    return parse


def _annotation_name(key: str) -> None:
    if not _LABEL_NAME.fullmatch(key) or key.startswith("__"):
        raise ValueError("not a valid name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)")


def _label_name(key: str) -> None:
    _annotation_name(key)
    if key in _RESERVED_LABELS:
        raise ValueError("is reserved (llmpulse sets alertname, tenant_id and the scope's fields)")


def _header_name(key: str) -> None:
    if not _HEADER_NAME.fullmatch(key):
        raise ValueError("not a valid HTTP header name")


def _header_values(value: object) -> dict[str, str]:
    headers = _string_map(_header_name)(value)
    for key, item in headers.items():
        if "\r" in item or "\n" in item:
            raise _FieldError(f".{key}", "a header value may not hold a line break")
    return headers


def _url(value: object) -> str:
    if not isinstance(value, str) or any(c.isspace() or ord(c) < 32 for c in value):
        raise ValueError(f"must be an http(s) URL with a host, got {_show(value)}")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        raise ValueError(f"must be an http(s) URL with a host, got {_show(value)}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL with a host, got {_show(value)}")
    return value


def _timezone(value: object) -> str:
    name = _string(value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{_show(value)} is not a known IANA time zone name") from None
    return name


def _notifier(item: object) -> Notifier:
    section = _Section(item, "", ("name", "type", "url", "secret", "timeout", "headers"))
    kind = cast(NotifierKind, section.read("type", _one_of(_NOTIFIER_KINDS)))
    if section.has("secret") and kind != "webhook":
        raise section.error("secret", "only a webhook notifier signs its body")
    return Notifier(
        name=section.read("name", _name),
        kind=kind,
        url=section.read("url", _url),
        secret=section.read("secret", _string, "") or None,
        timeout_s=section.read("timeout", _duration(gt=0, le=60), 10.0),
        headers=section.read("headers", _header_values, {}),
    )


def _rule(item: object, notifiers: Mapping[str, Notifier]) -> Rule:
    fields = ("name", "scope", "labels", "annotations", *_KINDS, "notify", "repeat")
    section = _Section(item, "", fields)
    name = section.read("name", _name)
    scope = _scope(section.read("scope", lambda v: v))
    given = [kind for kind in _KINDS if section.has(kind)]
    if len(given) != 1:
        got = f", got {' and '.join(given)}" if given else ""
        raise ValueError(f"exactly one of {', '.join(_KINDS)} is required{got}")
    return Rule(
        name=name,
        tenant_id=scope["tenant_id"],
        scope=scope,
        labels=section.read("labels", _string_map(_label_name), {}),
        annotations=section.read("annotations", _string_map(_annotation_name), {}),
        threshold=_threshold(section.value["threshold"]) if given == ["threshold"] else None,
        slo=_slo(section.value["slo"]) if given == ["slo"] else None,
        anomaly=_anomaly(section.value["anomaly"]) if given == ["anomaly"] else None,
        runway=_runway(section.value["runway"]) if given == ["runway"] else None,
        notify=section.read("notify", _notify(notifiers), ()),
        repeat_s=section.read("repeat", _duration(), 4 * 3600.0),
    )


def _scope(value: object) -> dict[str, str]:
    section = _Section(value, "scope", ("tenant_id", *SCOPE_ATTRIBUTES))
    scope = {"tenant_id": section.read("tenant_id", _string)}
    for key in SCOPE_ATTRIBUTES:
        if key in section.value:
            scope[key] = section.read(key, _string)
    return scope


def _notify(notifiers: Mapping[str, Notifier]) -> Callable[[object], tuple[str, ...]]:
    def parse(value: object) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise ValueError(f"must be a list of notifier names, got {_show(value)}")
        for index, name in enumerate(value):
            if not isinstance(name, str) or name not in notifiers:
                declared = ", ".join(notifiers) or "none"
                raise _FieldError(
                    f"[{index}]", f"{_show(name)} is not a declared notifier (declared: {declared})"
                )
            if value.index(name) != index:
                raise _FieldError(f"[{index}]", f"{_show(name)} is given twice")
        return tuple(value)

    return parse


def _threshold(value: object) -> Threshold:
    section = _Section(value, "threshold", ("metric", "window", "above", "below", "for"))
    if section.has("above") == section.has("below"):
        got = "both" if section.has("above") else "neither"
        raise _FieldError("threshold", f"exactly one of above and below is required, got {got}")
    return Threshold(
        metric=cast(Metric, section.read("metric", _one_of(METRICS))),
        window_s=section.read("window", _duration(gt=0, le=7 * _DAY)),
        above=section.read("above", _number()) if section.has("above") else None,
        below=section.read("below", _number()) if section.has("below") else None,
        for_s=section.read("for", _duration(), 0.0),
    )


def _slo(value: object) -> Slo:
    section = _Section(value, "slo", ("objective", "good", "value", "windows"))
    good = section.read("good", _one_of(("ok_calls", "latency_below_ms")), "ok_calls")
    if good == "ok_calls" and section.has("value"):
        raise section.error("value", "only good: latency_below_ms takes a value")
    return Slo(
        objective=section.read("objective", _number(gt=0, lt=1)),
        good="latency_below_ms" if good == "latency_below_ms" else "ok_calls",
        value=section.read("value", _number(gt=0)) if good == "latency_below_ms" else None,
        windows=section.read("windows", _burn_windows, DEFAULT_BURN_WINDOWS),
    )


def _burn_windows(value: object) -> tuple[BurnWindow, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty list of {{long, short, factor}}, got {_show(value)}")
    windows = []
    for index, item in enumerate(value):
        section = _Section(item, f"[{index}]", ("long", "short", "factor"))
        long_s = section.read("long", _duration(gt=0, le=7 * _DAY))
        short_s = section.read("short", _duration(gt=0))
        if short_s >= long_s:
            raise section.error("short", f"must be less than long ({_format_duration(long_s)})")
        windows.append(BurnWindow(long_s, short_s, section.read("factor", _number(gt=0))))
    return tuple(windows)


def _anomaly(value: object) -> Anomaly:
    section = _Section(value, "anomaly", ("metric", "window", "baseline", "factor", "min_requests"))
    window_s = section.read("window", _duration(gt=0, le=_DAY))
    baseline_s = section.read("baseline", _duration(gt=0, le=28 * _DAY))
    # whole days from 1d make the baseline at least the window (at most 1d) without a check of its own
    if baseline_s % _DAY or baseline_s < _DAY:
        raise section.error("baseline", "must be a whole number of days from 1d to 28d")
    return Anomaly(
        metric=cast(Metric, section.read("metric", _one_of(METRICS))),
        window_s=window_s,
        baseline_s=baseline_s,
        factor=section.read("factor", _number(gt=1)),
        min_requests=section.read("min_requests", _whole, 0),
    )


def _runway(value: object) -> Runway:
    fields = ("period", "amount_usd", "budget_id", "timezone", "at", "projection")
    section = _Section(value, "runway", fields)
    if section.has("amount_usd") == section.has("budget_id"):
        got = "both" if section.has("amount_usd") else "neither"
        raise _FieldError("runway", f"exactly one of amount_usd and budget_id is required, got {got}")
    period = section.read("period", _one_of(("day", "week", "month")))
    projection = section.read("projection", _boolean, True)
    at: tuple[float, ...] = section.read("at", _fractions, (0.5, 0.8, 1.0))
    if not at and not projection:
        raise section.error("at", "may be empty only while projection is true")
    return Runway(
        period="day" if period == "day" else "week" if period == "week" else "month",
        amount_usd=section.read("amount_usd", _number(gt=0)) if section.has("amount_usd") else None,
        budget_id=section.read("budget_id", _name) if section.has("budget_id") else None,
        timezone=section.read("timezone", _timezone, "UTC"),
        at=at,
        projection=projection,
    )


def _fractions(value: object) -> tuple[float, ...]:
    if not isinstance(value, list):
        raise ValueError(f"must be a list of fractions, got {_show(value)}")
    fractions: list[float] = []
    for index, item in enumerate(value):
        try:
            fraction = _number(gt=0, le=2)(item)
        except ValueError as exc:
            raise _FieldError(f"[{index}]", str(exc)) from None
        if fractions and fraction <= fractions[-1]:
            raise _FieldError(f"[{index}]", f"must be more than the fraction before it ({fractions[-1]:g})")
        fractions.append(fraction)
    return tuple(fractions)
