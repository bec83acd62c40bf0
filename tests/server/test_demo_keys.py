"""``serve --demo`` against a store with API keys: the demo's own traffic is accepted, nobody else's
is, and its token opens nothing but ingest."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from llmpulse.events import LLMRequest
from llmpulse.server import ServerSettings, create_app
from tests.server.keyed import create_keys
from tests.server.live_server import free_port, live_server


def test_demo_traffic_is_accepted_when_keys_are_configured(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'demo.db'}"
    keys, _ = create_keys(db_url, ["alpha"])
    port = free_port()
    app = create_app(ServerSettings(db_url=db_url, log_sync="NORMAL", demo=True, port=port))
    with live_server(app, port=port) as url:
        state = app.state.llmpulse
        assert state.gate.keys_required
        deadline = time.monotonic() + 15
        while state.log.end_offset(0) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        events = [e for r in state.log.read(0, 0, 1000) for e in r.events]
        refused_before = state.gate.unauthorized
        # everybody else still needs a key, on ingest and on queries
        anonymous = httpx.post(f"{url}/v1/events", json=[], timeout=5)
        token = state.gate.demo_token()
        as_demo = {"Authorization": f"Bearer {token}"}
        query = httpx.get(f"{url}/v1/metrics", params={"tenant_id": "tenant-1"}, headers=as_demo, timeout=5)
        keyed = httpx.get(
            f"{url}/v1/metrics", headers={"Authorization": f"Bearer {keys['alpha']}"}, timeout=5
        )
    assert len(events) >= 4
    # the demo's tenants are kept (a key's tenant would have replaced them)
    assert {e.tenant_id for e in events if isinstance(e, LLMRequest)} <= {"tenant-1", "tenant-2", "tenant-3"}
    assert refused_before == 0  # not one demo post was refused
    assert anonymous.status_code == 401
    assert query.status_code == 401  # the demo's token is for ingest only
    assert keyed.status_code == 200
