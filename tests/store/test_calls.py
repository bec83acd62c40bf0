"""Reading call records (`calls_page`, `costs`) on SQLite and Postgres, against brute force in Python."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from llmpulse.store import (
    CALL_STATUSES,
    GROUP_BY_ATTRIBUTES,
    CallFilter,
    CallRecord,
    Checkpoint,
    Store,
    call_row,
    calls_page,
    costs,
    cursor_range,
    minute_bounds,
)
from tests.store.conftest import make_record

T0 = 1_763_546_400.0  # 2025-11-19T10:00:00Z


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _put(store: Store, records: Iterable[CallRecord]) -> None:
    store.commit(Checkpoint("c", calls={(r.tenant_id, r.request_id): r for r in records}))


def _all_pages(store: Store, flt: CallFilter, order: Any, limit: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10_000):
        page, cursor = calls_page(store, flt, order=order, limit=limit, cursor=cursor)
        assert len(page) <= limit
        out.extend(page)
        if cursor is None:
            return out
        assert len(page) == limit
    raise AssertionError("pagination did not end")


def _random_records(n: int, seed: int) -> list[CallRecord]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        cost = None if rng.random() < 0.15 else rng.choice([0.0, 0.5, round(rng.random(), 4)])
        user = rng.choice([None, "ann", "bob", "cy", "Émile"])
        meta = rng.choice(
            [None, {"plan": "pro"}, {"plan": "free", "n": 3}, {"plan": True}, {"n": 1.5}, {"plan": None}]
        )
        records.append(
            make_record(
                rng.choice(["t1", "t2", "t3"]),
                # shared ids across tenants, and ids that sort differently by code point and by locale
                rng.choice(["a", "B", "b", "é", "z"]) + f"-{i % 40:02d}",
                # few distinct instants, so ties in time are common
                started_at=T0 + rng.randrange(30) * 20.0 + rng.choice([0.0, 0.25]),
                route=rng.choice(["chat", "search"]),
                model=rng.choice(["m1", "m2"]),
                provider=rng.choice([None, "openai"]),
                status=rng.choice(CALL_STATUSES),
                input_tokens=rng.randrange(1000),
                output_tokens=rng.randrange(500),
                cached_input_tokens=rng.randrange(10),
                reasoning_tokens=rng.randrange(10),
                cost_usd=cost,
                cost_source=None if cost is None else "genai-prices",
                user_id=user,
                user_id_hash=rng.choice([None, "h1", "h2"]),
                org_id=rng.choice([None, "o1", "o2"]),
                session_id=rng.choice([None, "s1"]),
                feature=rng.choice([None, "search", "chat"]),
                endpoint=rng.choice([None, "/a"]),
                environment=rng.choice([None, "prod", "dev"]),
                metadata=None if meta is None else msgspec.json.encode(meta).decode(),
            )
        )
    return list({(r.tenant_id, r.request_id): r for r in records}.values())


def _time_key(r: dict[str, Any] | CallRecord) -> tuple[Any, ...]:
    d = r if isinstance(r, dict) else r._asdict()
    return (-d["started_at"], d["request_id"], d["tenant_id"])


def _cost_key(r: dict[str, Any] | CallRecord) -> tuple[Any, ...]:
    d = r if isinstance(r, dict) else r._asdict()
    return (d["cost_usd"] is None, -(d["cost_usd"] or 0.0), d["request_id"], d["tenant_id"])


# -- pages --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 7, 500])
def test_pages_cover_every_record_once_in_both_orders(store: Store, limit: int) -> None:
    records = _random_records(400, seed=limit)
    _put(store, records)
    for tenant in (None, "t2"):
        want = [r for r in records if tenant is None or r.tenant_id == tenant]
        flt = CallFilter(tenant)
        by_time = _all_pages(store, flt, "time", limit)
        assert [(r["tenant_id"], r["request_id"]) for r in by_time] == [
            (r.tenant_id, r.request_id) for r in sorted(want, key=_time_key)
        ]
        by_cost = _all_pages(store, flt, "cost", limit)
        assert [(r["tenant_id"], r["request_id"]) for r in by_cost] == [
            (r.tenant_id, r.request_id) for r in sorted(want, key=_cost_key)
        ]


def test_a_page_holds_every_field_and_the_api_row_shapes_times_and_metadata(store: Store) -> None:
    record = make_record(
        "t1",
        "r-1",
        started_at=T0 + 1.25,
        metadata='{"plan":"pro","n":[1,2]}',
        user_id="ann",
        error_type="server_error",
        error_message="boom",
    )
    _put(store, [record])
    (got,), cursor = calls_page(store, CallFilter("t1"))
    assert cursor is None
    assert got == record._asdict()
    row = call_row(got)
    assert row["started_at"] == "2025-11-19T10:00:01.250000Z"
    assert row["updated_at"] == "2025-11-19T10:00:01Z"
    assert row["metadata"] == {"plan": "pro", "n": [1, 2]}
    assert list(row) == list(CallRecord._fields)
    _put(store, [make_record("t1", "r-2", metadata=None)])
    assert call_row(calls_page(store, CallFilter("t1", request_id="r-2"))[0][0])["metadata"] is None


def test_filters_match_exactly_and_the_range_is_start_inclusive_end_exclusive(store: Store) -> None:
    records = _random_records(300, seed=5)
    _put(store, records)
    lo, hi = T0 + 100.0, T0 + 400.0
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"route": "chat"}, lambda r: r.route == "chat"),
        ({"model": "m2"}, lambda r: r.model == "m2"),
        ({"provider": "openai"}, lambda r: r.provider == "openai"),
        ({"user_id": "h1"}, lambda r: (r.user_id or r.user_id_hash) == "h1"),
        ({"user_id": "Émile"}, lambda r: r.user_id == "Émile"),
        ({"org_id": "o1"}, lambda r: r.org_id == "o1"),
        ({"session_id": "s1"}, lambda r: r.session_id == "s1"),
        ({"feature": "chat"}, lambda r: r.feature == "chat"),
        ({"endpoint": "/a"}, lambda r: r.endpoint == "/a"),
        ({"environment": "prod"}, lambda r: r.environment == "prod"),
        ({"status": "timeout"}, lambda r: r.status == "timeout"),
        ({"request_id": "b-07"}, lambda r: r.request_id == "b-07"),
        ({"min_cost_usd": 0.5}, lambda r: r.cost_usd is not None and r.cost_usd >= 0.5),
        ({"start": _at(lo), "end": _at(hi)}, lambda r: lo <= r.started_at < hi),
        ({"status": "error", "route": "search"}, lambda r: r.status == "error" and r.route == "search"),
    ]
    for fields, keep in cases:
        for tenant in ("t1", None):
            want = sorted((r for r in records if keep(r) and tenant in (None, r.tenant_id)), key=_time_key)
            got = _all_pages(store, CallFilter(tenant, **fields), "time", 50)
            assert [(r["tenant_id"], r["request_id"]) for r in got] == [
                (r.tenant_id, r.request_id) for r in want
            ], fields
            assert want or fields == {"request_id": "b-07"}


def test_bad_cursors_and_arguments_are_value_errors_naming_them(store: Store) -> None:
    _put(store, [make_record("t1", f"r-{i}", started_at=T0 + i) for i in range(5)])
    flt = CallFilter("t1", start=_at(T0), end=_at(T0 + 60))
    _, cursor = calls_page(store, flt, limit=2)
    assert cursor is not None
    assert cursor_range(cursor) == (_at(T0), _at(T0 + 60))
    for bad in ("", "!!!", "bm90IGpzb24", "WyJ0aW1lIl0", cursor[:-3]):
        with pytest.raises(ValueError, match="cursor"):
            calls_page(store, flt, cursor=bad)
    with pytest.raises(ValueError, match="cursor"):
        calls_page(store, flt, order="cost", cursor=cursor)
    with pytest.raises(ValueError, match="cursor"):
        calls_page(store, CallFilter("t1", start=_at(T0)), cursor=cursor)
    with pytest.raises(ValueError, match="limit"):
        calls_page(store, flt, limit=0)
    with pytest.raises(ValueError, match="order"):
        calls_page(store, flt, order="size")  # type: ignore[arg-type]
    for kwargs, name in (
        ({"status": "pending"}, "status"),
        ({"min_cost_usd": -1.0}, "min_cost_usd"),
        ({"min_cost_usd": math.nan}, "min_cost_usd"),
        ({"start": datetime(2025, 1, 1)}, "start"),
        ({"start": _at(T0), "end": _at(T0 - 1)}, "start"),
    ):
        with pytest.raises(ValueError, match=name):
            CallFilter("t1", **kwargs)


def test_minute_bounds_round_each_bound_up_to_the_minute() -> None:
    assert minute_bounds(_at(T0), _at(T0 + 60)) == (_at(T0), _at(T0 + 60))
    assert minute_bounds(_at(T0 + 0.000001), _at(T0 + 59.5)) == (_at(T0 + 60), _at(T0 + 60))
    assert minute_bounds(_at(T0 - 59), None) == (_at(T0), None)
    assert minute_bounds(None, None) == (None, None)
    with pytest.raises(ValueError, match="end"):
        minute_bounds(None, datetime(2025, 1, 1))


# -- costs --------------------------------------------------------------------------------------------


def _key_of(record: CallRecord, group_by: str) -> str | None:
    if group_by == "user_id":
        return record.user_id or record.user_id_hash
    if group_by.startswith("metadata."):
        meta = msgspec.json.decode(record.metadata) if record.metadata else {}
        value = meta.get(group_by.removeprefix("metadata."))
        if value is None or isinstance(value, str):
            return value
        return "true" if value is True else "false" if value is False else str(value)
    value: str | None = getattr(record, group_by)
    return value


def _brute(records: list[CallRecord], group_by: str) -> dict[str | None, dict[str, Any]]:
    out: dict[str | None, dict[str, Any]] = {}
    for r in records:
        g = out.setdefault(
            _key_of(r, group_by),
            {"requests": 0, "errors": 0, "input_tokens": 0, "output_tokens": 0, "costs": [], "times": []},
        )
        g["requests"] += 1
        g["errors"] += r.status in ("error", "timeout")
        g["input_tokens"] += r.input_tokens
        g["output_tokens"] += r.output_tokens
        g["costs"].append(r.cost_usd)
        g["times"].append(r.started_at)
    return out


def _cost(costs_: list[float | None]) -> float | None:
    known = [c for c in costs_ if c is not None]
    return math.fsum(known) if known else None


def _close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (
        a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    )


INTS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost_unknown_requests",
)


@pytest.mark.parametrize("group_by", [*GROUP_BY_ATTRIBUTES, "metadata.plan", "metadata.n"])
def test_costs_equal_brute_force_for_every_group_by(store: Store, group_by: str) -> None:
    records = _random_records(300, seed=9)
    _put(store, records)
    mine = [r for r in records if r.tenant_id == "t1"]
    want = _brute(mine, group_by)
    total_cost = _cost([r.cost_usd for r in mine])
    for order in ("cost", "requests", "tokens"):
        answer = costs(store, CallFilter("t1"), group_by=group_by, order=order, limit=1000)
        assert answer["other"] is None
        got = {g["key"]: g for g in answer["groups"]}
        assert set(got) == set(want), (group_by, order)
        for key, w in want.items():
            g = got[key]
            for name in ("requests", "errors", "input_tokens", "output_tokens"):
                assert g[name] == w[name], (key, name)
            assert _close(g["cost_usd"], _cost(w["costs"])), key
            assert g["cost_unknown_requests"] == sum(c is None for c in w["costs"])
            assert (
                g["first_call_at"]
                == call_row({"started_at": min(w["times"]), "updated_at": 0, "metadata": None})["started_at"]
            )
            if g["cost_usd"] is None or not total_cost:
                assert g["cost_share"] is None
            else:
                assert _close(g["cost_share"], g["cost_usd"] / total_cost)
        # the order, ties by key ascending (by code point) with null last
        if order == "cost":
            expect = sorted(
                want,
                key=lambda k: (
                    _cost(want[k]["costs"]) is None,
                    -(_cost(want[k]["costs"]) or 0.0),
                    k is None,
                    k or "",
                ),
            )
            got_keys = [g["key"] for g in answer["groups"]]
            # equal costs may differ in the last bit between SQL and fsum: compare the keys' costs
            assert [round(got[k]["cost_usd"] or -1.0, 9) for k in got_keys] == [
                round(_cost(want[k]["costs"]) or -1.0, 9) for k in expect
            ]
        else:

            def size(k: str | None, order: str = order) -> int:
                w = want[k]
                return int(w["requests"]) if order == "requests" else w["input_tokens"] + w["output_tokens"]

            expect = sorted(want, key=lambda k: (-size(k), k is None, k or ""))
            assert [g["key"] for g in answer["groups"]] == expect
        assert answer["total"]["requests"] == len(mine)
        assert answer["total"]["groups"] == len(want)


@pytest.mark.parametrize("limit", [1, 2, 3, 100])
def test_groups_and_other_add_up_to_the_total_exactly(store: Store, limit: int) -> None:
    _put(store, _random_records(300, seed=limit))
    answer = costs(store, CallFilter("t2", route="chat"), group_by="user_id", order="requests", limit=limit)
    parts = [*answer["groups"], *([answer["other"]] if answer["other"] else [])]
    total = answer["total"]
    for name in INTS:
        assert sum(p[name] for p in parts) == total[name], name
    assert _close(math.fsum(p["cost_usd"] or 0.0 for p in parts), total["cost_usd"])
    assert len(answer["groups"]) == min(limit, total["groups"])
    if answer["other"] is not None:
        assert answer["other"]["groups"] == total["groups"] - limit
        assert _close(math.fsum(p["cost_share"] or 0.0 for p in parts), 1.0 if total["cost_usd"] else 0.0)
    first = min(datetime.fromisoformat(p["first_call_at"]) for p in parts)
    last = max(datetime.fromisoformat(p["last_call_at"]) for p in parts)
    assert (first, last) == tuple(datetime.fromisoformat(total[n]) for n in ("first_call_at", "last_call_at"))


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_the_null_key_is_a_top_group_or_part_of_other_never_both(store: Store, limit: int) -> None:
    users = ["ann", "ann", "ann", "bob", "bob", None]
    _put(store, [make_record("t1", f"r{i}", user_id=u, started_at=T0 + i) for i, u in enumerate(users)])
    answer = costs(store, CallFilter("t1"), order="requests", limit=limit)
    ranked = [("ann", 3), ("bob", 2), (None, 1)]
    assert [(g["key"], g["requests"]) for g in answer["groups"]] == ranked[:limit]
    beyond = ranked[limit:]
    other = answer["other"]
    assert (other and (other["groups"], other["requests"])) == (
        (len(beyond), sum(n for _, n in beyond)) if beyond else None
    )
    assert (answer["total"]["groups"], answer["total"]["requests"]) == (3, 6)


def test_costs_of_unknown_prices_are_null_and_shares_null_without_a_total(store: Store) -> None:
    _put(
        store,
        [
            make_record("t1", "a", user_id="ann", cost_usd=None, cost_source=None),
            make_record("t1", "b", user_id="bob", cost_usd=0.0),
            make_record("t1", "c", user_id="bob", cost_usd=None, cost_source=None),
        ],
    )
    answer = costs(store, CallFilter("t1"))
    assert [(g["key"], g["cost_usd"], g["cost_unknown_requests"]) for g in answer["groups"]] == [
        ("bob", 0.0, 1),
        ("ann", None, 1),
    ]
    assert answer["total"]["cost_usd"] == 0.0
    assert all(g["cost_share"] is None for g in answer["groups"])
    empty = costs(store, CallFilter("nobody"))
    assert empty["groups"] == []
    assert empty["other"] is None
    assert empty["total"] == {
        "groups": 0,
        **dict.fromkeys(INTS, 0),
        "cost_usd": None,
        "cost_share": None,
        "first_call_at": None,
        "last_call_at": None,
    }


def test_metadata_values_group_as_text_and_keys_are_validated(store: Store) -> None:
    metas = [
        {"plan": "pro"},
        {"plan": "pro", "x": 1},
        {"plan": 3},
        {"plan": True},
        {"plan": False},
        {"plan": None},
        {"other": "y"},
        {"a.b": "dotted", "a": {"b": "nested"}},
        {"plan": 'it\'s "quoted"'},
    ]
    records = [
        make_record("t1", f"r{i}", metadata=msgspec.json.encode(m).decode()) for i, m in enumerate(metas)
    ]
    records.append(make_record("t1", "none", metadata=None))
    _put(store, records)
    plans = costs(store, CallFilter("t1"), group_by="metadata.plan", order="requests", limit=100)
    assert [(g["key"], g["requests"]) for g in plans["groups"]] == [
        (None, 4),
        ("pro", 2),
        ("3", 1),
        ("false", 1),
        ('it\'s "quoted"', 1),
        ("true", 1),
    ]
    dotted = costs(store, CallFilter("t1"), group_by="metadata.a.b", order="requests")
    assert [(g["key"], g["requests"]) for g in dotted["groups"]] == [(None, 9), ("dotted", 1)]
    for bad in ("metadata.", "metadata.a b", "metadata.x'y", "metadata." + "k" * 65, "user", "metadata"):
        with pytest.raises(ValueError, match="group_by"):
            costs(store, CallFilter("t1"), group_by=bad)
    with pytest.raises(ValueError, match="order"):
        costs(store, CallFilter("t1"), order="latency")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        costs(store, CallFilter("t1"), limit=0)


def test_costs_read_only_the_filter_s_range_and_tenant(store: Store) -> None:
    _put(
        store,
        [
            make_record("t1", "in-1", started_at=T0, user_id="ann", input_tokens=1),
            make_record("t1", "in-2", started_at=T0 + 59.999, user_id="ann", input_tokens=2),
            make_record("t1", "out-1", started_at=T0 + 60, user_id="ann", input_tokens=4),
            make_record("t1", "out-2", started_at=T0 - 0.001, user_id="ann", input_tokens=8),
            make_record("t2", "in-1", started_at=T0, user_id="ann", input_tokens=16),
        ],
    )
    answer = costs(store, CallFilter("t1", start=_at(T0), end=_at(T0 + 60)))
    assert [(g["key"], g["input_tokens"]) for g in answer["groups"]] == [("ann", 3)]
    assert answer["total"]["first_call_at"] == "2025-11-19T10:00:00Z"
    assert answer["total"]["last_call_at"] == "2025-11-19T10:00:59.999000Z"
    assert costs(store, CallFilter("t1", start=_at(T0) + timedelta(hours=1)))["total"]["requests"] == 0
