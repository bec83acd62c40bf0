"""The HTTP-level limits: body read deadline, JSON nesting depth, query ranges and page sizes, and the
per-key rate limit (a token bucket per API key, or per client IP for requests without a valid key).

Limits on the events themselves (body bytes, batch items, field lengths, metadata) are
`llmpulse.events.Limits`; these are the ones only a server has. Every one is listed in docs/limits.md
with its default, its setting and its answer: 408 (body too slow), 400 (too deep, range too long, page
too large), 429 with ``Retry-After`` (rate limit).
"""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from llmpulse.server._errors import ApiError

ENV_BODY_TIMEOUT_S: Final = "LLMPULSE_BODY_TIMEOUT_S"
ENV_MAX_JSON_DEPTH: Final = "LLMPULSE_MAX_JSON_DEPTH"
ENV_RATE_LIMIT: Final = "LLMPULSE_RATE_LIMIT"
ENV_RATE_BURST: Final = "LLMPULSE_RATE_BURST"
ENV_MAX_QUERY_RANGE_S: Final = "LLMPULSE_MAX_QUERY_RANGE_S"
ENV_MAX_PAGE_SIZE: Final = "LLMPULSE_MAX_PAGE_SIZE"

#: Most rate-limit buckets kept; the least recently used beyond this are forgotten (a forgotten
#: bucket starts full again, so forgetting only ever errs towards letting a request through).
MAX_BUCKETS: Final = 100_000


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Limits the server applies to HTTP requests (`ServerSettings.request_limits`).

    Attributes:
        body_read_timeout_s: the longest a request body may take to arrive, from the first read to
            the last byte (408 after it); bounds how long a slow client holds a connection and memory.
        max_json_depth: deepest nesting of arrays and objects in a JSON body (400 beyond it).
        rate_limit_per_s: requests per second each API key may make on average (0: no limit).
            Without a valid key the limit applies per client IP instead, when keys are configured or
            the server listens beyond loopback.
        rate_limit_burst: requests a key may make at once before the average applies (bucket size).
        max_query_range_s: longest ``[from, to)`` a query may cover (400 beyond it).
        max_page_size: largest ``limit`` a query may ask for (400 beyond it).
    """

    body_read_timeout_s: float = 30.0
    max_json_depth: int = 32
    rate_limit_per_s: float = 100.0
    rate_limit_burst: int = 200
    max_query_range_s: float = 400 * 24 * 3600.0
    max_page_size: int = 10_000

    def __post_init__(self) -> None:
        for name in ("body_read_timeout_s", "max_query_range_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        rate = self.rate_limit_per_s
        if not isinstance(rate, int | float) or not math.isfinite(rate) or rate < 0:
            raise ValueError(f"rate_limit_per_s must be a number >= 0, got {rate!r}")
        for name in ("max_json_depth", "rate_limit_burst", "max_page_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    @classmethod
    def env_overrides(cls, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The fields the environment variables set (``LLMPULSE_BODY_TIMEOUT_S``, ...).

        Raises `ValueError` naming a variable whose value is not a number.
        """
        env = os.environ if env is None else env
        out: dict[str, Any] = {}
        for var, name, kind in (
            (ENV_BODY_TIMEOUT_S, "body_read_timeout_s", float),
            (ENV_MAX_JSON_DEPTH, "max_json_depth", int),
            (ENV_RATE_LIMIT, "rate_limit_per_s", float),
            (ENV_RATE_BURST, "rate_limit_burst", int),
            (ENV_MAX_QUERY_RANGE_S, "max_query_range_s", float),
            (ENV_MAX_PAGE_SIZE, "max_page_size", int),
        ):
            if env.get(var):
                try:
                    out[name] = kind(env[var])
                except ValueError:
                    noun = "an integer" if kind is int else "a number"
                    raise ValueError(f"{var} must be {noun}, got {env[var]!r}") from None
        return out


# -- JSON nesting depth ---------------------------------------------------------------------------------

#: Deletes every byte but brackets and the quote, and maps ``{}`` to ``[]`` (nesting is the same).
_STRUCTURE: Final = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE: Final = bytes(b for b in range(256) if b not in b'[]{}"')


def json_depth_exceeds(data: bytes, limit: int) -> bool:
    """True when `data` (JSON or NDJSON) nests arrays and objects deeper than `limit`. CPU only.

    Runs at C speed (a few milliseconds a megabyte): drops escaped backslashes and quotes, keeps only
    brackets (``{}`` read as ``[]``) and quotes, drops what lies between quotes (brackets inside strings
    do not nest), then peels the innermost ``[]`` pairs, one level a pass, at most `limit` passes.
    Malformed JSON is never reported as too deep unless it really nests that far; the decoder reports
    it as malformed.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    rest = data.translate(_STRUCTURE, _NOT_STRUCTURE)
    if b'"' in rest:
        # Strings without brackets are adjacent quotes; when removing those leaves no quote, every
        # pair removed was one string (the only perfect matching of consecutive quotes), else split.
        without = rest.replace(b'""', b"")
        rest = without if b'"' not in without else b"".join(rest.split(b'"')[0::2])
    for _ in range(limit):
        peeled = rest.replace(b"[]", b"")  # not rescanned: exactly one level a pass
        if len(peeled) == len(rest):
            return False  # nothing nested left (or only unbalanced brackets: malformed, not deep)
        rest = peeled
        if not rest:
            return False
    return b"[]" in rest


def check_json_depth(data: bytes, limit: int) -> None:
    """Raise `ApiError` 400 when `data` nests deeper than `limit` (`max_json_depth`)."""
    if json_depth_exceeds(data, limit):
        raise ApiError(
            400, f"request body nests arrays and objects deeper than {limit} levels (max_json_depth)"
        )


# -- queries --------------------------------------------------------------------------------------------


def check_page_size(limit: int, limits: RequestLimits, name: str = "limit") -> None:
    """Raise `ApiError` 400 when a page size is over `max_page_size`."""
    if limit > limits.max_page_size:
        raise ApiError(
            400, f"query parameter `{name}` is {limit}; the most is {limits.max_page_size} (max_page_size)"
        )


def check_query_range(
    start: datetime | None, end: datetime | None, now: datetime, limits: RequestLimits
) -> None:
    """Raise `ApiError` 400 when ``[start, end or now)`` is longer than `max_query_range_s`.

    A query without `start` covers no range (its page size bounds it); `end` defaults to `now`.
    """
    if start is None:
        return
    span = ((end or now) - start).total_seconds()
    if span > limits.max_query_range_s:
        raise ApiError(
            400,
            f"the range from `from` to `to` is {span:.0f} s; the longest is "
            f"{limits.max_query_range_s:.0f} s (max_query_range_s)",
        )


# -- rate limit -----------------------------------------------------------------------------------------


class RateLimiter:
    """Token buckets by key: `rate` tokens a second up to `burst`; each request takes one. CPU only.

    Used on the event loop only (not thread-safe). Buckets of keys not seen for a while are dropped
    beyond `max_buckets`, least recently used first.
    """

    __slots__ = ("_buckets", "_burst", "_max", "_rate")

    def __init__(self, rate: float, burst: int, max_buckets: int = MAX_BUCKETS) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._max = max_buckets
        self._buckets: OrderedDict[object, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """False when the rate is 0 (no limit)."""
        return self._rate > 0

    def take(self, key: object, now: float | None = None) -> float | None:
        """Take a token for `key`: None when allowed, else the seconds until a token is available."""
        if self._rate <= 0:
            return None
        now = time.monotonic() if now is None else now
        found = self._buckets.pop(key, None)
        if found is None:
            tokens = self._burst
        else:
            tokens, last = found
            tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait = None
        else:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self._rate
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait
