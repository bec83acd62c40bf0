"""The one retry helper: backoff and jitter, Retry-After, budgets, shutdown deadlines."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from llmpulse.sdk._exporter import RetryableError
from llmpulse.sdk._retry import RetryPolicy, call_with_retry, parse_retry_after


class Flaky:
    """Fails with the given errors in turn, then returns "ok"; records attempt times."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.times: list[float] = []

    def __call__(self) -> str:
        self.times.append(time.monotonic())
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_backoff_s=0.5, multiplier=2.0, max_backoff_s=3.0, jitter=0.0)
    assert [policy.backoff_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_spreads_the_backoff_within_its_bounds() -> None:
    policy = RetryPolicy(initial_backoff_s=1.0, jitter=0.2)
    assert policy.backoff_s(1, rand=lambda: 0.0) == pytest.approx(0.8)
    assert policy.backoff_s(1, rand=lambda: 1.0) == pytest.approx(1.2)
    samples = {policy.backoff_s(1) for _ in range(50)}
    assert len(samples) > 1
    assert all(0.8 <= s <= 1.2 for s in samples)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"initial_backoff_s": -1.0}, "initial_backoff_s"),
        ({"max_backoff_s": float("inf")}, "max_backoff_s"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter": 1.5}, "jitter"),
        ({"max_elapsed_s": -2}, "max_elapsed_s"),
    ],
)
def test_invalid_policies_are_refused_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**kwargs)


def test_success_after_retryable_failures_counts_them() -> None:
    flaky = Flaky(RetryableError("a"), RetryableError("b"))
    seen: list[tuple[str, bool]] = []
    outcome = call_with_retry(
        flaky,
        RetryPolicy(initial_backoff_s=0.01, jitter=0.0),
        stop=threading.Event(),
        on_failure=lambda exc, again: seen.append((str(exc), again)),
    )
    assert (outcome.value, outcome.gave_up, outcome.failures, outcome.retries) == ("ok", None, 2, 2)
    assert seen == [("a", True), ("b", True)]


def test_retry_after_is_waited_instead_of_the_shorter_backoff() -> None:
    flaky = Flaky(RetryableError("429", retry_after_s=0.25))
    outcome = call_with_retry(flaky, RetryPolicy(initial_backoff_s=0.001), stop=threading.Event())
    assert outcome.value == "ok"
    assert 0.24 <= flaky.times[1] - flaky.times[0] < 1.0


def test_permanent_errors_are_not_retried() -> None:
    flaky = Flaky(KeyError("x"))
    outcome = call_with_retry(flaky, RetryPolicy(), stop=threading.Event())
    assert (outcome.gave_up, outcome.failures, outcome.retries) == ("permanent_error", 1, 0)
    assert isinstance(outcome.error, KeyError)
    assert len(flaky.times) == 1


def test_gives_up_after_max_attempts() -> None:
    flaky = Flaky(*[RetryableError(str(i)) for i in range(10)])
    policy = RetryPolicy(max_attempts=4, initial_backoff_s=0.001, jitter=0.0)
    outcome = call_with_retry(flaky, policy, stop=threading.Event())
    assert (outcome.gave_up, outcome.failures, outcome.retries) == ("retries_exhausted", 4, 3)
    assert str(outcome.error) == "3"


def test_a_retry_after_beyond_the_batch_budget_gives_up_without_waiting() -> None:
    flaky = Flaky(RetryableError("later", retry_after_s=60.0))
    started = time.monotonic()
    outcome = call_with_retry(flaky, RetryPolicy(max_elapsed_s=1.0), stop=threading.Event())
    assert outcome.gave_up == "retries_exhausted"
    assert time.monotonic() - started < 0.5


def _shut_down_later(
    delay_s: float, budget_s: float, deadline: list[float | None], stop: threading.Event
) -> None:
    def begin() -> None:
        deadline[0] = time.monotonic() + budget_s
        stop.set()

    threading.Timer(delay_s, begin).start()


def test_shutdown_wakes_the_wait_and_gives_up_when_the_deadline_is_too_near() -> None:
    stop = threading.Event()
    deadline: list[float | None] = [None]
    flaky = Flaky(RetryableError("busy", retry_after_s=20.0))
    _shut_down_later(0.1, 0.5, deadline, stop)
    started = time.monotonic()
    outcome = call_with_retry(flaky, RetryPolicy(), stop=stop, deadline=lambda: deadline[0])
    assert outcome.gave_up == "shutdown"
    assert time.monotonic() - started < 1.0
    assert len(flaky.times) == 1


def test_shutdown_lets_a_retry_run_when_it_fits_before_the_deadline() -> None:
    stop = threading.Event()
    deadline: list[float | None] = [None]
    flaky = Flaky(RetryableError("busy", retry_after_s=0.3))
    _shut_down_later(0.05, 5.0, deadline, stop)
    outcome = call_with_retry(flaky, RetryPolicy(), stop=stop, deadline=lambda: deadline[0])
    assert outcome.value == "ok"
    assert flaky.times[1] - flaky.times[0] >= 0.28


def test_parse_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2025, 11, 19, 10, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
