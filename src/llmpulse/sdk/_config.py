"""`TelemetryConfig`: the collector's frozen, validated settings, with `LLMPULSE_*` environment fallbacks.

Errors: `ValueError` naming the field (constructor) or the variable (`from_env`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Final, Literal

#: The built-in redactors, by name (see `llmpulse.sdk._processors`).
REDACTORS: Final = ("email", "phone", "card", "jwt", "api_key")
#: Redactors on by default: secrets, e-mail addresses and card numbers. `phone` is opt-in (it is the
#: one most likely to match something harmless, such as an order number with dashes).
DEFAULT_REDACT: Final = ("email", "card", "jwt", "api_key")

#: What happens to an LLM call the sampler leaves out.
SamplingMode = Literal["aggregate", "discard"]

ENV_ENABLED: Final = "LLMPULSE_ENABLED"
ENV_BUFFER_SIZE: Final = "LLMPULSE_BUFFER_SIZE"
ENV_FLUSH_INTERVAL_MS: Final = "LLMPULSE_FLUSH_INTERVAL_MS"
ENV_MAX_BATCH_SIZE: Final = "LLMPULSE_MAX_BATCH_SIZE"
ENV_SAMPLE_RATE: Final = "LLMPULSE_SAMPLE_RATE"
ENV_SAMPLING: Final = "LLMPULSE_SAMPLING"
ENV_TAGS: Final = "LLMPULSE_TAGS"
ENV_RECORD_INPUTS: Final = "LLMPULSE_RECORD_INPUTS"
ENV_RECORD_OUTPUTS: Final = "LLMPULSE_RECORD_OUTPUTS"
ENV_RECORD_METADATA: Final = "LLMPULSE_RECORD_METADATA"
ENV_REDACT: Final = "LLMPULSE_REDACT"
ENV_HASH_USER_IDS: Final = "LLMPULSE_HASH_USER_IDS"
ENV_USER_ID_SALT: Final = "LLMPULSE_USER_ID_SALT"
ENV_SHUTDOWN_TIMEOUT_S: Final = "LLMPULSE_SHUTDOWN_TIMEOUT_S"

#: field name → environment variable, for every field that has one (`mask` has none: it is code).
ENV_VARS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "enabled": ENV_ENABLED,
        "buffer_size": ENV_BUFFER_SIZE,
        "flush_interval_ms": ENV_FLUSH_INTERVAL_MS,
        "max_batch_size": ENV_MAX_BATCH_SIZE,
        "sample_rate": ENV_SAMPLE_RATE,
        "sampling": ENV_SAMPLING,
        "tags": ENV_TAGS,
        "record_inputs": ENV_RECORD_INPUTS,
        "record_outputs": ENV_RECORD_OUTPUTS,
        "record_metadata": ENV_RECORD_METADATA,
        "redact": ENV_REDACT,
        "hash_user_ids": ENV_HASH_USER_IDS,
        "user_id_salt": ENV_USER_ID_SALT,
        "shutdown_timeout_s": ENV_SHUTDOWN_TIMEOUT_S,
    }
)

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
_MAX_BUFFER: Final = 10_000_000


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """How a `Collector` samples, cleans and buffers telemetry. Frozen; validated on construction.

    Attributes:
        enabled: when False, `record` returns at once and nothing is exported.
        buffer_size: the most items each exporter holds, waiting or in its batch in flight; when
            full, the oldest waiting item is dropped (counted). About 0.7 KB per queued call.
        flush_interval_ms: longest time an item waits in a queue before its batch is exported.
        max_batch_size: most items handed to an exporter in one `export` call.
        sample_rate: fraction of traces kept, 0.0–1.0. The decision is deterministic by `trace_id`
            (else `request_id`), so the items of one trace are kept or left out together; metrics are
            never sampled out.
        sampling: what happens to LLM calls left out by sampling: ``"aggregate"`` (default) adds their
            calls, tokens and cost to `Collector.stats()["unsampled"]`; ``"discard"`` only counts them
            in `sampled_out`.
        tags: global tags added to every item (`metadata` of calls, tools, steps and logs; `attributes`
            of spans; `tags` of metrics). An item's own keys win. For LLM calls, the keys `tenant_id`,
            `route`, `org_id`, `feature`, `endpoint` and `environment` fill those top-level fields when
            the call leaves them unset.
        record_inputs: when False, prompt content (`metadata`/`attributes` keys `input`, `prompt`,
            `messages`; a tool's `arguments`) is removed before export.
        record_outputs: when False, completion content (keys `output`, `completion`; a tool's `result`)
            is removed before export.
        record_metadata: when False, `metadata` (and span `attributes`) are removed; global tags and the
            sample weight are added afterwards.
        redact: the built-in redactors to apply to free-text fields (names from `REDACTORS`).
        mask: a custom function applied to every free-text string after redaction; when it raises (or
            returns a non-string) the field is dropped, never sent raw.
        hash_user_ids: replace `user_id` by `user_id_hash` = SHA-256 hex of `user_id_salt + user_id`.
        user_id_salt: the salt for `hash_user_ids`.
        shutdown_timeout_s: default deadline of `flush`, `shutdown` and the `atexit` flush.
    """

    enabled: bool = True
    buffer_size: int = 65_536
    flush_interval_ms: int = 1000
    max_batch_size: int = 512
    sample_rate: float = 1.0
    sampling: SamplingMode = "aggregate"
    tags: Mapping[str, str] = field(default_factory=dict)
    record_inputs: bool = True
    record_outputs: bool = True
    record_metadata: bool = True
    redact: tuple[str, ...] = DEFAULT_REDACT
    mask: Callable[[str], str] | None = None
    hash_user_ids: bool = False
    user_id_salt: str = ""
    shutdown_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("enabled", "record_inputs", "record_outputs", "record_metadata", "hash_user_ids"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        for name, low, high in (
            ("buffer_size", 1, _MAX_BUFFER),
            ("flush_interval_ms", 1, 3_600_000),
            ("max_batch_size", 1, _MAX_BUFFER),
        ):
            value = getattr(self, name)
            if not _is_int(value) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer between {low} and {high}, got {value!r}")
        if not _is_number(self.sample_rate) or not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be a number between 0.0 and 1.0, got {self.sample_rate!r}")
        if self.sampling not in ("aggregate", "discard"):
            raise ValueError(f'sampling must be "aggregate" or "discard", got {self.sampling!r}')
        if not _is_number(self.shutdown_timeout_s) or self.shutdown_timeout_s < 0:
            raise ValueError(
                f"shutdown_timeout_s must be a non-negative number, got {self.shutdown_timeout_s!r}"
            )
        if not isinstance(self.tags, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.tags.items()
        ):
            raise ValueError(f"tags must map strings to strings, got {self.tags!r}")
        object.__setattr__(self, "tags", MappingProxyType(dict(self.tags)))
        given: object = self.redact
        if isinstance(given, str) or not isinstance(given, Iterable):
            raise ValueError(f"redact must be a sequence of redactor names, got {given!r}")
        redact = tuple(given)
        unknown = [r for r in redact if r not in REDACTORS]
        if unknown:
            raise ValueError(f"redact names unknown redactors {unknown}; choose from {list(REDACTORS)}")
        object.__setattr__(self, "redact", redact)
        if self.mask is not None and not callable(self.mask):
            raise ValueError(f"mask must be a callable (str) -> str or None, got {self.mask!r}")
        if not isinstance(self.user_id_salt, str):
            raise ValueError(f"user_id_salt must be a string, got {self.user_id_salt!r}")

    @property
    def flush_interval_s(self) -> float:
        """`flush_interval_ms` in seconds."""
        return self.flush_interval_ms / 1000.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> TelemetryConfig:
        """Build a config from `LLMPULSE_*` variables (see `ENV_VARS`); keyword arguments win over them.

        Booleans accept 1/0, true/false, yes/no, on/off; `LLMPULSE_TAGS` is ``k=v,k2=v2``;
        `LLMPULSE_REDACT` is a comma-separated list of redactor names, ``all`` or ``none``.
        Raises `ValueError` naming the variable when one cannot be parsed. Does not block.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = ENV_VARS.get(f.name)
            if f.name in overrides or var is None:
                continue
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[f.name] = _parse(f.name, raw.strip())
            except ValueError as exc:
                raise ValueError(f"{var}={raw!r}: {exc}") from None
        values.update(overrides)
        try:
            return cls(**values)
        except ValueError as exc:
            names = [n for n in values if n not in overrides and str(exc).startswith(n)]
            if names:
                raise ValueError(f"{ENV_VARS[names[0]]}: {exc}") from None
            raise


def _parse(name: str, raw: str) -> Any:
    if name in ("enabled", "record_inputs", "record_outputs", "record_metadata", "hash_user_ids"):
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("expected a boolean (1/0, true/false, yes/no, on/off)")
    if name in ("buffer_size", "flush_interval_ms", "max_batch_size"):
        try:
            return int(raw)
        except ValueError:
            raise ValueError("expected an integer") from None
    if name in ("sample_rate", "shutdown_timeout_s"):
        try:
            return float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
    if name == "tags":
        tags: dict[str, str] = {}
        for part in raw.split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ValueError("expected comma-separated key=value pairs")
            tags[key.strip()] = value.strip()
        return tags
    if name == "redact":
        low = raw.lower()
        if low == "none":
            return ()
        if low == "all":
            return REDACTORS
        return tuple(p.strip() for p in raw.split(",") if p.strip())
    return raw


# -- shared budgets -------------------------------------------------------------------------------

#: What a shared budget does when its server cannot be reached, times out or answers 5xx.
UnavailablePolicy = Literal["fail_open", "fail_closed"]

ENV_BUDGET_URL: Final = "LLMPULSE_BUDGET_URL"
ENV_BUDGET_API_KEY: Final = "LLMPULSE_BUDGET_API_KEY"
ENV_BUDGET_ON_UNAVAILABLE: Final = "LLMPULSE_BUDGET_ON_UNAVAILABLE"
ENV_BUDGET_TIMEOUT_S: Final = "LLMPULSE_BUDGET_TIMEOUT_S"
ENV_BUDGET_RETRY_INTERVAL_S: Final = "LLMPULSE_BUDGET_RETRY_INTERVAL_S"
ENV_BUDGET_RESERVATION_TTL_S: Final = "LLMPULSE_BUDGET_RESERVATION_TTL_S"
#: Read when `LLMPULSE_BUDGET_URL` / `LLMPULSE_BUDGET_API_KEY` are unset: the pulse exporter's server
#: (the same names as `llmpulse.exporters._env`, which the SDK may not import).
ENV_EXPORT_URL_FALLBACK: Final = "LLMPULSE_EXPORT_URL"
ENV_API_KEY_FALLBACK: Final = "LLMPULSE_API_KEY"


def _parse_float(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError("expected a number") from None


#: field → (variables, first set wins; parser): the one table `SharedBudgetConfig.from_env` reads.
BUDGET_ENV_VARS: Final[Mapping[str, tuple[tuple[str, ...], Callable[[str], Any]]]] = MappingProxyType(
    {
        "url": ((ENV_BUDGET_URL, ENV_EXPORT_URL_FALLBACK), str),
        "api_key": ((ENV_BUDGET_API_KEY, ENV_API_KEY_FALLBACK), str),
        "on_unavailable": ((ENV_BUDGET_ON_UNAVAILABLE,), str.lower),
        "timeout_s": ((ENV_BUDGET_TIMEOUT_S,), _parse_float),
        "retry_interval_s": ((ENV_BUDGET_RETRY_INTERVAL_S,), _parse_float),
        "reservation_ttl_s": ((ENV_BUDGET_RESERVATION_TTL_S,), _parse_float),
    }
)


@dataclass(frozen=True, slots=True)
class SharedBudgetConfig:
    """How a `SharedBudget` reaches its server and what it does when it cannot. Frozen; validated.

    Attributes:
        url: the llmpulse server's base URL (``http://host:port``).
        api_key: sent as ``Authorization: Bearer <api_key>`` when given.
        on_unavailable: ``"fail_open"`` (default: the call proceeds unreserved, counted) or
            ``"fail_closed"`` (the call is refused with `BudgetUnavailable`, counted) when the server
            cannot be reached within `timeout_s`, or answers 5xx.
        timeout_s: the longest a reservation (connect, send, answer) may take before the policy applies.
        retry_interval_s: after a failure, calls apply the policy at once, without trying the server,
            for this long (0: every call tries).
        reservation_ttl_s: asked for each reservation (`ttl_s`); None: the budget's own TTL.
    """

    url: str = "http://127.0.0.1:8080"
    api_key: str | None = None
    on_unavailable: UnavailablePolicy = "fail_open"
    timeout_s: float = 1.0
    retry_interval_s: float = 1.0
    reservation_ttl_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise ValueError(
                f"url must be an http(s) base URL such as http://127.0.0.1:8080, got {self.url!r}"
            )
        object.__setattr__(self, "url", self.url.rstrip("/"))
        if self.api_key is not None and not isinstance(self.api_key, str):
            raise ValueError("api_key must be a string or None")
        if self.on_unavailable not in ("fail_open", "fail_closed"):
            raise ValueError(
                f'on_unavailable must be "fail_open" or "fail_closed", got {self.on_unavailable!r}'
            )
        if not _is_number(self.timeout_s) or self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be a positive number, got {self.timeout_s!r}")
        if not _is_number(self.retry_interval_s) or self.retry_interval_s < 0:
            raise ValueError(f"retry_interval_s must be a number >= 0, got {self.retry_interval_s!r}")
        ttl = self.reservation_ttl_s
        if ttl is not None and (not _is_number(ttl) or ttl <= 0):
            raise ValueError(f"reservation_ttl_s must be a positive number or None, got {ttl!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> SharedBudgetConfig:
        """Build a config from the variables of `BUDGET_ENV_VARS`; keyword arguments win over them.

        A keyword argument given as None counts as not given. Raises `ValueError` naming the variable
        when one cannot be parsed or is invalid. Does not block.
        """
        env = os.environ if environ is None else environ
        given = {k: v for k, v in overrides.items() if v is not None}
        values: dict[str, Any] = {}
        source: dict[str, str] = {}
        for name, (variables, parse) in BUDGET_ENV_VARS.items():
            if name in given:
                continue
            for var in variables:
                raw = env.get(var, "").strip()
                if not raw:
                    continue
                try:
                    values[name] = parse(raw)
                except ValueError as exc:
                    raise ValueError(f"{var}={raw!r}: {exc}") from None
                source[name] = var
                break
        values.update(given)
        try:
            return cls(**values)
        except ValueError as exc:
            names = [n for n in source if str(exc).startswith(n)]
            if names:
                raise ValueError(f"{source[names[0]]}: {exc}") from None
            raise
