"""Alerts in a running server: a rules file, events posted to /v1/events, a real Alertmanager and a
webhook receiving the firing alert and its resolution, restarts that send nothing twice, SIGHUP-style
reloads, the API, and keys."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llmpulse.server import ServerSettings, create_app
from tests.alerts.alertmanager import Alertmanager
from tests.server.conftest import call_body, iso
from tests.server.keyed import create_keys, wait_until

SECRET = "s3cret"


class Hook:
    """A real HTTP receiver on loopback that keeps what it is sent."""

    def __init__(self) -> None:
        self.bodies: list[tuple[bytes, dict[str, str]]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hook.bodies.append((body, dict(self.headers)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def statuses(self) -> list[str]:
        return [json.loads(b)["status"] for b, _ in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Clock:
    """Ten minutes behind the real clock: the test's events are that old, and moving it on by ten
    minutes brings it to the real now (Alertmanager keeps an alert active until its endsAt)."""

    def __init__(self) -> None:
        self.now = time.time() - 600

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    am = Alertmanager(tmp_path_factory.mktemp("am"))
    am.start()
    yield am
    am.stop()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def rules_file(tmp_path: Path, am_url: str, hook_url: str, above: float = 1.0) -> Path:
    path = tmp_path / "alerts.yaml"
    path.write_text(
        f"""
notifiers:
  - {{name: am, type: alertmanager, url: "{am_url}"}}
  - {{name: hook, type: webhook, url: "{hook_url}", secret: "{SECRET}"}}
rules:
  - name: cost-spike
    scope: {{tenant_id: acme}}
    labels: {{severity: page}}
    threshold: {{metric: cost_usd, window: 5m, above: {above}, for: 0s}}
    notify: [am, hook]
"""
    )
    return path


def start(stack: ExitStack, db: Path, rules: Path, clock: Clock, **overrides: Any) -> TestClient:
    settings = ServerSettings(
        db_url=f"sqlite:///{db}",
        log_sync="NORMAL",
        alerts_file=str(rules),
        alerts_interval_s=0.2,
        **overrides,
    )
    app = create_app(settings)
    app.state.llmpulse.clock = clock
    return stack.enter_context(TestClient(app))


def spend(client: TestClient, clock: Clock, cost: float, n: int = 3) -> None:
    at = iso(datetime.fromtimestamp(clock.now - 1, UTC))
    events = [call_body(request_id=f"r{time.monotonic_ns()}-{i}", cost=cost / n, cost_source="provider",
                        timestamp=at) for i in range(n)]  # fmt: skip
    answer = client.post("/v1/events", json=events)
    assert answer.status_code in (200, 202), answer.text


def test_a_cost_spike_reaches_alertmanager_and_the_webhook_then_resolves(
    tmp_path: Path, alertmanager: Alertmanager, hook: Hook
) -> None:
    clock = Clock()
    rules = rules_file(tmp_path, alertmanager.url, hook.url)
    with ExitStack() as stack:
        client = start(stack, tmp_path / "s.db", rules, clock)
        spend(client, clock, 3.0)
        wait_until(lambda: hook.statuses() == ["firing"], timeout=20)
        body, headers = hook.bodies[0]
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Llmpulse-Signature"] == expected
        note = json.loads(body)
        assert note["rule"] == "cost-spike"
        assert note["labels"] == {"severity": "page", "alertname": "cost-spike", "tenant_id": "acme"}
        assert note["value"] == pytest.approx(3.0)

        def active() -> list[dict[str, Any]]:
            return [a for a in alertmanager.alerts() if a["labels"].get("alertname") == "cost-spike"]

        wait_until(lambda: bool(active()) and active()[0]["status"]["state"] == "active", timeout=20)
        assert active()[0]["labels"]["severity"] == "page"
        alerts = client.get("/v1/alerts").json()
        assert alerts["firing"] == 1
        assert alerts["alerts"][0]["status"] == "firing"
        assert [h["status"] for h in alerts["history"]] == ["firing"]

        clock.now += 600  # ten minutes without spend: the next timer pass resolves it
        wait_until(lambda: hook.statuses() == ["firing", "resolved"], timeout=20)
        assert json.loads(hook.bodies[1][0])["ends_at"] is not None
        wait_until(lambda: not active() or active()[0]["status"]["state"] != "active", timeout=20)
        health = client.get("/health").json()["alerts"]
        assert health["rules"] == 1
        assert health["leader"] is True
        assert health["notifiers"]["hook"]["sent"] == 2


def test_a_restart_while_firing_sends_nothing_twice(
    tmp_path: Path, alertmanager: Alertmanager, hook: Hook
) -> None:
    clock = Clock()
    rules = rules_file(tmp_path, alertmanager.url, hook.url)
    with ExitStack() as stack:
        client = start(stack, tmp_path / "s.db", rules, clock)
        spend(client, clock, 3.0)
        wait_until(lambda: hook.statuses() == ["firing"], timeout=20)
    with ExitStack() as stack:  # the same store, a new server
        client = start(stack, tmp_path / "s.db", rules, clock)
        wait_until(lambda: client.get("/health").json()["alerts"]["passes"] >= 3, timeout=20)
        assert hook.statuses() == ["firing"]
        assert client.get("/v1/alerts").json()["alerts"][0]["status"] == "firing"
        clock.now += 600
        wait_until(lambda: hook.statuses() == ["firing", "resolved"], timeout=20)
        time.sleep(0.5)  # a few more passes: still one resolution
        assert hook.statuses() == ["firing", "resolved"]


def test_a_reload_puts_new_rules_in_force_and_a_bad_file_keeps_the_old(
    tmp_path: Path, alertmanager: Alertmanager, hook: Hook
) -> None:
    clock = Clock()
    rules = rules_file(tmp_path, alertmanager.url, hook.url, above=100.0)
    with ExitStack() as stack:
        client = start(stack, tmp_path / "s.db", rules, clock)
        spend(client, clock, 3.0)
        runtime = client.app.state.llmpulse.alerts  # type: ignore[attr-defined]
        wait_until(lambda: runtime.evaluator.passes >= 3, timeout=20)
        assert hook.bodies == []
        rules_file(tmp_path, alertmanager.url, hook.url, above=1.0)
        assert runtime.reload()
        wait_until(lambda: hook.statuses() == ["firing"], timeout=20)
        rules.write_text("rules: [{name: broken}]")
        assert not runtime.reload()
        health = client.get("/health").json()["alerts"]
        assert health["reload_errors"] == 1
        assert "broken" in health["last_reload_error"]
        listed = client.get("/v1/alerts/rules").json()
        assert [r["name"] for r in listed["rules"]] == ["cost-spike"]
        assert listed["rules"][0]["threshold"]["above"] == 1.0
        assert listed["notifiers"] == ["am", "hook"]
        assert SECRET not in json.dumps(listed)


def test_keys_scope_rules_and_alerts_to_their_tenant(tmp_path: Path, hook: Hook) -> None:
    db = tmp_path / "k.db"
    keys, _ = create_keys(f"sqlite:///{db}", ["acme", "beta"])
    rules = tmp_path / "alerts.yaml"
    rules.write_text(
        f"""
notifiers: [{{name: hook, type: webhook, url: "{hook.url}"}}]
rules:
  - name: acme-cost
    scope: {{tenant_id: acme}}
    threshold: {{metric: cost_usd, window: 5m, above: 1}}
    notify: [hook]
  - name: beta-cost
    scope: {{tenant_id: beta}}
    threshold: {{metric: cost_usd, window: 5m, above: 1}}
    notify: [hook]
"""
    )
    with ExitStack() as stack:
        client = start(stack, db, rules, Clock(), key_cache_s=0.2)
        beta = {"Authorization": f"Bearer {keys['beta']}"}
        assert [r["name"] for r in client.get("/v1/alerts/rules", headers=beta).json()["rules"]] == [
            "beta-cost"
        ]
        assert [a["rule"] for a in client.get("/v1/alerts", headers=beta).json()["alerts"]] == ["beta-cost"]
        assert client.get("/v1/alerts", params={"tenant_id": "acme"}, headers=beta).status_code == 403
        assert client.get("/v1/alerts").status_code == 401


def test_without_rules_the_endpoints_say_so(client: TestClient) -> None:
    answer = client.get("/v1/alerts")
    assert answer.status_code == 404
    assert "--alerts" in answer.json()["error"]
    assert client.get("/health").json()["alerts"] is None


def test_a_bad_rules_file_stops_the_server_from_starting(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(
        "rules:\n  - {name: r1, scope: {tenant_id: a}, threshold: {metric: cost, window: 5m, above: 1}}"
    )
    with pytest.raises(ValueError, match=r"rule 'r1': threshold\.metric"):
        ServerSettings(alerts_file=str(path))
    with pytest.raises(ValueError, match="LLMPULSE_ALERTS_FILE"):
        ServerSettings.from_env({"LLMPULSE_ALERTS_FILE": str(path)})
