"""Fuzzing the server against its own OpenAPI document with schemathesis: no answer is ever a 5xx.

Two real servers (uvicorn on loopback) answer valid and invalid requests that schemathesis generates
for every operation in ``/openapi.json``: one without keys on SQLite, one with keys for two tenants
(requests carry tenant alpha's key) on Postgres when one is reachable, else SQLite. Every answer must
be below 500, and every error a JSON ``{"error": ...}``; afterwards both processors must have
committed everything they were sent (nothing accepted may wedge them: a poison pill is a 5xx too).

``make test`` runs a short, derandomised pass (`DEFAULT_EXAMPLES` per operation and mode, a few hundred
requests); ``make fuzz`` a long random one (``LLMPULSE_FUZZ_EXAMPLES`` per operation).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from llmpulse.events import Limits
from llmpulse.server import ServerSettings, create_app
from llmpulse.server._limits import RequestLimits
from tests.postgres_server import fresh_databases
from tests.server.keyed import create_keys
from tests.server.live_server import live_server

#: Examples per operation in the short pass (``make test``).
DEFAULT_EXAMPLES = 20
EXAMPLES = int(os.environ.get("LLMPULSE_FUZZ_EXAMPLES") or DEFAULT_EXAMPLES)

_SETTINGS: dict[str, Any] = {
    "log_sync": "NORMAL",
    "checkpoint_interval_s": 0.05,
    # a small body limit so that generated bodies reach it; no rate limit so nothing is a 429 by luck
    "limits": Limits(max_body_bytes=256 * 1024, max_past_s=365 * 24 * 3600.0),
    "request_limits": RequestLimits(rate_limit_per_s=0.0),
}


@dataclass
class Served:
    """A fuzzed server: its schema as schemathesis loaded it, the headers to send, the app."""

    schema: Any
    headers: dict[str, str]
    app: FastAPI
    url: str


def _serve(tmp_path: Path, db: str, tenants: tuple[str, ...]) -> Iterator[Served]:
    keys, _ = create_keys(db, tenants)
    log = f"sqlite:///{tmp_path / 'fuzz.log.db'}"
    app = create_app(ServerSettings(db_url=db, log_url=log, **_SETTINGS))
    with live_server(app) as url:
        headers = {"Authorization": f"Bearer {keys['alpha']}"} if keys else {}
        yield Served(schemathesis.openapi.from_url(f"{url}/openapi.json"), headers, app, url)


@pytest.fixture(scope="module")
def open_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server without keys on SQLite: every endpoint reachable without a key."""
    tmp = tmp_path_factory.mktemp("fuzz-open")
    yield from _serve(tmp, f"sqlite:///{tmp / 'fuzz.db'}", ())


@pytest.fixture(scope="module")
def keyed_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server with keys for alpha and beta, on Postgres; requests use alpha's key."""
    tmp = tmp_path_factory.mktemp("fuzz-keyed")
    with fresh_databases("llmpulse_fuzz") as create:  # not the shared test database: store tests empty it
        yield from _serve(tmp, create(), ("alpha", "beta"))


def _operations() -> list[tuple[str, str]]:
    """(method, path) of every operation in the app's document, read without starting it."""
    document = create_app(ServerSettings()).openapi()
    return sorted((method.upper(), path) for path, ops in document["paths"].items() for method in ops)


OPERATIONS = _operations()


def _check(case: Any, headers: dict[str, str]) -> None:
    response = case.call(timeout=30, headers=headers)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} answered {response.status_code}: {response.text[:500]}\n"
        f"reproduce: {case.as_curl_command()}"
    )
    if response.status_code >= 400 and response.status_code != 405:
        content_type = response.headers.get("content-type") or [""]
        assert content_type[0].startswith("application/json"), response.text[:200]
        assert "error" in response.json()


def _recent(case: Any, now_too: bool) -> Any:
    """`case`, with the body's timestamps moved to now when `now_too` (random ones are mostly refused
    as too old or too new, so without this few generated events would get past validation)."""
    if not now_too:
        return case
    now = datetime.now(UTC).isoformat()
    items = case.body if isinstance(case.body, list) else [case.body]
    for item in items:
        if isinstance(item, dict) and "timestamp" in item:
            item["timestamp"] = now
    return case


def _fuzz(served: Served, method: str, path: str, examples: int) -> None:
    operation = served.schema[path][method]
    generated = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in GenerationMode))
    modes = st.builds(_recent, generated, st.booleans())

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=EXAMPLES == DEFAULT_EXAMPLES,  # the short pass is the same every run
        database=None,
    )
    @given(case=modes)
    def run(case: Any) -> None:
        _check(case, served.headers)

    run()


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_request_makes_the_server_fail(open_api: Served, method: str, path: str) -> None:
    _fuzz(open_api, method, path, EXAMPLES)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_no_request_with_a_key_makes_the_server_fail(keyed_api: Served, method: str, path: str) -> None:
    """Every operation again with tenant alpha's key: scoping, tenant rewriting and 403s on the way."""
    _fuzz(keyed_api, method, path, EXAMPLES)


@pytest.mark.parametrize("which", ["open_api", "keyed_api"])
def test_the_processors_commit_everything_they_were_sent(which: str, request: pytest.FixtureRequest) -> None:
    served: Served = request.getfixturevalue(which)
    state = served.app.state.llmpulse
    assert state.log.stats()["appended_events"] > 0, (
        "no generated event was accepted: the fuzz is too shallow"
    )
    assert state.runner.wait_committed(0, state.log.end_offset(0), 30), state.runner.stats()
    health = httpx.get(f"{served.url}/health", timeout=10).json()
    assert health["status"] == "ok", health
    assert health["processor"]["failures"] == 0, health


def test_the_document_covers_every_route(open_api: Served) -> None:
    paths = {result.ok().path for result in open_api.schema.get_all_operations()}
    assert {
        "/v1/events",
        "/v1/llm/request",
        "/v1/llm/response",
        "/v1/metrics",
        "/v1/metrics/summary",
    } <= paths
    assert {"/health", "/metrics", "/v1/stats"} <= paths
