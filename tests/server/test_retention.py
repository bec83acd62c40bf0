"""Retention in the server: settings from the environment and ``serve`` flags, the pruner the
lifespan starts and stops, the embedded log's retention, and what ``/health`` shows."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from llmpulse.cli import build_parser, main
from llmpulse.cli._serve import settings_from_args
from llmpulse.server import ServerSettings, create_app
from llmpulse.server._health import collect
from llmpulse.server._state import ServerState
from llmpulse.store import Checkpoint, RetentionPolicy, WindowKey
from tests.server.conftest import MakeClient
from tests.store.conftest import make_delta, make_record

DAY = 86400.0


def test_server_settings_read_the_retention_variables() -> None:
    env = {
        "LLMPULSE_RETENTION_CALLS_DAYS": "90",
        "LLMPULSE_RETENTION_MINUTES_DAYS": "7",
        "LLMPULSE_RETENTION_HOURS_DAYS": "180",
        "LLMPULSE_RETENTION_DAYS_DAYS": "3650",
        "LLMPULSE_RETENTION_LOG_S": "120",
        "LLMPULSE_PRUNE_INTERVAL_S": "30",
        "LLMPULSE_PRUNE_BATCH_ROWS": "200",
    }
    settings = ServerSettings.from_env(env)
    assert settings.retention == RetentionPolicy(90, 7, 180, 3650, 120, 30, 200)
    assert ServerSettings.from_env({}).retention == RetentionPolicy()
    assert ServerSettings().retention == RetentionPolicy()


def test_a_bad_retention_variable_is_named() -> None:
    with pytest.raises(
        ValueError,
        match=r"^LLMPULSE_RETENTION_HOURS_DAYS: minutes_days .14 days. must not exceed hours_days .10 days.",
    ):
        ServerSettings.from_env({"LLMPULSE_RETENTION_HOURS_DAYS": "10"})
    with pytest.raises(ValueError, match=r"^LLMPULSE_PRUNE_BATCH_ROWS must be an integer"):
        ServerSettings.from_env({"LLMPULSE_PRUNE_BATCH_ROWS": "lots"})


def test_serve_flags_override_the_retention_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMPULSE_RETENTION_CALLS_DAYS", "90")
    monkeypatch.setenv("LLMPULSE_PRUNE_INTERVAL_S", "30")
    parser = build_parser()
    assert settings_from_args(parser.parse_args(["serve"])).retention.calls_days == 90
    args = parser.parse_args(
        [
            "serve",
            "--retention-calls",
            "7",
            "--retention-minutes",
            "2",
            "--retention-hours",
            "30",
            "--retention-days",
            "0",
            "--retention-log",
            "900",
            "--prune-interval",
            "0",
            "--prune-batch",
            "50",
        ]
    )
    assert settings_from_args(args).retention == RetentionPolicy(7, 2, 30, 0, 900, 0, 50)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--retention-calls", "0.5"], "--retention-calls: calls_days must be 0 (forever) or at least 1 day"),
        (["--retention-minutes", "500"], "--retention-minutes: minutes_days (500 days) must not exceed"),
        (["--prune-batch", "0"], "expected a positive integer"),
        (["--retention-log", "-5"], "expected a finite number >= 0"),
    ],
)
def test_bad_retention_flags_exit_2_naming_the_flag(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import llmpulse.cli._serve as serve_module

    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(serve_module, "run_server", lambda settings: pytest.fail("must not serve"))
    with pytest.raises(SystemExit) as caught:
        main(["serve", *argv])
    assert caught.value.code == 2
    assert fragment in " ".join(capsys.readouterr().err.split())


def test_health_shows_the_policy_and_the_last_prune(make_client: MakeClient) -> None:
    client = make_client(retention=RetentionPolicy(calls_days=30, minutes_days=14, interval_s=3600))
    state: ServerState = client.app.state.llmpulse  # type: ignore[attr-defined]
    assert state.store is not None
    assert state.pruner is not None
    now = time.time()
    old, young = now - 40 * DAY, now - 60
    state.store.commit(
        Checkpoint(
            "c",
            windows={
                WindowKey("acme", "chat", "m", int(old // 60 * 60)): make_delta(requests=1),
                WindowKey("acme", "chat", "m", int(young // 60 * 60)): make_delta(requests=1),
            },
            calls={
                ("acme", "old"): make_record("acme", "old", started_at=old),
                ("acme", "new"): make_record("acme", "new", started_at=young),
            },
        )
    )
    before = client.get("/health").json()["retention"]
    assert before["policy"]["calls_days"] == 30
    assert before["kept_days"] == {"calls": 30, "windows": 14, "rollups_hour": 396, "rollups_day": None}
    assert before["log_kept_s"] == 3600
    assert before["pruner"]["alive"] is True
    assert before["pruner"]["runs"] == 0
    assert before["pruner"]["last"] is None

    state.pruner.run_once()  # what the thread does every interval

    retention = client.get("/health").json()["retention"]
    last = retention["pruner"]["last"]
    assert last["deleted"] == {"calls": 1, "windows": 1, "rollups_hour": 0, "rollups_day": 0}
    assert last["oldest_kept"]["calls"] == pytest.approx(young)
    assert last["oldest_kept"]["windows"] == young // 60 * 60
    assert last["oldest_kept"]["rollups_day"] == old // DAY * DAY
    assert last["at"] == pytest.approx(time.time(), abs=60)
    assert last["complete"] is True
    assert retention["pruner"]["runs"] == 1
    assert retention["pruner"]["deleted_total"]["calls"] == 1


def test_the_lifespan_stops_the_pruner_and_gives_the_log_its_retention(tmp_path: Path) -> None:
    settings = ServerSettings(
        db_url=f"sqlite:///{tmp_path / 'store.db'}",
        run_processor=False,
        log_sync="NORMAL",
        retention=RetentionPolicy(log_s=120, interval_s=3600),
    )
    app = create_app(settings)
    with TestClient(app):
        state: ServerState = app.state.llmpulse
        pruner = state.pruner
        assert pruner is not None
        assert pruner.alive
        assert state.log._retention_s == 120  # type: ignore[union-attr]
        started = time.monotonic()
    assert time.monotonic() - started < 5  # the pruner's hour-long wait did not hold shutdown
    assert not pruner.alive
    assert state.pruner is None


def test_no_pruner_when_the_interval_is_0(make_client: MakeClient) -> None:
    client = make_client(retention=RetentionPolicy(interval_s=0))
    assert client.app.state.llmpulse.pruner is None  # type: ignore[attr-defined]
    retention = client.get("/health").json()["retention"]
    assert retention["pruner"] is None
    assert retention["policy"]["interval_s"] == 0


def test_in_kafka_mode_health_says_the_topics_keep_the_log() -> None:
    state = ServerState(settings=ServerSettings(broker_url="kafka://127.0.0.1:9", run_processor=False))
    _, body = collect(state)
    assert body["retention"]["log_kept_s"] is None
    assert "retention.ms" in body["retention"]["log_kept_by"]
