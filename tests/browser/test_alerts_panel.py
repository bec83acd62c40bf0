"""The dashboard's "Alerts" panel and header badge in a real browser: against a server with a rules
file, the firing and pending alerts of the tenant in view, their values, summaries, since and labels,
and the last transitions equal ``GET /v1/alerts``; a resolution shows at the next refresh; without
a rules file the panel and badge stay hidden and ``/v1/alerts`` is never asked."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from llmpulse.server import ServerSettings, create_app
from tests.browser.conftest import Watched, settings_for
from tests.server.conftest import call_body, iso
from tests.server.live_server import live_server

pytestmark = pytest.mark.slow

#: How long the page may take to show what was asked (it polls every 5 s).
WITHIN_MS = 12_000
#: The statuses the panel lists, in its order.
ORDER = {"firing": 0, "pending": 1}

RULES = """
rules:
  - name: cost-sustained
    scope: {tenant_id: acme}
    labels: {severity: ticket}
    threshold: {metric: cost_usd, window: 5m, above: 1.0, for: 1h}
  - name: cost-spike
    scope: {tenant_id: acme}
    labels: {severity: page, team: llm-platform}
    threshold: {metric: cost_usd, window: 5m, above: 1.0}
  - name: error-storm
    scope: {tenant_id: acme, route: chat}
    threshold: {metric: errors, window: 5m, above: 5}
  - name: globex-cost
    scope: {tenant_id: globex}
    labels: {severity: page}
    threshold: {metric: cost_usd, window: 5m, above: 1.0}
"""


class Clock:
    """The server's clock (epoch seconds), standing still until a test moves it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Alerting:
    """A running server with alert rules: its URL and its clock."""

    url: str
    clock: Clock

    def spend(self, tenant: str, cost: float, n: int = 3) -> None:
        at = iso(datetime.fromtimestamp(self.clock.now - 1, UTC))
        events = [
            call_body(
                request_id=f"{tenant}-{time.monotonic_ns()}-{i}",
                tenant_id=tenant,
                cost=cost / n,
                cost_source="provider",
                timestamp=at,
            )
            for i in range(n)
        ]
        answer = httpx.post(f"{self.url}/v1/events", json=events, timeout=10)
        assert answer.status_code == 200, answer.text

    def alerts(self, tenant: str | None = None) -> dict[str, Any]:
        params = {} if tenant is None else {"tenant_id": tenant}
        answer = httpx.get(f"{self.url}/v1/alerts", params=params, timeout=10)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def statuses(self) -> dict[str, str]:
        return {a["rule"]: a["status"] for a in self.alerts()["alerts"]}


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alerting]:
    """acme spends $3 and globex $2 a second before the clock: ``cost-spike`` and ``globex-cost``
    fire, ``cost-sustained`` is pending (it must hold for an hour), ``error-storm`` stays quiet."""
    tmp = tmp_path_factory.mktemp("alerts")
    rules = tmp / "alerts.yaml"
    rules.write_text(RULES)
    settings = settings_for(tmp)
    settings = ServerSettings(
        db_url=settings.db_url,
        log_sync=settings.log_sync,
        checkpoint_interval_s=settings.checkpoint_interval_s,
        alerts_file=str(rules),
        alerts_interval_s=0.2,
    )
    app = create_app(settings)
    clock = Clock(time.time())
    app.state.llmpulse.clock = clock
    with live_server(app) as url:
        s = Alerting(url, clock)
        s.spend("acme", 3.0)
        s.spend("globex", 2.0)
        expected = {
            "cost-sustained": "pending",
            "cost-spike": "firing",
            "error-storm": "inactive",
            "globex-cost": "firing",
        }
        wait_for(lambda: s.statuses() == expected, "the alerts to fire")
        yield s


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(
        viewport={"width": 1440, "height": 900}, locale="en-US", timezone_id="UTC", color_scheme="light"
    )
    yield context
    context.close()


def fmt_value(v: float | None) -> str:
    """The page's ``fmtValue`` (en-US, at most 4 significant digits) for the values of these tests."""
    return "–" if v is None else f"{v:,.4g}"


def fmt_time(stamp: str | None) -> str:
    """The page's time of an alert (en-US, UTC): ``Nov 19, 09:05:01 AM``."""
    if stamp is None:
        return "–"
    at = datetime.fromisoformat(stamp)
    return f"{at:%b} {at.day}, {at:%I:%M:%S %p}"


def panel(page: Page) -> dict[str, Any]:
    """What the panel and the badge show."""
    shown: dict[str, Any] = page.evaluate(
        """() => {
          const shown = (selector) => {
            const element = document.querySelector(selector);
            return element.hidden ? null : element.innerText;
          };
          return {
          alerts: [...document.querySelectorAll('#alerts-table tbody tr')].map((tr) => ({
            data: {...tr.dataset},
            status: tr.querySelector('.a-status').innerText,
            rule: tr.querySelector('.a-rule strong').innerText,
            tenant: tr.querySelector('.a-tenant')?.innerText ?? null,
            kind: tr.querySelector('.a-kind').innerText,
            value: tr.querySelector('.a-value').innerText,
            summary: tr.querySelector('.a-summary').innerText,
            since: tr.querySelector('.a-since').innerText,
            labels: [...tr.querySelectorAll('.a-labels .label')].map((l) => l.innerText),
          })),
          history: [...document.querySelectorAll('#alerts-history tbody tr')].map((tr) => ({
            data: {...tr.dataset},
            at: tr.querySelector('.h-at').innerText,
            rule: tr.querySelector('.a-rule strong').innerText,
            status: tr.querySelector('.h-status').innerText,
            value: tr.querySelector('.h-value').innerText,
            summary: tr.querySelector('.h-summary').innerText,
          })),
          badge: shown('#alerts-badge'),
          counts: document.querySelector('#alerts-counts').innerText,
          empty: shown('#alerts-empty'),
          tableHidden: document.querySelector('#alerts-table').hidden,
          historyHidden: document.querySelector('#alerts-history').hidden,
        }}"""
    )
    return shown


def check_panel(shown: dict[str, Any], api: dict[str, Any], *, with_tenant: bool) -> None:
    """The panel shows the API's answer: firing then pending alerts, the last transitions, the badge."""
    listed = sorted((a for a in api["alerts"] if a["status"] in ORDER), key=lambda a: ORDER[a["status"]])
    assert [row["rule"] for row in shown["alerts"]] == [a["rule"] for a in listed]
    for row, alert in zip(shown["alerts"], listed, strict=True):
        assert row["status"] == row["data"]["status"] == alert["status"]
        assert row["tenant"] == (f"tenant {alert['tenant_id']}" if with_tenant else None)
        assert row["kind"] == alert["kind"] == "threshold"
        assert float(row["data"]["value"]) == alert["value"]
        assert row["value"] == fmt_value(alert["value"])
        assert row["summary"] == alert["summary"]
        assert row["data"]["since"] == alert["since"]
        assert row["since"] == fmt_time(alert["since"])
        hidden = ("alertname", "tenant_id")
        assert row["labels"] == [f"{k}={v}" for k, v in alert["labels"].items() if k not in hidden]
    history = api["history"][:8]
    assert [(h["rule"], h["status"]) for h in shown["history"]] == [(h["rule"], h["status"]) for h in history]
    for row, transition in zip(shown["history"], history, strict=True):
        assert row["data"]["at"] == transition["at"]
        assert row["at"] == fmt_time(transition["at"])
        assert row["value"] == fmt_value(transition["value"])
        assert row["summary"] == transition["summary"]
    assert shown["badge"] == (f"{api['firing']} firing" if api["firing"] else None)
    assert shown["historyHidden"] == (not history)
    assert shown["tableHidden"] == (not listed)


def test_the_panel_shows_what_fires_then_what_is_pending_as_the_api_does_and_follows_a_resolution(
    server: Alerting, context: BrowserContext, artifacts: Path
) -> None:
    watched = Watched()
    page = watched.attach(context.new_page())

    # every tenant: both firing alerts (in the rules' order), then the pending one, each naming its tenant
    page.goto(f"{server.url}/")
    expect(page.locator("#alerts-table tbody tr")).to_have_count(3, timeout=WITHIN_MS)
    shown = panel(page)
    api = server.alerts()
    check_panel(shown, api, with_tenant=True)
    assert [(r["rule"], r["status"]) for r in shown["alerts"]] == [
        ("cost-spike", "firing"),
        ("globex-cost", "firing"),
        ("cost-sustained", "pending"),
    ]
    assert shown["badge"] == "2 firing"
    assert shown["counts"] == "2 firing · 1 pending · 4 rules"

    # acme's: globex's alert is not in view, and the badge counts acme's only
    page.goto(f"{server.url}/?tenant=acme")
    expect(page.locator("#alerts-table tbody tr")).to_have_count(2, timeout=WITHIN_MS)
    expect(page.locator("#alerts-badge")).to_have_text("1 firing")
    shown = panel(page)
    api = server.alerts("acme")
    check_panel(shown, api, with_tenant=False)
    spike, sustained = shown["alerts"]
    assert (spike["rule"], spike["status"], spike["value"]) == ("cost-spike", "firing", "3")
    assert spike["labels"] == ["severity=page", "team=llm-platform"]
    assert "cost_usd over 300 s is" in spike["summary"]
    assert (sustained["rule"], sustained["status"]) == ("cost-sustained", "pending")
    assert sustained["labels"] == ["severity=ticket"]
    assert [(h["rule"], h["status"]) for h in shown["history"]] == [("cost-spike", "firing")]
    assert shown["counts"] == "1 firing · 1 pending · 3 rules"
    assert shown["empty"] is None
    page.locator("#alerts").screenshot(path=str(artifacts / "alerts-panel.png"))
    page.locator("header.top").screenshot(path=str(artifacts / "alerts-badge.png"))

    # ten minutes on, without spend: cost-spike resolves, cost-sustained is no longer pending
    server.clock.now += 600
    wait_for(lambda: server.statuses()["cost-spike"] == "resolved", "the resolution")
    assert server.statuses()["cost-sustained"] == "inactive"
    expect(page.locator("#alerts-badge")).to_be_hidden(timeout=WITHIN_MS)
    expect(page.locator("#alerts-history tbody tr")).to_have_count(2, timeout=WITHIN_MS)
    shown = panel(page)
    check_panel(shown, server.alerts("acme"), with_tenant=False)
    assert shown["alerts"] == []
    assert shown["empty"] == "Nothing firing or pending for tenant acme (3 rules)."
    assert [(h["rule"], h["status"]) for h in shown["history"]] == [
        ("cost-spike", "resolved"),
        ("cost-spike", "firing"),
    ]

    # a tenant without rules
    page.goto(f"{server.url}/?tenant=initech")
    empty = page.locator("#alerts-empty")
    expect(empty).to_have_text("No alert rules for tenant initech.", timeout=WITHIN_MS)
    expect(page.locator("#alerts-table")).to_be_hidden()
    expect(page.locator("#alerts-history")).to_be_hidden()
    assert watched.console_errors == []
    assert watched.page_errors == []
    assert watched.foreign(server.url) == []


def test_without_a_rules_file_the_panel_and_badge_stay_hidden(browser: Browser, tmp_path: Path) -> None:
    with live_server(create_app(settings_for(tmp_path))) as url:
        context = browser.new_context(locale="en-US", timezone_id="UTC")
        watched = Watched()
        page = watched.attach(context.new_page())
        page.goto(f"{url}/")
        live = page.locator("#live")
        expect(live).to_have_class("live ok", timeout=WITHIN_MS)
        expect(live).not_to_have_text(live.inner_text(), timeout=WITHIN_MS)  # a second refresh
        assert sum("/v1/metrics/timeseries" in r.url for r in watched.requests) >= 2
        expect(page.locator("#budgets")).to_be_visible()  # the page drew its other panels
        expect(page.locator("#alerts")).to_be_hidden()
        expect(page.locator("#alerts-badge")).to_be_hidden()
        urls = [r.url for r in watched.requests]
        assert not [u for u in urls if "/v1/alerts" in u]  # never a 404 in the console
        assert sum(u.endswith("/health") for u in urls) == 1  # asked once, not at every refresh
        assert watched.console_errors == []
        assert watched.page_errors == []
        context.close()
