"""Property tests of the processor core against the independent oracle (`tests.oracle`).

`late` is left out of the order-independence comparison: whether a contribution is late depends, by
definition, on what arrived before it. Everything else must not depend on the order of delivery.
Float sums (cost, latency and time-to-first-token sums) are compared with a relative tolerance,
since their rounding depends on the order of addition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from llmpulse.events import Event
from llmpulse.store import WindowDelta, WindowKey
from llmpulse.testing.traffic import UNKNOWN_MODEL, generate_events
from tests.oracle import assert_matches, expected_windows
from tests.pipeline.test_processor import T0, Harness

MODELS = ("gpt-4o-mini", "claude-3-5-haiku-latest", "gemini-2.5-pro", "deepseek-chat", UNKNOWN_MODEL)
FLOATS = ("cost_usd", "latency_sum_ms", "ttft_sum_ms")
PROPERTY = settings(max_examples=60, deadline=None)


@st.composite
def traffic(draw: st.DrawFn, max_pairs: int = 30) -> list[Event]:
    """Small realistic traffic: errors, orphans of both kinds, call events, unknown and tiered models."""
    return generate_events(
        draw(st.integers(1, max_pairs)),
        tenants=2,
        routes=2,
        models=MODELS,
        start=T0,
        duration_s=draw(st.sampled_from([20.0, 300.0, 1800.0])),
        error_rate=0.2,
        orphan_request_rate=draw(st.sampled_from([0.0, 0.2])),
        orphan_response_rate=draw(st.sampled_from([0.0, 0.2])),
        call_rate=draw(st.sampled_from([0.0, 0.3])),
        seed=draw(st.integers(0, 2**16)),
    )


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[Event], list[Event]]:
    """The same traffic twice: in event-time order, and reordered with exact duplicates added."""
    events = draw(traffic())
    delivered = list(draw(st.permutations(events)))
    copies = draw(
        st.lists(st.tuples(st.integers(0, len(events) - 1), st.integers(0, len(events))), max_size=8)
    )
    for index, position in copies:
        delivered.insert(position, msgspec.structs.replace(events[index]))
    return events, delivered


def run(events: Sequence[Event], batch: int, *, final_expire: bool) -> Harness:
    h = Harness()
    for i in range(0, len(events), batch):
        h.feed(events[i : i + batch], now=float(i))
    if final_expire:
        h.expire(10_000.0)  # past every orphan timeout, well within the dedup TTL
    return h


def assert_same_windows(
    a: dict[WindowKey, WindowDelta], b: dict[WindowKey, WindowDelta], *, ignore_late: bool
) -> None:
    assert set(a) == set(b)
    for k in a:
        x, y = a[k].as_dict(), b[k].as_dict()
        for name in FLOATS:
            assert math.isclose(float(x.pop(name)), float(y.pop(name)), rel_tol=1e-9, abs_tol=1e-12), (
                k,
                name,
            )
        if ignore_late:
            del x["late"], y["late"]
        assert x == y, k


@PROPERTY
@given(pair=deliveries(), batch=st.integers(1, 16), final_expire=st.booleans())
def test_any_interleaving_and_duplication_gives_the_same_windows(
    pair: tuple[list[Event], list[Event]], batch: int, final_expire: bool
) -> None:
    events, delivered = pair
    reference = run(events, 1000, final_expire=final_expire)
    reordered = run(delivered, batch, final_expire=final_expire)
    assert_same_windows(reference.store.windows(), reordered.store.windows(), ignore_late=True)
    assert reordered.store.counters().get("duplicates", 0) == len(delivered) - len(events)


@PROPERTY
@given(pair=deliveries(), batch=st.integers(1, 16))
def test_windows_equal_the_oracle_with_nothing_timed_out(
    pair: tuple[list[Event], list[Event]], batch: int
) -> None:
    _, delivered = pair
    h = run(delivered, batch, final_expire=False)
    expected = expected_windows(delivered)
    assert_matches(h.store.windows(), expected)
    stats = h.core.stats()
    assert stats["duplicates"] == expected.duplicates
    assert stats["pending_requests"] == expected.unanswered_requests
    assert stats["pending_responses"] == expected.orphan_responses


@PROPERTY
@given(pair=deliveries(), batch=st.integers(1, 16))
def test_windows_equal_the_oracle_when_unanswered_requests_time_out(
    pair: tuple[list[Event], list[Event]], batch: int
) -> None:
    _, delivered = pair
    h = run(delivered, batch, final_expire=True)
    expected = expected_windows(delivered, unanswered_are_timeouts=True)
    assert_matches(h.store.windows(), expected)
    counters = h.store.counters()
    assert counters.get("timeouts", 0) == expected.unanswered_requests
    assert counters.get("orphan_responses", 0) == expected.orphan_responses
    assert all(entry.expired for entry in h.store.pending.values())
    assert len(h.store.pending) == expected.unanswered_requests + expected.orphan_responses


@PROPERTY
@given(
    pair=deliveries(),
    batch=st.integers(1, 16),
    split=st.floats(0.0, 1.0),
    expire_at_split=st.booleans(),
    restarts=st.integers(1, 3),
)
def test_restarting_from_checkpoints_at_any_point_gives_the_same_windows(
    pair: tuple[list[Event], list[Event]], batch: int, split: float, expire_at_split: bool, restarts: int
) -> None:
    _, delivered = pair
    cut = round(split * len(delivered))
    # the same calls with the same clock, once without and once with restarts from the store
    plans = []
    for restart in (False, True):
        h = Harness()
        now = 0.0
        for i in range(0, cut, batch):
            h.feed(delivered[i : min(i + batch, cut)], now=now)
            now += 1.0
        if expire_at_split:  # everything pending so far times out; later halves must correct it
            now += 1000.0
            h.expire(now)
        for _ in range(restarts if restart else 0):
            h.restart()
        for i in range(cut, len(delivered), batch):
            h.feed(delivered[i : i + batch], now=now)
            now += 1.0
        h.expire(now + 1000.0)
        plans.append(h)
    one_run, restarted = plans
    assert_same_windows(one_run.store.windows(), restarted.store.windows(), ignore_late=False)
    assert one_run.store.counters() == restarted.store.counters()
    assert one_run.store.pending.keys() == restarted.store.pending.keys()
    assert_matches(restarted.store.windows(), expected_windows(delivered, unanswered_are_timeouts=True))
