"""Retention: `prune` deletes exactly what the policy no longer keeps, in bounded batches, on both
dialects; `RetentionPolicy` validates its fields and reads its environment variables."""

from __future__ import annotations

import itertools
import math

import pytest
import sqlalchemy as sa

from llmpulse.store import (
    Checkpoint,
    RetentionPolicy,
    RetentionSettingError,
    Store,
    WindowKey,
    prune,
    roll_up,
)
from llmpulse.store._retention import MIN_BATCH_ROWS
from llmpulse.store._tables import calls, rollups_day, rollups_hour, windows
from tests.store.conftest import make_delta, make_record

DAY = 86400
#: Not aligned to a minute, so every cut falls inside a bucket.
NOW = 1_800_000_000 + 37.25
POLICY = RetentionPolicy(calls_days=30, minutes_days=14, hours_days=396, days_days=400)
TABLES = {"windows": (windows, 60), "rollups_hour": (rollups_hour, 3600), "rollups_day": (rollups_day, DAY)}


def _bucket(t: float, seconds: int) -> int:
    return math.floor(t / seconds) * seconds


def _starts(store: Store, table: sa.Table) -> set[tuple[str, int]]:
    with store.engine.connect() as conn:
        return {(t, int(ws)) for t, ws in conn.execute(sa.select(table.c.tenant_id, table.c.window_start))}


def _call_ids(store: Store) -> set[tuple[str, str]]:
    with store.engine.connect() as conn:
        return {(t, r) for t, r in conn.execute(sa.select(calls.c.tenant_id, calls.c.request_id))}


def _write_windows(store: Store, tenants: list[str], minutes: list[int]) -> None:
    """Commit a window per tenant, route ("chat", "search") and minute, then roll every hour up."""
    deltas = {
        WindowKey(tenant, route, "m", ws): make_delta(requests=1)
        for tenant in tenants
        for route in ("chat", "search")
        for ws in minutes
    }
    store.commit(Checkpoint("c", windows=deltas))
    roll_up(store, NOW + DAY)  # every hour into the rollups, as the pruner's thread does first


def test_each_kind_of_record_past_its_retention_goes_and_nothing_younger(store: Store) -> None:
    tenants = ["acme", "globex", "initech"]
    # minute windows either side of each table's cut: the bucket holding the cut is kept whole
    minutes: list[int] = []
    for name, (_, seconds) in TABLES.items():
        cut = NOW - POLICY.retention_s(name)  # type: ignore[operator]
        holding = _bucket(cut, seconds)
        minutes += [holding - 60, holding, holding + seconds - 60, holding + seconds]
    minutes.append(_bucket(NOW, 60))
    _write_windows(store, tenants, sorted(set(minutes)))
    cut_calls = NOW - 30 * DAY
    ages = {"old": cut_calls - 3600, "just-old": cut_calls - 0.001, "at-cut": cut_calls, "young": NOW - 1}
    records = {
        (tenant, f"{tenant}-{label}"): make_record(tenant, f"{tenant}-{label}", started_at=at)
        for tenant in tenants
        for label, at in ages.items()
    }
    store.commit(Checkpoint("c", calls=records))
    before = {name: _starts(store, table) for name, (table, _) in TABLES.items()}

    result = prune(store, POLICY, NOW, batch_rows=2)

    assert result.complete
    for name, (table, seconds) in TABLES.items():
        cut = NOW - POLICY.retention_s(name)  # type: ignore[operator]
        expected = {(t, ws) for t, ws in before[name] if ws + seconds > cut}
        assert _starts(store, table) == expected, name
        assert len(before[name]) > len(expected), f"{name}: nothing was old enough to test"
        assert (tenants[0], _bucket(cut, seconds)) in expected, f"{name}: the bucket holding the cut"
        per = 2 if name == "windows" else 3  # two routes, and the rollups' tenant total
        assert result.deleted[name] == per * (len(before[name]) - len(expected))
        assert result.oldest_kept[name] == min(ws for _, ws in expected)
        assert result.cutoffs[name] == pytest.approx(cut)
    assert _call_ids(store) == {(t, f"{t}-{label}") for t in tenants for label in ("at-cut", "young")}
    assert result.deleted["calls"] == 2 * len(tenants)
    assert result.oldest_kept["calls"] == pytest.approx(cut_calls)

    again = prune(store, POLICY, NOW, batch_rows=2)
    assert again.total_deleted == 0
    assert again.batches == 0


def test_daily_rollups_and_call_records_kept_forever_when_set_to_0(store: Store) -> None:
    old = _bucket(NOW - 3000 * DAY, 60)
    _write_windows(store, ["acme"], [old, _bucket(NOW, 60)])
    store.commit(Checkpoint("c", calls={("acme", "r"): make_record("acme", "r", started_at=old + 1)}))
    policy = RetentionPolicy(calls_days=0, minutes_days=1, hours_days=1, days_days=0)

    result = prune(store, policy, NOW)

    assert result.cutoffs["rollups_day"] is None
    assert result.cutoffs["calls"] is None
    assert {ws for _, ws in _starts(store, rollups_day)} == {_bucket(old, DAY), _bucket(NOW, DAY)}
    assert {ws for _, ws in _starts(store, rollups_hour)} == {_bucket(NOW, 3600)}
    assert {ws for _, ws in _starts(store, windows)} == {_bucket(NOW, 60)}
    assert _call_ids(store) == {("acme", "r")}
    assert result.oldest_kept["calls"] == old + 1
    # two routes' minutes; two routes' hours and their tenant total
    assert result.deleted == {"calls": 0, "windows": 2, "rollups_hour": 3, "rollups_day": 0}


def _total_rows(store: Store) -> int:
    with store.engine.connect() as conn:
        return sum(
            int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
            for t in (calls, windows, rollups_hour, rollups_day)
        )


def test_every_transaction_deletes_at_most_batch_rows(store: Store) -> None:
    old = [_bucket(NOW - 500 * DAY, 3600) + 60 * i for i in range(7)]
    _write_windows(store, ["acme", "globex"], old)  # 2 tenants x 2 routes: 28 minutes, 4 hours, 4 days
    store.commit(
        Checkpoint(
            "c",
            calls={("acme", f"r{i}"): make_record("acme", f"r{i}", started_at=old[0]) for i in range(10)},
        )
    )
    sizes = [_total_rows(store)]

    def between(took_s: float) -> bool:
        assert took_s > 0
        sizes.append(_total_rows(store))
        return True

    result = prune(store, POLICY, NOW, batch_rows=3, between_batches=between)

    steps = [a - b for a, b in itertools.pairwise(sizes)]
    assert all(0 < s <= 3 for s in steps), steps
    assert sum(steps) == result.total_deleted == 10 + 28 + (4 + 2) + (4 + 2)  # the rollups with their totals
    assert result.batches == len(steps)
    assert _total_rows(store) == 0
    assert result.longest_batch_s > 0


def test_between_batches_returning_false_stops_after_that_batch(store: Store) -> None:
    store.commit(
        Checkpoint(
            "c", calls={("acme", f"r{i}"): make_record("acme", f"r{i}", started_at=1.0) for i in range(9)}
        )
    )

    result = prune(store, POLICY, NOW, batch_rows=4, between_batches=lambda _took_s: False)

    assert not result.complete
    assert result.deleted["calls"] == 4
    assert len(_call_ids(store)) == 5
    assert prune(store, POLICY, NOW, batch_rows=4).deleted["calls"] == 5


def test_batches_shrink_while_slower_than_max_batch_s(store: Store) -> None:
    store.commit(
        Checkpoint(
            "c", calls={("acme", f"r{i}"): make_record("acme", f"r{i}", started_at=1.0) for i in range(1000)}
        )
    )
    # every batch is slower than a nanosecond: after the first (400 rows) they shrink, but never
    # below MIN_BATCH_ROWS (a batch's fixed cost would otherwise stall the prune)
    result = prune(store, POLICY, NOW, batch_rows=400, max_batch_s=1e-9)
    assert result.deleted["calls"] == 1000
    assert result.batches == 1 + 600 // MIN_BATCH_ROWS
    with pytest.raises(ValueError, match="max_batch_s"):
        prune(store, POLICY, NOW, max_batch_s=0)


def test_prune_of_an_empty_store_reads_nothing_old(store: Store) -> None:
    result = prune(store, RetentionPolicy(), NOW)
    assert result.total_deleted == 0
    assert dict(result.oldest_kept) == {
        "calls": None,
        "windows": None,
        "rollups_hour": None,
        "rollups_day": None,
    }
    assert result.as_dict()["cutoffs"]["rollups_day"] is None


def test_prune_refuses_a_batch_below_1(store: Store) -> None:
    with pytest.raises(ValueError, match="batch_rows"):
        prune(store, POLICY, NOW, batch_rows=0)


# -- the policy ----------------------------------------------------------------------------------


def test_defaults_are_the_documented_ones() -> None:
    p = RetentionPolicy()
    assert (p.calls_days, p.minutes_days, p.hours_days, p.days_days) == (30, 14, 396, 0)
    assert (p.log_s, p.interval_s, p.batch_rows) == (3600, 60, 1000)
    assert p.retention_s("rollups_day") is None
    assert p.retention_s("windows") == 14 * DAY


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"calls_days": 0.5}, "calls_days"),
        ({"calls_days": -1}, "calls_days"),
        ({"minutes_days": math.nan}, "minutes_days"),
        ({"minutes_days": 20, "hours_days": 10}, "minutes_days"),
        ({"hours_days": 500, "days_days": 400}, "hours_days"),
        ({"minutes_days": 0}, "minutes_days"),  # forever minutes under 396-day hours
        ({"hours_days": 0, "days_days": 400}, "hours_days"),
        ({"log_s": -1}, "log_s"),
        ({"interval_s": -0.5}, "interval_s"),
        ({"batch_rows": 0}, "batch_rows"),
        ({"batch_rows": 1.5}, "batch_rows"),
        ({"batch_rows": True}, "batch_rows"),
    ],
)
def test_invalid_values_raise_naming_the_field(values: dict[str, float], field: str) -> None:
    with pytest.raises(RetentionSettingError, match=f"^{field} ") as info:
        RetentionPolicy(**values)  # type: ignore[arg-type]
    assert info.value.field == field
    assert isinstance(info.value, ValueError)


def test_forever_counts_as_longest_in_the_order() -> None:
    p = RetentionPolicy(minutes_days=0, hours_days=0, days_days=0)
    assert p.retention_s("windows") is None
    RetentionPolicy(minutes_days=400, hours_days=0, days_days=0)
    RetentionPolicy(minutes_days=1, hours_days=1, days_days=1)


def test_from_env_reads_every_variable() -> None:
    env = {
        "LLMPULSE_RETENTION_CALLS_DAYS": "7",
        "LLMPULSE_RETENTION_MINUTES_DAYS": "2.5",
        "LLMPULSE_RETENTION_HOURS_DAYS": "90",
        "LLMPULSE_RETENTION_DAYS_DAYS": "3650",
        "LLMPULSE_RETENTION_LOG_S": "600",
        "LLMPULSE_PRUNE_INTERVAL_S": "0",
        "LLMPULSE_PRUNE_BATCH_ROWS": "250",
        "UNRELATED": "x",
    }
    assert RetentionPolicy.from_env(env) == RetentionPolicy(7, 2.5, 90, 3650, 600, 0, 250)
    assert RetentionPolicy.from_env({}) == RetentionPolicy()
    assert RetentionPolicy.from_env({"LLMPULSE_RETENTION_CALLS_DAYS": " "}) == RetentionPolicy()


def test_from_env_overrides_win_and_none_is_ignored() -> None:
    env = {"LLMPULSE_RETENTION_CALLS_DAYS": "7"}
    assert RetentionPolicy.from_env(env, calls_days=9, batch_rows=None).calls_days == 9


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LLMPULSE_RETENTION_CALLS_DAYS": "a month"}, "LLMPULSE_RETENTION_CALLS_DAYS must be a number"),
        ({"LLMPULSE_RETENTION_LOG_S": "inf"}, "LLMPULSE_RETENTION_LOG_S must be a number"),
        ({"LLMPULSE_PRUNE_BATCH_ROWS": "1e3"}, "LLMPULSE_PRUNE_BATCH_ROWS must be an integer"),
        ({"LLMPULSE_RETENTION_CALLS_DAYS": "0.25"}, "LLMPULSE_RETENTION_CALLS_DAYS: calls_days must be 0"),
        (
            {"LLMPULSE_RETENTION_MINUTES_DAYS": "30", "LLMPULSE_RETENTION_HOURS_DAYS": "20"},
            "LLMPULSE_RETENTION_MINUTES_DAYS, LLMPULSE_RETENTION_HOURS_DAYS: minutes_days .30 days. must "
            "not exceed hours_days .20 days.",
        ),
        ({"LLMPULSE_PRUNE_INTERVAL_S": "-1"}, "LLMPULSE_PRUNE_INTERVAL_S: interval_s must be"),
        (  # the default it conflicts with is not named: only what the operator set
            {"LLMPULSE_RETENTION_HOURS_DAYS": "10"},
            "LLMPULSE_RETENTION_HOURS_DAYS: minutes_days .14 days. must not exceed hours_days .10 days.",
        ),
    ],
)
def test_from_env_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}"):
        RetentionPolicy.from_env(env)


def test_an_override_that_is_invalid_names_the_field_not_the_variable() -> None:
    with pytest.raises(RetentionSettingError, match=r"^calls_days ") as info:
        RetentionPolicy.from_env({"LLMPULSE_RETENTION_CALLS_DAYS": "7"}, calls_days=0.5)
    assert info.value.fields == ("calls_days",)
    with pytest.raises(ValueError, match=r"^LLMPULSE_RETENTION_MINUTES_DAYS: minutes_days .30 days"):
        RetentionPolicy.from_env({"LLMPULSE_RETENTION_MINUTES_DAYS": "30"}, hours_days=20)


def test_minutes_of_an_hour_not_rolled_up_are_kept_past_their_retention(store: Store) -> None:
    old = _bucket(NOW - 20 * DAY, 3600)
    # acme's hours are not rolled up yet: its minute windows are all it has of them
    minutes = {
        WindowKey("acme", r, "m", ws): make_delta(requests=1)
        for r in ("chat", "rag")
        for ws in (old, old + 60)
    }
    store.commit(Checkpoint("c", windows=minutes))
    result = prune(store, POLICY, NOW)
    assert result.deleted["windows"] == 0
    assert result.cutoffs["windows"] == 0  # acme's rollups stop at 0: nothing rolled up yet
    assert len(_starts(store, windows)) == 2

    roll_up(store, NOW)
    assert {ws for _, ws in _starts(store, rollups_hour)} == {old}
    assert prune(store, POLICY, NOW).deleted["windows"] == 4  # two routes
    (row,) = store.summary("acme")
    assert (row.delta.requests, row.windows) == (4, 1)  # from the daily rollups' tenant total


def test_a_commit_deletes_expired_records_of_its_tenants_in_proportion_to_what_it_writes(
    store: Store,
) -> None:
    from llmpulse.store._model import EXPIRE_BATCH_EXTRA, EXPIRE_PER_RECORD

    old = NOW - 40 * DAY
    n_old = 2 * EXPIRE_BATCH_EXTRA + 50
    store.commit(
        Checkpoint(
            "c",
            calls={
                (t, f"{t}-old-{i}"): make_record(t, f"{t}-old-{i}", started_at=old + i)
                for t in ("acme", "globex")
                for i in range(n_old)
            },
        )
    )
    cut = NOW - 30 * DAY
    young = {("acme", f"new-{i}"): make_record("acme", f"new-{i}", started_at=NOW - i) for i in range(3)}
    store.commit(Checkpoint("c", calls=young, expire_calls_before=cut))
    allowed = 3 * EXPIRE_PER_RECORD + EXPIRE_BATCH_EXTRA
    left = _call_ids(store)
    # acme's oldest `allowed` go, the rest of acme's old ones and every one of globex's stay
    assert {r for t, r in left if t == "acme" and "old" in r} == {
        f"acme-old-{i}" for i in range(allowed, n_old)
    }
    assert sum(1 for t, _ in left if t == "globex") == n_old
    assert {("acme", f"new-{i}") for i in range(3)} <= left
    assert store.counters()["call_records_expired"] == allowed
    # nothing younger than the cut goes, however many records a commit writes
    many = {("acme", f"more-{i}"): make_record("acme", f"more-{i}", started_at=cut + i) for i in range(200)}
    store.commit(Checkpoint("c", calls=many, expire_calls_before=cut))
    assert not any(t == "acme" and "old" in r for t, r in _call_ids(store))
    assert store.counters()["call_records_expired"] == n_old
    assert len(_call_ids(store)) == n_old + 3 + 200
