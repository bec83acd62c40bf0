"""Alert rules judged on stored windows and call records with an injected clock: thresholds (with
`for` and repeats), SLO burn rates and anomalies on traffic built to cross them or not (exact
expectations), budget runway levels and projection, restarts, and one evaluator at a time."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from llmpulse.alerts import Anomaly, Notification, Rule, Rules, Runway, Slo, Threshold
from llmpulse.alerts._engine import Evaluation
from llmpulse.alerts._evaluator import Evaluator, StoreSource
from llmpulse.store import Checkpoint, Store, WindowKey
from tests.store.conftest import make_delta, make_record

#: Monday 2026-12-07 12:00:30 UTC: half a minute into a minute.
NOW = datetime(2026, 12, 7, 12, 0, 30, tzinfo=UTC).timestamp()
T = "acme"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Sink:
    def __init__(self) -> None:
        self.sent: list[Notification] = []

    def submit(self, notification: Notification) -> None:
        self.sent.append(notification)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[Store]:
    from tests.postgres_server import suite_dsn
    from tests.store.conftest import reset_postgres

    if request.param == "postgresql":
        url = suite_dsn()
        reset_postgres(url)
    else:
        url = f"sqlite:///{tmp_path}/alerts.db"
    s = Store.open(url)
    yield s
    s.close()


def minute(offset_min: int, at: float = NOW) -> int:
    """The start of the minute `offset_min` minutes from `at`'s minute."""
    return int(at // 60 * 60) + 60 * offset_min


def put(store: Store, deltas: dict[WindowKey, object]) -> None:
    store.commit(Checkpoint(consumer="test", windows=deltas))  # type: ignore[arg-type]


def key(start: int, route: str = "chat", model: str = "gpt-4o-mini") -> WindowKey:
    return WindowKey(T, route, model, start)


def evaluator(store: Store, rules: list[Rule], clock: Clock, sink: Sink, **kw: object) -> Evaluator:
    return Evaluator(store, Rules(rules=tuple(rules)), sink, clock=clock, **kw)  # type: ignore[arg-type]


# -- thresholds ----------------------------------------------------------------------------------


def test_a_threshold_fires_once_repeats_and_resolves(store: Store) -> None:
    spike = Threshold("cost_usd", 300, above=20.0)
    labels = {"severity": "page"}
    rule = Rule("cost-spike", T, labels=labels, threshold=spike, notify=("hook",), repeat_s=3600.0)
    put(store, {key(minute(-5)): make_delta(requests=10, cost_usd=50.0)})  # just outside 5 minutes
    put(
        store,
        {
            key(minute(-4)): make_delta(requests=5, cost_usd=12.0),
            key(minute(0), model="gpt-4o"): make_delta(requests=3, cost_usd=8.5),
        },
    )
    clock, sink = Clock(), Sink()
    ev = evaluator(store, [rule], clock, sink)
    first = ev.run_once()
    assert first.leader
    assert [n.status for n in sink.sent] == ["firing"]
    note = sink.sent[0]
    assert note.value == pytest.approx(20.5)  # 12.0 + 8.5: the last five minutes, both models
    assert note.labels == {"severity": "page", "alertname": "cost-spike", "tenant_id": T}
    assert note.starts_at == NOW
    assert note.ends_at is None
    assert note.notify == ("hook",)
    ev.run_once()
    assert len(sink.sent) == 1  # no second notification while it fires
    clock.now += 3600  # an hour on, still breaching (the windows are put again at the new now)
    put(store, {key(minute(0, clock.now)): make_delta(requests=1, cost_usd=30.0)})
    ev.run_once()
    assert [n.status for n in sink.sent] == ["firing", "firing"]  # the repeat
    clock.now += 600  # ten quiet minutes: resolved
    ev.run_once()
    assert [n.status for n in sink.sent] == ["firing", "firing", "resolved"]
    assert sink.sent[-1].ends_at == clock.now
    assert sink.sent[-1].starts_at == NOW
    history = store.alerts.history(T)
    assert [h.status for h in history] == ["resolved", "firing", "firing"]


def test_for_holds_a_breach_pending_before_it_fires(store: Store) -> None:
    rule = Rule("errors", T, threshold=Threshold("error_rate", 120, above=0.5, for_s=120))
    put(store, {key(minute(0)): make_delta(requests=4, errors=3)})
    clock, sink = Clock(), Sink()
    ev = evaluator(store, [rule], clock, sink)
    ev.run_once()
    assert sink.sent == []
    assert ev.states()["errors"].status == "pending"
    clock.now += 60
    put(store, {key(minute(0, clock.now)): make_delta(requests=2, errors=2)})
    ev.run_once()
    assert sink.sent == []
    clock.now += 60
    put(store, {key(minute(0, clock.now)): make_delta(requests=2, errors=2)})
    ev.run_once()
    assert [n.status for n in sink.sent] == ["firing"]
    assert sink.sent[0].value == pytest.approx(4 / 4)


def test_a_pending_breach_that_stops_goes_back_quietly(store: Store) -> None:
    rule = Rule("errors", T, threshold=Threshold("errors", 60, above=2, for_s=300))
    put(store, {key(minute(0)): make_delta(requests=5, errors=5)})
    clock, sink = Clock(), Sink()
    ev = evaluator(store, [rule], clock, sink)
    ev.run_once()
    clock.now += 120
    ev.run_once()
    assert sink.sent == []
    assert ev.states()["errors"].status == "inactive"


def test_a_threshold_on_a_user_reads_call_records(store: Store) -> None:
    rule = Rule("u1-cost", T, scope={"user_id": "u1"}, threshold=Threshold("cost_usd", 600, above=1.0))
    records = {
        (T, f"r{i}"): make_record(T, f"r{i}", started_at=NOW - 60 * i, user_id="u1", cost_usd=0.3)
        for i in range(5)
    }
    records[(T, "other")] = make_record(T, "other", started_at=NOW - 10, user_id="u2", cost_usd=9.0)
    records[(T, "old")] = make_record(T, "old", started_at=NOW - 700, user_id="u1", cost_usd=9.0)
    store.commit(Checkpoint(consumer="c", calls=records))
    clock, sink = Clock(), Sink()
    evaluator(store, [rule], clock, sink).run_once()
    assert [n.value for n in sink.sent] == [pytest.approx(1.5)]
    assert sink.sent[0].labels["user_id"] == "u1"


# -- SLO burn rates ------------------------------------------------------------------------------


def _traffic(store: Store, outage_minutes: int, per_minute: int = 1000) -> None:
    """Six hours of `per_minute` calls with 0.5 % errors, the last `outage_minutes` all failing."""
    deltas = {}
    for m in range(-359, 1):
        failing = m > -outage_minutes
        deltas[key(minute(m))] = make_delta(
            requests=per_minute, errors=per_minute if failing else per_minute // 200
        )
    put(store, deltas)


def test_an_slo_page_fires_when_both_windows_burn_past_14_4(store: Store) -> None:
    rule = Rule("availability", T, slo=Slo(0.99))
    _traffic(store, outage_minutes=10)
    clock, sink = Clock(), Sink()
    evaluator(store, [rule], clock, sink).run_once()
    assert [n.status for n in sink.sent] == ["firing"]
    # 1 h: (50 × 5 + 10 × 1000) bad of 60,000 = 17.08 % of a 1 % budget
    assert sink.sent[0].value == pytest.approx((50 * 5 + 10 * 1000) / 60_000 / 0.01)
    windows = sink.sent[0].details["windows"]
    assert isinstance(windows, list)
    assert windows[0]["short_burn"] == pytest.approx(100.0)  # the last 5 minutes all failed
    assert windows[1]["breached"] is False  # 6 h: (350 × 5 + 10,000) / 360,000 = 3.3 % < 6 × 1 %


def test_an_slo_stays_quiet_just_under_the_burn_rate(store: Store) -> None:
    rule = Rule("availability", T, slo=Slo(0.99))
    _traffic(store, outage_minutes=8)  # 1 h: (52 × 5 + 8,000) / 60,000 = 13.8 % < 14.4 %
    clock, sink = Clock(), Sink()
    ev = evaluator(store, [rule], clock, sink)
    ev.run_once()
    assert sink.sent == []
    assert ev.states()["availability"].value == pytest.approx((52 * 5 + 8000) / 60_000 / 0.01)


def test_a_latency_slo_counts_slow_calls_bad(store: Store) -> None:
    rule = Rule("fast", T, slo=Slo(0.95, good="latency_below_ms", value=2000.0))
    deltas = {}
    for m in range(-359, 1):
        slow = 30 if m > -15 else 0  # the last 15 minutes: 30 of 100 calls take 3 s
        deltas[key(minute(m))] = make_delta(requests=100, latencies=[500.0] * (100 - slow) + [3000.0] * slow)
    put(store, deltas)
    clock, sink = Clock(), Sink()
    evaluator(store, [rule], clock, sink).run_once()
    # 1 h: 15 × 30 slow of 6,000 = 7.5 % of a 5 % budget = 1.5x: quiet; 5 m: 30 % = 6x
    assert sink.sent == []
    assert Evaluation(StoreSource(store), NOW).verdict(rule).value == pytest.approx(450 / 6000 / 0.05)


# -- anomalies -----------------------------------------------------------------------------------


def _days(store: Store, today_cost: float, today_calls: int = 60, days_with_data: int = 7) -> None:
    """The hour before now on each of the previous seven days cost $1 over 60 calls (only
    `days_with_data` of them had any), and today's hour `today_cost` over `today_calls`."""
    deltas = {}
    for day in range(1, days_with_data + 1):
        for m in range(-59, 1):
            deltas[key(minute(m, NOW - day * 86400))] = make_delta(requests=1, cost_usd=1 / 60)
    for m in range(-59, 1):
        deltas[key(minute(m))] = make_delta(requests=today_calls // 60, cost_usd=today_cost / 60)
    put(store, deltas)


ANOMALY = Rule("cost-anomaly", T, anomaly=Anomaly("cost_usd", 3600, 7 * 86400, 3.0, min_requests=50))


def test_an_anomaly_fires_above_factor_times_the_median(store: Store) -> None:
    _days(store, today_cost=3.3)
    clock, sink = Clock(), Sink()
    evaluator(store, [ANOMALY], clock, sink).run_once()
    assert [n.status for n in sink.sent] == ["firing"]
    assert sink.sent[0].value == pytest.approx(3.3)
    assert sink.sent[0].details["baseline"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("cost", "calls", "history"),
    [(2.9, 60, 7), (5.0, 40, 7), (5.0, 60, 3)],
    ids=["under-3x", "too-few-calls", "too-little-history"],
)
def test_an_anomaly_stays_quiet(store: Store, cost: float, calls: int, history: int) -> None:
    _days(store, today_cost=cost, today_calls=calls, days_with_data=history)
    clock, sink = Clock(), Sink()
    evaluator(store, [ANOMALY], clock, sink).run_once()
    assert sink.sent == []


# -- budget runway -------------------------------------------------------------------------------


def test_runway_fires_at_each_level_and_projects_exhaustion(store: Store) -> None:
    rule = Rule("runway", T, runway=Runway("month", amount_usd=100.0, at=(0.5, 0.8, 1.0), projection=False))
    clock, sink = Clock(), Sink()
    ev = evaluator(store, [rule], clock, sink)
    put(store, {key(minute(-60)): make_delta(requests=1, cost_usd=40.0)})
    ev.run_once()
    assert sink.sent == []
    put(store, {key(minute(-30)): make_delta(requests=1, cost_usd=15.0)})
    ev.run_once()
    assert [(n.status, n.details["level"]) for n in sink.sent] == [("firing", 0.5)]
    ev.run_once()
    assert len(sink.sent) == 1
    put(store, {key(minute(-10)): make_delta(requests=1, cost_usd=30.0)})
    ev.run_once()
    assert [(n.status, n.details["level"]) for n in sink.sent] == [("firing", 0.5), ("firing", 0.8)]
    assert sink.sent[-1].value == pytest.approx(85.0)
    clock.now = datetime(2027, 1, 1, 0, 0, 30, tzinfo=UTC).timestamp()  # a new month: nothing spent
    ev.run_once()
    assert sink.sent[-1].status == "resolved"


def test_runway_projection_names_the_day_the_money_runs_out(store: Store) -> None:
    rule = Rule("runway", T, runway=Runway("month", amount_usd=100.0, at=(1.0,)))
    # 6.5 days into December, $30 spent: $4.6 a day runs the $100 out 15.2 days later
    put(store, {key(minute(-60)): make_delta(requests=1, cost_usd=30.0)})
    clock, sink = Clock(), Sink()
    evaluator(store, [rule], clock, sink).run_once()
    assert [n.status for n in sink.sent] == ["firing"]
    elapsed = NOW - datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    expected = NOW + 70.0 / (30.0 / elapsed)
    assert sink.sent[0].details["projected_exhaustion_at"] == datetime.fromtimestamp(
        expected, UTC
    ).isoformat().replace("+00:00", "Z")


def test_runway_on_a_shared_budget_reads_its_amount(store: Store) -> None:
    from llmpulse.store import BudgetSpec

    store.budgets.put(BudgetSpec("team", T, 50.0, period="month"), NOW)
    rule = Rule("runway", T, runway=Runway("month", budget_id="team", at=(0.5,), projection=False))
    put(store, {key(minute(-60)): make_delta(requests=1, cost_usd=30.0)})
    clock, sink = Clock(), Sink()
    evaluator(store, [rule], clock, sink).run_once()
    assert sink.sent[0].details["amount_usd"] == 50.0


# -- restarts and leadership ---------------------------------------------------------------------


RULE = Rule("cost-spike", T, threshold=Threshold("cost_usd", 300, above=1.0))


def test_a_restart_while_firing_notifies_nothing_twice(store: Store) -> None:
    put(store, {key(minute(0)): make_delta(requests=1, cost_usd=5.0)})
    clock, sink = Clock(), Sink()
    first = evaluator(store, [RULE], clock, sink)
    first.run_once()
    first.stop()
    assert [n.status for n in sink.sent] == ["firing"]
    again = evaluator(store, [RULE], clock, sink)  # a new process on the same store
    again.run_once()
    assert len(sink.sent) == 1
    clock.now += 600
    again.run_once()
    again.run_once()
    assert [n.status for n in sink.sent] == ["firing", "resolved"]


def test_one_evaluator_acts_at_a_time_and_another_takes_over(store: Store) -> None:
    put(store, {key(minute(0)): make_delta(requests=1, cost_usd=5.0)})
    clock = Clock()
    a_sink, b_sink = Sink(), Sink()
    a = evaluator(store, [RULE], clock, a_sink, holder="a", lease_ttl_s=30.0)
    b = evaluator(store, [RULE], clock, b_sink, holder="b", lease_ttl_s=30.0)
    assert a.run_once().leader
    assert not b.run_once().leader
    assert len(a_sink.sent) == 1
    assert b_sink.sent == []
    clock.now += 29
    assert not b.run_once().leader  # a's lease still holds (a died without releasing it)
    clock.now += 2
    assert b.run_once().leader  # expired: b takes over, knowing the alert fires
    assert b_sink.sent == []
    clock.now += 600
    b.run_once()
    assert [n.status for n in b_sink.sent] == ["resolved"]
    b.stop()  # a clean stop releases the lease at once
    assert a.run_once().leader


def test_reloaded_rules_take_effect_and_removed_rules_are_forgotten(store: Store) -> None:
    put(store, {key(minute(0)): make_delta(requests=1, cost_usd=5.0)})
    clock, sink = Clock(), Sink()
    ev = evaluator(store, [RULE], clock, sink)
    ev.run_once()
    other = Rule("requests", T, threshold=Threshold("requests", 60, above=0))
    ev.reload(Rules(rules=(other,)))
    ev.run_once()
    assert [n.rule for n in sink.sent] == ["cost-spike", "requests"]
    assert set(store.alerts.states()) == {"requests"}


def test_poked_tenants_only_judge_their_rules(store: Store) -> None:
    put(store, {key(minute(0)): make_delta(requests=1, cost_usd=5.0)})
    other = Rule("beta", "beta", threshold=Threshold("requests", 60, above=-1))
    clock, sink = Clock(), Sink()
    ev = evaluator(store, [RULE, other], clock, sink)
    result = ev.run_once(tenants=["beta"])
    assert result.evaluated == 1
    assert [n.rule for n in sink.sent] == ["beta"]


def test_a_firing_alert_is_sent_again_to_alertmanager_every_minute(store: Store) -> None:
    from llmpulse.alerts import Notifier

    notifiers = {
        "am": Notifier("am", "alertmanager", "http://127.0.0.1:9"),
        "hook": Notifier("hook", "webhook", "http://127.0.0.1:9"),
    }
    rule = Rule("cost-spike", T, threshold=Threshold("cost_usd", 3600, above=1.0), notify=("am", "hook"))
    put(store, {key(minute(0)): make_delta(requests=1, cost_usd=5.0)})
    clock, sink = Clock(), Sink()
    ev = Evaluator(store, Rules(notifiers=notifiers, rules=(rule,)), sink, clock=clock)
    ev.run_once()
    clock.now += 30
    ev.run_once()
    assert [n.notify for n in sink.sent] == [("am", "hook")]
    clock.now += 31
    ev.run_once()
    assert [n.notify for n in sink.sent] == [("am", "hook"), ("am",)]  # a resend: Alertmanager only
    assert sink.sent[1].starts_at == NOW
    assert [h.status for h in store.alerts.history(T)] == ["firing"]  # not a transition


def test_a_rule_from_a_file_reads_the_windows_and_sums_equal_the_summary(store: Store) -> None:
    """A parsed rule's scope names its tenant: it still reads the minute windows and rollups (not the
    call records), and the figures added up in SQL equal the summary's."""
    from llmpulse.alerts import parse_rules

    put(store, {key(minute(-2)): make_delta(requests=4, errors=1, cost_usd=2.5, latencies=[100.0] * 4)})
    rules = parse_rules(
        {
            "rules": [
                {"name": "cost", "scope": {"tenant_id": T},
                 "threshold": {"metric": "cost_usd", "window": "5m", "above": 2}},
                {"name": "p95", "scope": {"tenant_id": T, "route": "chat"},
                 "threshold": {"metric": "p95_latency_ms", "window": "5m", "above": 50}},
            ]
        },
        "test",
    )  # fmt: skip
    cost, p95 = rules.rules
    assert cost.filters == {}
    assert p95.filters == {"route": "chat"}
    ev = Evaluation(StoreSource(store), NOW)
    assert ev.verdict(cost).value == pytest.approx(2.5)
    assert ev.verdict(p95).value == pytest.approx(100.0, rel=0.01)
    start, end = datetime.fromtimestamp(minute(-4), UTC), datetime.fromtimestamp(minute(1), UTC)
    sums = store.sums(T, start=start, end=end)
    (summary,) = store.summary(T, start=start, end=end)
    for name in ("requests", "errors", "cost_usd", "latency_count", "latency_sum_ms"):
        assert getattr(sums, name) == getattr(summary.delta, name), name
    assert sums.latency_hist == {}
