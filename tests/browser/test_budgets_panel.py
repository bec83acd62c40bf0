"""The dashboard's "Budgets" panel in a real browser: for the tenant in view, each budget's amount,
committed, reserved, remaining, observed spend, burn rate and projected exhaustion equal
``GET /v1/budgets``; it follows new commits with the rest of the page; and it says when there are
no budgets."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from llmpulse.events import Event, LLMCall
from llmpulse.server import create_app
from llmpulse.store import Store
from tests.browser.conftest import Watched, feed, settings_for
from tests.server.live_server import live_server

pytestmark = pytest.mark.slow

#: How long the page may take to show what was asked (it polls every 5 s).
WITHIN_MS = 10_000
#: The figures of a budget each row keeps as data attributes (camel-cased), raw from the API.
FIGURES = (
    "amount_usd",
    "committed_usd",
    "reserved_usd",
    "remaining_usd",
    "observed_usd",
    "burn_usd_per_hour",
)


class Clock:
    """The server's budget clock, moved by the tests (epoch seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Budgeted:
    """A running server with budgets: its URL and its budget clock."""

    def __init__(self, url: str, clock: Clock) -> None:
        self.url = url
        self.clock = clock

    def put(self, budget_id: str, **body: Any) -> None:
        answer = httpx.put(f"{self.url}/v1/budgets/{budget_id}", json=body, timeout=10)
        assert answer.status_code == 200, answer.text

    def reserve(self, budget_id: str, estimate: float) -> str:
        url = f"{self.url}/v1/budgets/{budget_id}/reservations"
        answer = httpx.post(url, json={"estimate_usd": estimate}, timeout=10)
        assert answer.status_code == 201, answer.text
        rid: str = answer.json()["reservation_id"]
        return rid

    def commit(self, budget_id: str, rid: str, cost: float) -> None:
        url = f"{self.url}/v1/budgets/{budget_id}/reservations/{rid}/commit"
        answer = httpx.post(url, json={"cost_usd": cost}, timeout=10)
        assert answer.status_code == 200, answer.text

    def budgets(self) -> dict[str, dict[str, Any]]:
        answer = httpx.get(f"{self.url}/v1/budgets", timeout=10)
        assert answer.status_code == 200, answer.text
        return {b["id"]: b for b in answer.json()["budgets"]}


def noon_zone(now: float) -> str:
    """A fixed-offset IANA zone where `now` is about local noon, so that a day period holds the
    minutes around `now` whatever the hour the test runs at."""
    offset = 12 - datetime.fromtimestamp(now, UTC).hour  # -11 … 12
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc/GMT-3 is UTC+3


def chat_calls(at: float, n: int) -> list[Event]:
    """`n` calls of acme's chat feature at `at` (their cost is the observed spend), and two of
    another feature (outside the budget's scope)."""
    when = datetime.fromtimestamp(at, UTC)
    return [
        LLMCall(
            model="gpt-4o-mini",
            timestamp=when,
            input_tokens=1000 + i,
            output_tokens=200,
            request_id=f"{feature}-{i}",
            tenant_id="acme",
            feature=feature,
        )
        for feature, count in (("chat", n), ("search", 2))
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Budgeted]:
    """acme's budgets: ``chat`` (a day, hard, $1.10 committed and $0.50 reserved of $5 half an hour
    after it was made), ``tight`` (exhausted), ``spare`` (total, soft, unused); and globex's
    ``other``. The clock then stands half an hour after the budgets were made."""
    app = create_app(settings_for(tmp_path_factory.mktemp("budgets")))
    clock = Clock(time.time())
    app.state.llmpulse.clock = clock
    t0 = clock.now
    zone = noon_zone(t0)
    with live_server(app) as url:
        s = Budgeted(url, clock)
        s.put(
            "chat",
            amount_usd=5.0,
            period="day",
            timezone=zone,
            scope={"tenant_id": "acme", "feature": "chat"},
            reservation_ttl_s=7200,
        )
        s.put(
            "tight",
            amount_usd=1.0,
            period="day",
            timezone=zone,
            scope={"tenant_id": "acme"},
            reservation_ttl_s=7200,
        )
        s.put(
            "spare", amount_usd=2.0, period="total", hard=False, scope={"tenant_id": "acme", "user_id": "u1"}
        )
        s.put("other", amount_usd=9.0, scope={"tenant_id": "globex"})
        first, second, _open = (s.reserve("chat", 0.5) for _ in range(3))
        s.commit("chat", first, 0.4)
        s.commit("chat", second, 0.7)
        s.commit("tight", s.reserve("tight", 0.6), 0.6)
        s.reserve("tight", 0.4)
        feed(url, app, chat_calls(t0 - 60, 3))
        clock.now = t0 + 1800
        yield s


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(
        viewport={"width": 1440, "height": 900}, locale="en-US", timezone_id="UTC", color_scheme="light"
    )
    yield context
    context.close()


def fmt_usd(v: float | None) -> str:
    """The page's ``fmtUsd`` (en-US)."""
    if v is None:
        return "–"
    if v == 0:
        return "$0.00"
    if abs(v) >= 1:
        return f"${v:,.2f}"
    decimals = min(8, max(2, 2 - math.floor(math.log10(abs(v)))))
    return f"${v:.{decimals}f}"


def fmt_when(iso: str) -> str:
    """The page's date and time of a projection (en-US, UTC): ``Dec 7, 2026, 01:24 PM``."""
    at = datetime.fromisoformat(iso)
    return f"{at:%b} {at.day}, {at.year}, {at:%I:%M %p}"


def _rows(page: Page) -> dict[str, dict[str, Any]]:
    rows: list[dict[str, Any]] = page.evaluate(
        """() => [...document.querySelectorAll('#budgets-table tbody tr')].map((tr) => ({
          data: {...tr.dataset},
          id: tr.querySelector('.b-id strong').innerText,
          scope: tr.querySelector('.b-scope').innerText,
          period: tr.querySelector('.b-period').innerText,
          mode: tr.querySelector('.b-mode').innerText,
          burnText: tr.querySelector('.b-burn-text').innerText,
          committedWidth: tr.querySelector('.budget-bar .committed').style.width,
          reservedWidth: tr.querySelector('.budget-bar .reserved').style.width,
          remaining: tr.querySelector('.b-remaining').innerText,
          committed: tr.querySelector('.b-committed').innerText,
          observed: tr.querySelector('.b-observed').innerText,
          rate: tr.querySelector('.b-rate').innerText,
          exhaustion: tr.querySelector('.b-exhaustion').innerText,
        }))"""
    )
    return {row["id"]: row for row in rows}


def _wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WITHIN_MS / 1000
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _check_row(row: dict[str, Any], api: dict[str, Any]) -> None:
    """One row of the panel shows the API's figures of one budget."""
    data = row["data"]
    for name in FIGURES:
        key = "".join(w if i == 0 else w.capitalize() for i, w in enumerate(name.split("_")))
        assert float(data[key]) == api[name], (name, data[key], api[name])
    assert data["exhaustion"] == (api["projected_exhaustion_at"] or "")
    assert row["remaining"] == fmt_usd(api["remaining_usd"])
    assert row["committed"] == fmt_usd(api["committed_usd"])
    assert row["observed"].splitlines() == [fmt_usd(api["observed_usd"]), f"{api['observed_requests']} calls"]
    assert row["rate"] == f"{fmt_usd(api['burn_usd_per_hour'])}/h"
    used = (api["committed_usd"] + api["reserved_usd"]) / api["amount_usd"]
    assert row["burnText"] == (
        f"{fmt_usd(api['committed_usd'])} + {fmt_usd(api['reserved_usd'])} reserved of "
        f"{fmt_usd(api['amount_usd'])} ({used * 100:.1f}%)"
    )
    committed = min(1.0, api["committed_usd"] / api["amount_usd"])
    assert float(row["committedWidth"].rstrip("%")) == pytest.approx(committed * 100)
    reserved = min(1 - committed, api["reserved_usd"] / api["amount_usd"])
    assert float(row["reservedWidth"].rstrip("%")) == pytest.approx(reserved * 100, abs=1e-9)
    assert row["mode"] == ("hard" if api["hard"] else "soft")
    if api["period"] == "total":
        assert row["period"] == "Total"
    else:
        period, until = row["period"].splitlines()
        assert period == f"{api['period'].capitalize()} · {api['timezone']}"
        assert until == f"until {fmt_when(api['period_end'])}"


def test_the_panel_shows_each_budget_of_the_tenant_as_the_api_does(
    server: Budgeted, context: BrowserContext, artifacts: Path
) -> None:
    watched = Watched()
    page = watched.attach(context.new_page())
    page.goto(f"{server.url}/?tenant=acme")
    expect(page.locator("#budgets-table tbody tr")).to_have_count(3, timeout=WITHIN_MS)
    expect(page.locator("#budgets-empty")).to_be_hidden()
    rows = _rows(page)
    api = server.budgets()
    assert sorted(rows) == ["chat", "spare", "tight"]  # globex's budget is not acme's
    for budget_id, row in rows.items():
        _check_row(row, api[budget_id])

    # the figures themselves, from what the ledger was told half an hour ago
    chat = api["chat"]
    assert [chat[name] for name in FIGURES[1:4]] == pytest.approx([1.1, 0.5, 3.4])
    assert chat["burn_usd_per_hour"] == pytest.approx(2.2)
    assert chat["observed_requests"] == 3
    assert chat["observed_usd"] > 0
    assert rows["chat"]["remaining"] == "$3.40"
    assert rows["chat"]["rate"] == "$2.20/h"
    assert rows["chat"]["scope"] == "feature chat"
    assert rows["chat"]["exhaustion"] == fmt_when(chat["projected_exhaustion_at"])
    assert rows["tight"]["exhaustion"] == "exhausted"
    assert rows["tight"]["remaining"] == "$0.00"
    assert rows["spare"]["exhaustion"] == "not at this rate"
    assert rows["spare"]["scope"] == "user u1"
    assert api["spare"]["projected_exhaustion_at"] is None
    page.locator("#budgets").screenshot(path=str(artifacts / "budgets-panel.png"))

    # a commit shows at the next refresh, with the rest of the page
    rid = server.reserve("chat", 0.25)
    server.commit("chat", rid, 0.9)
    _wait_for(lambda: _rows(page)["chat"]["data"].get("committedUsd") == "2", "the new commit")
    _check_row(_rows(page)["chat"], server.budgets()["chat"])
    assert _rows(page)["chat"]["committed"] == "$2.00"

    # every tenant: every budget, each naming its tenant
    page.goto(f"{server.url}/")
    expect(page.locator("#budgets-table tbody tr")).to_have_count(4, timeout=WITHIN_MS)
    rows = _rows(page)
    assert rows["other"]["scope"] == "tenant globex"
    assert rows["chat"]["scope"] == "tenant acme · feature chat"
    _check_row(rows["other"], server.budgets()["other"])
    assert watched.console_errors == []
    assert watched.page_errors == []
    assert watched.foreign(server.url) == []


def test_a_tenant_without_budgets_gets_one_line_saying_so(server: Budgeted, context: BrowserContext) -> None:
    watched = Watched()
    page = watched.attach(context.new_page())
    page.goto(f"{server.url}/?tenant=initech")
    empty = page.locator("#budgets-empty")
    expect(empty).to_be_visible(timeout=WITHIN_MS)
    expect(empty).to_have_text(
        "No budgets for tenant initech. Create one with `llmpulse budgets set` or PUT /v1/budgets/{id}."
    )
    expect(page.locator("#budgets-table")).to_be_hidden()
    assert page.locator("#budgets-table tbody tr").count() == 0
    assert watched.console_errors == []
    assert watched.page_errors == []


def test_with_an_api_key_the_panel_shows_the_keys_tenant_only(browser: Browser, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with Store.open(settings.db_url) as store:
        acme = store.keys.create("acme")[1]
        globex = store.keys.create("globex")[1]
    with live_server(create_app(settings)) as url:
        for key, budget_id, amount in ((acme, "a", 3.0), (globex, "g", 4.0)):
            answer = httpx.put(
                f"{url}/v1/budgets/{budget_id}",
                json={"amount_usd": amount, "period": "total"},
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
        context = browser.new_context(locale="en-US", timezone_id="UTC")
        watched = Watched()
        page = watched.attach(context.new_page())
        page.goto(f"{url}/")
        page.get_by_label("API key", exact=True).fill(acme)
        page.get_by_role("button", name="Open dashboard").click()
        expect(page.locator("#budgets-table tbody tr")).to_have_count(1, timeout=WITHIN_MS)
        row = _rows(page)["a"]
        assert row["scope"] == "the whole tenant"  # the key's tenant is the page's: not named
        assert row["remaining"] == "$3.00"
        assert row["exhaustion"] == "not at this rate"
        context.close()
        assert watched.page_errors == []
