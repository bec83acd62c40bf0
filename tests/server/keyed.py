"""Apps with API keys for the auth, limits and metrics tests: keys created in the store beforehand."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from llmpulse.server import ServerSettings, create_app
from llmpulse.store import Checkpoint, Store, WindowDelta, WindowKey

TENANTS = ("alpha", "beta")


@dataclass
class Keyed:
    """A started TestClient on a store holding one key per tenant."""

    client: TestClient
    store_url: str
    keys: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def auth(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    @property
    def state(self) -> Any:
        return self.client.app.state.llmpulse  # type: ignore[attr-defined]

    def logged_tenants(self) -> list[str | None]:
        log = self.state.log
        return [getattr(e, "tenant_id", None) for r in log.read(0, 0, 100_000) for e in r.events]


def create_keys(store_url: str, tenants: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """One key per tenant in the store at `store_url`: (tenant → key, tenant → key id)."""
    keys, ids = {}, {}
    with Store.open(store_url) as store:
        for tenant in tenants:
            info, key = store.keys.create(tenant)
            keys[tenant], ids[tenant] = key, info.key_id
    return keys, ids


MakeKeyed = Callable[..., Keyed]


def keyed_factory(stack: ExitStack, tmp_path: Path) -> MakeKeyed:
    """``make(tenants=TENANTS, **settings)``: keys for `tenants` (none: no keys), then a started app."""
    counter = iter(range(1000))

    def make(tenants: Iterable[str] = TENANTS, **overrides: Any) -> Keyed:
        url = f"sqlite:///{tmp_path / f'keyed{next(counter)}.db'}"
        keys, ids = create_keys(url, tenants)
        values: dict[str, Any] = {
            "db_url": url,
            "run_processor": False,
            "log_sync": "NORMAL",
            "key_cache_s": 0.2,
        }
        values.update(overrides)
        client = stack.enter_context(TestClient(create_app(ServerSettings(**values))))
        return Keyed(client, url, keys, ids)

    return make


def add_windows(store: Store, tenants: Iterable[str], *, requests: int = 3) -> None:
    """One recent window (five minutes ago) per tenant, written as a processor checkpoint would."""
    start = (int(time.time()) // 60 - 5) * 60
    windows = {}
    for tenant in tenants:
        delta = WindowDelta()
        delta.requests = requests
        windows[WindowKey(tenant, "chat", "gpt-4o-mini", start)] = delta
    store.commit(Checkpoint(consumer="test", windows=windows))


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def utc_now() -> datetime:
    return datetime.now(UTC)
