"""Long ranges read from the coarsest rows that cover them exactly (`llmpulse.store._ranges`)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from llmpulse.store import ROLL_SETTLE_S, Checkpoint, Scope, Store, WindowDelta, WindowKey, roll_up, rollup
from llmpulse.store._ranges import DAY, HOUR, MINUTE, Piece, plan
from tests.store.conftest import make_delta

D0 = 1_763_510_400  # 2025-11-19T00:00:00Z


def covered(pieces: list[Piece], lo: int, hi: int) -> list[int]:
    """The minute starts the pieces read, in [lo - 2 days, hi + 2 days)."""
    out: list[int] = []
    for p in pieces:
        a = lo - 2 * DAY if p.lo is None else p.lo
        b = hi + 2 * DAY if p.hi is None else p.hi
        assert a % p.seconds == 0
        assert b % p.seconds == 0
        out.extend(range(a, b, MINUTE))
    return sorted(out)


@pytest.mark.parametrize("coarsest", [MINUTE, HOUR, DAY])
def test_a_plan_reads_every_minute_of_the_range_once_and_nothing_else(coarsest: int) -> None:
    rng = random.Random(7)
    for _ in range(500):
        lo = D0 + rng.randrange(0, 5 * DAY)
        hi = lo + rng.choice([1, 59, 60, 61, 3599, 3600, 7200 + 13, DAY, 3 * DAY + 5]) + rng.randrange(0, 120)
        pieces = plan(lo, hi, coarsest)
        first = -(-lo // MINUTE) * MINUTE
        last = -(-hi // MINUTE) * MINUTE
        assert covered(pieces, lo, hi) == list(range(first, last, MINUTE))
        assert all(p.seconds <= coarsest for p in pieces)
        # with rollups only up to some hour: the same minutes, no rollup row read from it on
        rolled = D0 + rng.randrange(-2, 6 * 24) * HOUR
        pieces = plan(lo, hi, coarsest, rolled=rolled)
        assert covered(pieces, lo, hi) == list(range(first, last, MINUTE))
        assert all(p.seconds == MINUTE for p in pieces if p.hi is None or p.hi > rolled)


def test_a_plan_reads_only_minutes_from_where_the_rollups_stop() -> None:
    lo, hi = D0 + 90, D0 + 3 * DAY + 300
    assert plan(lo, hi, rolled=D0 + 2 * DAY + 5 * HOUR) == [
        Piece(MINUTE, D0 + 120, D0 + HOUR),
        Piece(HOUR, D0 + HOUR, D0 + DAY),
        Piece(DAY, D0 + DAY, D0 + 2 * DAY),
        Piece(HOUR, D0 + 2 * DAY, D0 + 2 * DAY + 5 * HOUR),
        Piece(MINUTE, D0 + 2 * DAY + 5 * HOUR, D0 + 3 * DAY + 300),
    ]
    assert plan(lo, hi, rolled=0) == [Piece(MINUTE, D0 + 120, D0 + 3 * DAY + 300)]
    assert plan(None, None, rolled=D0) == [Piece(DAY, None, D0), Piece(MINUTE, D0, None)]
    with pytest.raises(ValueError, match="whole hour"):
        plan(lo, hi, rolled=D0 + 60)


def test_a_month_reads_days_hours_at_their_edges_and_minutes_at_the_ragged_ends() -> None:
    lo, hi = D0 + 90, D0 + 29 * DAY + 2 * HOUR + 300
    assert plan(lo, hi) == [
        Piece(MINUTE, D0 + 120, D0 + HOUR),
        Piece(HOUR, D0 + HOUR, D0 + DAY),
        Piece(DAY, D0 + DAY, D0 + 29 * DAY),
        Piece(HOUR, D0 + 29 * DAY, D0 + 29 * DAY + 2 * HOUR),
        Piece(MINUTE, D0 + 29 * DAY + 2 * HOUR, D0 + 29 * DAY + 2 * HOUR + 300),
    ]
    assert plan(None, None) == [Piece(DAY, None, None)]
    assert plan(D0, D0) == []


def _traffic(rng: random.Random) -> dict[WindowKey, WindowDelta]:
    windows: dict[WindowKey, WindowDelta] = {}
    for _ in range(400):
        start = D0 + rng.randrange(0, 4 * DAY // MINUTE) * MINUTE
        key = WindowKey(rng.choice(["t1", "t2"]), rng.choice(["chat", "rag"]), rng.choice(["a", "b"]), start)
        n = rng.randint(1, 4)
        d = make_delta(
            requests=n,
            errors=rng.randint(0, n),
            latencies=[rng.lognormvariate(6, 1) for _ in range(n)],
            ttfts=[rng.lognormvariate(5, 1) for _ in range(rng.randint(0, n))],
            prompt_tokens=rng.randint(0, 5000),
            cost_usd=rng.random(),
        )
        windows[key] = d if key not in windows else WindowDelta().merge(windows[key]).merge(d)
    return windows


def test_any_range_summary_equals_the_sum_of_its_minute_windows(store: Store) -> None:
    rng = random.Random(11)
    windows = _traffic(rng)
    items = list(windows.items())
    rng.shuffle(items)
    half = len(items) // 2
    for i in range(0, len(items), 37):  # several commits, as the processor makes them
        if i <= half < i + 37:
            # half-way, the hours before D0 + 2 days are rolled up: the rest of their deltas arrive
            # late (added to the rollups by the commit), later hours stay in minutes until read
            roll_up(store, D0 + 2 * DAY + ROLL_SETTLE_S)
        store.commit(Checkpoint("c", windows=dict(items[i : i + 37])))
    for _ in range(25):
        lo = D0 - HOUR + rng.randrange(0, 5 * DAY)
        hi = lo + rng.randrange(1, 4 * DAY)
        start, end = datetime.fromtimestamp(lo, UTC), datetime.fromtimestamp(hi, UTC)
        want: dict[str, WindowDelta] = {}
        a, b = -(-lo // MINUTE) * MINUTE, -(-hi // MINUTE) * MINUTE
        for key, d in windows.items():
            if key.tenant_id == "t1" and a <= key.window_start < b:
                want.setdefault(key.model, WindowDelta()).merge(d)
        got = {s.model: s.delta for s in store.summary("t1", start=start, end=end, group_by="model")}
        assert set(got) == set(want)
        for model, d in want.items():
            g = got[model]
            for name in ("requests", "errors", "prompt_tokens", "latency_count", "ttft_count"):
                assert getattr(g, name) == getattr(d, name), name
            assert g.latency_hist == d.latency_hist
            assert g.ttft_hist == d.ttft_hist
            assert g.cost_usd == pytest.approx(d.cost_usd, rel=1e-9)

        scope = Scope(None, None, None, start, end)
        for step in (MINUTE, HOUR, DAY):
            found = rollup(store, scope, step)
            all_tenants = WindowDelta()
            series: dict[int, int] = {}
            for key, d in windows.items():
                if a <= key.window_start < b:
                    all_tenants.merge(d)
                    bucket = key.window_start // step * step
                    series[bucket] = series.get(bucket, 0) + d.requests
            assert found.total.requests == all_tenants.requests
            assert found.total.latency_hist == all_tenants.latency_hist
            assert {k: v.requests for k, v in found.series.items()} == series


def test_a_month_summary_reads_days_not_minutes(store: Store) -> None:
    windows = {
        WindowKey("t1", "chat", "a", D0 + m * MINUTE): make_delta(requests=1, latencies=[10.0])
        for m in range(0, 3 * DAY // MINUTE, 7)
    }
    store.commit(Checkpoint("c", windows=windows))
    roll_up(store, D0 + 4 * DAY)
    (row,) = store.summary(
        "t1", start=datetime.fromtimestamp(D0, UTC), end=datetime.fromtimestamp(D0 + 3 * DAY, UTC)
    )
    assert row.delta.requests == len(windows)
    assert row.windows == 3  # three daily rollup rows
