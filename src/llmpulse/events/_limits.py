"""Explicit, documented limits on every event field (see docs/limits.md).

Static limits (string lengths, token ranges) are part of the schema types; dynamic ones (how far in the
past or future a timestamp may be, metadata size and depth, batch size, body size) live in `Limits`,
a frozen settings object the server builds once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, timedelta, timezone, tzinfo
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: Longest identifier (`request_id`, `trace_id`, `span_id`, `user_id_hash`, ...), in characters.
MAX_ID_LEN: Final = 128
#: Longest name (`tenant_id`, `route`, `model`, `provider`, `user_id`, `feature`, ...), in characters.
MAX_NAME_LEN: Final = 256
#: Longest free text (`error` as a string, `finish_reason`), in characters.
MAX_TEXT_LEN: Final = 8192
#: Largest token count accepted in any token field (10^9).
MAX_TOKENS: Final = 1_000_000_000
#: Largest `latency_ms` / `ttft_ms` accepted (10^9 ms, about 11.6 days).
MAX_LATENCY_MS: Final = 1e9
#: Largest `cost` in USD for one call.
MAX_COST_USD: Final = 1e6

DEFAULT_MAX_BODY_BYTES: Final = 10 * 1024 * 1024
DEFAULT_MAX_BATCH_ITEMS: Final = 10_000
DEFAULT_MAX_METADATA_BYTES: Final = 16 * 1024
DEFAULT_MAX_METADATA_DEPTH: Final = 5
DEFAULT_MAX_FUTURE_S: Final = 24 * 3600.0
DEFAULT_MAX_PAST_S: Final = 30 * 24 * 3600.0
#: The value of `parse_naive_timestamp_tz` that refuses naive timestamps on call events too.
NAIVE_REJECT: Final = "reject"


def parse_naive_timestamp_tz(text: str) -> tzinfo | None:
    """The zone a call event's timestamp without a UTC offset is read in, from its setting's text.

    ``UTC`` (any case), an IANA zone name (``Europe/Stockholm``), a fixed offset (``+02:00``,
    ``-0530``), or ``reject`` (None: such timestamps are refused, as on every other event type).
    Raises `ValueError` for anything else. Pure.
    """
    value = text.strip()
    if value.lower() == NAIVE_REJECT:
        return None
    if value.upper() in ("UTC", "Z"):
        return UTC
    if value[:1] in ("+", "-"):
        digits = value[1:].replace(":", "")
        if len(digits) == 4 and digits.isdigit() and int(digits[:2]) < 24 and int(digits[2:]) < 60:
            offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            return timezone(-offset if value[0] == "-" else offset)
        raise ValueError(f"a fixed offset must look like +HH:MM, got {text!r}")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"expected UTC, an IANA time zone name, a fixed offset (+HH:MM) or {NAIVE_REJECT!r}, got {text!r}"
        ) from None


@dataclass(frozen=True, slots=True)
class Limits:
    """Dynamic validation limits applied to decoded events.

    Attributes:
        max_body_bytes: largest request body, both as sent and after gzip decompression.
        max_batch_items: most events in one `/v1/events` batch.
        max_metadata_bytes: largest `metadata` object, measured as compact JSON.
        max_metadata_depth: deepest nesting of `metadata` (the object itself is depth 1).
        max_future_s: how far past the server's clock a timestamp may lie (default one day).
        max_past_s: how far before the server's clock a timestamp may lie (default 30 days;
            raise it to backfill older events with `llmpulse replay`).
        naive_timestamp_tz: the zone a call event's (``llm.call``, token-copilot's ``llm_cost``)
            timestamp without a UTC offset is read in (default UTC); None refuses such timestamps.
            Requests and responses always need an offset. See `parse_naive_timestamp_tz`.
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS
    max_metadata_bytes: int = DEFAULT_MAX_METADATA_BYTES
    max_metadata_depth: int = DEFAULT_MAX_METADATA_DEPTH
    max_future_s: float = DEFAULT_MAX_FUTURE_S
    max_past_s: float = DEFAULT_MAX_PAST_S
    naive_timestamp_tz: tzinfo | None = UTC

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_batch_items",
            "max_metadata_bytes",
            "max_metadata_depth",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_future_s", "max_past_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if self.naive_timestamp_tz is not None and not isinstance(self.naive_timestamp_tz, tzinfo):
            raise ValueError(f"naive_timestamp_tz must be a tzinfo or None, got {self.naive_timestamp_tz!r}")
