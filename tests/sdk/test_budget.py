"""Budgets: atomic reservations, the overspend bound under concurrency, scopes, windows, exceed actions."""

from __future__ import annotations

import asyncio
import logging
import pickle
import random
import threading
from collections.abc import Callable
from datetime import timedelta

import pytest

from llmpulse.sdk._budget import Budget, BudgetExceeded, Budgets, BudgetState

THREADS = 32
CALLS_PER_THREAD = 200


def _hammer(worker: Callable[[int], None], threads: int = THREADS) -> None:
    """Run `worker(i)` on `threads` threads released together by a barrier; re-raise the first error."""
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            worker(i)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]


def test_concurrent_calls_with_accurate_maxima_never_pass_the_limit() -> None:
    # 0.25 and 100.0 are exact in binary, and the budget counts picodollars: the sums are exact.
    budget = Budget(100.0)
    admitted = [0] * THREADS
    rejected = [0] * THREADS

    def worker(i: int) -> None:
        rng = random.Random(i)
        for _ in range(CALLS_PER_THREAD):
            try:
                reservation = budget.reserve({}, 0.25)
            except BudgetExceeded:
                rejected[i] += 1
                continue
            admitted[i] += 1
            # the actual cost is at most the reservation: 0.25, 0.125 or 0
            reservation.settle(rng.choice([0.25, 0.25, 0.125, 0.0]))

    _hammer(worker)

    assert sum(admitted) + sum(rejected) == THREADS * CALLS_PER_THREAD
    assert budget.spent() <= 100.0
    assert budget.reserved() == 0.0
    # the budget was really used up: no room was left for one more accurate reservation
    assert budget.spent() > 100.0 - 0.25
    assert sum(rejected) > 0


def test_concurrent_calls_exact_count_when_every_call_costs_its_reservation() -> None:
    budget = Budget(50.0)
    admitted = [0] * THREADS

    def worker(i: int) -> None:
        for _ in range(CALLS_PER_THREAD):
            try:
                with budget.reserve({}, 0.5) as reservation:
                    reservation.settle(0.5)
            except BudgetExceeded:
                continue
            admitted[i] += 1

    _hammer(worker)

    assert sum(admitted) == 100
    assert budget.spent() == 50.0
    assert budget.remaining() == 0.0


def test_concurrent_underestimates_overspend_by_at_most_the_sum_of_overruns() -> None:
    budget = Budget(10.0)
    overruns = [0.0] * THREADS
    in_flight = threading.Semaphore(4)  # at most 4 calls are ever in flight together

    def worker(i: int) -> None:
        rng = random.Random(1000 + i)
        for _ in range(CALLS_PER_THREAD):
            with in_flight:
                try:
                    reservation = budget.reserve({}, 0.125)
                except BudgetExceeded:
                    continue
                actual = rng.choice([0.0625, 0.125, 0.25, 0.375])
                overruns[i] += max(0.0, actual - 0.125)
                reservation.settle(actual)

    _hammer(worker)

    assert budget.reserved() == 0.0
    assert budget.spent() <= 10.0 + sum(overruns)
    # with 4 calls in flight, each overrunning by at most 0.25, the tight bound is 4 x 0.25
    assert budget.spent() <= 10.0 + 4 * 0.25


def test_sequential_overspend_is_bounded_by_the_last_calls_underestimate() -> None:
    budget = Budget(1.0)
    budget.reserve({}, 0.5).settle(0.5)
    last = budget.reserve({}, 0.5)
    last.settle(0.75)  # under-estimated by 0.25
    assert budget.spent() == 1.25
    with pytest.raises(BudgetExceeded):
        budget.reserve({}, 0.0)
    assert budget.spent() == 1.25


def test_asyncio_tasks_share_a_budget_without_overspending() -> None:
    budget = Budget(5.0)

    async def call() -> bool:
        try:
            reservation = budget.reserve({"user_id": "u"}, 0.5)
        except BudgetExceeded:
            return False
        await asyncio.sleep(0)
        reservation.settle(0.5)
        return True

    async def main() -> list[bool]:
        return await asyncio.gather(*(call() for _ in range(40)))

    results = asyncio.run(main())
    assert results.count(True) == 10
    assert budget.spent() == 5.0


def test_exceeded_carries_the_numbers_and_reserves_nothing() -> None:
    budget = Budget(1.0, scope="user")
    held = budget.reserve({"user_id": "u1"}, 0.5)
    budget.reserve({"user_id": "u1"}, 0.25).settle(0.25)
    with pytest.raises(BudgetExceeded) as info:
        budget.reserve({"user_id": "u1"}, 0.5)
    error = info.value
    assert (error.scope, error.key) == ("user", "u1")
    assert (error.limit, error.spent, error.reserved, error.requested) == (1.0, 0.25, 0.5, 0.5)
    assert "user 'u1'" in str(error)
    assert budget.reserved(key="u1") == 0.5
    held.release()
    assert budget.reserved(key="u1") == 0.0


def test_budget_exceeded_survives_pickling() -> None:
    error = BudgetExceeded(scope="org", key="o", limit=1.0, spent=2.0, reserved=0.5, requested=0.25)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.scope, copy.key, copy.limit, copy.spent, copy.reserved, copy.requested) == (
        "org",
        "o",
        1.0,
        2.0,
        0.5,
        0.25,
    )


def test_a_used_up_budget_rejects_even_a_zero_estimate() -> None:
    budget = Budget(1.0)
    budget.reserve({}, 1.0).settle(1.0)
    with pytest.raises(BudgetExceeded):
        budget.reserve({}, 0.0)


def test_zero_estimate_is_admitted_while_budget_remains() -> None:
    budget = Budget(1.0)
    reservation = budget.reserve({}, 0.0)
    assert reservation.reserved_usd == 0.0
    reservation.settle(0.3)
    assert budget.spent() == pytest.approx(0.3)


def test_scope_keys_are_independent() -> None:
    budget = Budget(1.0, scope="user")
    budget.reserve({"user_id": "alice"}, 1.0).settle(1.0)
    with pytest.raises(BudgetExceeded):
        budget.reserve({"user_id": "alice"}, 0.01)
    budget.reserve({"user_id": "bob"}, 1.0).settle(0.5)
    assert budget.spent(key="alice") == 1.0
    assert budget.spent("user", "bob") == 0.5
    assert budget.remaining(key="bob") == 0.5
    assert budget.remaining(key="carol") == 1.0


def test_calls_without_the_scope_attribute_share_one_key() -> None:
    budget = Budget(1.0, scope="org")
    budget.reserve({"user_id": "u1"}, 0.75).settle(0.75)
    with pytest.raises(BudgetExceeded) as info:
        budget.reserve({"org_id": None}, 0.5)
    assert info.value.key is None
    assert budget.spent(key=None) == 0.75


def test_spent_with_another_scope_is_an_error() -> None:
    with pytest.raises(ValueError, match="scope"):
        Budget(1.0, scope="user").spent("org", "x")


def test_release_on_error_frees_the_reservation() -> None:
    budget = Budget(1.0)

    def failing_call() -> None:
        with budget.reserve({}, 0.75):
            raise RuntimeError("provider down")

    with pytest.raises(RuntimeError):
        failing_call()
    assert budget.reserved() == 0.0
    assert budget.spent() == 0.0
    budget.reserve({}, 1.0).settle(1.0)  # the whole limit is available again
    assert budget.spent() == 1.0


def test_cancellation_releases_the_reservation() -> None:
    budget = Budget(1.0)

    async def call() -> None:
        with budget.reserve({}, 0.5):
            await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.ensure_future(call())
        await asyncio.sleep(0)
        assert budget.reserved() == 0.5
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert budget.reserved() == 0.0


def test_settle_and_release_are_idempotent_and_only_the_first_counts() -> None:
    budget = Budget(10.0)
    reservation = budget.reserve({}, 1.0)
    reservation.settle(0.5)
    reservation.settle(0.75)
    reservation.release()
    assert reservation.done
    assert budget.spent() == 0.5
    assert budget.reserved() == 0.0
    released = budget.reserve({}, 1.0)
    released.release()
    released.settle(1.0)
    assert budget.spent() == 0.5


def test_unknown_cost_charges_the_reservation() -> None:
    budget = Budget(10.0)
    budget.reserve({}, 0.75).settle(None)
    assert budget.spent() == 0.75


def test_context_manager_without_settle_charges_the_reservation() -> None:
    budget = Budget(10.0)
    with budget.reserve({}, 0.5):
        pass
    assert budget.spent() == 0.5
    assert budget.reserved() == 0.0


def test_warn_mode_proceeds_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    budget = Budget(1.0, on_exceed="warn")
    budget.reserve({}, 0.75).settle(0.75)
    with caplog.at_level(logging.WARNING, logger="llmpulse.sdk.budget"):
        reservation = budget.reserve({}, 0.5)
    assert reservation.exceeded[0].spent == 0.75
    assert "budget exceeded for global" in caplog.text
    reservation.settle(0.5)
    assert budget.spent() == 1.25


def test_callback_mode_proceeds_and_calls_back() -> None:
    seen: list[BudgetExceeded] = []
    budget = Budget(1.0, scope="session", on_exceed=seen.append)
    budget.reserve({"session_id": "s"}, 1.0).settle(1.0)
    reservation = budget.reserve({"session_id": "s"}, 0.25)
    assert [(e.key, e.requested) for e in seen] == [("s", 0.25)]
    assert budget.reserved(key="s") == 0.25
    reservation.release()


def test_a_raising_callback_reserves_nothing_and_propagates() -> None:
    class Stop(Exception):
        pass

    def stop(error: BudgetExceeded) -> None:
        raise Stop(error.key)

    budget = Budget(1.0, on_exceed=stop)
    with pytest.raises(Stop):
        budget.reserve({}, 2.0)
    assert budget.reserved() == 0.0


def test_budgets_reserve_in_every_member_atomically() -> None:
    overall = Budget(10.0)
    per_user = Budget(1.0, scope="user")
    per_org = Budget(3.0, scope="org")
    budgets = Budgets([overall, per_user, per_org, per_user])
    assert len(budgets) == 3
    budgets.reserve({"user_id": "u1", "org_id": "o1"}, 1.0).settle(1.0)
    with pytest.raises(BudgetExceeded) as info:
        budgets.reserve({"user_id": "u1", "org_id": "o1"}, 0.5)
    assert info.value.scope == "user"
    # nothing was reserved in the members that had room
    assert overall.reserved() == 0.0
    assert per_org.reserved(key="o1") == 0.0
    budgets.reserve({"user_id": "u2", "org_id": "o1"}, 1.0).settle(1.0)
    assert budgets.spent() == 2.0
    assert budgets.spent("org", "o1") == 2.0
    assert budgets.remaining("user", "u2") == 0.0
    with pytest.raises(ValueError, match="session"):
        budgets.spent("session")


def test_budgets_sharing_members_in_different_orders_do_not_deadlock() -> None:
    a = Budget(1_000.0)
    b = Budget(1_000.0, scope="user")
    first, second = Budgets([a, b]), Budgets([b, a])

    def worker(i: int) -> None:
        budgets = first if i % 2 else second
        for _ in range(CALLS_PER_THREAD):
            budgets.reserve({"user_id": "u"}, 0.0625).settle(0.0625)

    _hammer(worker, threads=8)
    assert a.spent() == 8 * CALLS_PER_THREAD * 0.0625
    assert b.spent(key="u") == a.spent()


def test_charge_progress_cuts_off_when_a_raise_budget_is_exhausted() -> None:
    budget = Budget(1.0)
    reservation = budget.reserve({}, 0.25)
    assert reservation.charge_progress(0.125) is True
    assert budget.reserved() == 0.25  # below the estimate: the reservation stays
    assert reservation.charge_progress(0.75) is True
    assert budget.reserved() == 0.75  # past the estimate: the reservation grows
    assert budget.remaining() == 0.25
    assert reservation.charge_progress(1.25) is False
    reservation.settle(1.25)
    assert budget.spent() == 1.25


def test_charge_progress_reports_a_warn_budget_once_and_continues() -> None:
    seen: list[BudgetExceeded] = []
    budget = Budget(1.0, on_exceed=seen.append)
    reservation = budget.reserve({}, 0.5)
    assert reservation.charge_progress(1.5) is True
    assert reservation.charge_progress(2.0) is True
    assert len(seen) == 1
    assert seen[0].requested == 1.5


def test_windows_reset_the_limit_and_calls_settle_into_their_own_window() -> None:
    now = [1_000.0]
    budget = Budget(1.0, window=timedelta(minutes=1), clock=lambda: now[0])
    budget.reserve({}, 1.0).settle(1.0)
    with pytest.raises(BudgetExceeded):
        budget.reserve({}, 0.5)
    now[0] = 1_020.0  # next minute (windows are aligned to multiples of 60 s)
    in_flight = budget.reserve({}, 0.5)
    assert budget.spent() == 0.0
    assert budget.reserved() == 0.5
    now[0] = 1_080.0
    in_flight.settle(0.5)  # counts in the window where it was admitted, not in this one
    assert budget.spent() == 0.0
    assert budget.snapshot()[0].window_start == 1_080.0


def test_snapshot_lists_every_key_of_the_current_window() -> None:
    budget = Budget(2.0, scope="user")
    budget.reserve({"user_id": "a"}, 1.0).settle(0.5)
    held = budget.reserve({"user_id": "b"}, 1.5)
    states = {state.key: state for state in budget.snapshot()}
    assert states["a"] == BudgetState("user", "a", 2.0, 0.5, 0.0, 1.5, None)
    assert states["b"] == BudgetState("user", "b", 2.0, 0.0, 1.5, 0.5, None)
    held.release()
    assert Budget(3.0).snapshot() == [BudgetState("global", None, 3.0, 0.0, 0.0, 3.0, None)]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"limit_usd": -1.0}, "limit_usd"),
        ({"limit_usd": float("nan")}, "limit_usd"),
        ({"limit_usd": 1.0, "scope": "team"}, "scope"),
        ({"limit_usd": 1.0, "on_exceed": "ignore"}, "on_exceed"),
        ({"limit_usd": 1.0, "window": 0}, "window"),
    ],
)
def test_invalid_arguments_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Budget(**kwargs)  # type: ignore[arg-type]


def test_negative_request_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_cost_usd"):
        Budget(1.0).reserve({}, -0.5)
