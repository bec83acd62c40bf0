"""The running server's dependencies, kept in ``app.state.llmpulse`` (never in module globals)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request

from llmpulse.server._errors import ApiError
from llmpulse.server._settings import ServerSettings

if TYPE_CHECKING:
    from llmpulse.pipeline import EventLog, ProcessorRunner
    from llmpulse.store import Store


@dataclass(slots=True)
class ServerState:
    """The running server's dependencies, kept in ``app.state.llmpulse``.

    `log` and `store` are set before requests are served (at startup, or by the caller); `runner` is
    None unless the processor runs in this process.
    """

    settings: ServerSettings
    log: EventLog | None = None
    store: Store | None = None
    runner: ProcessorRunner | None = None
    started_at: float = field(default_factory=time.time)
    demo_url: str | None = None

    def require_log(self) -> EventLog:
        """The event log, or an `ApiError` 503 while the server is not ready."""
        if self.log is None:
            raise ApiError(503, "the event log is not open yet", headers={"Retry-After": "1"})
        return self.log

    def require_store(self) -> Store:
        """The store, or an `ApiError` 503 while the server is not ready."""
        if self.store is None:
            raise ApiError(503, "the store is not open yet", headers={"Retry-After": "1"})
        return self.store


def server_state(request: Request) -> ServerState:
    """The `ServerState` of the app serving `request`."""
    state: ServerState = request.app.state.llmpulse
    return state
