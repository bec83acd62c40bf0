"""The shared budgets' ledger (`Store.budgets`) on SQLite and Postgres: definitions, reservations,
expiry, periods, observed spend, and the hard cap under concurrent threads and processes."""

from __future__ import annotations

import multiprocessing
import random
import threading
from datetime import UTC, datetime

import pytest

from llmpulse.store import (
    BudgetNotFound,
    BudgetSpec,
    ReservationNotFound,
    ReservationSettled,
    Store,
    period_bounds,
)
from llmpulse.store._budgets import to_nano
from tests.store.conftest import make_record

T0 = datetime(2026, 12, 7, 10, 30, tzinfo=UTC).timestamp()


def _spec(amount: float = 5.0, **fields: object) -> BudgetSpec:
    return BudgetSpec(
        budget_id=str(fields.pop("budget_id", "b1")), tenant_id="acme", amount_usd=amount, **fields
    )  # type: ignore[arg-type]


# -- definitions and periods -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"amount_usd": 0.0}, "amount_usd"),
        ({"amount_usd": float("nan")}, "amount_usd"),
        ({"period": "year"}, "period"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"budget_id": "has space"}, "id"),
        ({"budget_id": ""}, "id"),
        ({"scope": {"team": "x"}}, "scope.team"),
        ({"scope": {"user_id": ""}}, "scope.user_id"),
        ({"reservation_ttl_s": 0}, "reservation_ttl_s"),
        ({"tenant_id": ""}, "scope.tenant_id"),
    ],
)
def test_a_bad_definition_is_refused_naming_the_field(fields: dict[str, object], named: str) -> None:
    args: dict[str, object] = {"budget_id": "b1", "tenant_id": "acme", "amount_usd": 5.0, **fields}
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        BudgetSpec(**args)  # type: ignore[arg-type]


def test_periods_follow_the_calendar_of_their_time_zone() -> None:
    # 2026-03-29 is the day Paris moves its clocks forward: a 23-hour day
    at = datetime(2026, 3, 29, 12, tzinfo=UTC).timestamp()
    start, end = period_bounds("day", "Europe/Paris", at)
    assert datetime.fromtimestamp(start, UTC) == datetime(2026, 3, 28, 23, tzinfo=UTC)
    assert end is not None
    assert end - start == 23 * 3600
    start, end = period_bounds("week", "UTC", T0)  # Monday 2026-12-07
    assert datetime.fromtimestamp(start, UTC) == datetime(2026, 12, 7, tzinfo=UTC)
    assert end is not None
    assert end - start == 7 * 86400
    start, end = period_bounds("month", "America/New_York", datetime(2026, 12, 1, 3, tzinfo=UTC).timestamp())
    assert datetime.fromtimestamp(start, UTC) == datetime(2026, 11, 1, 4, tzinfo=UTC)  # still November there
    assert end is not None
    assert datetime.fromtimestamp(end, UTC) == datetime(2026, 12, 1, 5, tzinfo=UTC)
    assert period_bounds("total", "UTC", T0) == (0.0, None)


def test_put_replaces_the_definition_and_keeps_the_ledger(store: Store) -> None:
    ledger = store.budgets
    ledger.put(_spec(5.0), T0)
    r = ledger.reserve("b1", 2.0, T0)
    ledger.commit("b1", r.reservation_id or "", 1.5, T0)
    ledger.put(_spec(10.0, hard=False, scope={"user_id": "u1"}), T0 + 1)
    view = ledger.get("b1", T0 + 2)
    assert view.spec.amount_usd == 10.0
    assert not view.spec.hard
    assert view.as_json()["scope"] == {"tenant_id": "acme", "user_id": "u1"}
    assert view.as_json()["committed_usd"] == 1.5
    assert view.remaining_usd == 8.5
    assert [v.spec.budget_id for v in ledger.all(T0)] == ["b1"]
    assert ledger.all(T0, tenant_id="other") == []
    with pytest.raises(BudgetNotFound):
        ledger.get("b1", T0, tenant_id="other")
    assert ledger.delete("b1", tenant_id="other") is False
    assert ledger.delete("b1") is True
    with pytest.raises(BudgetNotFound):
        ledger.reserve("b1", 0.1, T0)


# -- reservations ------------------------------------------------------------------------------


def test_a_hard_budget_refuses_what_does_not_fit_and_records_overruns(store: Store) -> None:
    ledger = store.budgets
    ledger.put(_spec(5.0), T0)
    a = ledger.reserve("b1", 3.0, T0)
    assert a.admitted
    assert a.remaining_usd == 2.0
    refused = ledger.reserve("b1", 2.5, T0)
    assert not refused.admitted
    assert refused.remaining_usd == 2.0
    assert refused.reservation_id is None
    b = ledger.reserve("b1", 2.0, T0)
    assert b.admitted
    assert b.remaining_usd == 0.0
    assert not ledger.reserve("b1", 0.0, T0).admitted  # nothing left: even a zero estimate
    done = ledger.commit("b1", a.reservation_id or "", 3.4, T0)  # 0.4 over its estimate
    assert (done.state, done.cost_usd, done.expired) == ("committed", 3.4, False)
    again = ledger.commit("b1", a.reservation_id or "", 99.0, T0)  # a repeat answers the first
    assert again.cost_usd == 3.4
    freed = ledger.release("b1", b.reservation_id or "", T0)
    assert freed.state == "released"
    assert freed.remaining_usd == pytest.approx(1.6)
    assert ledger.release("b1", b.reservation_id or "", T0).state == "released"
    with pytest.raises(ReservationSettled):
        ledger.commit("b1", b.reservation_id or "", 1.0, T0)
    with pytest.raises(ReservationSettled):
        ledger.release("b1", a.reservation_id or "", T0)
    with pytest.raises(ReservationNotFound):
        ledger.release("b1", "no-such-id", T0)
    view = ledger.get("b1", T0).as_json()
    assert view["committed_usd"] == 3.4
    assert view["reserved_usd"] == 0.0
    assert view["overrun_usd"] == pytest.approx(0.4)
    assert view["reservations_open"] == 0


def test_a_soft_budget_admits_and_records_beyond_its_amount(store: Store) -> None:
    ledger = store.budgets
    ledger.put(_spec(1.0, hard=False), T0)
    r = ledger.reserve("b1", 5.0, T0)
    assert r.admitted
    assert r.remaining_usd == 0.0
    ledger.commit("b1", r.reservation_id or "", 4.0, T0)
    assert ledger.get("b1", T0).as_json()["committed_usd"] == 4.0


def test_extend_grows_a_reservation_only_while_it_fits(store: Store) -> None:
    ledger = store.budgets
    ledger.put(_spec(1.0), T0)
    r = ledger.reserve("b1", 0.25, T0)
    rid = r.reservation_id or ""
    grown = ledger.extend("b1", rid, 0.75, T0 + 1)
    assert grown.admitted
    assert grown.estimate_usd == 0.75
    assert grown.remaining_usd == 0.25
    refused = ledger.extend("b1", rid, 1.5, T0 + 2)
    assert not refused.admitted
    assert refused.remaining_usd == 0.25
    assert ledger.get("b1", T0).as_json()["reserved_usd"] == 0.75  # kept its estimate
    assert ledger.extend("b1", rid, 0.5, T0 + 3).estimate_usd == 0.75  # never shrinks
    ledger.commit("b1", rid, 0.7, T0 + 4)
    with pytest.raises(ReservationSettled):
        ledger.extend("b1", rid, 0.9, T0 + 5)


def test_an_unsettled_reservation_expires_and_its_estimate_returns(store: Store) -> None:
    ledger = store.budgets
    ledger.put(_spec(1.0, reservation_ttl_s=60.0), T0)
    dead = ledger.reserve("b1", 0.8, T0)  # a client that was killed
    assert not ledger.reserve("b1", 0.5, T0 + 59).admitted
    view = ledger.get("b1", T0 + 60).as_json()  # the view counts it expired before anyone sweeps
    assert view["reserved_usd"] == 0.0
    assert view["reservations_expired"] == 1
    assert view["remaining_usd"] == 1.0
    fresh = ledger.reserve("b1", 0.5, T0 + 60)
    assert fresh.admitted
    assert fresh.remaining_usd == 0.5
    late = ledger.commit("b1", dead.reservation_id or "", 0.3, T0 + 61)  # the call did happen
    assert late.expired
    assert late.cost_usd == 0.3
    view = ledger.get("b1", T0 + 61).as_json()
    assert view["committed_usd"] == 0.3
    assert view["overrun_usd"] == 0.3
    assert view["reserved_usd"] == 0.5
    assert ledger.commit("b1", dead.reservation_id or "", 0.3, T0 + 62).expired  # the repeat says so too
    short = ledger.reserve("b1", 0.1, T0 + 70, ttl_s=1.0)
    assert short.expires_at == T0 + 71
    assert ledger.release("b1", short.reservation_id or "", T0 + 80).state == "expired"


def test_a_new_period_starts_empty_and_a_late_commit_goes_to_its_own(store: Store) -> None:
    ledger = store.budgets
    ledger.put(_spec(1.0, period="day", timezone="UTC"), T0)
    old = ledger.reserve("b1", 0.9, T0)
    tomorrow = T0 + 86400
    assert ledger.reserve("b1", 0.9, tomorrow).admitted  # a new day, a new ledger row
    ledger.commit("b1", old.reservation_id or "", 0.9, tomorrow + 1)
    today = ledger.get("b1", tomorrow).as_json()
    assert today["committed_usd"] == 0.0
    assert today["reserved_usd"] == 0.9
    assert today["period_start"] == "2026-12-08T00:00:00Z"
    assert today["period_end"] == "2026-12-09T00:00:00Z"
    assert ledger.get("b1", T0).as_json()["committed_usd"] == 0.9


def test_settled_reservations_are_forgotten_after_a_day(store: Store) -> None:
    ledger = store.budgets
    ledger.put(_spec(1000.0, period="total"), T0)
    for i in range(10):
        r = ledger.reserve("b1", 1.0, T0 + i)
        ledger.commit("b1", r.reservation_id or "", 1.0, T0 + i)
    first = ledger.reserve("b1", 1.0, T0 + 20)
    ledger.commit("b1", first.reservation_id or "", 1.0, T0 + 20)
    for i in range(3):  # each reservation deletes up to 4 settled a day old
        ledger.reserve("b1", 0.0, T0 + 86400 + 30 + i)
    with store.engine.connect() as conn:
        import sqlalchemy as sa

        left = conn.execute(
            sa.text("SELECT count(*) FROM budget_reservations WHERE state = 'committed'")
        ).scalar()
    assert left == 0
    assert ledger.get("b1", T0 + 86400 + 40).as_json()["committed_usd"] == 11.0


def test_observed_spend_sums_the_call_records_in_the_scope_and_period(store: Store) -> None:
    from llmpulse.store import Checkpoint

    ledger = store.budgets
    ledger.put(_spec(10.0, period="day", scope={"user_id": "u1"}), T0)
    records = {
        ("acme", "r1"): make_record("acme", "r1", started_at=T0 - 60, user_id="u1", cost_usd=0.25),
        ("acme", "r2"): make_record("acme", "r2", started_at=T0 - 50, user_id="u1", cost_usd=0.5),
        ("acme", "r3"): make_record("acme", "r3", started_at=T0 - 40, user_id="u2", cost_usd=7.0),
        ("acme", "r4"): make_record("acme", "r4", started_at=T0 - 86400, user_id="u1", cost_usd=9.0),
        ("beta", "r5"): make_record("beta", "r5", started_at=T0 - 30, user_id="u1", cost_usd=3.0),
    }
    store.commit(Checkpoint(consumer="c", offsets={}, windows={}, calls=records))
    view = ledger.get("b1", T0).as_json()
    assert view["observed_usd"] == 0.75
    assert view["observed_requests"] == 2


# -- the cap under concurrency -----------------------------------------------------------------


def _spend(
    url: str, seed: int, calls: int, out: multiprocessing.Queue[tuple[float, float]] | None = None
) -> tuple[float, float]:
    """Reserve random estimates and commit random costs (sometimes above the estimate) until refused
    `calls` times; the committed total and the overrun this worker caused."""
    rng = random.Random(seed)
    store = Store.open(url)
    committed = overrun = 0.0
    try:
        for _ in range(calls):
            estimate = round(rng.uniform(0.01, 0.2), 6)
            r = store.budgets.reserve("cap", estimate, T0)
            if not r.admitted:
                continue
            if rng.random() < 0.1:
                store.budgets.release("cap", r.reservation_id or "", T0)
                continue
            cost = round(estimate * rng.uniform(0.5, 1.2), 6)
            store.budgets.commit("cap", r.reservation_id or "", cost, T0)
            committed += cost
            overrun += max(0.0, cost - estimate)
    finally:
        store.close()
    if out is not None:
        out.put((committed, overrun))
    return committed, overrun


def _check_cap(store: Store, committed: float, overrun: float) -> None:
    view = store.budgets.get("cap", T0).as_json()
    assert view["committed_usd"] == pytest.approx(committed, abs=1e-6)
    assert view["overrun_usd"] == pytest.approx(overrun, abs=1e-6)
    assert view["reserved_usd"] == 0.0
    assert view["reservations_open"] == 0
    # never over the amount but for what commits exceeded their estimates by
    assert to_nano(view["committed_usd"]) <= to_nano(5.0) + to_nano(view["overrun_usd"])
    assert view["committed_usd"] >= 0.95 * 5.0  # and the budget was used


def test_threads_never_spend_past_a_hard_budget(store: Store, store_url: str) -> None:
    store.budgets.put(BudgetSpec("cap", "acme", 5.0, period="total"), T0)
    results: list[tuple[float, float]] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(_spend(store_url, i, 60))) for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 8
    _check_cap(store, sum(c for c, _ in results), sum(o for _, o in results))


def test_processes_never_spend_past_a_hard_budget(store: Store, store_url: str) -> None:
    store.budgets.put(BudgetSpec("cap", "acme", 5.0, period="total"), T0)
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[tuple[float, float]] = ctx.Queue()
    procs = [ctx.Process(target=_spend, args=(store_url, 100 + i, 60, out)) for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    _check_cap(store, sum(c for c, _ in results), sum(o for _, o in results))
