"""Posting batches to a server: retries on 503/429 honouring ``Retry-After``, and outcome parsing.

Retries live here only. A 503 or 429 waits for ``Retry-After`` (or an exponential backoff with jitter
when absent); a connection error or timeout is retried with the same backoff. Posting the same events
twice is safe: the processor counts a request id and kind once.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import httpx

#: Statuses after which the same request is sent again.
RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})


class CliError(Exception):
    """A failure the CLI reports as one line (exit status 1)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry.

    Attributes:
        max_attempts: sends of one request in all, the first included.
        max_wait_s: the longest single wait, whatever ``Retry-After`` says.
        base_backoff_s: the first backoff without ``Retry-After`` (doubling, with jitter).
    """

    max_attempts: int = 10
    max_wait_s: float = 30.0
    base_backoff_s: float = 0.25


@dataclass(slots=True)
class BatchOutcome:
    """What the server did with one batch: accepted count and the rejected items (index, reason).

    `failed` holds a reason when the whole batch was refused (413, 400, 415, ...); then every item
    counts as rejected.
    """

    status: int
    accepted: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    failed: str | None = None


def retry_after_s(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _backoff(policy: RetryPolicy, attempt: int) -> float:
    delay = policy.base_backoff_s * 2 ** (attempt - 1)
    return float(min(policy.max_wait_s, delay * (0.5 + random.random())))


def post_with_retry(
    client: httpx.Client,
    url: str,
    body: bytes,
    headers: dict[str, str],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> httpx.Response:
    """POST `body`, retrying on 429/502/503/504 and transport errors. Blocks (network and waits).

    Raises `CliError` when the server cannot be reached or keeps refusing after every attempt.
    """
    last: str = "no attempt made"
    for attempt in range(1, policy.max_attempts + 1):
        try:
            response = client.post(url, content=body, headers=headers)
        except httpx.TransportError as exc:
            last = f"cannot reach {url}: {exc or type(exc).__name__}"
            wait = _backoff(policy, attempt)
        else:
            if response.status_code not in RETRY_STATUSES:
                return response
            last = f"{url} answered {response.status_code}: {_error_text(response)}"
            hinted = retry_after_s(response.headers.get("retry-after"))
            wait = min(policy.max_wait_s, hinted) if hinted is not None else _backoff(policy, attempt)
        if attempt < policy.max_attempts:
            sleep(wait)
    raise CliError(f"giving up after {policy.max_attempts} attempts: {last}")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_text(response: httpx.Response) -> str:
    data = _json(response)
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    return response.text[:200] or response.reason_phrase


def batch_outcome(response: httpx.Response) -> BatchOutcome:
    """Read the server's answer to a ``/v1/events`` post (200, 207, 4xx with or without ``rejected``)."""
    data = _json(response)
    outcome = BatchOutcome(status=response.status_code)
    if isinstance(data, dict):
        accepted = data.get("accepted")
        outcome.accepted = accepted if isinstance(accepted, int) else 0
        rejected = data.get("rejected")
        if isinstance(rejected, list):
            outcome.rejected = [
                (int(item.get("index", -1)), str(item.get("error", "")))
                for item in rejected
                if isinstance(item, dict)
            ]
    if response.status_code >= 300 and not outcome.rejected:
        outcome.failed = f"HTTP {response.status_code}: {_error_text(response)}"
    return outcome
