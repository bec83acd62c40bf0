"""Ingest holds batches back while the embedded processor lags, then answers 503 after the wait."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from llmpulse.pipeline import LogBackpressure
from llmpulse.server import ServerSettings
from llmpulse.server._ingest import _admit


@dataclass
class LaggingRunner:
    """Reports a scripted sequence of lags, the last one repeating."""

    lags: list[int | None]
    asked: int = 0
    seen: list[int | None] = field(default_factory=list)

    def lag_events(self) -> int | None:
        lag = self.lags[min(self.asked, len(self.lags) - 1)]
        self.asked += 1
        self.seen.append(lag)
        return lag


@dataclass
class State:
    settings: ServerSettings
    runner: LaggingRunner | None


def test_a_batch_waits_until_the_processor_catches_up() -> None:
    runner = LaggingRunner([500, 400, 90, 10])
    asyncio.run(_admit(State(ServerSettings(max_processor_lag_events=100), runner)))  # type: ignore[arg-type]
    assert runner.seen == [500, 400, 90]


def test_a_batch_is_refused_with_retry_after_when_the_wait_runs_out() -> None:
    runner = LaggingRunner([10_000])
    settings = ServerSettings(max_processor_lag_events=100, admission_wait_s=0.05)
    with pytest.raises(LogBackpressure, match="10000 events behind") as info:
        asyncio.run(_admit(State(settings, runner)))  # type: ignore[arg-type]
    assert info.value.retry_after_s >= 1
    assert runner.asked > 2


def test_no_gate_without_a_limit_or_an_answer() -> None:
    for settings, lags in (
        (ServerSettings(max_processor_lag_events=0), [10**9]),
        (ServerSettings(max_processor_lag_events=5), [None]),
    ):
        runner = LaggingRunner(lags)
        asyncio.run(_admit(State(settings, runner)))  # type: ignore[arg-type]
        assert runner.asked <= 1
