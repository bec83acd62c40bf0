"""Fixtures for the dashboard's browser tests: Debian's chromium driven by Playwright (no browser
download), and a real server on a free loopback port fed with known traffic."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Request, sync_playwright

from llmpulse.events import Event
from llmpulse.server import ServerSettings, create_app
from llmpulse.testing import encode_batch_json, generate_events
from tests.server.live_server import live_server

#: Debian's chromium; `make test` installs it (scripts/test-deps.sh).
CHROMIUM = os.environ.get("LLMPULSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Screenshots and PDFs for people to look at (git-ignored).
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


# Package scope, not session: Playwright's sync API keeps an event loop running on the main thread
# while it is open, and every later test that calls asyncio.run() would fail.
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.fail(
            f"chromium is missing ({CHROMIUM}): install Debian's `chromium` package "
            "(`make test` does, via scripts/test-deps.sh)"
        )
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="package")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@dataclass
class Watched:
    """What a page did: console errors, uncaught exceptions, and every request's URL and headers."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def attach(self, page: Page) -> Page:
        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.console_errors.append(f"{message.text} ({message.location.get('url')})")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("request", lambda request: self.requests.append(request))
        return page

    def foreign(self, origin: str) -> list[str]:
        """URLs of requests that did not go to `origin`."""
        return [r.url for r in self.requests if not r.url.startswith(origin + "/")]


@dataclass
class FedServer:
    """A running server and the traffic it was fed."""

    url: str
    events: list[Event]

    def post(self, events: list[Event]) -> None:
        answer = httpx.post(f"{self.url}/v1/events", content=encode_batch_json(events), timeout=10)
        assert answer.status_code == 200, answer.text


def feed(url: str, app: object, events: list[Event]) -> None:
    """Post `events` to the server and wait until its processor has committed them."""
    for i in range(0, len(events), 500):
        answer = httpx.post(f"{url}/v1/events", content=encode_batch_json(events[i : i + 500]), timeout=10)
        assert answer.status_code == 200, answer.text
    state = app.state.llmpulse  # type: ignore[attr-defined]
    assert state.runner.wait_committed(0, state.log.end_offset(0), 20)


def known_traffic(seed: int = 5) -> list[Event]:
    """800 calls of 3 tenants, 50 to 5 minutes ago, a tenth of them failing."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=50)
    return generate_events(
        800, tenants=3, routes=4, start=start, duration_s=45 * 60, error_rate=0.1, call_rate=0.2, seed=seed
    )


def settings_for(tmp: Path) -> ServerSettings:
    db_url = f"sqlite:///{tmp / 'store.db'}"
    return ServerSettings(db_url=db_url, log_sync="NORMAL", checkpoint_interval_s=0.1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FedServer]:
    app = create_app(settings_for(tmp_path_factory.mktemp("browser")))
    events = known_traffic()
    with live_server(app) as url:
        feed(url, app, events)
        yield FedServer(url, events)
