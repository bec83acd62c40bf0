"""Processors: plain callables `(item) -> item` that sample, strip, redact, hash and tag telemetry items.

The shape is structlog's processor chain: each processor gets an item and returns it (or a changed
copy), or raises `DropItem` to drop it. Processors never mutate the item they are given (nor its
`metadata` / `attributes` dicts): a change makes a shallow copy of the struct (its `__copy__`, cheaper than
`msgspec.structs.replace`, which would rerun validation) with new dicts for what changes. An item a
processor does not need to change is returned as is, so the default chain costs well under a
microsecond for a call without free text.

Errors: `DropItem` (raised by a processor to drop an item; counted by the collector) and its subclass
`SampledOut` (the sampler left the item out).
"""

from __future__ import annotations

import hashlib
import random
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, cast

from llmpulse.events import (
    DEFAULT_ROUTE,
    DEFAULT_TENANT,
    LLMCall,
    LogEvent,
    Metric,
    Orchestration,
    Span,
    TelemetryItem,
    ToolExecution,
)
from llmpulse.sdk._config import TelemetryConfig

#: A processor: returns the item (or a changed copy), or raises `DropItem`.
Processor = Callable[[TelemetryItem], TelemetryItem]

#: Keys of `metadata` / `attributes` that hold prompt content (removed when `record_inputs=False`).
INPUT_KEYS: Final = frozenset({"input", "prompt", "messages"})
#: Keys of `metadata` / `attributes` that hold completion content (removed when `record_outputs=False`).
OUTPUT_KEYS: Final = frozenset({"output", "completion"})
#: The key that carries the sampling weight on exported items (`metadata`, or `attributes` of spans).
SAMPLE_RATE_KEY: Final = "sample_rate"


class DropItem(Exception):
    """Raised by a processor to drop the item it was given; the collector counts it and moves on."""


class SampledOut(DropItem):
    """Raised by `Sampler` for an item that sampling leaves out."""


def _copy_with(item: TelemetryItem, changes: dict[str, Any]) -> TelemetryItem:
    """A shallow copy of `item` with some fields replaced; `item` itself is left untouched."""
    new: TelemetryItem = cast(Any, item).__copy__()  # msgspec's shallow copy, without __post_init__
    for name, value in changes.items():
        setattr(new, name, value)
    return new


# ---------------------------------------------------------------------------------------------- sampling

_SCALE: Final = float(1 << 32)


def sample_key(item: TelemetryItem) -> str | None:
    """The id a sampling decision is keyed on: `trace_id`, else `request_id`, else None (random)."""
    key: str | None = getattr(item, "trace_id", None)
    if key is None:
        key = getattr(item, "request_id", None)
    return key


def sample_bucket(key: str) -> float:
    """A deterministic, evenly spread number in [0, 1) for an id; equal ids give equal numbers."""
    # crc32 is fast and stable across processes and machines (unlike hash()); the multiply-xorshift
    # spreads ids that differ only in their last characters.
    h = zlib.crc32(key.encode())
    h = (h * 0x9E3779B1) & 0xFFFFFFFF
    h ^= h >> 16
    return h / _SCALE


class Sampler:
    """Keeps a `rate` fraction of traces, deterministically by `trace_id` (else `request_id`).

    Items with neither id are sampled at random; `Metric`s are always kept (they are aggregates).
    As a processor it raises `SampledOut`. Does not block.
    """

    __slots__ = ("rate",)

    def __init__(self, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be between 0.0 and 1.0, got {rate!r}")
        self.rate = rate

    def keep(self, item: TelemetryItem) -> bool:
        """True when the item is sampled in."""
        rate = self.rate
        if rate >= 1.0 or type(item) is Metric:
            return True
        if rate <= 0.0:
            return False
        key = sample_key(item)
        if key is None:
            return random.random() < rate
        return sample_bucket(key) < rate

    def __call__(self, item: TelemetryItem) -> TelemetryItem:
        if not self.keep(item):
            raise SampledOut
        return item


class SampleWeight:
    """Adds `sample_rate` to each sampled item's `metadata` (spans: `attributes`) so that sums can be
    re-weighted by `1 / sample_rate`. Metrics are never sampled and get no weight. Does not block."""

    __slots__ = ("rate",)

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def __call__(self, item: TelemetryItem) -> TelemetryItem:
        if type(item) is Metric:
            return item
        name = "attributes" if type(item) is Span else "metadata"
        current: dict[str, Any] | None = getattr(item, name)
        merged = dict(current) if current else {}
        merged[SAMPLE_RATE_KEY] = self.rate
        return _copy_with(item, {name: merged})


# ------------------------------------------------------------------------------------ content stripping

_BAG: Final[dict[type[Any], str]] = {
    LLMCall: "metadata",
    Span: "attributes",
    ToolExecution: "metadata",
    Orchestration: "metadata",
    LogEvent: "metadata",
}


class ContentFilter:
    """Removes prompt content, completion content and/or metadata (`record_inputs`, `record_outputs`,
    `record_metadata` set to False). Does not block."""

    __slots__ = ("inputs", "keys", "metadata", "outputs")

    def __init__(self, *, inputs: bool = True, outputs: bool = True, metadata: bool = True) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.metadata = metadata
        keys: set[str] = set()
        if not inputs:
            keys |= INPUT_KEYS
        if not outputs:
            keys |= OUTPUT_KEYS
        self.keys = frozenset(keys)

    def __call__(self, item: TelemetryItem) -> TelemetryItem:
        cls = type(item)
        changes: dict[str, Any] = {}
        if cls is ToolExecution:
            if not self.inputs and item.arguments is not None:  # type: ignore[union-attr]
                changes["arguments"] = None
            if not self.outputs and item.result is not None:  # type: ignore[union-attr]
                changes["result"] = None
        bag_name = _BAG.get(cls)
        if bag_name is not None:
            bag: dict[str, Any] | None = getattr(item, bag_name)
            if bag:
                if not self.metadata:
                    changes[bag_name] = None
                elif self.keys and not self.keys.isdisjoint(bag):
                    changes[bag_name] = {k: v for k, v in bag.items() if k not in self.keys} or None
        return _copy_with(item, changes) if changes else item


# ------------------------------------------------------------------------------------------- redaction


def luhn_ok(digits: str) -> bool:
    """True when a string of digits passes the Luhn checksum (as every payment card number does)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


#: name → pattern of each built-in redactor; matches are replaced by ``[REDACTED:<name>]``.
PATTERNS: Final[Mapping[str, str]] = {
    # JWT before api_key: a bearer token that is a JWT is reported as a JWT.
    "jwt": r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
    "api_key": (
        r"\bsk-ant-[A-Za-z0-9_-]{16,}"
        r"|\bsk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{20,}"
        r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
        r"|\bgh[pousr]_[A-Za-z0-9]{30,}"
        r"|\bAIza[0-9A-Za-z_-]{35}"
        r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"
        r"|(?i:\bbearer\s+)[A-Za-z0-9._~+/=-]{16,}"
    ),
    "email": r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
    # 13–19 digits, optionally grouped by single spaces or dashes; checked with Luhn before redacting.
    "card": r"(?<![\d.-])\d(?:[ -]?\d){12,18}(?![\d-]|\.\d)",
    # International (+CC ...) or grouped national numbers; dates, versions and IPs do not match.
    "phone": (
        r"(?<![\w+.-])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}[ .-]?\d{3,4}[ .-]?\d{2,4}"
        r"|\(\d{2,4}\)[ .-]?\d{3,4}[ .-]?\d{3,4}"
        r"|\d{3}[ .-]\d{3}[ .-]\d{4})(?![\w.-]|\.\d)"
    ),
}


#: Strings shorter than this cannot hold anything the built-in redactors look for.
_MIN_SECRET_LEN: Final = 6


class _Dropped:
    """Marks a value the mask failed on: its key (or list element, or field) is dropped."""


_DROP: Final = _Dropped()


class Redactor:
    """Redacts e-mail addresses, phone numbers, card numbers (Luhn-checked), JWTs and API keys in every
    free-text field, then applies a custom `mask`; a mask that raises drops the field.

    Free-text fields: `metadata` (any depth), span `attributes`, `error`, a tool's `arguments` and
    `result`, a log's `message`, a metric's tag values. Does not block; cost grows with text length.
    """

    __slots__ = ("_mask", "_regex")

    def __init__(self, names: Iterable[str] = (), mask: Callable[[str], str] | None = None) -> None:
        chosen = [n for n in PATTERNS if n in set(names)]
        unknown = set(names) - set(PATTERNS)
        if unknown:
            raise ValueError(f"unknown redactors {sorted(unknown)}; choose from {list(PATTERNS)}")
        self._regex = re.compile("|".join(f"(?P<{n}>{PATTERNS[n]})" for n in chosen)) if chosen else None
        self._mask = mask

    @staticmethod
    def _replace(match: re.Match[str]) -> str:
        kind = match.lastgroup or "secret"
        text = match.group()
        if kind == "card":
            digits = text.replace(" ", "").replace("-", "")
            if not luhn_ok(digits):
                return text
        return f"[REDACTED:{kind}]"

    def text(self, value: str) -> str | _Dropped:
        """One string, redacted and masked (the same object when nothing matched); `_DROP` when the
        mask fails."""
        if self._regex is not None and len(value) >= _MIN_SECRET_LEN:
            value = self._regex.sub(self._replace, value)
        if self._mask is not None:
            try:
                masked: object = self._mask(value)
            except Exception:
                return _DROP
            if not isinstance(masked, str):
                return _DROP
            return masked
        return value

    def clean(self, value: Any) -> Any:
        """A value with every string inside redacted; the same object when nothing changed."""
        kind = type(value)
        if kind is str:
            return self.text(value)
        if kind is dict or isinstance(value, dict):
            out: dict[Any, Any] | None = None
            short = self._mask is None
            for k, v in value.items():
                if short and type(v) is str and len(v) < _MIN_SECRET_LEN:
                    continue
                c = self.clean(v)
                if c is not v:
                    if out is None:
                        out = dict(value)
                    if c is _DROP:
                        del out[k]
                    else:
                        out[k] = c
            return value if out is None else out
        if isinstance(value, list | tuple):
            items = [self.clean(v) for v in value]
            if all(a is b for a, b in zip(items, value, strict=True)):
                return value
            return [v for v in items if v is not _DROP]
        if isinstance(value, str):  # a str subclass
            return self.text(str(value))
        return value

    def __call__(self, item: TelemetryItem) -> TelemetryItem:
        if type(item) is LLMCall and item.metadata is None and item.error is None:
            return item  # the common call without free text: nothing to scan
        changes: dict[str, Any] = {}
        for name in _TEXT_FIELDS[type(item)]:
            value = getattr(item, name)
            if value is None:
                continue
            cleaned = self.clean(value)
            if cleaned is not value:
                if cleaned is _DROP:
                    cleaned = "" if name == "message" else None
                changes[name] = cleaned
        return _copy_with(item, changes) if changes else item


_TEXT_FIELDS: Final[dict[type[Any], tuple[str, ...]]] = {
    LLMCall: ("metadata", "error"),
    Span: ("attributes", "error"),
    ToolExecution: ("arguments", "result", "error", "metadata"),
    Orchestration: ("metadata", "error"),
    LogEvent: ("message", "metadata"),
    Metric: ("tags",),
}


# ------------------------------------------------------------------------------------------- user ids


class UserIdHasher:
    """Replaces `user_id` by `user_id_hash` = SHA-256 hex digest of `salt + user_id`.

    Applies to an LLM call's `user_id` field and to a top-level `user_id` key of `metadata` /
    `attributes` (which becomes `user_id_hash`). Does not block.
    """

    __slots__ = ("_salt",)

    def __init__(self, salt: str = "") -> None:
        self._salt = salt

    def digest(self, user_id: str) -> str:
        """The hash of one user id (64 hex digits)."""
        return hashlib.sha256((self._salt + user_id).encode()).hexdigest()

    def __call__(self, item: TelemetryItem) -> TelemetryItem:
        changes: dict[str, Any] = {}
        if type(item) is LLMCall and item.user_id is not None:
            changes["user_id"] = None
            changes["user_id_hash"] = item.user_id_hash or self.digest(item.user_id)
        bag_name = _BAG.get(type(item))
        if bag_name is not None:
            bag: dict[str, Any] | None = getattr(item, bag_name)
            if bag and "user_id" in bag:
                new = dict(bag)
                raw = new.pop("user_id")
                if raw is not None:
                    new.setdefault("user_id_hash", self.digest(str(raw)))
                changes[bag_name] = new
        return _copy_with(item, changes) if changes else item


# ------------------------------------------------------------------------------------------ global tags

#: Tag keys that fill an LLM call's top-level fields (when the call leaves them unset).
CALL_TAG_FIELDS: Final = frozenset({"tenant_id", "route", "org_id", "feature", "endpoint", "environment"})
_CALL_DEFAULTS: Final[dict[str, str | None]] = {"tenant_id": DEFAULT_TENANT, "route": DEFAULT_ROUTE}


class GlobalTags:
    """Adds global tags to every item; the item's own keys win.

    Tags go into `metadata` (calls, tools, steps, logs), `attributes` (spans) or `tags` (metrics);
    for LLM calls the keys in `CALL_TAG_FIELDS` fill the top-level field instead. Does not block.
    """

    __slots__ = ("_call_fields", "_call_rest", "_tags")

    def __init__(self, tags: Mapping[str, str]) -> None:
        self._tags = dict(tags)
        self._call_fields = {k: v for k, v in tags.items() if k in CALL_TAG_FIELDS}
        self._call_rest = {k: v for k, v in tags.items() if k not in CALL_TAG_FIELDS}

    def __call__(self, item: TelemetryItem) -> TelemetryItem:
        cls = type(item)
        changes: dict[str, Any] = {}
        tags = self._tags
        if cls is LLMCall:
            for key, value in self._call_fields.items():
                if getattr(item, key) == _CALL_DEFAULTS.get(key):
                    changes[key] = value
            tags = self._call_rest
        if tags:
            name = "tags" if cls is Metric else _BAG[cls]
            current: dict[str, Any] | None = getattr(item, name)
            changes[name] = {**tags, **current} if current else dict(tags)
        return _copy_with(item, changes) if changes else item


def build_processors(config: TelemetryConfig) -> list[Processor]:
    """The built-in chain for a config, in order: strip content, hash user ids, redact and mask, add
    global tags, add the sample weight. Processors that would do nothing are left out."""
    chain: list[Processor] = []
    if not (config.record_inputs and config.record_outputs and config.record_metadata):
        chain.append(
            ContentFilter(
                inputs=config.record_inputs, outputs=config.record_outputs, metadata=config.record_metadata
            )
        )
    if config.hash_user_ids:  # before redaction, so an e-mail used as a user id hashes as itself
        chain.append(UserIdHasher(config.user_id_salt))
    if config.redact or config.mask is not None:
        chain.append(Redactor(config.redact, config.mask))
    if config.tags:
        chain.append(GlobalTags(config.tags))
    if config.sample_rate < 1.0:
        chain.append(SampleWeight(config.sample_rate))
    return chain
