"""The dashboard's read endpoints over a server fed with known traffic, checked against the events sent
and against ``/v1/metrics`` and ``/v1/metrics/summary``; and the page shell and its static files."""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llmpulse.events import Event, LLMCall, LLMRequest, LLMResponse
from llmpulse.pricing import Pricer
from llmpulse.server import ServerSettings, create_app
from llmpulse.server._dashboard_api import MAX_MINUTES, SERIES_FIELDS
from llmpulse.testing import encode_batch_json, generate_events
from tests.server.conftest import MakeClient, RaisingLog, call_body, iso, request_body, response_body

NOW = datetime.now(UTC)
#: The traffic spans the 30 minutes that end 5 minutes before collection, so "the last hour" holds
#: all of it for 25 minutes after: the whole suite runs between collection and these tests (with 45
#: minutes ending 5 before, the oldest calls left the hour in a 10-minute run).
START = NOW.replace(second=0, microsecond=0) - timedelta(minutes=35)
FROM = iso(START - timedelta(minutes=5))
TO = iso(NOW.replace(second=0, microsecond=0) + timedelta(minutes=2))
RANGE = {"from": FROM, "to": TO}

FIGURES = (
    "requests",
    "errors",
    "p50_latency_ms",
    "p95_latency_ms",
    "p99_latency_ms",
    "p95_ttft_ms",
    "avg_latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "estimated_cost_usd",
    "timeouts",
)


def _wait_processed(client: TestClient, timeout: float = 30.0) -> None:
    state = client.app.state.llmpulse  # type: ignore[attr-defined]
    assert state.runner.wait_committed(0, state.log.end_offset(0), timeout)


@pytest.fixture(scope="module")
def traffic() -> list[Event]:
    return generate_events(
        1500,
        tenants=3,
        routes=4,
        start=START,
        duration_s=30 * 60,
        error_rate=0.1,
        duplicate_rate=0.05,
        call_rate=0.2,
        seed=11,
    )


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, traffic: list[Event]) -> Iterator[TestClient]:
    """A server with the processor, fed with `traffic` and caught up."""
    path = tmp_path_factory.mktemp("dashboard")
    settings = ServerSettings(
        db_url=f"sqlite:///{path / 'store.db'}", log_sync="NORMAL", checkpoint_interval_s=0.05
    )
    with TestClient(create_app(settings)) as client:
        for i in range(0, len(traffic), 400):
            answer = client.post("/v1/events", content=encode_batch_json(traffic[i : i + 400]))
            assert answer.status_code == 200, answer.text
        _wait_processed(client)
        yield client


def _oracle(events: list[Event]) -> dict[str, Counter[str]]:
    """Per tenant: requests, errors and tokens of the calls sent (duplicates once)."""
    requests = {e.request_id: e for e in events if isinstance(e, LLMRequest)}
    responses = {e.request_id: e for e in events if isinstance(e, LLMResponse)}
    calls = {e.request_id: e for e in events if isinstance(e, LLMCall)}
    out: dict[str, Counter[str]] = {}
    for rid, req in requests.items():
        resp = responses[rid]
        c = out.setdefault(req.tenant_id, Counter())
        c["requests"] += 1
        c["errors"] += resp.error is not None
        c["prompt_tokens"] += req.prompt_tokens
        c["completion_tokens"] += resp.completion_tokens
    for call in calls.values():
        c = out.setdefault(call.tenant_id, Counter())
        c["requests"] += 1
        c["errors"] += call.is_error
        c["prompt_tokens"] += call.input_tokens
        c["completion_tokens"] += call.output_tokens
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


# -- timeseries -------------------------------------------------------------------------------------


def test_timeseries_totals_match_the_events_sent_and_the_summary(
    fed: TestClient, traffic: list[Event]
) -> None:
    oracle = _oracle(traffic)
    everyone = fed.get("/v1/metrics/timeseries", params=RANGE).json()
    assert everyone["tenant_id"] is None
    assert everyone["total"]["requests"] == sum(c["requests"] for c in oracle.values())
    assert everyone["total"]["errors"] == sum(c["errors"] for c in oracle.values())
    assert everyone["total"]["prompt_tokens"] == sum(c["prompt_tokens"] for c in oracle.values())
    assert everyone["total"]["completion_tokens"] == sum(c["completion_tokens"] for c in oracle.values())
    assert everyone["total"]["error_rate"] == pytest.approx(
        everyone["total"]["errors"] / everyone["total"]["requests"]
    )
    cost = 0.0
    for tenant, expected in oracle.items():
        mine = fed.get("/v1/metrics/timeseries", params={**RANGE, "tenant_id": tenant}).json()
        summary = fed.get("/v1/metrics/summary", params={**RANGE, "tenant_id": tenant}).json()["summary"]
        assert len(summary) == 1
        for name in FIGURES:
            assert _same(mine["total"][name], summary[0][name]), name
        assert mine["total"]["windows"] == summary[0]["windows"]
        assert mine["total"]["requests"] == expected["requests"]
        assert mine["total"]["errors"] == expected["errors"]
        cost += summary[0]["estimated_cost_usd"]
    assert everyone["total"]["estimated_cost_usd"] == pytest.approx(cost)


def test_timeseries_points_are_the_windows_of_each_minute(fed: TestClient) -> None:
    params = {**RANGE, "tenant_id": "tenant-1", "route": "chat", "model": "gpt-4o"}
    series = fed.get("/v1/metrics/timeseries", params=params).json()["series"]
    rows = fed.get("/v1/metrics", params={**params, "limit": 10_000}).json()["metrics"]
    assert rows, "the traffic should have this route and model"
    by_start = {row["window_start"]: row for row in rows}
    starts = series["window_start"]
    # one point per minute of the range, oldest first, minutes without traffic included
    expected_minutes = (datetime.fromisoformat(TO) - datetime.fromisoformat(FROM)) // timedelta(minutes=1)
    assert len(starts) == expected_minutes
    assert starts == sorted(starts)
    assert all(datetime.fromisoformat(s).second == 0 for s in starts)
    assert set(by_start) <= set(starts)
    assert set(series) == {"window_start", *SERIES_FIELDS}
    for i, start in enumerate(starts):
        row = by_start.get(start)
        for name in SERIES_FIELDS:
            if row is None:
                assert series[name][i] in (0, 0.0, None), (start, name)
            else:
                assert _same(series[name][i], row[name]), (start, name)


def test_timeseries_of_all_tenants_adds_up_the_tenants(fed: TestClient) -> None:
    everyone = fed.get("/v1/metrics/timeseries", params=RANGE).json()["series"]
    per_tenant = [
        fed.get("/v1/metrics/timeseries", params={**RANGE, "tenant_id": t}).json()["series"]
        for t in ("tenant-1", "tenant-2", "tenant-3")
    ]
    for name in ("requests", "errors", "total_tokens"):
        assert everyone[name] == [sum(s[name][i] for s in per_tenant) for i in range(len(everyone[name]))]
    assert (
        sum(everyone["requests"])
        == fed.get("/v1/metrics/timeseries", params=RANGE).json()["total"]["requests"]
    )


def test_default_range_is_the_last_hour(fed: TestClient, traffic: list[Event]) -> None:
    answer = fed.get("/v1/metrics/timeseries").json()
    span = datetime.fromisoformat(answer["to"]) - datetime.fromisoformat(answer["from"])
    assert span == timedelta(hours=1)
    assert len(answer["series"]["requests"]) == 60
    assert answer["total"]["requests"] == sum(c["requests"] for c in _oracle(traffic).values())
    short = fed.get("/v1/metrics/timeseries", params={"minutes": 15}).json()
    assert len(short["series"]["requests"]) == 15
    assert short["total"]["requests"] < answer["total"]["requests"]


# -- breakdown --------------------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["model", "route"])
def test_breakdown_matches_the_summary_grouped_the_same_way(fed: TestClient, by: str) -> None:
    params = {**RANGE, "tenant_id": "tenant-2"}
    mine = fed.get("/v1/metrics/breakdown", params={**params, "by": by, "limit": 100}).json()
    summary = fed.get("/v1/metrics/summary", params={**params, "group_by": by}).json()["summary"]
    assert mine["groups"] == mine["count"] == len(summary)
    theirs = {row[by]: row for row in summary}
    for row in mine["rows"]:
        for name in FIGURES:
            assert _same(row[name], theirs[row[by]][name]), (row[by], name)
    costs = [row["estimated_cost_usd"] for row in mine["rows"]]
    assert costs == sorted(costs, reverse=True)


def test_breakdown_sorts_and_limits(fed: TestClient) -> None:
    for sort, field in (("p95_latency", "p95_latency_ms"), ("requests", "requests"), ("errors", "errors")):
        rows = fed.get("/v1/metrics/breakdown", params={**RANGE, "by": "model", "sort": sort}).json()["rows"]
        values = [row[field] for row in rows]
        assert values == sorted(values, reverse=True), sort
    top = fed.get("/v1/metrics/breakdown", params={**RANGE, "by": "route", "limit": 2}).json()
    assert top["count"] == 2
    assert top["groups"] == 4
    everything = fed.get("/v1/metrics/breakdown", params={**RANGE, "by": "route"}).json()["rows"]
    assert top["rows"] == everything[:2]
    assert (
        sum(r["requests"] for r in everything)
        == fed.get("/v1/metrics/timeseries", params=RANGE).json()["total"]["requests"]
    )


# -- dimensions -------------------------------------------------------------------------------------


def test_dimensions_list_what_the_traffic_holds(fed: TestClient, traffic: list[Event]) -> None:
    named = [e for e in traffic if isinstance(e, LLMRequest | LLMCall)]
    answer = fed.get("/v1/metrics/dimensions", params=RANGE).json()
    assert answer["tenants"] == sorted({e.tenant_id for e in named})
    assert answer["routes"] == sorted({e.route for e in named})
    assert answer["models"] == sorted({e.model for e in named})
    one = fed.get("/v1/metrics/dimensions", params={**RANGE, "tenant_id": "tenant-3"}).json()
    assert one["tenants"] == ["tenant-3"]
    assert one["routes"] == sorted({e.route for e in named if e.tenant_id == "tenant-3"})
    nobody = fed.get("/v1/metrics/dimensions", params={**RANGE, "tenant_id": "nobody"}).json()
    assert nobody["tenants"] == nobody["routes"] == nobody["models"] == []


# -- recent calls -----------------------------------------------------------------------------------


def test_recent_calls_over_the_traffic(fed: TestClient, traffic: list[Event]) -> None:
    responses = {e.request_id: e for e in traffic if isinstance(e, LLMResponse)}
    calls = {e.request_id: e for e in traffic if isinstance(e, LLMCall)}
    answer = fed.get("/v1/calls/recent", params={**RANGE, "tenant_id": "tenant-1", "limit": 40}).json()
    assert answer["count"] == len(answer["calls"]) == 40
    stamps = [c["timestamp"] for c in answer["calls"]]
    assert [datetime.fromisoformat(s) for s in stamps] == sorted(
        (datetime.fromisoformat(s) for s in stamps), reverse=True
    )
    assert len({c["request_id"] for c in answer["calls"]}) == 40  # duplicates shown once
    for call in answer["calls"]:
        assert call["tenant_id"] == "tenant-1"
        rid = call["request_id"]
        if rid in calls:
            assert call["status"] == ("error" if calls[rid].is_error else "ok")
            assert call["latency_ms"] == calls[rid].latency_ms
        else:
            assert call["status"] == ("error" if responses[rid].error is not None else "ok")
            assert call["latency_ms"] == responses[rid].latency_ms
        assert call["cost_usd"] is not None
        assert call["cost_usd"] >= 0
    # the newest calls sent are there
    newest = next(
        e for e in reversed(traffic) if isinstance(e, LLMRequest | LLMCall) and e.tenant_id == "tenant-1"
    )
    assert newest.request_id in {c["request_id"] for c in answer["calls"]}


def _recent_when(client: TestClient, done: Any, timeout: float = 30.0, **params: Any) -> list[dict[str, Any]]:
    """Poll /v1/calls/recent until `done(rows)` holds (the processor counts calls asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get("/v1/calls/recent", params=params)
        assert answer.status_code == 200, answer.text
        rows: list[dict[str, Any]] = answer.json()["calls"]
        if done(rows):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(0.05)


def test_recent_calls_show_status_timeout_and_cost_from_the_records(make_client: MakeClient) -> None:
    client = make_client(run_processor=True, orphan_timeout_s=1.0, checkpoint_interval_s=0.05)
    old = iso(datetime.now(UTC) - timedelta(minutes=10))
    req, resp = {"type": "llm.request"}, {"type": "llm.response"}
    batch = [
        request_body(request_id="ok-1", route="search", **req),
        response_body(request_id="ok-1", latency_ms=800.0, ttft_ms=120.0, **resp),
        request_body(request_id="err-1", **req),
        response_body(request_id="err-1", error={"type": "server_error", "message": "boom"}, **resp),
        request_body(request_id="wait-1", **req),
        request_body(request_id="late-1", timestamp=old, **req),
        call_body(request_id="call-1", cost=0.25, cost_source="provider", status="cancelled"),
        call_body(request_id="call-2", error="rate_limit_exceeded", tenant_id="other"),
        call_body(request_id="call-1", cost=0.25, cost_source="provider", status="cancelled"),  # a resend
    ]
    assert client.post("/v1/events", json=batch).status_code == 200
    # requests without a response show once counted as timeouts (orphan_timeout_s after arrival)
    rows = _recent_when(client, lambda rows: len(rows) == 6)
    by_id = {row["request_id"]: row for row in rows}
    assert len(rows) == len(by_id) == 6
    assert by_id["ok-1"]["status"] == "ok"
    assert by_id["ok-1"]["route"] == "search"
    assert by_id["ok-1"]["latency_ms"] == 800.0
    assert by_id["ok-1"]["ttft_ms"] == 120.0
    assert by_id["ok-1"]["input_tokens"] == 321
    assert by_id["ok-1"]["output_tokens"] == 512
    assert by_id["ok-1"]["cost_usd"] == pytest.approx(
        Pricer().cost("gpt-4o-mini", input_tokens=321, output_tokens=512)
    )
    assert by_id["err-1"]["status"] == "error"
    assert by_id["err-1"]["error"] == "boom"
    for rid in ("wait-1", "late-1"):
        assert by_id[rid]["status"] == "timeout"
        assert by_id[rid]["latency_ms"] is None
        assert by_id[rid]["error"] is None
        assert by_id[rid]["output_tokens"] == 0
    assert by_id["call-1"]["status"] == "cancelled"
    assert by_id["call-1"]["cost_usd"] == 0.25
    assert by_id["call-2"]["status"] == "error"
    assert by_id["call-2"]["error"] == "rate_limit_exceeded"
    assert rows[-1]["request_id"] == "late-1"  # newest first
    stamps = [datetime.fromisoformat(r["timestamp"]) for r in rows]
    assert stamps == sorted(stamps, reverse=True)
    only = client.get("/v1/calls/recent", params={"tenant_id": "other"}).json()
    assert [row["request_id"] for row in only["calls"]] == ["call-2"]
    routed = client.get("/v1/calls/recent", params={"route": "search"}).json()
    assert [row["request_id"] for row in routed["calls"]] == ["ok-1"]
    recent = client.get("/v1/calls/recent", params={"minutes": 5, "limit": 2}).json()
    assert recent["count"] == 2
    assert "late-1" not in {row["request_id"] for row in recent["calls"]}
    # a response arriving after its request timed out turns the record into the joined call
    late = response_body(request_id="late-1", latency_ms=50.0, completion_tokens=9, type="llm.response")
    assert client.post("/v1/events", json=[late]).status_code == 200
    rows = _recent_when(
        client, lambda rows: any(r["status"] == "ok" and r["request_id"] == "late-1" for r in rows)
    )
    joined = next(r for r in rows if r["request_id"] == "late-1")
    assert (joined["latency_ms"], joined["output_tokens"]) == (50.0, 9)


def test_a_request_waiting_for_its_response_is_not_shown(make_client: MakeClient) -> None:
    client = make_client(run_processor=True, checkpoint_interval_s=0.05)
    batch = [
        request_body(request_id="wait-1", type="llm.request"),
        call_body(request_id="call-1"),
    ]
    assert client.post("/v1/events", json=batch).status_code == 200
    _wait_processed(client)
    rows = client.get("/v1/calls/recent").json()["calls"]
    assert [row["request_id"] for row in rows] == ["call-1"]


def test_recent_calls_need_no_particular_event_log(make_client: MakeClient) -> None:
    client = make_client(log=RaisingLog(RuntimeError("not used")))
    answer = client.get("/v1/calls/recent")
    assert answer.status_code == 200
    assert answer.json()["calls"] == []
    assert client.get("/v1/metrics/timeseries").status_code == 200


def test_recent_calls_of_every_tenant_are_merged_newest_first(fed: TestClient, traffic: list[Event]) -> None:
    counted = [e for e in traffic if isinstance(e, LLMRequest | LLMCall)]
    newest = sorted(
        {(e.tenant_id, e.request_id): e for e in counted}.values(),
        key=lambda e: (-e.timestamp.timestamp(), e.request_id, e.tenant_id),
    )
    answer = fed.get("/v1/calls/recent", params={**RANGE, "limit": 500}).json()
    assert [(c["tenant_id"], c["request_id"]) for c in answer["calls"]] == [
        (e.tenant_id, e.request_id) for e in newest[:500]
    ]
    assert {c["tenant_id"] for c in answer["calls"]} == {"tenant-1", "tenant-2", "tenant-3"}


# -- bounds and errors ------------------------------------------------------------------------------

ENDPOINTS = ("/v1/metrics/timeseries", "/v1/metrics/breakdown", "/v1/metrics/dimensions", "/v1/calls/recent")


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"minutes": 0}, "minutes"),
        ({"minutes": MAX_MINUTES + 1}, "minutes"),
        ({"from": "2024-10-19T10:00:00Z", "to": "2025-12-24T10:00:00Z"}, "from"),
        ({"from": "2025-11-19T10:00:00Z", "to": "2025-11-19T09:00:00Z"}, "from"),
        ({"from": "2025-11-19T10:00:00Z", "minutes": 5}, "from"),
    ],
)
def test_out_of_bounds_parameters_are_400_naming_them(
    fed: TestClient, path: str, params: dict[str, Any], name: str
) -> None:
    answer = fed.get(path, params=params)
    assert answer.status_code == 400
    assert f"`{name}`" in answer.json()["error"]


def test_a_range_before_the_epoch_is_refused_naming_to(fed: TestClient) -> None:
    answer = fed.get("/v1/metrics/timeseries", params={"to": "0001-01-01T00:30:00Z"})
    assert answer.status_code in (400, 422)
    assert "`to`" in answer.json()["error"]


@pytest.mark.parametrize(("path", "limit"), [("/v1/metrics/breakdown", 101), ("/v1/calls/recent", 501)])
def test_limits_are_bounded(fed: TestClient, path: str, limit: int) -> None:
    for value in (0, limit):
        answer = fed.get(path, params={"limit": value})
        assert answer.status_code == 400
        assert "`limit`" in answer.json()["error"]


@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        ("/v1/metrics/timeseries", {"minutes": "abc"}, "minutes"),
        ("/v1/metrics/timeseries", {"from": "yesterday"}, "from"),
        ("/v1/metrics/timeseries", {"to": "2025-11-19T10:00:00"}, "to"),  # no offset
        ("/v1/metrics/breakdown", {"by": "user"}, "by"),
        ("/v1/metrics/breakdown", {"sort": "vibes"}, "sort"),
    ],
)
def test_malformed_parameters_are_422_naming_them(
    fed: TestClient, path: str, params: dict[str, Any], name: str
) -> None:
    answer = fed.get(path, params=params)
    assert answer.status_code == 422
    assert name in answer.json()["error"]


def test_endpoints_are_documented_with_typed_bounded_parameters(fed: TestClient) -> None:
    paths = fed.get("/openapi.json").json()["paths"]
    for path in ENDPOINTS:
        operation = paths[path]["get"]
        params = {p["name"]: p for p in operation["parameters"]}
        assert {"tenant_id", "from", "to", "minutes"} <= set(params), path
        minutes = params["minutes"]["schema"]
        assert (minutes["minimum"], minutes["maximum"]) == (1, MAX_MINUTES)
        assert {"type": "integer"} in minutes["anyOf"]
        assert {"400", "422", "503"} <= set(operation["responses"]), path
    for path, most in (("/v1/metrics/breakdown", 100), ("/v1/calls/recent", 500)):
        limit = next(p for p in paths[path]["get"]["parameters"] if p["name"] == "limit")["schema"]
        assert (limit["minimum"], limit["maximum"]) == (1, most)
    assert "/" not in paths


# -- the page -----------------------------------------------------------------------------------------


def test_the_page_and_its_files_need_no_key_and_load_only_from_the_server(fed: TestClient) -> None:
    page = fed.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "connect-src 'self'" in csp
    assert "script-src 'self'" in csp
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    local = [ref for ref in refs if ref.startswith("/static/")]
    assert len(local) >= 5
    assert set(refs) - set(local) == {"/docs"}  # the <noscript> link, on the same server
    for ref in local:
        assert fed.get(ref).status_code == 200, ref
    assert fed.get("/static/nothing-here.js").status_code == 404


def test_the_chart_library_and_its_licence_ship_in_the_package() -> None:
    uplot = files("llmpulse.server") / "static" / "vendor" / "uplot"
    assert (
        uplot.joinpath("uPlot.iife.min.js")
        .read_text(encoding="utf-8")
        .startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    )
    assert "MIT License" in uplot.joinpath("LICENSE").read_text(encoding="utf-8")
    assert uplot.joinpath("uPlot.min.css").is_file()
    script = (files("llmpulse.server") / "static" / "dashboard.js").read_text(encoding="utf-8")
    assert "http://" not in script
    assert "https://" not in script


def test_a_finer_step_than_the_range_allows_is_400_naming_step(client: TestClient) -> None:
    answer = client.get(
        "/v1/metrics/timeseries",
        params={"from": "2025-11-01T00:00:00Z", "to": "2025-11-30T00:00:00Z", "step": "minute"},
    )
    assert answer.status_code == 400
    assert "`step`" in answer.json()["error"]


def test_a_three_day_series_steps_by_the_hour_and_equals_the_summary(
    tmp_path: Path, make_client: MakeClient
) -> None:
    """Calls over three days (the max event age allows 30): the series of the whole range is hourly
    (read mostly from rollups) and its points add up to the summary and to the minute-level series."""
    start = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(days=3, minutes=17)
    events = generate_events(900, tenants=1, routes=2, start=start, duration_s=3 * 86400 - 600, seed=5)
    client = make_client(run_processor=True, checkpoint_interval_s=0.05)
    for i in range(0, len(events), 300):
        assert client.post("/v1/events", content=encode_batch_json(events[i : i + 300])).status_code == 200
    _wait_processed(client)
    rng = {"tenant_id": "tenant-1", "from": iso(start), "to": iso(start + timedelta(days=3))}
    hourly = client.get("/v1/metrics/timeseries", params=rng).json()
    assert hourly["step_s"] == 3600
    assert len(hourly["series"]["requests"]) == 3 * 24 + 1  # the first hour is only partly in range
    summary = client.get("/v1/metrics/summary", params=rng).json()["summary"][0]
    assert sum(hourly["series"]["requests"]) == hourly["total"]["requests"] == summary["requests"] > 0
    assert hourly["total"]["p95_latency_ms"] == summary["p95_latency_ms"]
    assert hourly["total"]["estimated_cost_usd"] == pytest.approx(summary["estimated_cost_usd"], rel=1e-9)
    by_day = client.get("/v1/metrics/timeseries", params={**rng, "step": "day"}).json()
    assert by_day["step_s"] == 86400
    assert sum(by_day["series"]["requests"]) == summary["requests"]
    first_day = {"tenant_id": "tenant-1", "from": iso(start), "to": iso(start + timedelta(days=1))}
    minutes = client.get("/v1/metrics/timeseries", params=first_day).json()
    assert minutes["step_s"] == 60
    hours_of_day_one = client.get("/v1/metrics/timeseries", params={**first_day, "step": "hour"}).json()
    assert sum(minutes["series"]["requests"]) == sum(hours_of_day_one["series"]["requests"])
