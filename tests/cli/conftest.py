"""Fixtures for the CLI tests: a real server (uvicorn in a thread) on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from llmpulse.events import Event, Limits
from llmpulse.server import ServerSettings, create_app
from tests.server.live_server import live_server


@dataclass
class Live:
    """A running server: its base URL and its app (to look into the log and the store)."""

    url: str
    app: FastAPI

    @property
    def state(self) -> Any:
        return self.app.state.llmpulse

    def logged(self) -> list[Event]:
        return [e for r in self.state.log.read(0, 0, 1_000_000) for e in r.events]

    def wait_processed(self, timeout: float = 20.0) -> None:
        assert self.state.runner.wait_committed(0, self.state.log.end_offset(0), timeout)


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    monkeypatch.setenv("COLUMNS", "200")
    settings = ServerSettings(
        db_url=f"sqlite:///{tmp_path / 'cli.db'}",
        log_sync="NORMAL",
        checkpoint_interval_s=0.05,
        limits=Limits(max_past_s=365 * 24 * 3600.0),
    )
    app = create_app(settings)
    with live_server(app) as url:
        yield Live(url, app)
