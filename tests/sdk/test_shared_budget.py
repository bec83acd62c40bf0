"""`SharedBudget` without a budget server: its settings, and its policy when the server is unreachable.

The server is "down" in two real ways: a loopback port nothing listens on (refused at once), and a
socket that accepts connections but never answers (the timeout applies). Tests against the real
llmpulse server are in `test_shared_budget_server.py`.
"""

from __future__ import annotations

import pickle
import socket
import time
from collections.abc import Iterator

import pytest

from llmpulse.sdk import (
    BudgetExceeded,
    BudgetUnavailable,
    Collector,
    SharedBudget,
    SharedBudgetConfig,
    SharedBudgetExceeded,
)
from llmpulse.sdk._config import BUDGET_ENV_VARS


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def dead_url() -> str:
    """A loopback URL nothing listens on: connections are refused at once."""
    return f"http://127.0.0.1:{_closed_port()}"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A loopback URL that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- settings ---------------------------------------------------------------------------------------


def test_config_reads_every_budget_variable() -> None:
    env = {
        "LLMPULSE_BUDGET_URL": "http://budgets:9000/",
        "LLMPULSE_BUDGET_API_KEY": "k1",
        "LLMPULSE_BUDGET_ON_UNAVAILABLE": "FAIL_CLOSED",
        "LLMPULSE_BUDGET_TIMEOUT_S": "0.25",
        "LLMPULSE_BUDGET_RETRY_INTERVAL_S": "3",
        "LLMPULSE_BUDGET_RESERVATION_TTL_S": "30",
    }
    assert set(env) == {variables[0] for variables, _ in BUDGET_ENV_VARS.values()}
    assert SharedBudgetConfig.from_env(env) == SharedBudgetConfig(
        url="http://budgets:9000",
        api_key="k1",
        on_unavailable="fail_closed",
        timeout_s=0.25,
        retry_interval_s=3.0,
        reservation_ttl_s=30.0,
    )


def test_config_falls_back_to_the_exporters_server_and_key_and_arguments_win() -> None:
    env = {
        "LLMPULSE_EXPORT_URL": "http://pulse:8080",
        "LLMPULSE_API_KEY": "k0",
        "LLMPULSE_BUDGET_TIMEOUT_S": "2",
    }
    config = SharedBudgetConfig.from_env(env, timeout_s=0.5, api_key=None)
    assert (config.url, config.api_key, config.timeout_s) == ("http://pulse:8080", "k0", 0.5)
    assert config.on_unavailable == "fail_open"  # the documented default
    budget = SharedBudget("b", environ=env, on_unavailable="fail_closed")
    assert budget.config.on_unavailable == "fail_closed"
    assert budget.config.url == "http://pulse:8080"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("LLMPULSE_BUDGET_ON_UNAVAILABLE", "maybe"),
        ("LLMPULSE_BUDGET_TIMEOUT_S", "soon"),
        ("LLMPULSE_BUDGET_TIMEOUT_S", "0"),
        ("LLMPULSE_BUDGET_URL", "budgets:9000"),
        ("LLMPULSE_BUDGET_RESERVATION_TTL_S", "-1"),
    ],
)
def test_config_errors_name_the_variable(var: str, value: str) -> None:
    with pytest.raises(ValueError, match=var):
        SharedBudgetConfig.from_env({var: value})


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="budget_id"):
        SharedBudget("a/b", url="http://127.0.0.1:1")
    budget = SharedBudget("b", url="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="max_cost_usd"):
        budget.reserve({}, -1.0)
    with pytest.raises(ValueError, match="max_cost_usd"):
        budget.reserve({}, float("nan"))


def test_exceptions_pickle_with_their_type_and_figures() -> None:
    refused = SharedBudgetExceeded(
        "b", limit=5.0, spent=4.9, reserved=0.05, requested=0.1, remaining_usd=0.05
    )
    again = pickle.loads(pickle.dumps(refused))
    assert type(again) is SharedBudgetExceeded
    assert isinstance(again, BudgetExceeded)
    assert (again.budget_id, again.limit, again.remaining_usd, str(again)) == ("b", 5.0, 0.05, str(refused))
    down = BudgetUnavailable("b", limit=5.0, spent=0.0, reserved=0.0, requested=0.1, remaining_usd=1.0)
    down.args = ("down",)
    assert type(pickle.loads(pickle.dumps(down))) is BudgetUnavailable
    assert str(pickle.loads(pickle.dumps(down))) == "down"


# -- the policy when the server cannot be reached ---------------------------------------------------


def test_fail_open_admits_unreserved_calls_and_counts_them(dead_url: str) -> None:
    collector = Collector()
    budget = SharedBudget(
        "b", url=dead_url, on_unavailable="fail_open", retry_interval_s=0, collector=collector
    )
    try:
        reservations = [budget.reserve({"user_id": "u1"}, 0.02) for _ in range(3)]
        assert all(not r.backed and r.reserved_usd == 0.02 for r in reservations)
        reservations[0].settle(0.015)
        reservations[1].release()
        with reservations[2]:
            pass  # settled at the reserved amount
        stats = collector.stats()
        assert (stats["budget_fail_open"], stats["budget_fail_closed"], stats["budget_refused"]) == (3, 0, 0)
        mine = stats["budgets"]["b"]
        assert mine["unreachable"] == 3
        assert mine["reserved"] == 0
        assert mine["fail_open_usd"] == pytest.approx(0.035)
        assert "ConnectionRefusedError" in mine["last_error"]
    finally:
        assert budget.close(timeout=5.0)  # the back-fills cannot reach the ledger: given up at once
        collector.shutdown(1.0)
    stats = budget.stats()
    assert (stats["backfilled"], stats["settle_failed"], stats["settle_pending"]) == (0, 2, 0)


def test_fail_closed_refuses_with_budget_unavailable_and_counts(dead_url: str) -> None:
    collector = Collector()
    budget = SharedBudget(
        "b", url=dead_url, on_unavailable="fail_closed", retry_interval_s=0, collector=collector
    )
    try:
        for _ in range(2):
            with pytest.raises(BudgetUnavailable, match="fail_closed") as caught:
                budget.reserve({}, 0.02)
            assert isinstance(caught.value, BudgetExceeded)  # what the instrumentation lets through
            assert caught.value.requested == 0.02
            assert caught.value.budget_id == "b"
        stats = collector.stats()
        assert (stats["budget_fail_open"], stats["budget_fail_closed"]) == (0, 2)
        assert stats["budgets"]["b"]["settle_pending"] == 0
    finally:
        assert budget.close(timeout=1.0)
        collector.shutdown(1.0)


def test_a_silent_server_costs_one_timeout_then_the_retry_interval_skips_it(silent_url: str) -> None:
    clock = Clock()
    budget = SharedBudget(
        "b", url=silent_url, on_unavailable="fail_open", timeout_s=0.2, retry_interval_s=5.0, clock=clock
    )
    t0 = time.perf_counter()
    assert not budget.reserve({}, 0.01).backed
    first = time.perf_counter() - t0
    assert 0.19 <= first < 1.0  # bounded by timeout_s
    t0 = time.perf_counter()
    for _ in range(20):
        assert not budget.reserve({}, 0.01).backed
    assert time.perf_counter() - t0 < 0.05  # within the retry interval: no round trip at all
    assert budget.stats()["unreachable"] == 1
    assert budget.stats()["fail_open"] == 21
    clock.now += 5.0  # the interval has passed: the next call tries the server again
    t0 = time.perf_counter()
    budget.reserve({}, 0.01)
    assert time.perf_counter() - t0 >= 0.19
    assert budget.stats()["unreachable"] == 2
    budget.close(timeout=0.1)


def test_fail_open_streams_grow_without_a_round_trip(dead_url: str) -> None:
    budget = SharedBudget("b", url=dead_url, on_unavailable="fail_open")
    reservation = budget.reserve({}, 0.01)
    for cost in (0.005, 0.01, 0.02, 0.04):
        assert reservation.check_progress(cost) is None
    assert reservation.reserved_usd == pytest.approx(0.06)  # cost so far + the last step's worth
    assert budget.stats()["unreachable"] == 1  # only the reserve tried the server
    reservation.settle(0.04)
    assert budget.stats()["fail_open_usd"] == pytest.approx(0.04)
    budget.close(timeout=0.1)


def test_remaining_is_nan_when_the_server_cannot_say(dead_url: str) -> None:
    budget = SharedBudget("b", url=dead_url)
    assert budget.remaining() != budget.remaining()  # NaN
    assert budget.key_for({"user_id": "u1"}) is None
    assert budget.scope == "shared"
    with pytest.raises(RuntimeError, match="shared budget 'b'"):
        budget.view()
    budget.close(timeout=0.1)
