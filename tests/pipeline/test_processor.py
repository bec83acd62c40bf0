"""Unit tests of the processor core, one rule at a time (see the module docstring of `_processor`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from llmpulse.events import Event, LLMCall, LLMRequest, LLMResponse, decode_log
from llmpulse.pipeline._processor import ProcessorConfig, ProcessorCore
from llmpulse.pipeline._runner import prime_from_store
from llmpulse.pricing import Pricer
from llmpulse.store import (
    CallRecord,
    Checkpoint,
    ColdProbe,
    ColdState,
    PendingEntry,
    ProcessorState,
    WindowDelta,
    WindowKey,
    dedup_key,
    quantile,
)
from tests.oracle import price

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = int(T0.timestamp())
PRICER = Pricer()


def req(
    rid: str,
    *,
    at: float = 0.0,
    tenant: str = "tenant-1",
    route: str = "chat",
    model: str = "gpt-4o-mini",
    prompt: int = 100,
) -> LLMRequest:
    """A request `at` seconds after T0."""
    return LLMRequest(
        request_id=rid,
        tenant_id=tenant,
        route=route,
        model=model,
        timestamp=T0 + timedelta(seconds=at),
        prompt_tokens=prompt,
    )


def resp(
    rid: str,
    *,
    at: float = 1.0,
    latency: float = 1000.0,
    completion: int = 50,
    error: Any = None,
    ttft: float | None = None,
) -> LLMResponse:
    """A response `at` seconds after T0."""
    return LLMResponse(
        request_id=rid,
        timestamp=T0 + timedelta(seconds=at),
        latency_ms=latency,
        completion_tokens=completion,
        error=error,
        ttft_ms=ttft,
    )


def call(rid: str | None, *, at: float = 0.0, model: str = "gpt-4o-mini", **fields: Any) -> LLMCall:
    """A call event `at` seconds after T0."""
    return LLMCall(
        request_id=rid,
        tenant_id="tenant-1",
        route="chat",
        model=model,
        timestamp=T0 + timedelta(seconds=at),
        **fields,
    )


def key(
    minute: int = 0, *, model: str = "gpt-4o-mini", tenant: str = "tenant-1", route: str = "chat"
) -> WindowKey:
    return WindowKey(tenant, route, model, MINUTE + 60 * minute)


def merge(windows: Iterable[dict[WindowKey, WindowDelta]]) -> dict[WindowKey, WindowDelta]:
    """Add window deltas by key (as the store does)."""
    out: dict[WindowKey, WindowDelta] = {}
    for ws in windows:
        for k, d in ws.items():
            out.setdefault(k, WindowDelta()).merge(d)
    return out


@dataclass
class Store:
    """A minimal in-memory stand-in for the store: applies checkpoints and rebuilds ProcessorState.

    It asserts the checkpoint contract on the way: deletes name stored entries only.
    """

    checkpoints: list[Checkpoint] = field(default_factory=list)
    pending: dict[tuple[str, str, str], PendingEntry] = field(default_factory=dict)
    records: dict[tuple[str, str], CallRecord] = field(default_factory=dict)
    dedup: set[str] = field(default_factory=set)
    offsets: dict[int, int] = field(default_factory=dict)
    watermark: float = 0.0

    def commit(self, cp: Checkpoint) -> None:
        self.checkpoints.append(cp)
        for k in cp.pending_deletes:
            assert k in self.pending, f"delete of an entry never checkpointed: {k}"
            del self.pending[k]
        for entry in cp.pending_upserts:
            self.pending[(entry.tenant_id, entry.request_id, entry.kind)] = entry
        self.records.update(cp.calls)
        if cp.forget_before is not None:
            for k, e in list(self.pending.items()):
                if e.expired and e.seen_at <= cp.forget_before:
                    del self.pending[k]
        self.dedup.update(cp.dedup_keys)
        self.offsets.update(cp.offsets)
        self.watermark = cp.watermark

    def lookup_cold(self, consumer: str, probes: Sequence[ColdProbe], since: float) -> ColdState:
        """As `llmpulse.store.Store.lookup_cold`."""
        wanted = {p.request_id for p in probes}
        return ColdState(
            counted=sorted(
                (*k, r.updated_at)
                for k, r in self.records.items()
                if r.updated_at > since
                and any(p.request_id == k[1] and p.earliest <= r.started_at <= p.latest for p in probes)
            ),
            expired=[
                e for e in self.pending.values() if e.request_id in wanted and e.expired and e.seen_at > since
            ],
        )

    def state(self) -> ProcessorState:
        return ProcessorState(
            offsets=dict(self.offsets),
            pending=list(self.pending.values()),
            dedup_keys=set(self.dedup),
            watermark=self.watermark,
        )

    def windows(self) -> dict[WindowKey, WindowDelta]:
        return merge(cp.windows for cp in self.checkpoints)

    def counters(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for cp in self.checkpoints:
            for name, n in cp.counters.items():
                out[name] = out.get(name, 0) + n
        return out


class Harness:
    """A core plus a `Store`; `restart()` replaces the core by one restored from the store."""

    def __init__(self, config: ProcessorConfig | None = None) -> None:
        self.config = config or ProcessorConfig()
        self.store = Store()
        self.core = ProcessorCore(self.config, PRICER)
        self.offset = 0

    def feed(self, events: Sequence[Event], now: float = 0.0) -> Checkpoint:
        prime_from_store(self.core, self.store, "test", events, now, self.config)
        self.core.process(events, now)
        return self.commit(now)

    def expire(self, now: float) -> Checkpoint:
        self.core.expire(now)
        return self.commit(now)

    def commit(self, now: float) -> Checkpoint:
        self.offset += 1
        cp = self.core.checkpoint("test", {0: self.offset}, now)
        self.store.commit(cp)
        return cp

    def restart(self) -> None:
        self.core = ProcessorCore(self.config, PRICER, self.store.state())

    def window(self, k: WindowKey | None = None) -> WindowDelta:
        return self.store.windows()[k or key()]


# ---------------------------------------------------------------- join


def test_request_then_response_counts_one_call_in_every_figure() -> None:
    h = Harness()
    h.feed([req("a", at=5, prompt=120)])
    assert h.store.windows() == {}
    h.feed([resp("a", at=7, latency=2000.0, completion=30, ttft=300.0)])
    w = h.window()
    assert (w.requests, w.errors, w.timeouts, w.late) == (1, 0, 0, 0)
    assert (w.prompt_tokens, w.completion_tokens) == (120, 30)
    assert (w.latency_count, w.latency_sum_ms, w.ttft_count, w.ttft_sum_ms) == (1, 2000.0, 1, 300.0)
    assert quantile(w.latency_hist, 0.95) == pytest.approx(2000.0, rel=0.01)
    assert quantile(w.ttft_hist, 0.5) == pytest.approx(300.0, rel=0.01)
    want = price("gpt-4o-mini", input_tokens=120, output_tokens=30, at=T0)
    assert want is not None
    assert w.cost_usd == pytest.approx(want)
    assert w.cost_unknown == 0


def test_response_then_request_gives_the_same_window() -> None:
    a, b = Harness(), Harness()
    a.feed([req("x", at=5), resp("x", at=6, error="boom")])
    b.feed([resp("x", at=6, error="boom")])
    assert b.core.stats()["pending_responses"] == 1
    b.feed([req("x", at=5)])
    assert a.window() == b.window()
    assert a.window().errors == 1
    assert b.core.stats()["pending_responses"] == 0


def test_window_is_the_request_minute_not_the_response_minute() -> None:
    h = Harness()
    h.feed([req("a", at=59.9), resp("a", at=61.0), req("b", at=60.0), resp("b", at=61.0)])
    assert h.window(key(0)).requests == 1
    assert h.window(key(1)).requests == 1


def test_error_response_counts_in_every_figure() -> None:
    h = Harness()
    h.feed([req("a"), resp("a", error={"type": "server_error"}, latency=50.0, completion=0)])
    w = h.window()
    assert (w.requests, w.errors, w.latency_count) == (1, 1, 1)
    assert w.cost_usd > 0  # the prompt was still paid for


# ---------------------------------------------------------------- duplicates


def test_duplicates_before_and_after_the_join_count_once() -> None:
    h = Harness()
    h.feed([req("a"), req("a")])  # duplicate while pending
    h.feed([resp("a"), resp("a"), req("a")])  # duplicates after the join
    h.feed([call("c"), call("c")])
    assert h.window().requests == 2
    assert h.store.counters()["duplicates"] == 4
    assert h.core.stats()["duplicates"] == 4


def test_duplicate_of_a_pending_response_counts_once() -> None:
    h = Harness()
    h.feed([resp("a"), resp("a", latency=5.0)])  # first copy wins
    h.feed([req("a")])
    assert h.window().latency_sum_ms == 1000.0
    assert h.store.counters()["duplicates"] == 1


def test_duplicates_count_once_across_a_restart() -> None:
    h = Harness()
    h.feed([req("a"), resp("a"), call("c"), req("p")])
    cp = h.store.checkpoints[-1]
    assert sorted(cp.dedup_keys) == [dedup_key("tenant-1", "a"), dedup_key("tenant-1", "c")]
    assert cp.dedup_expires_at == pytest.approx(0.0 + h.config.dedup_ttl_s)
    h.restart()
    h.feed([req("a"), resp("a"), call("c"), req("p")], now=10.0)
    assert h.window().requests == 2
    assert h.store.counters()["duplicates"] == 4


def test_a_call_and_a_request_with_the_same_id_are_one_call_the_first_claims_it() -> None:
    h = Harness()
    h.feed([req("a"), resp("a"), call("a")])
    assert h.window().requests == 1
    assert h.store.counters()["duplicates"] == 1
    h.feed([call("b"), req("b"), resp("b")])
    assert h.window().requests == 2
    assert h.store.counters()["duplicates"] == 3  # the request, then its response


def test_two_tenants_with_the_same_request_ids_are_both_counted_never_joined_across() -> None:
    h = Harness()
    h.feed([req("a", tenant="t1"), req("a", tenant="t2", prompt=9)])
    h.feed([LLMResponse(request_id="a", tenant_id="t2", timestamp=T0, latency_ms=5.0, completion_tokens=3)])
    h.feed([LLMResponse(request_id="a", tenant_id="t1", timestamp=T0, latency_ms=7.0, completion_tokens=4)])
    assert h.window(key(tenant="t1")).completion_tokens == 4
    assert h.window(key(tenant="t2")).completion_tokens == 3
    assert (h.window(key(tenant="t1")).requests, h.window(key(tenant="t2")).requests) == (1, 1)
    assert h.store.counters().get("duplicates", 0) == 0


def test_a_response_naming_no_tenant_is_ambiguous_when_two_tenants_wait_on_its_id() -> None:
    h = Harness(ProcessorConfig(orphan_timeout_s=10, dedup_ttl_s=100))
    h.feed([req("a", tenant="t1"), req("a", tenant="t2")], now=0.0)
    h.feed([resp("a")], now=1.0)
    assert h.store.windows() == {}
    assert h.store.counters()["ambiguous_responses"] == 1
    h.expire(10.0)  # neither tenant got the response: both time out
    assert h.window(key(tenant="t1")).timeouts == h.window(key(tenant="t2")).timeouts == 1


def test_a_response_naming_no_tenant_joins_the_only_tenant_using_its_id() -> None:
    h = Harness()
    h.feed([req("a", tenant="t2")])
    h.feed([resp("a")])
    assert h.window(key(tenant="t2")).latency_count == 1
    h.feed([resp("b")])  # before its request: waits, and joins whichever tenant's request comes
    h.feed([req("b", tenant="t3")])
    assert h.window(key(tenant="t3")).latency_count == 1


def test_call_without_request_id_always_counts() -> None:
    h = Harness()
    h.feed([call(None), call(None)])
    assert h.window().requests == 2


def test_dedup_keys_are_forgotten_after_the_ttl() -> None:
    h = Harness(ProcessorConfig(orphan_timeout_s=10, dedup_ttl_s=100))
    h.feed([req("a"), resp("a")], now=0.0)
    h.expire(99.0)
    h.feed([resp("a")], now=99.0)
    assert h.core.stats()["duplicates"] == 1
    h.expire(100.0)
    assert h.core.stats()["dedup_keys"] == 0
    h.feed([resp("a")], now=100.0)  # no longer recognised: a new pending response
    assert h.core.stats()["pending_responses"] == 1


def test_restored_dedup_keys_live_until_the_ttl_after_the_call_was_counted() -> None:
    h = Harness(ProcessorConfig(orphan_timeout_s=10, dedup_ttl_s=100))
    h.feed([call("c")], now=0.0)
    h.restart()
    h.feed([call("c")], now=99.0)
    assert h.core.stats()["duplicates"] == 1
    h.expire(101.0)
    h.feed([call("c")], now=101.0)  # the store's record of it is older than the TTL now
    assert h.window().requests == 2


# ---------------------------------------------------------------- timeouts and orphans


def test_request_without_response_times_out_on_the_processor_clock() -> None:
    h = Harness()
    h.feed([req("a", prompt=1000)], now=1000.0)
    h.expire(1299.0)
    assert h.store.windows() == {}
    h.expire(1300.0)
    w = h.window()
    assert (w.requests, w.errors, w.timeouts, w.latency_count, w.completion_tokens) == (1, 1, 1, 0, 0)
    assert w.prompt_tokens == 1000
    assert w.cost_usd == pytest.approx(price("gpt-4o-mini", input_tokens=1000, output_tokens=0, at=T0))
    assert h.store.counters()["timeouts"] == 1
    assert h.core.stats()["expired_requests"] == 1


def test_backfilled_old_events_are_not_orphaned_by_event_time() -> None:
    h = Harness()
    old = LLMRequest(
        request_id="old",
        tenant_id="t",
        model="gpt-4o-mini",
        timestamp=T0 - timedelta(days=20),
        prompt_tokens=1,
    )
    h.feed([old], now=T0.timestamp())
    h.expire(T0.timestamp() + 1)
    assert h.core.stats()["pending_requests"] == 1
    assert h.store.counters().get("timeouts", 0) == 0


def test_late_response_corrects_a_timeout_to_the_joined_result() -> None:
    joined = Harness()
    joined.feed([req("a", prompt=500), resp("a", completion=70, latency=1500.0, ttft=200.0)])

    h = Harness()
    h.feed([req("a", prompt=500)], now=0.0)
    h.expire(400.0)
    assert h.window().timeouts == 1
    h.feed([resp("a", completion=70, latency=1500.0, ttft=200.0)], now=401.0)
    got, want = h.window(), joined.window()
    assert (got.requests, got.errors, got.timeouts) == (1, 0, 0)
    assert got.cost_usd == pytest.approx(want.cost_usd)
    got.cost_usd = want.cost_usd
    assert got == want
    assert h.store.counters()["timeouts"] == 0
    assert h.store.counters()["timeouts_corrected"] == 1
    assert h.store.pending == {}


def test_late_error_response_after_a_timeout_keeps_one_error() -> None:
    h = Harness()
    h.feed([req("a")], now=0.0)
    h.expire(400.0)
    h.feed([resp("a", error="boom")], now=401.0)
    assert (h.window().errors, h.window().timeouts) == (1, 0)


def test_orphan_response_is_counted_and_undone_when_its_request_comes() -> None:
    h = Harness()
    h.feed([resp("a")], now=0.0)
    h.expire(300.0)
    assert h.store.counters()["orphan_responses"] == 1
    assert h.store.windows() == {}
    assert h.core.stats()["expired_responses"] == 1
    h.feed([req("a")], now=500.0)
    assert h.store.counters()["orphan_responses"] == 0
    assert h.store.counters()["orphan_responses_resolved"] == 1
    assert h.window().requests == 1
    assert h.window().latency_count == 1
    assert h.store.pending == {}


def test_expired_entries_are_forgotten_after_the_ttl() -> None:
    h = Harness(ProcessorConfig(orphan_timeout_s=10, dedup_ttl_s=100))
    h.feed([req("a"), resp("b")], now=0.0)
    h.expire(10.0)
    assert {k: e.expired for k, e in h.store.pending.items()} == {
        ("tenant-1", "a", "request"): True,
        ("", "b", "response"): True,
    }
    cp = h.expire(100.0)
    assert cp.forget_before == 0.0  # the store forgets the halves first seen a TTL ago
    assert h.store.pending == {}
    h.expire(110.0)  # memory lets go of them `hot_s` (here the TTL) after they expired
    assert (h.core.stats()["expired_requests"], h.core.stats()["expired_responses"]) == (0, 0)


# ---------------------------------------------------------------- late events


def test_events_behind_the_watermark_are_counted_late_never_dropped() -> None:
    h = Harness(ProcessorConfig(allowed_lateness_s=60))
    h.feed([req("now", at=600), resp("now", at=601)])
    # window [0, 60) ends 540 s before the watermark (600): late
    h.feed([req("old", at=0), resp("old", at=1)])
    # window [480, 540) ends 60 s before it: late (end <= watermark - allowed lateness)
    h.feed([req("edge", at=480), resp("edge", at=481)])
    # window [540, 600) ends at the watermark: on time
    h.feed([call("fresh", at=540)])
    assert h.window(key(0)).late == 1
    assert h.window(key(0)).requests == 1
    assert h.window(key(8)).late == 1
    assert h.window(key(9)).late == 0
    assert h.window(key(9)).requests == 1
    assert h.store.counters()["late_events"] == 2
    assert h.store.checkpoints[-1].watermark == pytest.approx(T0.timestamp() + 600)


def test_watermark_survives_a_restart() -> None:
    h = Harness()
    h.feed([call("a", at=600)])
    h.restart()
    assert h.core.watermark == pytest.approx(T0.timestamp() + 600)
    h.feed([call("b", at=0)])
    assert h.window(key(0)).late == 1


def test_response_timestamps_do_not_move_the_watermark() -> None:
    h = Harness()
    h.feed([req("a", at=0), resp("a", at=3600, latency=3_600_000.0)])
    assert h.window().late == 0
    assert h.core.watermark == pytest.approx(T0.timestamp())


# ---------------------------------------------------------------- call events


def test_call_counts_like_a_joined_pair_with_its_extra_tokens() -> None:
    h = Harness()
    h.feed(
        [
            call(
                "c",
                input_tokens=1000,
                output_tokens=300,
                cached_input_tokens=400,
                cache_write_tokens=100,
                reasoning_tokens=120,
                latency_ms=900.0,
                ttft_ms=100.0,
                provider="openai",
            )
        ]
    )
    w = h.window()
    assert (w.requests, w.errors, w.prompt_tokens, w.completion_tokens) == (1, 0, 1000, 300)
    assert (w.cached_input_tokens, w.cache_write_tokens, w.reasoning_tokens) == (400, 100, 120)
    assert (w.latency_count, w.ttft_count) == (1, 1)
    want = price(
        "gpt-4o-mini", input_tokens=1000, output_tokens=300, cached=400, cache_write=100, reasoning=120, at=T0
    )
    assert want is not None
    assert w.cost_usd == pytest.approx(want)


def test_provider_cost_wins_and_error_status_counts() -> None:
    h = Harness()
    h.feed(
        [
            call("a", input_tokens=10, output_tokens=10, cost=1.25, cost_source="provider"),
            call("b", model="acme-llm-1", cost=0.5, status="error"),
            call("c", status="cancelled"),
        ]
    )
    assert h.window().cost_usd == pytest.approx(1.25)  # "c" has no tokens: $0
    assert h.window().errors == 0
    unknown = h.window(key(model="acme-llm-1"))  # an estimate of a model genai-prices does not know
    assert (unknown.cost_usd, unknown.cost_unknown, unknown.errors) == (0.5, 0, 1)
    assert unknown.latency_count == 0  # no latency given
    assert (
        h.store.records[("tenant-1", "a")].cost_source,
        h.store.records[("tenant-1", "b")].cost_source,
    ) == (
        "provider",
        "estimate",
    )


def _estimates() -> list[LLMCall]:
    return [
        call("none", input_tokens=1000, output_tokens=100, cost=0.9),  # no source: an estimate
        call("est", input_tokens=1000, output_tokens=100, cost=0.8, cost_source="estimate"),
        call("prov", input_tokens=1000, output_tokens=100, cost=0.7, cost_source="provider"),
        call("gp", input_tokens=1000, output_tokens=100, cost=0.6, cost_source="genai-prices"),
        call("unk", model="acme-llm-1", input_tokens=1000, output_tokens=100, cost=0.5),
        call("free", input_tokens=1000, output_tokens=100),
    ]


def test_estimates_count_genai_prices_figure_by_default_and_records_keep_the_senders() -> None:
    h = Harness()
    h.feed(_estimates())
    priced = price("gpt-4o-mini", input_tokens=1000, output_tokens=100, at=T0)
    assert priced is not None
    rec = h.store.records
    got = {rid: (rec[("tenant-1", rid)].cost_usd, rec[("tenant-1", rid)].cost_source) for _, rid in rec}
    assert got == {
        "none": (pytest.approx(priced), "genai-prices"),
        "est": (pytest.approx(priced), "genai-prices"),
        "prov": (0.7, "provider"),
        "gp": (0.6, "genai-prices"),
        "unk": (0.5, "estimate"),
        "free": (pytest.approx(priced), "genai-prices"),
    }
    senders = {rid: rec[("tenant-1", rid)].sender_cost_usd for _, rid in rec}
    assert senders == {"none": 0.9, "est": 0.8, "prov": 0.7, "gp": 0.6, "unk": 0.5, "free": None}
    # the window counts exactly the records' figures
    assert h.window().cost_usd == pytest.approx(3 * priced + 0.7 + 0.6)
    assert h.window(key(model="acme-llm-1")).cost_usd == 0.5


def test_estimate_cost_event_counts_the_senders_estimate() -> None:
    h = Harness(ProcessorConfig(estimate_cost="event"))
    h.feed(_estimates())
    priced = price("gpt-4o-mini", input_tokens=1000, output_tokens=100, at=T0)
    assert priced is not None
    rec = h.store.records
    got = {rid: (rec[("tenant-1", rid)].cost_usd, rec[("tenant-1", rid)].cost_source) for _, rid in rec}
    assert got == {
        "none": (0.9, "estimate"),
        "est": (0.8, "estimate"),
        "prov": (0.7, "provider"),
        "gp": (0.6, "genai-prices"),
        "unk": (0.5, "estimate"),
        "free": (pytest.approx(priced), "genai-prices"),
    }
    assert h.window().cost_usd == pytest.approx(0.9 + 0.8 + 0.7 + 0.6 + priced)


def test_estimate_cost_must_be_a_known_policy() -> None:
    with pytest.raises(ValueError, match="estimate_cost"):
        ProcessorConfig(estimate_cost="cheapest")  # type: ignore[arg-type]


def test_unknown_model_cost_is_unknown_never_zero() -> None:
    h = Harness()
    h.feed([req("a", model="acme-llm-1"), resp("a"), call("c", model="acme-llm-1", input_tokens=5)])
    w = h.window(key(model="acme-llm-1"))
    assert (w.requests, w.cost_unknown, w.cost_usd) == (2, 2, 0.0)
    assert h.store.counters()["unknown_cost"] == 2


def test_timed_out_request_of_unknown_model_has_unknown_cost_and_correction_keeps_it() -> None:
    h = Harness()
    h.feed([req("a", model="acme-llm-1")], now=0.0)
    h.expire(300.0)
    h.feed([resp("a")], now=301.0)
    w = h.window(key(model="acme-llm-1"))
    assert (w.cost_unknown, w.cost_usd, w.timeouts, w.errors) == (1, 0.0, 0, 0)


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_hands_over_changes_once() -> None:
    h = Harness()
    first = h.feed([req("a"), resp("a")])
    assert first.windows[key()].requests == 1
    assert first.offsets == {0: 1}
    assert first.counters["joined"] == 1
    second = h.commit(1.0)
    assert second.windows == {}
    assert second.dedup_keys == []
    assert second.counters == {}
    assert second.pending_upserts == []
    assert second.pending_deletes == []
    assert all(type(k) is WindowKey for k in first.windows)


def test_pair_created_and_resolved_in_one_interval_leaves_no_pending_trace() -> None:
    h = Harness()
    cp = h.feed([req("a"), resp("a"), resp("b"), req("b")])
    assert cp.pending_upserts == []
    assert cp.pending_deletes == []


def test_pending_entry_is_upserted_once_and_deleted_once_resolved() -> None:
    h = Harness()
    cp1 = h.feed([req("a", prompt=7)], now=5.0)
    assert [(e.request_id, e.kind, e.seen_at, e.expired) for e in cp1.pending_upserts] == [
        ("a", "request", 5.0, False)
    ]
    assert decode_log(cp1.pending_upserts[0].payload) == [req("a", prompt=7)]
    cp2 = h.feed([req("b")], now=6.0)  # unchanged "a" is not sent again
    assert [e.request_id for e in cp2.pending_upserts] == ["b"]
    cp3 = h.feed([resp("a")], now=7.0)
    assert cp3.pending_upserts == []
    assert cp3.pending_deletes == [("tenant-1", "a", "request")]


def test_expiry_upserts_the_entry_as_expired_and_resolution_deletes_it() -> None:
    h = Harness()
    h.feed([req("a"), resp("b")], now=0.0)
    cp = h.expire(300.0)
    assert sorted((e.request_id, e.kind, e.expired) for e in cp.pending_upserts) == [
        ("a", "request", True),
        ("b", "response", True),
    ]
    assert cp.pending_deletes == []
    cp = h.feed([resp("a"), req("b")], now=301.0)
    assert sorted(cp.pending_deletes) == [("", "b", "response"), ("tenant-1", "a", "request")]
    assert cp.pending_upserts == []


def test_entry_created_and_expired_in_one_interval_is_upserted_expired_only() -> None:
    h = Harness()
    h.core.process([req("a")], 0.0)
    h.core.expire(300.0)
    cp = h.commit(300.0)
    assert [(e.request_id, e.expired) for e in cp.pending_upserts] == [("a", True)]
    h.core.process([resp("a")], 301.0)
    assert h.commit(301.0).pending_deletes == [("tenant-1", "a", "request")]


def test_entry_created_expired_and_resolved_in_one_interval_leaves_no_trace() -> None:
    h = Harness()
    h.core.process([req("a")], 0.0)
    h.core.expire(300.0)
    h.core.process([resp("a")], 301.0)
    cp = h.commit(301.0)
    assert (cp.pending_upserts, cp.pending_deletes) == ([], [])
    assert cp.windows[key()].timeouts == 0


def test_pending_joins_survive_a_restart_in_both_directions() -> None:
    h = Harness()
    h.feed([req("a"), resp("b")], now=0.0)
    h.restart()
    assert h.core.stats()["pending_requests"] == 1
    assert h.core.stats()["pending_responses"] == 1
    h.feed([resp("a"), req("b")], now=1.0)
    assert h.window().requests == 2
    assert h.store.pending == {}


def test_expired_entries_survive_a_restart_and_still_correct() -> None:
    h = Harness()
    h.feed([req("a")], now=0.0)
    h.expire(300.0)
    h.restart()
    h.feed([resp("a")], now=301.0)
    assert (h.window().timeouts, h.window().errors, h.window().latency_count) == (0, 0, 1)
    h.restart()
    h.feed([resp("a")], now=302.0)  # the pair is now complete: a duplicate
    assert h.window().latency_count == 1


def test_restored_pending_requests_time_out_from_when_they_were_first_seen() -> None:
    h = Harness()
    h.feed([req("a")], now=100.0)
    h.restart()
    h.expire(399.0)
    assert h.store.windows() == {}
    h.expire(400.0)
    assert h.window().timeouts == 1


# ---------------------------------------------------------------- misc


def test_clock_never_goes_backwards() -> None:
    h = Harness()
    h.feed([req("a")], now=1000.0)
    h.feed([req("b")], now=10.0)  # seen at 1000 as far as the core is concerned
    assert [e.seen_at for e in h.store.pending.values()] == [1000.0, 1000.0]


def test_stats_report_pending_state_and_counters() -> None:
    h = Harness()
    h.feed([req("a"), req("b"), resp("b"), resp("c"), resp("c")])
    stats = h.core.stats()
    assert stats["pending_requests"] == 1
    assert stats["pending_responses"] == 1
    assert stats["dedup_keys"] == 1
    assert stats["events"] == 5
    assert stats["joined"] == 1
    assert stats["duplicates"] == 1
    assert set(stats) >= {"timeouts", "orphan_responses", "late_events", "unknown_cost", "calls"}


def test_rejects_objects_that_are_not_events() -> None:
    core = ProcessorCore(ProcessorConfig(), PRICER)
    with pytest.raises(TypeError, match="not an llmpulse event"):
        core.process(["nope"], 0.0)  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"orphan_timeout_s": 0}, "orphan_timeout_s"),
        ({"orphan_timeout_s": math.nan}, "orphan_timeout_s"),
        ({"dedup_ttl_s": 10.0, "orphan_timeout_s": 20.0}, "dedup_ttl_s"),
        ({"dedup_ttl_s": "1"}, "dedup_ttl_s"),
        ({"allowed_lateness_s": -1}, "allowed_lateness_s"),
        ({"allowed_lateness_s": True}, "allowed_lateness_s"),
        ({"calls_retention_s": 0}, "calls_retention_s"),
        ({"calls_retention_s": math.inf}, "calls_retention_s"),
    ],
)
def test_config_is_validated_naming_the_field(kwargs: dict[str, Any], field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name):
        ProcessorConfig(**kwargs)


def test_a_checkpoint_asks_its_commit_to_expire_records_past_the_calls_retention() -> None:
    assert ProcessorCore(ProcessorConfig(), PRICER).checkpoint("c", {}, 1000.0).expire_calls_before is None
    core = ProcessorCore(ProcessorConfig(calls_retention_s=30 * 86400.0), PRICER)
    assert core.checkpoint("c", {}, 5_000_000.0).expire_calls_before == 5_000_000.0 - 30 * 86400.0


def test_restore_rejects_unknown_dedup_keys() -> None:
    with pytest.raises(ValueError, match="dedup key"):
        ProcessorCore(ProcessorConfig(), PRICER, ProcessorState(dedup_keys={"x:1"}))
