"""Fixtures for the server tests: settings on temporary files, app clients, event bodies, fake logs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llmpulse.events import Event, Limits
from llmpulse.pipeline import LogBackpressure, LogClosed, LogRecord
from llmpulse.server import ServerSettings, create_app


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def now_iso(offset_s: float = 0.0) -> str:
    return iso(datetime.now(UTC) + timedelta(seconds=offset_s))


def request_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "request_id": "req-1",
        "tenant_id": "acme",
        "route": "chat",
        "model": "gpt-4o-mini",
        "timestamp": now_iso(-5),
        "prompt_tokens": 321,
        "user_id_hash": "u1",
        "metadata": {"experiment": "v3"},
    }
    body.update(overrides)
    return body


def response_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "request_id": "req-1",
        "timestamp": now_iso(-4),
        "latency_ms": 1123.5,
        "completion_tokens": 512,
        "finish_reason": "stop",
        "error": None,
    }
    body.update(overrides)
    return body


def call_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "llm.call",
        "model": "gpt-4o-mini",
        "timestamp": now_iso(-3),
        "input_tokens": 100,
        "output_tokens": 20,
        "tenant_id": "acme",
        "route": "chat",
        "latency_ms": 250.0,
    }
    body.update(overrides)
    return body


class RaisingLog:
    """An event log whose `append` raises the given error (and otherwise holds nothing)."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.closed = False

    async def append(self, events: Sequence[Event], payload: bytes | None = None) -> None:
        raise self.error

    def partitions(self) -> list[int]:
        return [0]

    def read(self, partition: int, offset: int, max_records: int) -> list[LogRecord]:
        return []

    def end_offset(self, partition: int) -> int:
        return 1

    def close(self) -> None:
        self.closed = True


def backpressure(retry_after_s: float = 2.5) -> RaisingLog:
    return RaisingLog(LogBackpressure("too many pending events", retry_after_s=retry_after_s))


def closed_log() -> RaisingLog:
    return RaisingLog(LogClosed("closed"))


@pytest.fixture
def settings(tmp_path: Path) -> ServerSettings:
    """Settings on temporary files, without the processor (the ingest tests only need the log)."""
    return ServerSettings(db_url=f"sqlite:///{tmp_path / 'store.db'}", run_processor=False, log_sync="NORMAL")


MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[MakeClient]:
    """Build a started TestClient: ``make_client(limits=..., log=..., run_processor=...)``."""
    with ExitStack() as stack:
        counter = iter(range(1000))

        def make(*, log: Any = None, limits: Limits | None = None, **overrides: Any) -> TestClient:
            n = next(counter)
            values: dict[str, Any] = {
                "db_url": f"sqlite:///{tmp_path / f'store{n}.db'}",
                "run_processor": False,
                "log_sync": "NORMAL",
            }
            if limits is not None:
                values["limits"] = limits
            values.update(overrides)
            app = create_app(ServerSettings(**values), log=log)
            return stack.enter_context(TestClient(app))

        yield make


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    """A started client with default limits, a real SQLite log and store, no processor."""
    return make_client()


def logged(client: TestClient) -> list[Event]:
    """Every event in the app's log, in order."""
    log = client.app.state.llmpulse.log  # type: ignore[attr-defined]
    return [event for record in log.read(0, 0, 100_000) for event in record.events]
