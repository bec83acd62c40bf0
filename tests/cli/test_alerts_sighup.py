"""``llmpulse serve --alerts FILE`` as a process: SIGHUP reloads the rules file (a bad file keeps the
rules in force and is counted at ``/health``), and a bad file at start is a usage error naming the rule
and the field."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.live_server import free_port

ONE_RULE = """
rules:
  - name: cost-spike
    scope: {tenant_id: acme}
    labels: {severity: page}
    threshold: {metric: cost_usd, window: 5m, above: 20.0}
"""

TWO_RULES = (
    ONE_RULE
    + """
  - name: error-storm
    scope: {tenant_id: acme, route: chat}
    threshold: {metric: error_rate, window: 10m, above: 0.25, for: 1m}
"""
)

#: A rule whose threshold names a metric that does not exist.
BAD = """
rules:
  - name: broken-rule
    scope: {tenant_id: acme}
    threshold: {metric: dollars, window: 5m, above: 1}
"""


def serve(tmp_path: Path, rules: Path, port: int) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "llmpulse.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--db", f"sqlite:///{tmp_path / 'alerts.db'}", "--alerts", str(rules)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def poll(check: Callable[[], bool], what: str, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    """Call `check` until it holds; fail naming `what` after `timeout` or when the server exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, f"the server exited ({proc.returncode}): {proc.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "alerts.yaml"
    path.write_text(ONE_RULE)
    return path


@pytest.fixture
def server(tmp_path: Path, rules: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    proc = serve(tmp_path, rules, port)
    url = f"http://127.0.0.1:{port}"
    try:
        poll(lambda: httpx.get(f"{url}/health", timeout=1).status_code == 200, "the server to start", proc)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def rule_names(url: str) -> list[str]:
    answer = httpx.get(f"{url}/v1/alerts/rules", timeout=5)
    assert answer.status_code == 200, answer.text
    return [r["name"] for r in answer.json()["rules"]]


def alerts_health(url: str) -> dict[str, Any]:
    health: dict[str, Any] = httpx.get(f"{url}/health", timeout=5).json()["alerts"]
    return health


def test_sighup_puts_the_edited_file_in_force_and_a_bad_file_keeps_the_rules(
    server: tuple[str, subprocess.Popen[str]], rules: Path
) -> None:
    url, proc = server
    assert rule_names(url) == ["cost-spike"]
    assert alerts_health(url)["reloads"] == 0

    rules.write_text(TWO_RULES)
    proc.send_signal(signal.SIGHUP)
    poll(lambda: rule_names(url) == ["cost-spike", "error-storm"], "the new rule", proc)
    listed = {r["name"]: r for r in httpx.get(f"{url}/v1/alerts/rules", timeout=5).json()["rules"]}
    assert listed["error-storm"]["scope"] == {"tenant_id": "acme", "route": "chat"}
    assert listed["error-storm"]["threshold"]["above"] == 0.25
    health = alerts_health(url)
    assert (health["rules"], health["reloads"], health["reload_errors"]) == (2, 1, 0)
    states = httpx.get(f"{url}/v1/alerts", timeout=5).json()
    assert [a["rule"] for a in states["alerts"]] == ["cost-spike", "error-storm"]

    rules.write_text(BAD)
    proc.send_signal(signal.SIGHUP)
    poll(lambda: alerts_health(url)["reload_errors"] == 1, "the failed reload to be counted", proc)
    health = alerts_health(url)
    assert "broken-rule" in health["last_reload_error"]
    assert "threshold.metric" in health["last_reload_error"]
    assert (health["rules"], health["reloads"]) == (2, 1)
    assert rule_names(url) == ["cost-spike", "error-storm"]  # the rules in force stay

    # and the server still answers, then stops cleanly
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "broken-rule" in err  # the failed reload was logged


def test_a_bad_rules_file_at_start_exits_with_status_2_naming_the_rule_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    proc = serve(tmp_path, bad, free_port())
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    assert "bad.yaml" in err
    assert "rule 'broken-rule'" in err
    assert "threshold.metric" in err
    assert len(err.strip().splitlines()) == 1, err  # one line, like every usage error
