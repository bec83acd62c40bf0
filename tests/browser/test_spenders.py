"""The dashboard's range selector, "Top spenders" panel and calls table in a real browser: the
figures it shows equal /v1/costs and /v1/calls, a spender row filters the calls, the table orders by
time or cost, pages forward and back, expands a record and downloads the page as CSV."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from llmpulse.events import Event
from llmpulse.server import create_app
from llmpulse.store import Store
from llmpulse.testing import encode_batch_json, generate_events
from tests.browser.conftest import FedServer, Watched, feed, settings_for
from tests.server.live_server import live_server

pytestmark = pytest.mark.slow

#: How long the page may take to show what was asked (it polls every 5 s).
WITHIN_MS = 10_000
TENANT = "tenant-1"
SCREENSHOT = Path("/tmp/dashboard.png")
ZONE = ZoneInfo("America/New_York")


def traffic_with_users() -> list[Event]:
    """1 500 calls of 2 tenants and 40 users, 50 to 5 minutes ago, a tenth failing."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=50)
    return generate_events(
        1500,
        tenants=2,
        routes=4,
        start=start,
        duration_s=45 * 60,
        error_rate=0.1,
        call_rate=0.3,
        seed=11,
        users=40,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FedServer]:
    app = create_app(settings_for(tmp_path_factory.mktemp("spenders")))
    events = traffic_with_users()
    with live_server(app) as url:
        feed(url, app, events)
        yield FedServer(url, events)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(
        viewport={"width": 1440, "height": 900},
        locale="en-US",
        timezone_id="UTC",
        color_scheme="light",
        accept_downloads=True,
    )
    yield context
    context.close()


def _wait_for(check: Callable[[], bool], what: str, timeout_s: float = WITHIN_MS / 1000) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _usd(text: str) -> float:
    assert text.startswith("$"), text
    return float(text[1:].replace(",", ""))


def _pct(share: float | None) -> str:
    if share is None:
        return "–"
    return f"{share * 100:.{2 if 0 < share < 0.001 else 1}f}%"


def _spender_rows(page: Page) -> dict[str, Any]:
    """The panel as one snapshot: its range and grouping, and each row's figures as shown."""
    snapshot: dict[str, Any] = page.evaluate(
        """() => {
        const table = document.querySelector('#spenders-table');
        return {
          from: table.dataset.from, to: table.dataset.to, groupBy: table.dataset.groupBy,
          heading: table.querySelector('.key-col').textContent,
          rows: [...table.querySelectorAll('tbody tr')].map((tr) => ({
            key: tr.dataset.key ?? null, other: tr.dataset.other === 'true',
            keyText: tr.cells[0].innerText, costText: tr.cells[1].innerText,
            cost: tr.dataset.cost, share: tr.dataset.share, pctText: tr.cells[2].innerText,
            barWidth: tr.querySelector('.bar > span').style.width,
            requests: tr.cells[3].innerText, errors: tr.cells[4].innerText,
          })),
        };
        }"""
    )
    return snapshot


def _check_spenders(page: Page, url: str, group_by: str) -> dict[str, Any]:
    """The panel equals /v1/costs over the panel's range: every key, cost to the cent, share,
    requests and errors, and "other" as the last row. Returns the API's answer."""
    expect(page.locator("#spenders-table")).to_have_attribute("data-group-by", group_by, timeout=WITHIN_MS)
    shown = _spender_rows(page)
    params = {"tenant_id": TENANT, "from": shown["from"], "to": shown["to"], "group_by": group_by}
    answer: dict[str, Any] = httpx.get(f"{url}/v1/costs", params={**params, "limit": 10}, timeout=10).json()
    assert answer["from"] == shown["from"]
    assert answer["to"] == shown["to"]
    expected = [(g, False) for g in answer["groups"]]
    if answer["other"] is not None:
        expected.append((answer["other"], True))
    assert len(expected) >= 2
    assert len(shown["rows"]) == len(expected)
    for row, (group, other) in zip(shown["rows"], expected, strict=True):
        assert row["other"] is other
        if other:
            assert row["keyText"] == f"Other ({answer['other']['groups']} more)"
        else:
            key = group["key"]
            assert row["key"] == ("" if key is None else key)
            assert row["keyText"] == ("(none)" if key is None else key)
        assert abs(_usd(row["costText"]) - group["cost_usd"]) < 0.005, (row, group)
        assert float(row["cost"]) == group["cost_usd"]
        assert float(row["share"]) == group["cost_share"]
        assert row["pctText"] == _pct(group["cost_share"])
        assert float(row["barWidth"].rstrip("%")) == pytest.approx(group["cost_share"] * 100, abs=0.01)
        assert row["requests"] == f"{group['requests']:,}"
        assert row["errors"] == f"{group['errors']:,}"
    total_share = sum(g["cost_share"] for g, _ in expected)
    assert total_share == pytest.approx(1.0)
    return answer


def _table_ids(page: Page) -> list[str]:
    ids: list[str] = page.locator("#calls-table tbody tr.call").evaluate_all(
        "(rows) => rows.map((tr) => tr.dataset.requestId)"
    )
    return ids


def _calls(url: str, page: Page, **params: Any) -> dict[str, Any]:
    """/v1/calls over the calls table's range with `params`."""
    table = page.locator("#calls-table")
    bounds = {"from": table.get_attribute("data-from"), "to": table.get_attribute("data-to")}
    query = {"tenant_id": TENANT, "limit": 25, **bounds, **params}
    answer = httpx.get(f"{url}/v1/calls", params=query, timeout=10)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _wait_table(page: Page, ids: list[str], what: str) -> None:
    _wait_for(lambda: _table_ids(page) == ids, what)


def test_spenders_panel_and_calls_table_follow_the_api(
    context: BrowserContext, server: FedServer, artifacts: Path
) -> None:
    watched = Watched()
    page = watched.attach(context.new_page())
    page.goto(server.url)
    expect(page.locator("#live")).to_have_class("live ok")

    # every tenant: the panels say to pick one (the endpoints are per tenant)
    expect(page.locator("#spenders-hint")).to_be_visible()
    expect(page.locator("#spenders-hint")).to_contain_text("Pick a tenant")
    expect(page.locator("#calls-hint")).to_be_visible()
    expect(page.locator("#spenders-table")).to_be_hidden()
    expect(page.locator("#calls-table")).to_be_hidden()
    assert not any("/v1/costs" in r.url or "/v1/calls?" in r.url for r in watched.requests)

    # one tenant, the last 24 hours
    page.get_by_label("Tenant", exact=True).select_option(TENANT)
    page.get_by_label("Range", exact=True).select_option("1440")
    expect(page.locator("#scope")).to_contain_text(f"tenant {TENANT}", timeout=WITHIN_MS)
    expect(page.locator("#scope")).to_contain_text("last 24 hours", timeout=WITHIN_MS)
    expect(page.locator("#spenders-hint")).to_be_hidden()
    expect(page.locator("#spenders-table")).to_be_visible()
    assert page.url.endswith(f"?tenant={TENANT}&range=1440")
    costs_requests = [r for r in watched.requests if "/v1/costs" in r.url]
    assert costs_requests
    sent = parse_qs(urlparse(costs_requests[-1].url).query)
    assert sent["tenant_id"] == [TENANT]
    assert sent["limit"] == ["10"]
    assert sent["group_by"] == ["user_id"]
    start, end = (datetime.fromisoformat(sent[name][0]) for name in ("from", "to"))
    assert end - start == timedelta(hours=24)

    # by user: the default
    expect(page.locator("#spenders-title")).to_have_text("Top spenders by user")
    by_user = _check_spenders(page, server.url, "user_id")
    assert by_user["other"] is not None  # 40 users: more than ten
    # the panel's total is the tenant's: the same as the KPI
    kpi = page.locator('.kpi[data-kpi="requests"] .value').get_attribute("data-value")
    assert by_user["total"]["requests"] == int(kpi or 0)

    # by feature
    page.get_by_label("By", exact=True).select_option("feature")
    expect(page.locator("#spenders-title")).to_have_text("Top spenders by feature", timeout=WITHIN_MS)
    by_feature = _check_spenders(page, server.url, "feature")
    assert page.url.endswith("&spenders=feature")

    # a click on a feature: the calls table shows only that feature's calls, as /v1/calls does
    busiest = max((g for g in by_feature["groups"] if g["key"]), key=lambda g: g["requests"])
    feature = busiest["key"]
    assert busiest["requests"] > 50  # at least three pages of 25
    page.locator(f'#spenders-table tbody tr[data-key="{feature}"]').click()
    expect(page.locator("#attr-filters .chip")).to_have_text(f"feature {feature} ×", timeout=WITHIN_MS)
    expect(page.locator(f'#spenders-table tbody tr[data-key="{feature}"]')).to_have_class(
        re.compile(r"\bselected\b"), timeout=WITHIN_MS
    )
    assert f"&feature={feature}" in page.url
    first = _calls(server.url, page, feature=feature)
    assert len(first["calls"]) == 25
    assert first["next_cursor"]
    _wait_table(page, [c["request_id"] for c in first["calls"]], "the feature's newest calls")
    features = page.locator("#calls-table tbody tr.call td:nth-child(5)").all_inner_texts()
    assert set(features) == {feature}
    costs_shown = page.locator("#calls-table tbody tr.call td.cost").evaluate_all(
        "(cells) => cells.map((td) => td.dataset.value)"
    )
    assert [float(v) if v else None for v in costs_shown] == [c["cost_usd"] for c in first["calls"]]
    starts = [c["started_at"] for c in first["calls"]]
    assert starts == sorted(starts, reverse=True)
    calls_sent = parse_qs(urlparse([r for r in watched.requests if "/v1/calls?" in r.url][-1].url).query)
    assert calls_sent["feature"] == [feature]
    assert calls_sent["order"] == ["time"]
    # the panel keeps every feature in view (it does not filter on what it groups by)
    _check_spenders(page, server.url, "feature")

    # costliest first
    page.get_by_role("button", name="Costliest first").click()
    expect(page.get_by_role("button", name="Costliest first")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_role("button", name="Newest first")).to_have_attribute("aria-pressed", "false")
    by_cost = _calls(server.url, page, feature=feature, order="cost")
    _wait_table(page, [c["request_id"] for c in by_cost["calls"]], "the costliest calls")
    cost_values = [c["cost_usd"] for c in by_cost["calls"]]
    assert cost_values == sorted(cost_values, reverse=True)
    assert "&order=cost" in page.url
    expect(page.locator("#calls-page")).to_have_text("Page 1")
    expect(page.locator("#calls-prev")).to_be_disabled()

    # next page, and the one after, then back
    page.get_by_role("button", name="Next →").click()
    expect(page.locator("#calls-page")).to_have_text("Page 2", timeout=WITHIN_MS)
    second = _calls(server.url, page, feature=feature, order="cost", cursor=by_cost["next_cursor"])
    _wait_table(page, [c["request_id"] for c in second["calls"]], "page 2")
    assert second["calls"][0]["cost_usd"] <= by_cost["calls"][-1]["cost_usd"]
    expect(page.locator("#calls-prev")).to_be_enabled()
    page.get_by_role("button", name="Next →").click()
    expect(page.locator("#calls-page")).to_have_text("Page 3", timeout=WITHIN_MS)
    third = _calls(server.url, page, feature=feature, order="cost", cursor=second["next_cursor"])
    _wait_table(page, [c["request_id"] for c in third["calls"]], "page 3")
    page.get_by_role("button", name="← Previous").click()
    expect(page.locator("#calls-page")).to_have_text("Page 2", timeout=WITHIN_MS)
    _wait_table(page, [c["request_id"] for c in second["calls"]], "page 2 again")
    page.get_by_role("button", name="← Previous").click()
    expect(page.locator("#calls-page")).to_have_text("Page 1", timeout=WITHIN_MS)
    _wait_table(page, [c["request_id"] for c in by_cost["calls"]], "page 1 again")
    expect(page.locator("#calls-prev")).to_be_disabled()

    # a row expands to the whole record, and stays open across a refresh
    row = page.locator("#calls-table tbody tr.call").nth(1)
    rid = row.get_attribute("data-request-id")
    toggle = row.get_by_role("button", name=f"Whole record of {rid}")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    detail = page.locator("#calls-table tbody tr.detail").nth(1)
    expect(detail).to_be_hidden()
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(detail).to_be_visible()
    record = next(c for c in by_cost["calls"] if c["request_id"] == rid)
    assert json.loads(detail.locator("pre").inner_text()) == record
    assert set(record) >= {"user_id", "org_id", "feature", "environment", "cost_source", "metadata"}
    updated = page.locator("#live").inner_text()
    _wait_for(lambda: page.locator("#live").inner_text() != updated, "a refresh")
    expect(page.locator(f'#calls-table tbody tr.call[data-request-id="{rid}"] + tr.detail')).to_be_visible()

    page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.screenshot(path=str(artifacts / "dashboard-spenders.png"), full_page=True)

    # the CSV is the page of the table: one line per row, every field of the records
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download CSV").click()
    download = download_info.value
    assert download.suggested_filename == f"llmpulse-calls-{TENANT}-cost-page1.csv"
    text = Path(download.path()).read_bytes().decode("utf-8")
    assert text.endswith("\r\n")
    lines = list(csv.reader(io.StringIO(text, newline="")))
    header, rows = lines[0], lines[1:]
    assert header == list(by_cost["calls"][0])
    assert [r[header.index("request_id")] for r in rows] == _table_ids(page)
    for line, call in zip(rows, by_cost["calls"], strict=True):
        for name, value in zip(header, line, strict=True):
            expected = call[name]
            if expected is None:
                assert value == "", name
            elif isinstance(expected, dict):
                assert json.loads(value) == expected, name
            elif isinstance(expected, bool):
                assert value == str(expected).lower(), name
            elif isinstance(expected, float):
                assert float(value) == expected, name
            else:
                assert value == str(expected), name

    # back to newest first: page 1 again, and a click on the selected feature clears the filter
    page.get_by_role("button", name="Newest first").click()
    _wait_table(page, [c["request_id"] for c in first["calls"]], "the newest calls again")
    page.locator(f'#spenders-table tbody tr[data-key="{feature}"]').click()
    expect(page.locator("#attr-filters")).to_be_hidden(timeout=WITHIN_MS)
    everything = _calls(server.url, page)
    _wait_table(page, [c["request_id"] for c in everything["calls"]], "every feature's newest calls")

    # a route row filters the whole page: the Route filter, the charts and totals
    page.get_by_label("By", exact=True).select_option("route")
    by_route = _check_spenders(page, server.url, "route")
    route = by_route["groups"][0]["key"]
    page.locator(f'#spenders-table tbody tr[data-key="{route}"]').click()
    expect(page.get_by_label("Route", exact=True)).to_have_value(route, timeout=WITHIN_MS)
    expect(page.locator("#scope")).to_contain_text(f"route {route}", timeout=WITHIN_MS)
    expect(page.locator('.kpi[data-kpi="requests"] .value')).to_have_attribute(
        "data-value", str(by_route["groups"][0]["requests"]), timeout=WITHIN_MS
    )
    routed = _calls(server.url, page, route=route)
    _wait_table(page, [c["request_id"] for c in routed["calls"]], "the route's calls")
    _check_spenders(page, server.url, "route")  # every route still listed, the one picked marked
    picked = page.locator(f'#spenders-table tbody tr[data-key="{route}"]')
    expect(picked).to_have_class(re.compile(r"\bselected\b"))

    assert watched.page_errors == []
    assert watched.console_errors == []
    assert watched.foreign(server.url) == []


def _last(watched: Watched, path: str) -> dict[str, list[str]]:
    matching = [r for r in watched.requests if urlparse(r.url).path == path]
    assert matching, path
    return parse_qs(urlparse(matching[-1].url).query)


def test_range_selector_presets_and_custom_range(browser: Browser, server: FedServer) -> None:
    # a browser in New York: the custom range is read in its local time
    context = browser.new_context(
        viewport={"width": 1440, "height": 900}, locale="en-US", timezone_id="America/New_York"
    )
    watched = Watched()
    page = watched.attach(context.new_page())
    page.goto(f"{server.url}/?tenant={TENANT}")
    expect(page.locator("#live")).to_have_class("live ok")
    options = page.get_by_label("Range", exact=True).locator("option").all_inner_texts()
    assert options == [
        "Last 15 minutes",
        "Last hour",
        "Last 6 hours",
        "Last 24 hours",
        "Last 7 days",
        "Last 30 days",
        "Custom…",
    ]
    expect(page.locator(".custom-range").first).to_be_hidden()
    step = page.locator("#chart-requests").locator("xpath=..").locator("figcaption .step")
    expect(step).to_have_text("minute")

    # long ranges: the server picks hours, the captions say so; the totals are still the tenant's
    for value, label in (("10080", "last 7 days"), ("43200", "last 30 days")):
        page.get_by_label("Range", exact=True).select_option(value)
        expect(page.locator("#scope")).to_contain_text(label, timeout=WITHIN_MS)
        expect(step).to_have_text("hour", timeout=WITHIN_MS)
        for caption in page.locator(".charts figcaption .step").all_inner_texts():
            assert caption == "hour"
        sent = _last(watched, "/v1/metrics/timeseries")
        assert sent["minutes"] == [value]
        assert "step" not in sent
        answer = httpx.get(
            f"{server.url}/v1/metrics/timeseries", params={"tenant_id": TENANT, "minutes": value}, timeout=10
        ).json()
        assert answer["step_s"] == 3600
        kpi = page.locator('.kpi[data-kpi="requests"] .value').get_attribute("data-value")
        assert int(kpi or 0) == answer["total"]["requests"]
        costs = _last(watched, "/v1/costs")
        start, end = (datetime.fromisoformat(costs[name][0]) for name in ("from", "to"))
        assert end - start == timedelta(minutes=int(value))
        expect(page.locator(".uplot")).to_have_count(4)
    assert page.url.endswith(f"?tenant={TENANT}&range=43200")

    # custom: two local datetimes; every endpoint gets them as UTC instants
    page.get_by_label("Range", exact=True).select_option("custom")
    expect(page.get_by_label("From (local time)")).to_be_visible()
    now = datetime.now(UTC).astimezone(ZONE)
    start_local = (now - timedelta(hours=2)).replace(second=0, microsecond=0)
    end_local = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    page.get_by_label("From (local time)").fill(start_local.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("To (local time)").fill(end_local.strftime("%Y-%m-%dT%H:%M"))
    expect(page.locator("#scope")).not_to_contain_text("last", timeout=WITHIN_MS)
    expect(step).to_have_text("minute", timeout=WITHIN_MS)
    _wait_for(
        lambda: (
            _last(watched, "/v1/metrics/timeseries").get("from")
            == [start_local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")]
        ),
        "the custom range's request",
    )
    for path in ("/v1/metrics/timeseries", "/v1/metrics/breakdown", "/v1/costs", "/v1/calls"):
        sent = _last(watched, path)
        assert sent["from"] == [start_local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")], path
        assert sent["to"] == [end_local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")], path
        assert "minutes" not in sent, path
    query = parse_qs(urlparse(page.url).query)
    assert query["range"] == ["custom"]
    assert query["from"] == [start_local.strftime("%Y-%m-%dT%H:%M")]
    summary = httpx.get(
        f"{server.url}/v1/metrics/summary",
        params={"tenant_id": TENANT, "from": start_local.isoformat(), "to": end_local.isoformat()},
        timeout=10,
    ).json()["summary"][0]
    expect(page.locator('.kpi[data-kpi="requests"] .value')).to_have_attribute(
        "data-value", str(summary["requests"]), timeout=WITHIN_MS
    )

    # a bookmark of it opens the same range
    page.reload()
    expect(page.get_by_label("Range", exact=True)).to_have_value("custom")
    expect(page.get_by_label("From (local time)")).to_have_value(start_local.strftime("%Y-%m-%dT%H:%M"))

    # an end before the start is refused on the page, without asking the server
    asked = len(watched.requests)
    page.get_by_label("To (local time)").fill((start_local - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    expect(page.locator("#load-error")).to_have_text("The custom range must end after it starts.")
    page.wait_for_timeout(300)
    assert not [r for r in watched.requests[asked:] if "/v1/" in r.url]

    assert watched.page_errors == []
    assert watched.console_errors == []
    context.close()


def test_with_an_api_key_the_panels_read_the_keys_tenant(browser: Browser, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with Store.open(settings.db_url) as store:
        key = store.keys.create(TENANT)[1]
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {key}"}
    with live_server(app) as url:
        events = traffic_with_users()[:600]
        body = encode_batch_json(events)
        answer = httpx.post(f"{url}/v1/events", content=body, headers=headers, timeout=10)
        assert answer.is_success, answer.text
        state = app.state.llmpulse
        assert state.runner.wait_committed(0, state.log.end_offset(0), 20)

        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
        watched = Watched()
        page = watched.attach(context.new_page())
        page.goto(f"{url}/?spenders=environment")
        page.get_by_label("API key", exact=True).fill(key)
        page.get_by_role("button", name="Open dashboard").click()
        # no tenant picked: the key's tenant is the page's, so the panels show without a hint
        expect(page.locator("#spenders-table")).to_be_visible(timeout=WITHIN_MS)
        expect(page.locator("#spenders-hint")).to_be_hidden()
        expect(page.locator("#spenders-table")).to_have_attribute("data-group-by", "environment")
        table = page.locator("#spenders-table")
        params: dict[str, Any] = {"group_by": "environment", "limit": 10}
        params |= {"from": table.get_attribute("data-from"), "to": table.get_attribute("data-to")}
        costs = httpx.get(f"{url}/v1/costs", params=params, headers=headers, timeout=10).json()
        assert costs["tenant_id"] == TENANT
        rows = page.locator("#spenders-table tbody tr")
        keys = rows.evaluate_all("(rows) => rows.map((tr) => tr.dataset.key)")
        assert keys == [g["key"] or "" for g in costs["groups"]]
        calls = httpx.get(
            f"{url}/v1/calls",
            params={"from": page.locator("#calls-table").get_attribute("data-from"), "limit": 25},
            headers=headers,
            timeout=10,
        ).json()
        _wait_table(page, [c["request_id"] for c in calls["calls"]], "the key's tenant's calls")
        per_tenant = [r for r in watched.requests if urlparse(r.url).path in ("/v1/costs", "/v1/calls")]
        assert per_tenant
        assert {r.headers.get("authorization") for r in per_tenant} == {f"Bearer {key}"}
        assert watched.page_errors == []
        context.close()
