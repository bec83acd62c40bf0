"""The dashboard in a real browser: the numbers it shows, its filters, live updates, themes, print,
the API-key prompt, and that it never reaches beyond the server's origin."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from llmpulse.events import LLMCall
from llmpulse.server import create_app
from llmpulse.store import Store
from llmpulse.testing import encode_batch_json
from tests.browser.conftest import FedServer, Watched, known_traffic, settings_for
from tests.server.live_server import live_server

pytestmark = pytest.mark.slow

#: How long the page may take to show new traffic (it polls every 5 s).
LIVE_WITHIN_S = 10.0


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(
        viewport={"width": 1440, "height": 900}, locale="en-US", timezone_id="UTC", color_scheme="light"
    )
    yield context
    context.close()


def _kpi(page: Page, name: str) -> float | None:
    raw = page.locator(f'.kpi[data-kpi="{name}"] .value').get_attribute("data-value")
    return None if raw in (None, "") else float(raw)


def _kpi_text(page: Page, name: str) -> str:
    return page.locator(f'.kpi[data-kpi="{name}"] .value').inner_text()


def _summary(url: str, tenant: str, **filters: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/v1/metrics/summary", params={"tenant_id": tenant, **filters}, timeout=10)
    rows = answer.json()["summary"]
    assert len(rows) == 1, answer.text
    row: dict[str, Any] = rows[0]
    return row


def _close(shown: float | None, expected: float | None) -> bool:
    if shown is None or expected is None:
        return shown is expected
    return math.isclose(shown, expected, rel_tol=1e-9, abs_tol=1e-12)


def _wait_scope(page: Page, text: str) -> None:
    expect(page.locator("#scope")).to_contain_text(text, timeout=LIVE_WITHIN_S * 1000)


def test_dashboard_shows_filters_and_follows_live_traffic(
    context: BrowserContext, server: FedServer, artifacts: Path
) -> None:
    watched = Watched()
    page = watched.attach(context.new_page())
    page.goto(server.url)
    expect(page.locator("#dashboard")).to_be_visible()
    expect(page.locator("#live")).to_have_class("live ok")
    expect(page.locator("#auth")).to_be_hidden()

    # the filters are labelled form controls; the defaults are every tenant and the last hour
    for label in ("Tenant", "Route", "Model", "Range"):
        expect(page.get_by_label(label, exact=True)).to_be_visible()
    expect(page.get_by_label("Tenant", exact=True)).to_have_value("")
    expect(page.get_by_label("Range", exact=True)).to_have_value("60")
    tenants = ["tenant-1", "tenant-2", "tenant-3"]
    options = page.get_by_label("Tenant", exact=True).locator("option").all_inner_texts()
    assert options == ["All tenants", *tenants]

    # every tenant: the totals are the tenants' summaries added up
    summaries = {t: _summary(server.url, t) for t in tenants}
    assert _kpi(page, "requests") == sum(s["requests"] for s in summaries.values())
    assert _kpi(page, "errors") == sum(s["errors"] for s in summaries.values())
    assert _kpi(page, "total_tokens") == sum(s["total_tokens"] for s in summaries.values())
    cost = _kpi(page, "estimated_cost_usd")
    assert cost == pytest.approx(sum(s["estimated_cost_usd"] for s in summaries.values()))
    requests = int(_kpi(page, "requests") or 0)
    assert _kpi_text(page, "requests") == f"{requests:,}"
    assert len(server.events) > 0
    whole = httpx.get(f"{server.url}/v1/metrics/timeseries", timeout=10).json()["total"]
    for name in ("p50_latency_ms", "p95_latency_ms", "p95_ttft_ms"):
        assert _close(_kpi(page, name), whole[name]), name
    expect(page.locator(".uplot")).to_have_count(4)
    assert page.locator("#recent tbody tr").count() == 25
    page.screenshot(path=str(artifacts / "dashboard-light.png"), full_page=True)

    # one tenant: the numbers are that tenant's summary
    page.get_by_label("Tenant", exact=True).select_option("tenant-1")
    _wait_scope(page, "tenant tenant-1")
    one = summaries["tenant-1"]
    for name in ("requests", "errors", "p50_latency_ms", "p95_latency_ms", "p95_ttft_ms", "total_tokens"):
        assert _close(_kpi(page, name), one[name]), name
    assert _kpi(page, "estimated_cost_usd") == pytest.approx(one["estimated_cost_usd"])
    assert _kpi(page, "requests") != requests
    tenants_shown = set(page.locator("#recent tbody td:nth-child(2)").all_inner_texts())
    assert tenants_shown == {"tenant-1"}
    by_model = httpx.get(
        f"{server.url}/v1/metrics/summary", params={"tenant_id": "tenant-1", "group_by": "model"}, timeout=10
    ).json()["summary"]
    assert page.locator("#by-model tbody tr").count() == len(by_model)
    priciest = max(by_model, key=lambda r: r["estimated_cost_usd"])
    expect(page.locator("#by-model tbody tr").first).to_have_attribute("data-name", priciest["model"])

    # and one model of it
    model = priciest["model"]
    page.get_by_label("Model", exact=True).select_option(model)
    _wait_scope(page, f"model {model}")
    narrow = _summary(server.url, "tenant-1", model=model)
    for name in ("requests", "errors", "p95_latency_ms", "p95_ttft_ms"):
        assert _close(_kpi(page, name), narrow[name]), name
    assert page.url.endswith(f"?tenant=tenant-1&model={model}")

    # live: new calls appear within 10 s, without a reload
    page.evaluate("window.__sameDocument = true")
    before = int(_kpi(page, "requests") or 0)
    now = datetime.now(UTC)
    new = [
        LLMCall(
            model=model,
            timestamp=now - timedelta(seconds=2),
            tenant_id="tenant-1",
            route="chat",
            request_id=f"live-{i}",
            input_tokens=100,
            output_tokens=50,
            latency_ms=400.0 + i,
            error="boom" if i == 0 else None,
        )
        for i in range(7)
    ]
    sent = time.monotonic()
    server.post(new)  # type: ignore[arg-type]
    expect(page.locator('.kpi[data-kpi="requests"] .value')).to_have_attribute(
        "data-value", str(before + 7), timeout=LIVE_WITHIN_S * 1000
    )
    waited = time.monotonic() - sent
    assert waited < LIVE_WITHIN_S
    assert page.evaluate("window.__sameDocument") is True
    expect(page.locator('#recent tbody tr[data-request-id="live-6"]')).to_be_visible()
    expect(page.locator('#recent tbody tr[data-request-id="live-0"] .status')).to_have_text("error")

    # dark theme
    page.get_by_label("Model", exact=True).select_option("")
    _wait_scope(page, "all models")
    light_background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.locator("#theme-toggle").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    dark_background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert dark_background != light_background
    assert sum(int(c) for c in dark_background[4:-1].split(",")) < 120  # a dark colour
    expect(page.locator(".uplot")).to_have_count(4)
    page.screenshot(path=str(artifacts / "dashboard-dark.png"), full_page=True)

    # print: light colours, no controls, charts redrawn for paper
    page.set_viewport_size({"width": 1060, "height": 900})  # about A4 landscape at 96 dpi
    page.emulate_media(media="print")
    expect(page.locator("#filters")).to_be_hidden()
    expect(page.locator("#theme-toggle")).to_be_hidden()
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(255, 255, 255)"
    expect(page.locator(".uplot")).to_have_count(4)
    page.screenshot(path=str(artifacts / "dashboard-print.png"), full_page=True)
    page.pdf(path=str(artifacts / "dashboard.pdf"), landscape=True, format="A4", print_background=True)
    page.emulate_media(media="screen")

    assert watched.page_errors == []
    assert watched.console_errors == []
    assert watched.foreign(server.url) == []
    assert any("/static/vendor/uplot/uPlot.iife.min.js" in r.url for r in watched.requests)


def test_with_api_keys_the_page_asks_for_a_key_once_per_session(
    browser: Browser, tmp_path: Path, artifacts: Path
) -> None:
    settings = settings_for(tmp_path)
    with Store.open(settings.db_url) as store:
        keys = {tenant: store.keys.create(tenant)[1] for tenant in ("tenant-1", "tenant-2")}
    app = create_app(settings)
    with live_server(app) as url:
        events = known_traffic(seed=9)
        half = len(events) // 2
        for tenant, part in (("tenant-1", events[:half]), ("tenant-2", events[half:])):
            # the server files each key's events under the key's tenant
            headers = {"Authorization": f"Bearer {keys[tenant]}"}
            body = encode_batch_json(part)
            answer = httpx.post(f"{url}/v1/events", content=body, headers=headers, timeout=10)
            assert answer.is_success, answer.text
        state = app.state.llmpulse
        assert state.runner.wait_committed(0, state.log.end_offset(0), 20)
        key = keys["tenant-1"]
        mine = httpx.get(f"{url}/v1/metrics/summary", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        expected = mine.json()["summary"][0]
        assert expected["tenant_id"] == "tenant-1"
        assert httpx.get(f"{url}/v1/metrics/timeseries", timeout=10).status_code == 401
        assert httpx.get(f"{url}/", timeout=10).status_code == 200
        assert httpx.get(f"{url}/static/dashboard.js", timeout=10).status_code == 200

        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
        watched = Watched()
        page = watched.attach(context.new_page())
        page.goto(f"{url}/?tenant=tenant-2")
        # without a key: only the prompt
        expect(page.locator("#auth")).to_be_visible()
        expect(page.locator("#dashboard")).to_be_hidden()
        expect(page.get_by_label("API key", exact=True)).to_be_focused()
        page.screenshot(path=str(artifacts / "dashboard-key-prompt.png"))

        page.get_by_label("API key", exact=True).fill("lp_not_a_key")
        page.get_by_role("button", name="Open dashboard").click()
        expect(page.locator("#auth-error")).to_contain_text("not accepted")
        expect(page.locator("#dashboard")).to_be_hidden()

        # the key of tenant-1: the page asked for tenant-2 (403), so it shows the key's own tenant
        page.get_by_label("API key", exact=True).fill(key)
        page.get_by_role("button", name="Open dashboard").click()
        expect(page.locator("#dashboard")).to_be_visible()
        _wait_scope(page, "tenant tenant-1")
        expect(page.locator("#live")).to_have_class("live ok")
        options = page.get_by_label("Tenant", exact=True).locator("option").all_inner_texts()
        assert options == ["tenant-1"]  # never "All tenants", never another tenant
        for name in ("requests", "errors", "p95_latency_ms", "total_tokens"):
            assert _close(_kpi(page, name), expected[name]), name
        assert set(page.locator("#recent tbody td:nth-child(2)").all_inner_texts()) == {"tenant-1"}
        assert page.evaluate("sessionStorage.getItem('llmpulse.apiKey')") == key

        # kept for the session: a reload goes straight to the dashboard
        page.reload()
        expect(page.locator("#dashboard")).to_be_visible()
        expect(page.locator("#auth")).to_be_hidden()
        expect(page.locator("#live")).to_have_class("live ok")

        # every API call after the key was given carried it; the shell and static files needed none
        api = [r for r in watched.requests if "/v1/" in r.url]
        keyed = [r for r in api if r.headers.get("authorization") == f"Bearer {key}"]
        assert len(keyed) >= 10
        assert {r.headers.get("authorization") for r in api} <= {None, "Bearer lp_not_a_key", f"Bearer {key}"}
        assert api[-1].headers.get("authorization") == f"Bearer {key}"
        assert watched.foreign(url) == []
        assert watched.page_errors == []
        # the browser reports each 401 and the 403 as a failed resource load; nothing else may be logged
        assert [e for e in watched.console_errors if "401" not in e and "403" not in e] == []

        # forgetting the key brings the prompt back
        page.get_by_role("button", name="Forget API key").click()
        expect(page.locator("#auth")).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('llmpulse.apiKey')") is None
        context.close()

        # another session asks again
        other = browser.new_context()
        page = other.new_page()
        page.goto(url)
        expect(page.locator("#auth")).to_be_visible()
        other.close()
