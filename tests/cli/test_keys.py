"""``llmpulse keys`` as processes against a running server, and ``serve``'s refusal to listen beyond
loopback without keys."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmpulse.cli import main
from llmpulse.server import ServerSettings, create_app
from llmpulse.store import Store
from tests.server.live_server import free_port, live_server


def llmpulse(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmpulse.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A server on a SQLite store with a 0.2 s key cache: (base URL, store URL)."""
    db = f"sqlite:///{tmp_path / 'keys.db'}"
    settings = ServerSettings(db_url=db, run_processor=False, log_sync="NORMAL", key_cache_s=0.2)
    with live_server(create_app(settings)) as url:
        yield url, db


def _wait_status(url: str, expected: int, **kwargs: Any) -> httpx.Response:
    deadline = time.monotonic() + 10
    while True:
        response = httpx.get(url, timeout=5, **kwargs)
        if response.status_code == expected or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def test_create_list_revoke_against_a_running_server(
    served: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url, db = served
    metrics = f"{url}/v1/metrics"
    assert httpx.get(metrics, params={"tenant_id": "acme"}, timeout=5).status_code == 200  # no keys yet

    created = llmpulse("keys", "create", "--tenant", "acme", "--db", db)
    assert created.returncode == 0, created.stderr
    key = created.stdout.splitlines()[-1]
    assert created.stdout == key + "\n"  # stdout is the key alone
    assert key.startswith("lp_")
    assert len(key) == 46
    assert key not in created.stderr
    combined = (created.stderr + created.stdout).splitlines()
    assert combined[-1] == key

    with Store.open(db) as store:  # the second key in-process: one subprocess per command is enough
        _, other = store.keys.create("globex")

    # the server enforces keys now: no key is 401, the key reads its own tenant only
    assert _wait_status(metrics, 401).status_code == 401
    auth = {"Authorization": f"Bearer {key}"}
    response = httpx.get(metrics, headers=auth, timeout=5)
    assert response.status_code == 200
    assert httpx.get(metrics, params={"tenant_id": "globex"}, headers=auth, timeout=5).status_code == 403

    listed = llmpulse("keys", "list", "--db", db)
    assert listed.returncode == 0, listed.stderr
    assert key not in listed.stdout + listed.stderr
    assert other not in listed.stdout + listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "TENANT", "CREATED", "LAST", "USED", "REVOKED"]
    assert [row.split()[1] for row in rows] == ["acme", "globex"]
    key_id = rows[0].split()[0]

    assert main(["keys", "list", "--db", db, "--json", "--tenant", "globex"]) == 0
    as_json = capsys.readouterr().out
    assert len(as_json.splitlines()) == 1
    assert '"tenant": "globex"' in as_json
    assert '"revoked": "-"' in as_json
    assert other not in as_json

    revoked = llmpulse("keys", "revoke", key_id, "--db", db)
    assert revoked.returncode == 0, revoked.stderr
    assert key_id in revoked.stdout
    refused = _wait_status(metrics, 401, headers=auth)
    assert refused.status_code == 401
    assert refused.json() == {"error": "unknown or revoked API key"}
    # the other tenant's key still works, and the listing shows the revocation
    assert httpx.get(metrics, headers={"Authorization": f"Bearer {other}"}, timeout=5).status_code == 200
    assert main(["keys", "list", "--db", db]) == 0
    after = capsys.readouterr().out.splitlines()
    assert after[1].split()[0] == key_id
    assert after[1].rstrip().endswith("Z")  # a revocation time
    assert after[2].rstrip().endswith("-")


def test_revoking_an_unknown_id_fails_and_a_bad_tenant_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    assert main(["keys", "revoke", "nope", "--db", db]) == 1
    assert "no API key has the id 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["keys", "create", "--tenant", "", "--db", db])
    assert usage.value.code == 2
    assert "tenant_id" in capsys.readouterr().err
    assert main(["keys", "list", "--db", db]) == 0
    assert capsys.readouterr().err.strip() == "no API keys"


def test_keys_use_llmpulse_db_when_no_flag_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("LLMPULSE_DB", db)
    assert main(["keys", "create", "--tenant", "from-env"]) == 0
    capsys.readouterr()
    monkeypatch.delenv("LLMPULSE_DB")
    assert main(["keys", "list", "--db", db]) == 0
    assert "from-env" in capsys.readouterr().out


# -- serve beyond loopback ---------------------------------------------------------------------------------


def test_serve_refuses_a_non_loopback_host_without_keys(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'exposed.db'}"
    started = time.monotonic()
    result = llmpulse("serve", "--host", "0.0.0.0", "--port", str(free_port()), "--db", db)
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0" in result.stderr
    assert "no API key is configured" in result.stderr
    assert "--insecure" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


def test_the_host_from_the_environment_is_checked_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _capture_serve(monkeypatch)
    monkeypatch.setenv("LLMPULSE_HOST", "::")
    assert main(["serve", "--db", f"sqlite:///{tmp_path / 'env.db'}"]) == 2
    assert seen == []


def _capture_serve(monkeypatch: pytest.MonkeyPatch) -> list[ServerSettings]:
    """Make `llmpulse serve` record its settings instead of listening (nothing binds in these tests)."""
    seen: list[ServerSettings] = []
    monkeypatch.setattr("llmpulse.cli._serve.run_server", seen.append)
    return seen


def test_insecure_lets_serve_start_beyond_loopback_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = _capture_serve(monkeypatch)
    db = f"sqlite:///{tmp_path / 'insecure.db'}"
    assert main(["serve", "--host", "0.0.0.0", "--db", db, "--insecure"]) == 0
    assert [s.host for s in seen] == ["0.0.0.0"]
    assert seen[0].insecure
    assert "--insecure" in capsys.readouterr().err
    monkeypatch.setenv("LLMPULSE_INSECURE", "1")
    assert main(["serve", "--host", "0.0.0.0", "--db", db]) == 0
    assert len(seen) == 2


def test_serve_listens_beyond_loopback_once_a_key_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _capture_serve(monkeypatch)
    db = f"sqlite:///{tmp_path / 'keyed.db'}"
    assert main(["serve", "--host", "0.0.0.0", "--db", db]) == 2
    assert main(["keys", "create", "--tenant", "acme", "--db", db]) == 0
    assert main(["serve", "--host", "0.0.0.0", "--db", db]) == 0
    assert main(["serve", "--host", "127.0.0.1", "--db", f"sqlite:///{tmp_path / 'other.db'}"]) == 0
    assert [s.host for s in seen] == ["0.0.0.0", "127.0.0.1"]


def test_serve_help_mentions_insecure() -> None:
    from llmpulse.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "--insecure" in sub.choices["serve"].format_help()
    assert {"create", "list", "revoke"} <= set(
        next(a for a in sub.choices["keys"]._actions if isinstance(a, argparse._SubParsersAction)).choices
    )


def test_client_commands_send_the_api_key_from_the_flag_or_the_environment(
    served: tuple[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, db = served
    monkeypatch.setenv("COLUMNS", "200")  # the CLI's messages are wrapped to the terminal's width
    with Store.open(db) as store:
        _, key = store.keys.create("acme")
    _wait_status(f"{url}/v1/metrics", 401)
    query = ["query", "--url", url, "--tenant", "acme", "--json"]

    assert main(query) != 0
    assert "401" in capsys.readouterr().err
    assert main([*query, "--api-key", key]) == 0
    assert '"metrics"' in capsys.readouterr().out
    assert main(["query", "--url", url, "--tenant", "globex", "--api-key", key]) != 0
    assert "403" in capsys.readouterr().err

    monkeypatch.setenv("LLMPULSE_API_KEY", key)
    events = tmp_path / "events.jsonl"
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    event = {"type": "llm.request", "request_id": "r1", "tenant_id": "globex", "route": "chat"}
    event |= {"model": "gpt-4o-mini", "timestamp": stamp, "prompt_tokens": 10}
    events.write_text(json.dumps(event) + "\n")
    assert main(["replay", str(events), "--url", url]) == 0
    assert "sent 1, accepted 1, rejected 0" in capsys.readouterr().err
    monkeypatch.delenv("LLMPULSE_API_KEY")
    assert main(["replay", str(events), "--url", url]) != 0  # without the key: refused
