"""Retries in one place: exponential backoff with jitter, `Retry-After`, deadlines, shutdown.

`call_with_retry` runs one export attempt after another until it succeeds, fails permanently, runs out
of attempts or time, or shutdown leaves no time for the next attempt. Every wait is a
`stop.wait(delay)` on the pipeline's shutdown event, so shutdown cuts waits short at once; an attempt
still fits when it can start before the shutdown deadline. Exporters never loop themselves: they raise
`RetryableError` (optionally with `retry_after_s`) or any other exception for a permanent failure.

Errors: `RetryPolicy` raises `ValueError` naming the field for an invalid setting; nothing else here
raises (the outcome of the calls is returned, not raised).
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from llmpulse.sdk._exporter import RetryableError

__all__ = ["Outcome", "RetryPolicy", "call_with_retry", "parse_retry_after"]

T = TypeVar("T")

#: Why a batch was given up (the keys of `stats()["dropped_by_reason"]` that retries produce).
RETRIES_EXHAUSTED = "retries_exhausted"
PERMANENT_ERROR = "permanent_error"
SHUTDOWN = "shutdown"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failed export is retried.

    Attributes:
        max_attempts: attempts per batch, the first included (1 disables retries).
        initial_backoff_s: the wait after the first failed attempt.
        max_backoff_s: the longest computed backoff (a server's `Retry-After` may ask for longer).
        multiplier: growth of the backoff from one attempt to the next.
        jitter: relative spread of each backoff, uniformly in ``[1 - jitter, 1 + jitter]``; 0 to 1.
        max_elapsed_s: time budget of one batch, waits included; a retry that cannot start within it
            is not made.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2
    max_elapsed_s: float = 120.0

    def __post_init__(self) -> None:
        if (
            not isinstance(self.max_attempts, int)
            or isinstance(self.max_attempts, bool)
            or self.max_attempts < 1
        ):
            raise ValueError(f"max_attempts must be a positive integer, got {self.max_attempts!r}")
        for name in ("initial_backoff_s", "max_backoff_s", "max_elapsed_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not isinstance(self.multiplier, int | float) or not self.multiplier >= 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier!r}")
        if not isinstance(self.jitter, int | float) or not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be in [0, 1], got {self.jitter!r}")

    def backoff_s(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """The wait after the `failures`-th failed attempt (1-based), jittered; does not block."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** max(0, failures - 1))
        return max(0.0, base * (1.0 + self.jitter * (2.0 * rand() - 1.0)))


@dataclass(slots=True)
class Outcome(Generic[T]):
    """The result of `call_with_retry`.

    `value` is the call's return value when `gave_up` is None; otherwise `gave_up` names the reason
    (``"retries_exhausted"``, ``"permanent_error"`` or ``"shutdown"``) and `error` the last exception.
    `failures` counts failed attempts and `retries` the attempts after the first.
    """

    value: T | None = None
    gave_up: str | None = None
    error: Exception | None = None
    failures: int = 0
    retries: int = 0


def _sleep_until(
    wake_at: float, stop: threading.Event, deadline: Callable[[], float | None], clock: Callable[[], float]
) -> bool:
    """Wait until `wake_at`; False when shutdown began and its deadline falls before `wake_at`."""
    remaining = wake_at - clock()
    if remaining <= 0:
        return True
    if not stop.wait(remaining):
        return True
    hard = deadline()
    if hard is not None and wake_at > hard:
        return False
    # Shutdown began but leaves time for this attempt: finish the wait (bounded by the deadline).
    remaining = wake_at - clock()
    if remaining > 0:
        time.sleep(remaining)
    return True


def call_with_retry(
    attempt: Callable[[], T],
    policy: RetryPolicy,
    *,
    stop: threading.Event,
    deadline: Callable[[], float | None] = lambda: None,
    on_failure: Callable[[Exception, bool], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
) -> Outcome[T]:
    """Call `attempt` until it returns, retrying `RetryableError` with backoff; blocks while waiting.

    `deadline()` is the shutdown deadline on `clock` (None while not shutting down); it is read again
    whenever `stop` is set. `on_failure(exc, will_retry)` is told of every failed attempt (for
    counters and logs) before the wait. A `RetryableError` with `retry_after_s` waits that long
    instead of the computed backoff (never less); a retry that would start after the batch's
    `max_elapsed_s` or the shutdown deadline is not made. Never raises what `attempt` raises.
    """
    started = clock()
    outcome: Outcome[T] = Outcome()
    while True:
        try:
            outcome.value = attempt()
        except Exception as exc:
            outcome.failures += 1
            outcome.error = exc
            if isinstance(exc, RetryableError):
                wake_at = _next_wait(exc, outcome.failures, policy, started, deadline, clock, rand)
            else:
                wake_at = PERMANENT_ERROR
        else:
            return outcome
        if on_failure is not None:
            on_failure(outcome.error, not isinstance(wake_at, str))
        if isinstance(wake_at, str):
            outcome.gave_up = wake_at
            return outcome
        if not _sleep_until(wake_at, stop, deadline, clock):
            outcome.gave_up = SHUTDOWN
            return outcome
        outcome.retries += 1


def _next_wait(
    exc: RetryableError,
    failures: int,
    policy: RetryPolicy,
    started: float,
    deadline: Callable[[], float | None],
    clock: Callable[[], float],
    rand: Callable[[], float],
) -> float | str:
    """When to try again (a `clock` time), or why not to (a give-up reason)."""
    if failures >= policy.max_attempts:
        return RETRIES_EXHAUSTED
    retry_after = exc.retry_after_s
    delay = policy.backoff_s(failures, rand) if retry_after is None else max(retry_after, 0.0)
    wake_at = clock() + delay
    hard = deadline()
    if hard is not None and wake_at > hard:
        return SHUTDOWN
    if wake_at > started + policy.max_elapsed_s:
        return RETRIES_EXHAUSTED
    return wake_at


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from an HTTP `Retry-After` value (delta-seconds or an HTTP date).

    None when the value is absent or unreadable; a date in the past gives 0. Does not block.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        import email.utils  # here: it costs ~15 ms to import and only HTTP dates need it

        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
