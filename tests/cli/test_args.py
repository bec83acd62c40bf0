"""Argument handling: usage errors exit 2 with one line, flags and environment build the settings."""

from __future__ import annotations

from typing import Any

import pytest

import llmpulse.cli._serve as serve_module
from llmpulse import __version__
from llmpulse.cli import build_parser, main
from llmpulse.cli._serve import settings_from_args
from llmpulse.server import ServerSettings


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    code = caught.value.code
    assert isinstance(code, int)
    return code


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"llmpulse {__version__}"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["serve", "--port", "abc"],
        ["serve", "--port", "70000"],
        ["serve", "--log-sync", "SOMETIMES"],
        ["serve", "--max-event-age", "-1"],
        ["serve", "--orphan-timeout", "nan"],
        ["demo", "--requests", "0"],
        ["demo", "--error-rate", "1.5"],
        ["demo", "--rate", "fast"],
        ["replay"],
        ["replay", "x.jsonl", "--batch-size", "0"],
        ["query"],
        ["query", "--tenant", "t", "--limit", "-2"],
    ],
)
def test_argument_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err
    assert err.count("\n") == 1  # one line, no usage dump, no traceback


def test_bad_setting_from_a_flag_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(serve_module, "run_server", lambda settings: pytest.fail("must not serve"))
    assert _exit_code(["serve", "--orphan-timeout", "0"]) == 2
    err = capsys.readouterr().err
    assert "orphan_timeout_s must be positive" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("HTTP_PORT", "eighty", "HTTP_PORT"),
        ("LLMPULSE_LOG_SYNC", "maybe", "log_sync"),
        ("HTTP_PORT", "99999", "port"),
    ],
)
def test_bad_environment_variable_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str, fragment: str
) -> None:
    monkeypatch.setattr(serve_module, "run_server", lambda settings: pytest.fail("must not serve"))
    monkeypatch.setenv(name, value)
    assert _exit_code(["serve"]) == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [
        ("--db", "mysql://db/x", "store URL"),
        ("--db", "llmpulse.db", "store URL"),
        ("--log", "/tmp/x.db", "log URL"),
    ],
)
def test_unusable_urls_exit_2_before_serving(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], flag: str, value: str, fragment: str
) -> None:
    monkeypatch.setattr(serve_module, "run_server", lambda settings: pytest.fail("must not serve"))
    assert _exit_code(["serve", flag, value]) == 2
    assert fragment in capsys.readouterr().err


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PORT", "9000")
    monkeypatch.setenv("POSTGRES_DSN", "postgresql://x@db/y")
    parser = build_parser()
    from_env = settings_from_args(parser.parse_args(["serve"]))
    assert from_env.port == 9000
    assert from_env.db_url == "postgresql://x@db/y"
    args = parser.parse_args(
        [
            "serve",
            "--port",
            "8181",
            "--db",
            "sqlite:///a.db",
            "--log",
            "sqlite:///b.db",
            "--demo",
            "--max-event-age",
            "86400",
            "--orphan-timeout",
            "60",
            "--log-sync",
            "normal",
            "--host",
            "0.0.0.0",
        ]
    )
    settings = settings_from_args(args)
    assert settings.port == 8181
    assert settings.host == "0.0.0.0"
    assert settings.db_url == "sqlite:///a.db"
    assert settings.resolved_log_url == "sqlite:///b.db"
    assert settings.demo is True
    assert settings.limits.max_past_s == 86400
    assert settings.orphan_timeout_s == 60
    assert settings.log_sync == "NORMAL"


def test_serve_runs_the_server_with_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.delenv("HTTP_PORT", raising=False)
    monkeypatch.setattr(serve_module, "run_server", seen.append)
    assert main(["serve", "--port", "8099", "--db", "sqlite:///z.db"]) == 0
    (settings,) = seen
    assert isinstance(settings, ServerSettings)
    assert (settings.port, settings.db_url, settings.demo) == (8099, "sqlite:///z.db", False)
