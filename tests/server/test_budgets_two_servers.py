"""Two `llmpulse serve` processes on one Postgres serve the same hard budget: reservations raced
through both never take it past its amount (but for what commits exceeded their estimates)."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e._server import ServerProcess
from tests.postgres_server import suite_dsn
from tests.store.conftest import reset_postgres

AMOUNT = 5.0


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    dsn = suite_dsn()
    reset_postgres(dsn)
    started: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            workdir = tmp_path / name
            workdir.mkdir()
            log = f"sqlite:///{workdir / 'log.db'}"
            started.append(ServerProcess(workdir, "--db", dsn, "--log", log).start())
        yield started
    finally:
        for server in started:
            server.stop()


def test_two_servers_on_one_postgres_never_overspend_a_budget(servers: list[ServerProcess]) -> None:
    a, b = servers
    put = httpx.put(
        f"{a.url}/v1/budgets/shared",
        json={"amount_usd": AMOUNT, "period": "total", "scope": {"tenant_id": "acme"}},
        timeout=10,
    )
    assert put.status_code == 200
    totals: list[tuple[float, float]] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        committed = overrun = 0.0
        with httpx.Client(timeout=30) as client:
            for _ in range(40):
                url = rng.choice((a.url, b.url))
                estimate = round(rng.uniform(0.02, 0.3), 6)
                answer = client.post(f"{url}/v1/budgets/shared/reservations", json={"estimate_usd": estimate})
                if answer.status_code == 409:
                    continue
                assert answer.status_code == 201, answer.text
                rid = answer.json()["reservation_id"]
                cost = round(estimate * rng.uniform(0.5, 1.2), 6)
                other = rng.choice((a.url, b.url))  # settle through either server
                done = client.post(
                    f"{other}/v1/budgets/shared/reservations/{rid}/commit", json={"cost_usd": cost}
                )
                assert done.status_code == 200, done.text
                committed += cost
                overrun += max(0.0, cost - estimate)
        with lock:
            totals.append((committed, overrun))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert len(totals) == 12
    view = httpx.get(f"{b.url}/v1/budgets/shared", timeout=10).json()
    committed = sum(c for c, _ in totals)
    overrun = sum(o for _, o in totals)
    assert view["committed_usd"] == pytest.approx(committed, abs=1e-6)
    assert view["overrun_usd"] == pytest.approx(overrun, abs=1e-6)
    assert view["committed_usd"] <= AMOUNT + view["overrun_usd"] + 1e-9
    assert view["committed_usd"] >= 0.95 * AMOUNT
    assert view["reserved_usd"] == 0.0
