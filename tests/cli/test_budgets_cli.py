"""``llmpulse budgets list|show|set|delete`` against a running server: the figures printed are the
server's (and equal what the ledger was told), errors are one line with exit status 1, and API keys
scope what the command sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmpulse.cli import main
from llmpulse.events import LLMCall
from llmpulse.server import ServerSettings, create_app
from llmpulse.store import Store
from llmpulse.testing import encode_batch_json
from tests.cli.conftest import Live
from tests.server.live_server import free_port, live_server


class Clock:
    """The server's budget clock, moved by the test (epoch seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def noon_zone(now: float) -> str:
    """A fixed-offset IANA zone where `now` is about local noon, so that a day period holds the
    minutes around `now` whatever the hour the test runs at."""
    offset = 12 - datetime.fromtimestamp(now, UTC).hour  # -11 … 12
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc/GMT-3 is UTC+3


@pytest.fixture
def clock(live: Live) -> Clock:
    clock = Clock(time.time())
    live.state.clock = clock
    return clock


def run(*args: str, url: str, key: str | None = None) -> int:
    extra = ["--url", url] + (["--api-key", key] if key else [])
    return main(["budgets", args[0], *extra, *args[1:]])


def reserve(url: str, budget: str, estimate: float) -> str:
    answer = httpx.post(
        f"{url}/v1/budgets/{budget}/reservations", json={"estimate_usd": estimate}, timeout=10
    )
    assert answer.status_code == 201, answer.text
    rid: str = answer.json()["reservation_id"]
    return rid


def commit(url: str, budget: str, rid: str, cost: float) -> None:
    answer = httpx.post(
        f"{url}/v1/budgets/{budget}/reservations/{rid}/commit", json={"cost_usd": cost}, timeout=10
    )
    assert answer.status_code == 200, answer.text


def post_calls(live: Live, at: float, n: int, **attrs: Any) -> None:
    when = datetime.fromtimestamp(at, UTC)
    events = [
        LLMCall(
            model="gpt-4o-mini",
            timestamp=when,
            input_tokens=1000,
            output_tokens=200,
            request_id=f"{attrs.get('feature', 'x')}-{i}",
            **attrs,
        )
        for i in range(n)
    ]
    answer = httpx.post(f"{live.url}/v1/events", content=encode_batch_json(events), timeout=10)
    assert answer.status_code == 200, answer.text
    live.wait_processed()


def row_of(out: str, budget_id: str) -> str:
    lines = [line for line in out.splitlines() if f" {budget_id} " in line]
    assert len(lines) == 1, out
    return lines[0]


def test_set_list_and_show_print_the_ledger_and_the_projection(
    live: Live, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = clock.now
    zone = noon_zone(t0)
    team_args = [
        "--amount",
        "5",
        "--period",
        "day",
        "--timezone",
        zone,
        "--tenant",
        "acme",
        "--feature",
        "chat",
    ]
    assert run("set", "team", *team_args, "--ttl", "7200", url=live.url) == 0
    out = capsys.readouterr().out
    assert "team" in out
    assert "$5.0000" in out
    u1_args = ["--amount", "2.5", "--period", "total", "--soft", "--tenant", "acme", "--user", "u1"]
    assert run("set", "u1", *u1_args, url=live.url) == 0
    capsys.readouterr()

    first, second, third = (reserve(live.url, "team", 0.5) for _ in range(3))
    commit(live.url, "team", first, 0.4)
    commit(live.url, "team", second, 0.7)  # 0.2 over its estimate
    post_calls(live, t0 - 60, 3, tenant_id="acme", feature="chat")
    post_calls(live, t0 - 60, 2, tenant_id="acme", feature="search")  # outside the scope
    clock.now = t0 + 1800  # half an hour later: $1.10 committed is $2.20 an hour

    api = httpx.get(f"{live.url}/v1/budgets", timeout=10).json()
    assert run("list", "--json", url=live.url) == 0
    assert json.loads(capsys.readouterr().out) == api
    team = next(b for b in api["budgets"] if b["id"] == "team")
    assert team["committed_usd"] == pytest.approx(1.1)
    assert team["reserved_usd"] == pytest.approx(0.5)
    assert team["remaining_usd"] == pytest.approx(3.4)
    assert team["burn_usd_per_hour"] == pytest.approx(2.2)
    assert team["observed_requests"] == 3
    assert team["observed_usd"] > 0
    runs_out = datetime.fromtimestamp(t0 + 1800 + 3.4 / 2.2 * 3600, UTC)
    assert datetime.fromisoformat(team["projected_exhaustion_at"]) == pytest.approx(
        runs_out, abs=timedelta(seconds=1)
    )

    assert run("list", url=live.url) == 0
    out = capsys.readouterr().out
    line = row_of(out, "team")
    expected = ["acme · feature chat", f"day ({zone})", "hard", "$5.0000", "$1.1000", "$0.5000", "$3.4000"]
    expected += [f"${team['observed_usd']:,.4f}", "$2.2000", runs_out.strftime("%Y-%m-%d %H:%M UTC")]
    for text in expected:
        assert text in line, (text, line)
    line = row_of(out, "u1")
    for text in ("acme · user u1", "total", "soft", "$2.5000", "not at this rate"):
        assert text in line, (text, line)

    assert run("show", "team", url=live.url) == 0
    out = capsys.readouterr().out
    assert "overrun" in out
    assert "$0.2000" in out
    assert "in 3 calls" in out
    assert "7200 s" in out
    assert run("show", "team", "--json", url=live.url) == 0
    assert json.loads(capsys.readouterr().out) == team

    commit(live.url, "team", third, 3.9)  # committed $5.00: nothing left
    assert run("list", "--tenant", "acme", url=live.url) == 0
    assert "exhausted" in row_of(capsys.readouterr().out, "team")
    assert run("list", "--tenant", "globex", url=live.url) == 0
    assert "no budgets for tenant 'globex'" in capsys.readouterr().out


def test_set_replaces_and_delete_removes(
    live: Live, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("set", "b", "--amount", "1", "--tenant", "acme", "--json", url=live.url) == 0
    created = json.loads(capsys.readouterr().out)
    assert (created["period"], created["hard"], created["scope"]) == ("month", True, {"tenant_id": "acme"})
    week = ["--amount", "3", "--period", "week", "--soft", "--tenant", "acme", "--environment", "prod"]
    assert run("set", "b", *week, "--json", url=live.url) == 0
    replaced = json.loads(capsys.readouterr().out)
    assert replaced == httpx.get(f"{live.url}/v1/budgets/b", timeout=10).json()
    assert (replaced["amount_usd"], replaced["period"], replaced["hard"]) == (3.0, "week", False)
    assert replaced["scope"] == {"tenant_id": "acme", "environment": "prod"}

    assert run("delete", "b", url=live.url) == 0
    assert "deleted budget 'b'" in capsys.readouterr().err
    assert httpx.get(f"{live.url}/v1/budgets/b", timeout=10).status_code == 404
    assert run("list", url=live.url) == 0
    assert capsys.readouterr().out.strip() == "no budgets"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("set", "b", "--amount", "1", "--tenant", "acme", "--timezone", "Mars/Olympus"),
            "422: field timezone",
        ),
        (("set", "b", "--amount", "0", "--tenant", "acme"), "amount_usd"),
        (("set", "b", "--amount", "1"), "answered 422: field `scope.tenant_id` is required"),
        (("set", "b", "--amount", "1", "--tenant", "acme", "--ttl", "999999"), "reservation_ttl_s"),
        (("set", "no/such", "--amount", "1", "--tenant", "acme"), "answered 4"),
        (("show", "nope"), "answered 404: no budget 'nope'"),
        (("delete", "nope"), "answered 404: no budget 'nope'"),
    ],
)
def test_server_errors_are_one_line_and_exit_1(
    live: Live, args: tuple[str, ...], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(*args, url=live.url) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"llmpulse budgets: error: {'PUT' if args[0] == 'set' else ''}"), err
    assert expected in err, err
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert httpx.get(f"{live.url}/v1/budgets", timeout=10).json() == {"budgets": []}


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (
        ["set", "b", "--amount", "1", "--period", "year"],
        ["set", "b"],
        ["set", "b", "--amount", "-1"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(["budgets", *args])
        assert exc.value.code == 2
        assert "llmpulse budgets set: error:" in capsys.readouterr().err


def test_no_server_is_one_line_and_exit_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "llmpulse.cli", "budgets", "list", "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LLMPULSE_API_KEY": ""},
    )
    assert done.returncode == 1
    assert done.stderr.startswith("llmpulse budgets: error: cannot reach")
    assert done.stderr.count("\n") == 1


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A server with API keys for acme and globex: (base URL, acme's key, globex's key)."""
    db = f"sqlite:///{tmp_path / 'keys.db'}"
    with Store.open(db) as store:
        _, acme = store.keys.create("acme")
        _, globex = store.keys.create("globex")
    settings = ServerSettings(db_url=db, run_processor=False, log_sync="NORMAL", key_cache_s=0.2)
    with live_server(create_app(settings)) as url:
        yield url, acme, globex


def test_an_api_key_sees_and_sets_only_its_tenants_budgets(
    keyed: tuple[str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url, acme, globex = keyed
    assert run("set", "a", "--amount", "1", "--json", url=url, key=acme) == 0  # the key's tenant
    assert json.loads(capsys.readouterr().out)["scope"] == {"tenant_id": "acme"}
    assert run("set", "g", "--amount", "2", url=url, key=globex) == 0
    capsys.readouterr()

    assert run("set", "x", "--amount", "1", "--tenant", "globex", url=url, key=acme) == 1
    assert "answered 403" in capsys.readouterr().err
    assert run("show", "g", url=url, key=acme) == 1  # another tenant's is as if it did not exist
    assert "answered 404: no budget 'g'" in capsys.readouterr().err
    assert run("delete", "g", url=url, key=acme) == 1
    capsys.readouterr()

    assert run("list", "--json", url=url, key=acme) == 0
    assert [b["id"] for b in json.loads(capsys.readouterr().out)["budgets"]] == ["a"]
    assert run("list", url=url) == 1
    assert "answered 401" in capsys.readouterr().err
    assert run("list", "--json", url=url, key=globex) == 0
    assert [b["id"] for b in json.loads(capsys.readouterr().out)["budgets"]] == ["g"]
