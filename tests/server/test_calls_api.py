"""``GET /v1/calls`` and ``GET /v1/costs`` over randomised traffic fed through the real processor
into a real store (SQLite and Postgres), checked against the independent oracle (`tests.oracle`)
and against ``/v1/metrics/summary``.

The traffic (pairs out of order, duplicates, orphans of both kinds, an unknown model, provider
costs, attributed users) goes through `ProcessorRunner` in two runs on a processor clock of the
test's own: the first run ends 400 s later on that clock (so its unanswered requests are counted as
timeouts, and corrected when their responses come in the second run), the second likewise (its
unanswered requests stay timeouts).
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from fastapi.testclient import TestClient

from llmpulse.events import Event, LLMCall, LLMRequest, LLMResponse
from llmpulse.pipeline import ProcessorConfig, ProcessorRunner, SQLiteEventLog
from llmpulse.server import ServerSettings, create_app
from llmpulse.store import CALL_FIELDS, Store, rfc3339
from llmpulse.testing.traffic import DEFAULT_MODELS, UNKNOWN_MODEL, generate_events
from tests.oracle import expected_calls
from tests.postgres_server import fresh_databases, suite_dsn
from tests.server.conftest import iso
from tests.server.keyed import create_keys

NOW = datetime.now(UTC)
#: The traffic spans three hours ending an hour before collection: inside both default ranges
#: (24 hours for /v1/calls, 30 days for /v1/costs) for a day.
START = NOW.replace(second=0, microsecond=0) - timedelta(hours=4)
RANGE = {"from": iso(START - timedelta(minutes=10)), "to": iso(START + timedelta(hours=3, minutes=30))}
TENANTS = ("tenant-1", "tenant-2", "tenant-3")

Expected = dict[tuple[str, str], dict[str, Any]]


def _extras() -> tuple[list[Event], list[Event]]:
    """Hand-made events for the cases the generator does not make: (first run's, second run's)."""
    t = START + timedelta(minutes=30)

    def call(rid: str, tenant: str, **kw: Any) -> LLMCall:
        fields: dict[str, Any] = {
            "model": "gpt-4o-mini",
            "timestamp": t,
            "input_tokens": 100,
            "output_tokens": 10,
            "request_id": rid,
            "tenant_id": tenant,
            "route": "chat",
            **kw,
        }
        return LLMCall(**fields)

    def request(rid: str, tenant: str, **kw: Any) -> LLMRequest:
        return LLMRequest(
            request_id=rid, tenant_id=tenant, model="gpt-4o", timestamp=t, prompt_tokens=50, **kw
        )

    def response(rid: str, **kw: Any) -> LLMResponse:
        return LLMResponse(request_id=rid, timestamp=t + timedelta(seconds=1), latency_ms=1000.0, **kw)

    meta = {"plan": "enterprise", "tier": 2, "beta": True}
    first: list[Event] = [
        # one request id in two tenants: two calls
        call("shared-1", "tenant-1", cost=0.5, cost_source="provider", user_id="vip", metadata=meta),
        call("shared-1", "tenant-2", model=UNKNOWN_MODEL, status="cancelled", user_id="vip"),
        # a request claims its id: a later call of the id is a duplicate, the response joins
        request("mixed-1", "tenant-3"),
        call("mixed-1", "tenant-3", cost=9.0),
        response("mixed-1", completion_tokens=7),
        # a call claims its id: a later request is a duplicate and its response joins nothing
        call("mixed-2", "tenant-3", cost=0.01),  # a cost without a source is an estimate: genai-prices'
        request("mixed-2", "tenant-3"),
        response("mixed-2", completion_tokens=70),
        # an estimate of a model genai-prices does not know counts as sent
        call("estimate-1", "tenant-3", model=UNKNOWN_MODEL, cost=0.02),
        # a response naming its tenant, a run before its request
        response("named-1", tenant_id="tenant-2", completion_tokens=3, error={"code": 429}),
        # attribution from a StreamLens request's metadata
        request(
            "meta-1", "tenant-1", user_id_hash="h-meta", metadata={"user_id": "meta-user", "org_id": "o-9"}
        ),
        response("meta-1", completion_tokens=5, ttft_ms=12.5),
        # requests answered only in the second run: counted as timeouts, then corrected
        request("late-pair-1", "tenant-1", metadata={"feature": "search"}),
        request("late-pair-2", "tenant-2"),
    ]
    second: list[Event] = [
        call("shared-1", "tenant-1", cost=0.75),  # a resend (the first copy wins)
        request("named-1", "tenant-2"),
        call("cheap-1", "tenant-1", error="rate_limit_exceeded", user_id="vip", metadata={"tier": 10}),
        response("late-pair-1", completion_tokens=11),
        response("late-pair-2", completion_tokens=12, error="upstream timeout"),
    ]
    return first, second


def _traffic() -> tuple[list[Event], list[Event]]:
    events = generate_events(
        2500,
        tenants=3,
        routes=4,
        models=(*DEFAULT_MODELS, UNKNOWN_MODEL),
        start=START,
        duration_s=3 * 3600,
        error_rate=0.1,
        duplicate_rate=0.05,
        orphan_request_rate=0.04,
        orphan_response_rate=0.03,
        call_rate=0.35,
        shuffle=60,
        seed=21,
        users=40,
    )
    cut = len(events) * 3 // 5
    first, second = _extras()
    return [*events[:cut], *first], [*second, *events[cut:]]


PHASES = _traffic()
EVENTS = [*PHASES[0], *PHASES[1]]
EXPECTED: Expected = expected_calls(EVENTS, unanswered_are_timeouts=True)


class _Clock:
    """The processor's clock: moved on by the test."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _append(log: SQLiteEventLog, events: Sequence[Event], size: int = 50) -> None:
    async def go() -> None:
        for i in range(0, len(events), size):
            await log.append(events[i : i + size])

    asyncio.run(go())


def feed(store: Store, log_url: str, phases: Sequence[Sequence[Event]]) -> None:
    """Count each phase's events with a runner of its own; 400 s pass on the processor's clock at
    the end of each run (orphan_timeout_s is 300), so pending requests become timeouts. Blocks."""
    log = SQLiteEventLog(log_url, sync="NORMAL")
    clock = _Clock(NOW.timestamp())
    try:
        for events in phases:
            runner = ProcessorRunner(
                log, store, ProcessorConfig(), checkpoint_interval_s=0.01, max_records=5, clock=clock
            )
            runner.start()
            try:
                _append(log, events)
                assert runner.wait_committed(0, log.end_offset(0), timeout=120), runner.stats()
            finally:
                clock.t += 400.0
                runner.stop(timeout=60)
            assert not runner.alive
    finally:
        log.close()


@dataclass
class Served:
    client: TestClient
    store: Store
    dialect: str


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """An app without keys over a store holding the traffic's records and windows."""
    path = tmp_path_factory.mktemp("calls_api")
    with ExitStack() as stack:
        if request.param == "postgresql":
            url = stack.enter_context(fresh_databases("llmpulse_calls"))()
        else:
            url = f"sqlite:///{path / 'store.db'}"
        store = stack.enter_context(Store.open(url))
        feed(store, f"sqlite:///{path / 'feed.log.db'}", PHASES)
        settings = ServerSettings(
            db_url=url, log_url=f"sqlite:///{path / 'ingest.log.db'}", run_processor=False, log_sync="NORMAL"
        )
        client = stack.enter_context(TestClient(create_app(settings, store=store)))
        yield Served(client, store, request.param)


def _get(client: TestClient, path: str, params: dict[str, Any], **kw: Any) -> dict[str, Any]:
    answer = client.get(path, params=params, **kw)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _pages(client: TestClient, params: dict[str, Any], **kw: Any) -> list[dict[str, Any]]:
    """Every call of a query, page by page; checks each page's size."""
    out: list[dict[str, Any]] = []
    cursor = None
    limit = int(params.get("limit", 100))
    for _ in range(10_000):
        body = _get(client, "/v1/calls", {**params, **({"cursor": cursor} if cursor else {})}, **kw)
        assert body["count"] == len(body["calls"])
        out.extend(body["calls"])
        cursor = body["next_cursor"]
        if cursor is None:
            assert len(body["calls"]) <= limit
            return out
        assert len(body["calls"]) == limit
    raise AssertionError("pagination did not end")


def _stamp(t: float) -> str:
    return rfc3339(datetime.fromtimestamp(t, UTC))


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _assert_record(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert list(got) == list(CALL_FIELDS)
    for name, value in want.items():
        if name == "started_at":
            assert got[name] == _stamp(value), (want["request_id"], name)
        elif name == "cost_usd":
            assert _close(got[name], value), (want["request_id"], got[name], value)
        else:
            assert got[name] == value, (want["request_id"], name, got[name], value)


def _of(tenant: str, keep: Callable[[dict[str, Any]], bool] = lambda r: True) -> list[dict[str, Any]]:
    return [r for (t, _), r in EXPECTED.items() if t == tenant and keep(r)]


def _time_order(r: dict[str, Any]) -> tuple[Any, ...]:
    return (-r["started_at"], r["request_id"])


# -- the traffic is what the tests need --------------------------------------------------------------


def test_the_traffic_has_every_case_the_tests_rely_on() -> None:
    statuses = Counter(r["status"] for r in EXPECTED.values())
    assert set(statuses) == {"ok", "error", "timeout", "cancelled"}
    sources = Counter(r["cost_source"] for r in EXPECTED.values())
    assert set(sources) == {"provider", "estimate", "genai-prices", None}
    assert {r["model"] for r in EXPECTED.values() if r["cost_usd"] is None} == {UNKNOWN_MODEL}
    assert (
        len(EVENTS)
        - len(
            {(type(e), e.tenant_id if not isinstance(e, LLMResponse) else None, e.request_id) for e in EVENTS}
        )
        > 100
    )  # duplicates
    assert ("tenant-1", "shared-1") in EXPECTED
    assert ("tenant-2", "shared-1") in EXPECTED
    assert EXPECTED[("tenant-3", "mixed-1")]["output_tokens"] == 7
    assert EXPECTED[("tenant-3", "mixed-2")]["cost_source"] == "genai-prices"
    assert EXPECTED[("tenant-3", "estimate-1")]["cost_source"] == "estimate"
    assert EXPECTED[("tenant-2", "named-1")]["error_type"] == "429"
    assert EXPECTED[("tenant-1", "meta-1")]["user_id"] == "meta-user"
    # requests of the first run answered in the second (timeouts, then corrected)
    first_requests = {e.request_id for e in PHASES[0] if isinstance(e, LLMRequest)}
    first_responses = {e.request_id for e in PHASES[0] if isinstance(e, LLMResponse)}
    late = {e.request_id for e in PHASES[1] if isinstance(e, LLMResponse)} - first_responses
    corrected = [k for k in EXPECTED if k[1] in first_requests & late]
    assert len(corrected) >= 2
    assert all(EXPECTED[k]["status"] in ("ok", "error") for k in corrected)


# -- /v1/calls -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tenant", TENANTS)
def test_pages_hold_every_record_of_the_oracle_once_newest_first(served: Served, tenant: str) -> None:
    got = _pages(served.client, {**RANGE, "tenant_id": tenant, "limit": 97})
    want = sorted(_of(tenant), key=_time_order)
    assert [c["request_id"] for c in got] == [r["request_id"] for r in want]
    for g, w in zip(got, want, strict=True):
        _assert_record(g, w)


@pytest.mark.parametrize("tenant", TENANTS)
def test_pages_by_cost_hold_every_record_once_costliest_first_unknown_last(
    served: Served, tenant: str
) -> None:
    got = _pages(served.client, {**RANGE, "tenant_id": tenant, "order": "cost", "limit": 250})
    assert Counter(c["request_id"] for c in got) == Counter(r["request_id"] for r in _of(tenant))
    costs = [c["cost_usd"] for c in got]
    known = [c for c in costs if c is not None]
    assert costs == known + [None] * (len(costs) - len(known))
    assert known == sorted(known, reverse=True)
    for a, b in itertools.pairwise(got):
        if a["cost_usd"] == b["cost_usd"]:
            assert a["request_id"] < b["request_id"]


def test_every_page_size_covers_the_same_records(served: Served) -> None:
    everything = [
        c["request_id"] for c in _pages(served.client, {**RANGE, "tenant_id": "tenant-2", "limit": 1000})
    ]
    for limit in (1, 13):
        params = {**RANGE, "tenant_id": "tenant-2", "limit": limit, "status": "error"}
        page_ids = [c["request_id"] for c in _pages(served.client, params)]
        assert page_ids == [
            r["request_id"]
            for r in sorted(_of("tenant-2", lambda r: r["status"] == "error"), key=_time_order)
        ]
    assert len(everything) == len(_of("tenant-2"))


FILTERS: list[tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = [
    ({"route": "search"}, lambda r: r["route"] == "search"),
    ({"model": UNKNOWN_MODEL}, lambda r: r["model"] == UNKNOWN_MODEL),
    ({"provider": "anthropic"}, lambda r: r["provider"] == "anthropic"),
    ({"user_id": "user-0001"}, lambda r: (r["user_id"] or r["user_id_hash"]) == "user-0001"),
    ({"user_id": "vip"}, lambda r: r["user_id"] == "vip"),
    ({"org_id": "org-2"}, lambda r: r["org_id"] == "org-2"),
    ({"session_id": "s-0002-1"}, lambda r: r["session_id"] == "s-0002-1"),
    ({"feature": "search"}, lambda r: r["feature"] == "search"),
    ({"endpoint": "/v1/chat"}, lambda r: r["endpoint"] == "/v1/chat"),
    ({"environment": "staging"}, lambda r: r["environment"] == "staging"),
    ({"status": "timeout"}, lambda r: r["status"] == "timeout"),
    ({"status": "cancelled"}, lambda r: r["status"] == "cancelled"),
    ({"request_id": "shared-1"}, lambda r: r["request_id"] == "shared-1"),
    ({"min_cost_usd": 0.01}, lambda r: r["cost_usd"] is not None and r["cost_usd"] >= 0.01),
    (
        {"feature": "chat", "environment": "production", "status": "ok"},
        lambda r: (r["feature"], r["environment"], r["status"]) == ("chat", "production", "ok"),
    ),
]


@pytest.mark.parametrize(("params", "keep"), FILTERS)
def test_filters_match_the_oracle(
    served: Served, params: dict[str, Any], keep: Callable[[dict[str, Any]], bool]
) -> None:
    found = 0
    for tenant in TENANTS:
        got = _pages(served.client, {**RANGE, "tenant_id": tenant, "limit": 1000, **params})
        want = sorted(_of(tenant, keep), key=_time_order)
        assert [c["request_id"] for c in got] == [r["request_id"] for r in want], (tenant, params)
        found += len(want)
    assert found > 0


def test_ranges_are_rounded_up_to_the_minute(served: Served) -> None:
    lo = START + timedelta(minutes=17, seconds=23.5)
    hi = START + timedelta(hours=1, minutes=3, seconds=7)
    body = _get(
        served.client, "/v1/calls", {"tenant_id": "tenant-1", "from": iso(lo), "to": iso(hi), "limit": 1000}
    )
    assert body["from"] == rfc3339(START + timedelta(minutes=18))
    assert body["to"] == rfc3339(START + timedelta(hours=1, minutes=4))
    a, b = (START + timedelta(minutes=18)).timestamp(), (START + timedelta(hours=1, minutes=4)).timestamp()
    want = sorted(_of("tenant-1", lambda r: a <= r["started_at"] < b), key=_time_order)
    assert [c["request_id"] for c in body["calls"]] == [r["request_id"] for r in want]


def test_a_cursor_without_from_and_to_reads_the_range_of_its_first_page(served: Served) -> None:
    first = _get(served.client, "/v1/calls", {"tenant_id": "tenant-1", "limit": 10})
    assert first["from"] is not None
    assert first["next_cursor"] is not None
    second = _get(
        served.client, "/v1/calls", {"tenant_id": "tenant-1", "limit": 10, "cursor": first["next_cursor"]}
    )
    assert (second["from"], second["to"]) == (first["from"], first["to"])
    ids = [c["request_id"] for c in first["calls"] + second["calls"]]
    newest = sorted(_of("tenant-1"), key=_time_order)[:20]
    assert ids == [r["request_id"] for r in newest]  # the default range (24 h) holds all the traffic


# -- /v1/costs -----------------------------------------------------------------------------------------


def _key(record: dict[str, Any], group_by: str) -> str | None:
    if group_by == "user_id":
        return record["user_id"] or record["user_id_hash"]
    if group_by.startswith("metadata."):
        value = (record["metadata"] or {}).get(group_by.removeprefix("metadata."))
        if value is None or isinstance(value, str):
            return value
        return msgspec.json.encode(value).decode()
    value: str | None = record[group_by]
    return value


def _brute(records: list[dict[str, Any]], group_by: str) -> dict[str | None, dict[str, Any]]:
    out: dict[str | None, dict[str, Any]] = {}
    for r in records:
        g = out.setdefault(_key(r, group_by), Counter())
        g["requests"] += 1
        g["errors"] += r["status"] in ("error", "timeout")
        for name in (
            "input_tokens",
            "output_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
        ):
            g[name] += r[name]
        g["cost_unknown_requests"] += r["cost_usd"] is None
        g.setdefault("costs", []).append(r["cost_usd"])
    return out


def _sum(costs: list[float | None]) -> float | None:
    known = [c for c in costs if c is not None]
    return math.fsum(known) if known else None


INTS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_unknown_requests",
)
GROUP_BYS = (
    "user_id",
    "org_id",
    "session_id",
    "feature",
    "endpoint",
    "environment",
    "route",
    "model",
    "provider",
    "status",
    "metadata.plan",
    "metadata.tier",
)


def _summary(client: TestClient, params: dict[str, Any]) -> dict[str, Any]:
    rows = _get(client, "/v1/metrics/summary", params)["summary"]
    assert len(rows) == 1
    row: dict[str, Any] = rows[0]
    return row


def _assert_total_is_the_summary(total: dict[str, Any], summary: dict[str, Any]) -> None:
    assert total["requests"] == summary["requests"]
    assert total["errors"] == summary["errors"]
    assert total["input_tokens"] == summary["prompt_tokens"]
    assert total["output_tokens"] == summary["completion_tokens"]
    assert total["total_tokens"] == summary["total_tokens"]
    assert total["cached_input_tokens"] == summary["cached_input_tokens"]
    assert total["cache_write_tokens"] == summary["cache_write_tokens"]
    assert total["reasoning_tokens"] == summary["reasoning_tokens"]
    assert total["cost_unknown_requests"] == summary["cost_unknown_requests"]
    assert _close(total["cost_usd"], summary["estimated_cost_usd"]), (total["cost_usd"], summary)


@pytest.mark.parametrize("group_by", GROUP_BYS)
def test_costs_groups_equal_the_oracle_and_add_up_to_the_summary(served: Served, group_by: str) -> None:
    for tenant in TENANTS:
        want = _brute(_of(tenant), group_by)
        total_cost = _sum([r["cost_usd"] for r in _of(tenant)])
        for order, limit in (("cost", 1000), ("requests", 3), ("tokens", 1)):
            params = {**RANGE, "tenant_id": tenant, "group_by": group_by, "order": order, "limit": limit}
            body = _get(served.client, "/v1/costs", params)
            assert (body["group_by"], body["order"]) == (group_by, order)
            groups, other, total = body["groups"], body["other"], body["total"]
            assert len(groups) == min(limit, len(want))
            assert total["groups"] == len(want)
            for g in groups:
                w = want[g["key"]]
                for name in INTS:
                    assert g[name] == w[name], (tenant, group_by, g["key"], name)
                assert _close(g["cost_usd"], _sum(w["costs"])), (g["key"], g["cost_usd"])
                if g["cost_usd"] is not None and total_cost:
                    assert _close(g["cost_share"], g["cost_usd"] / total_cost)
            parts = [*groups, *([other] if other else [])]
            assert (other is None) == (len(want) <= limit)
            for name in (*INTS, "total_tokens"):
                assert sum(p[name] for p in parts) == total[name], name
            assert _close(math.fsum(p["cost_usd"] or 0.0 for p in parts), total["cost_usd"])
            # largest first; ties by key, null last
            if order == "requests":
                sizes = [(-g["requests"], g["key"] is None, g["key"] or "") for g in groups]
                assert sizes == sorted(sizes)
                top = sorted(want, key=lambda k: (-want[k]["requests"], k is None, k or ""))[:limit]
                assert [g["key"] for g in groups] == top
            elif order == "tokens":
                biggest = max(w["input_tokens"] + w["output_tokens"] for w in want.values())
                assert groups[0]["total_tokens"] == biggest
            else:
                costs = [g["cost_usd"] for g in groups]
                known = [c for c in costs if c is not None]
                assert costs == known + [None] * (len(costs) - len(known))
                assert known == sorted(known, reverse=True)
            _assert_total_is_the_summary(total, _summary(served.client, {**RANGE, "tenant_id": tenant}))


def test_costs_total_equals_the_summary_over_unaligned_ranges_and_route_model_filters(served: Served) -> None:
    cases = [
        (START + timedelta(minutes=17, seconds=23.5), START + timedelta(hours=2, minutes=3, seconds=7)),
        (START + timedelta(seconds=59.999), START + timedelta(hours=1, seconds=0.001)),
        (START - timedelta(days=29), START + timedelta(minutes=61)),
    ]
    for lo, hi in cases:
        for tenant in TENANTS:
            for extra in (
                {},
                {"route": "chat"},
                {"model": "gpt-4o"},
                {"route": "search", "model": UNKNOWN_MODEL},
            ):
                params = {"tenant_id": tenant, "from": iso(lo), "to": iso(hi), **extra}
                body = _get(served.client, "/v1/costs", {**params, "group_by": "feature"})
                summary = _get(served.client, "/v1/metrics/summary", params)["summary"]
                if not summary:
                    assert body["total"]["requests"] == 0
                    continue
                _assert_total_is_the_summary(body["total"], summary[0])
                a, b = math.ceil(lo.timestamp() / 60) * 60, math.ceil(hi.timestamp() / 60) * 60
                keep = [
                    r
                    for r in _of(tenant)
                    if a <= r["started_at"] < b and all(r[k] == v for k, v in extra.items())
                ]
                assert body["total"]["requests"] == len(keep)


def test_costs_default_to_the_last_30_days_and_user_id(served: Served) -> None:
    body = _get(served.client, "/v1/costs", {"tenant_id": "tenant-1"})
    assert body["group_by"] == "user_id"
    assert body["order"] == "cost"
    assert len(body["groups"]) == 20
    start, end = (datetime.fromisoformat(body[k]) for k in ("from", "to"))
    assert timedelta(days=30) <= end - start < timedelta(days=30, minutes=1)
    assert body["total"]["requests"] == len(_of("tenant-1"))


def test_filters_narrow_costs_too(served: Served) -> None:
    params = {
        **RANGE,
        "tenant_id": "tenant-1",
        "group_by": "model",
        "environment": "production",
        "status": "ok",
    }
    body = _get(served.client, "/v1/costs", params)
    keep = _of("tenant-1", lambda r: (r["environment"], r["status"]) == ("production", "ok"))
    want = _brute(keep, "model")
    assert {g["key"]: g["requests"] for g in body["groups"]} == {k: w["requests"] for k, w in want.items()}
    assert body["total"]["errors"] == 0


# -- errors --------------------------------------------------------------------------------------------

BAD: list[tuple[str, dict[str, Any], int, str]] = [
    ("/v1/calls", {"limit": 0}, 400, "limit"),
    ("/v1/calls", {"limit": 1001}, 400, "limit"),
    ("/v1/calls", {"limit": "many"}, 422, "limit"),
    ("/v1/calls", {"order": "size"}, 422, "order"),
    ("/v1/calls", {"cursor": "not-a-cursor"}, 400, "cursor"),
    ("/v1/calls", {"cursor": "x" * 3000}, 422, "cursor"),
    ("/v1/calls", {"status": "pending"}, 422, "status"),
    ("/v1/calls", {"min_cost_usd": -1}, 422, "min_cost_usd"),
    ("/v1/calls", {"min_cost_usd": "nan"}, 422, "min_cost_usd"),
    ("/v1/calls", {"from": "yesterday"}, 422, "from"),
    ("/v1/calls", {"to": "2025-11-19T10:00:00"}, 422, "to"),
    ("/v1/calls", {"from": "2025-11-19T10:00:00Z", "to": "2025-11-19T09:00:00Z"}, 422, "from"),
    ("/v1/calls", {"from": "2000-01-01T00:00:00Z", "to": "2025-03-01T00:00:00Z"}, 400, "from"),
    ("/v1/calls", {"route": "r" * 257}, 422, "route"),
    ("/v1/calls", {"request_id": "r" * 129}, 422, "request_id"),
    ("/v1/costs", {"group_by": "user"}, 400, "group_by"),
    ("/v1/costs", {"group_by": "metadata.a b"}, 400, "group_by"),
    ("/v1/costs", {"group_by": "metadata." + "k" * 65}, 400, "group_by"),
    ("/v1/costs", {"order": "latency"}, 422, "order"),
    ("/v1/costs", {"limit": 0}, 400, "limit"),
    ("/v1/costs", {"limit": 1001}, 400, "limit"),
    ("/v1/costs", {"from": "2000-01-01T00:00:00Z", "to": "2025-03-01T00:00:00Z"}, 400, "from"),
]


@pytest.mark.parametrize(("path", "params", "status", "name"), BAD)
def test_bad_parameters_are_4xx_naming_them(
    served: Served, path: str, params: dict[str, Any], status: int, name: str
) -> None:
    answer = served.client.get(path, params={"tenant_id": "tenant-1", **params})
    assert answer.status_code == status, answer.text
    assert f"`{name}`" in answer.json()["error"]


@pytest.mark.parametrize("path", ["/v1/calls", "/v1/costs"])
def test_tenant_id_is_required_without_keys(served: Served, path: str) -> None:
    answer = served.client.get(path)
    assert answer.status_code == 400
    assert answer.json() == {"error": "tenant_id is required"}


def test_a_cursor_of_another_order_or_range_is_400_naming_cursor(served: Served) -> None:
    first = _get(served.client, "/v1/calls", {**RANGE, "tenant_id": "tenant-1", "limit": 5})
    cursor = first["next_cursor"]
    for params in (
        {**RANGE, "order": "cost"},
        {"from": RANGE["from"], "to": iso(START + timedelta(hours=2))},
    ):
        answer = served.client.get("/v1/calls", params={"tenant_id": "tenant-1", "cursor": cursor, **params})
        assert answer.status_code == 400
        assert "`cursor`" in answer.json()["error"]


def test_the_endpoints_are_documented_with_typed_bounded_parameters(served: Served) -> None:
    paths = served.client.get("/openapi.json").json()["paths"]
    for path, most in (("/v1/calls", 1000), ("/v1/costs", 1000)):
        operation = paths[path]["get"]
        params = {p["name"]: p for p in operation["parameters"]}
        assert {"tenant_id", "from", "to", "limit", "order", "user_id", "feature", "status"} <= set(params)
        assert (params["limit"]["schema"]["minimum"], params["limit"]["schema"]["maximum"]) == (1, most)
        assert {"400", "422", "503"} <= set(operation["responses"])
    assert "cursor" in {p["name"] for p in paths["/v1/calls"]["get"]["parameters"]}
    assert "group_by" in {p["name"] for p in paths["/v1/costs"]["get"]["parameters"]}


def test_an_unavailable_store_is_503(tmp_path: Path) -> None:
    admin = suite_dsn()
    with fresh_databases("llmpulse_gone") as create:
        url = create()
        with Store.open(url) as store:
            settings = ServerSettings(
                db_url=url, log_url=f"sqlite:///{tmp_path / 'log.db'}", run_processor=False, log_sync="NORMAL"
            )
            with TestClient(create_app(settings, store=store)) as client:
                assert client.get("/v1/calls", params={"tenant_id": "t"}).status_code == 200
                name = url.rpartition("/")[2]
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                for path in ("/v1/calls", "/v1/costs"):
                    answer = client.get(path, params={"tenant_id": "t"})
                    assert answer.status_code == 503, answer.text
                    assert answer.headers["retry-after"] == "1"
                    assert "store is unavailable" in answer.json()["error"]


# -- API keys ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_api_keys_scope_calls_and_costs_to_their_tenant(tmp_path: Path, dialect: str) -> None:
    first, second = _extras()
    events = [*generate_events(300, tenants=2, start=START, duration_s=3600, call_rate=0.5, seed=4, users=10)]
    phases = [[*events[:200], *first], [*second, *events[200:]]]
    expected = expected_calls([*phases[0], *phases[1]], unanswered_are_timeouts=True)
    with ExitStack() as stack:
        if dialect == "postgresql":
            url = stack.enter_context(fresh_databases("llmpulse_keyed"))()
        else:
            url = f"sqlite:///{tmp_path / 'store.db'}"
        keys, _ = create_keys(url, ["tenant-1", "tenant-2"])
        store = stack.enter_context(Store.open(url))
        feed(store, f"sqlite:///{tmp_path / 'feed.log.db'}", phases)
        settings = ServerSettings(
            db_url=url,
            log_url=f"sqlite:///{tmp_path / 'ingest.log.db'}",
            run_processor=False,
            log_sync="NORMAL",
        )
        client = stack.enter_context(TestClient(create_app(settings, store=store)))
        one = {"Authorization": f"Bearer {keys['tenant-1']}"}
        for path in ("/v1/calls", "/v1/costs"):
            assert client.get(path, params={"tenant_id": "tenant-1"}).status_code == 401
            wrong = client.get(path, params={"tenant_id": "tenant-2"}, headers=one)
            assert wrong.status_code == 403
            assert "tenant-2" in wrong.json()["error"]
            bad = client.get(path, headers={"Authorization": "Bearer llmp_not-a-key"})
            assert bad.status_code == 401
        mine = _pages(client, {**RANGE, "limit": 50}, headers=one)
        want = {rid for (t, rid) in expected if t == "tenant-1"}
        assert {c["request_id"] for c in mine} == want
        assert {c["tenant_id"] for c in mine} == {"tenant-1"}
        shared = next(c for c in mine if c["request_id"] == "shared-1")
        assert shared["cost_usd"] == 0.5  # tenant-1's call of the shared id, not tenant-2's
        # tenant-2's user, asked for with tenant-1's key: nothing of tenant-2
        other_users = {r["user_id"] for (t, _), r in expected.items() if t == "tenant-2"} - {
            r["user_id"] for (t, _), r in expected.items() if t == "tenant-1"
        }
        for user in sorted(u for u in other_users if u)[:3]:
            assert _get(client, "/v1/calls", {**RANGE, "user_id": user}, headers=one)["calls"] == []
        body = _get(client, "/v1/costs", {**RANGE, "group_by": "status"}, headers=one)
        assert body["tenant_id"] == "tenant-1"
        assert body["total"]["requests"] == len(want)
        two = {"Authorization": f"Bearer {keys['tenant-2']}"}
        theirs = _get(client, "/v1/costs", {**RANGE, "group_by": "status"}, headers=two)
        assert theirs["total"]["requests"] == len([k for k in expected if k[0] == "tenant-2"])
