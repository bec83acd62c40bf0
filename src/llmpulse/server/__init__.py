"""The llmpulse server: an ASGI app with ingest, query and health endpoints, and a runner for it.

`create_app(settings)` builds the app (resources open in its lifespan); `run(settings)` serves it with
uvicorn until SIGTERM/SIGINT. See docs/api.md for the endpoints, docs/limits.md for the limits
(`RequestLimits`) and docs/security.md for API keys.

Errors: `ApiError` is what handlers raise to answer an error; every error answer is JSON
``{"error": "<message naming the field>"}``.
"""

from __future__ import annotations

from llmpulse.server._app import create_app
from llmpulse.server._errors import ApiError
from llmpulse.server._limits import RequestLimits
from llmpulse.server._run import run
from llmpulse.server._settings import ServerSettings, estimate_cost_from_env
from llmpulse.server._state import ServerState

__all__ = [
    "ApiError",
    "RequestLimits",
    "ServerSettings",
    "ServerState",
    "create_app",
    "estimate_cost_from_env",
    "run",
]
