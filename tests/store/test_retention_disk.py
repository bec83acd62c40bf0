"""SQLite space reuse: under steady traffic with pruning, the database file stops growing.

Deleted pages go to SQLite's freelist and later inserts take them, so once the oldest data kept is
as old as the policy allows, each round frees about as many pages as it fills. The clock is fake:
each round is three hours of traffic committed at once, then a prune at the round's end.

The traffic is the same every hour (request ids are random, as real clients' are):
the file's size is the high-water mark of the live data plus one round's churn, and with payload
sizes that vary at random that mark creeps up like a running maximum (a scratch run with random
histogram and metadata sizes grew 590 → 596 pages between rounds 32 and 96, then stayed flat).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from llmpulse.store import Checkpoint, RetentionPolicy, Store, WindowKey, prune, roll_up
from tests.store.conftest import make_delta, make_record

HOUR = 3600
ROUNDS = 64
#: Shortest retentions the policy allows (minutes and calls a day; hours 2, days 3): steady after day 3.
POLICY = RetentionPolicy(calls_days=1, minutes_days=1, hours_days=2, days_days=3, batch_rows=500)


def _feed_hour(store: Store, rnd: random.Random, start: int) -> None:
    windows = {
        WindowKey(tenant, route, "gpt-4o-mini", start + 60 * m): make_delta(
            requests=3, latencies=[100.0 * (1 + m % 7), 250.0 * (1 + m % 5), 1800.0]
        )
        for m in range(60)
        for tenant in ("acme", "globex")
        for route in ("chat", "search")
    }
    calls = {}
    for i in range(100):
        tenant = rnd.choice(("acme", "globex"))
        request_id = f"req-{rnd.getrandbits(64):016x}"  # random ids, as clients send
        metadata = json.dumps({"note": "x" * 200})
        calls[(tenant, request_id)] = make_record(
            tenant, request_id, started_at=start + 36.0 * i, metadata=metadata
        )
    store.commit(Checkpoint("c", windows=windows, calls=calls))


def _file_pages(store: Store, path: Path) -> tuple[int, int]:
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the main file
        page_size = int(conn.exec_driver_sql("PRAGMA page_size").scalar_one())
        freelist = int(conn.exec_driver_sql("PRAGMA freelist_count").scalar_one())
    assert path.stat().st_size % page_size == 0
    return path.stat().st_size // page_size, freelist


def test_the_file_stops_growing_under_steady_traffic_with_pruning(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    rnd = random.Random(7)
    now = 1_800_000_000 - 1_800_000_000 % 86400
    pages: list[int] = []
    freelists: list[int] = []
    with Store.open(f"sqlite:///{path}") as store:
        for _ in range(ROUNDS):
            for _ in range(3):
                _feed_hour(store, rnd, now)
                now += HOUR
            roll_up(store, now)  # as the pruner's thread does before each prune
            prune(store, POLICY, now)
            n, free = _file_pages(store, path)
            pages.append(n)
            freelists.append(free)

    half, quarter = ROUNDS // 2, 3 * ROUNDS // 4
    assert pages[7] > pages[1]  # the traffic does fill the file at first
    # the second half grows by a few pages at most while the last rollups settle (0.7 %), and the
    # last quarter not at all (the rollups' tenant totals add a row per tenant and bucket)
    assert max(pages[half - 1 :]) - pages[half - 1] <= 4, pages
    assert max(pages[quarter - 1 :]) - pages[quarter - 1] <= 2, pages
    assert abs(pages[-1] - pages[quarter - 1]) <= 2, pages
    assert min(freelists[half:]) > 0  # pages are freed and then reused, not only appended


def test_commits_alone_keep_the_call_records_flat_past_their_retention(tmp_path: Path) -> None:
    """No prune at all: each commit deletes its tenants' records past the calls retention
    (`Checkpoint.expire_calls_before`), so the call records stop growing once the oldest kept is as
    old as the retention, and the file with them."""
    path = tmp_path / "store.db"
    rnd = random.Random(11)
    now = 1_800_000_000 - 1_800_000_000 % 86400
    kept_s = 86400.0
    pages: list[int] = []
    with Store.open(f"sqlite:///{path}") as store:
        for _ in range(48):  # two days of hourly commits, 100 records each
            calls = {}
            for i in range(100):
                tenant = rnd.choice(("acme", "globex"))
                rid = f"req-{rnd.getrandbits(64):016x}"
                calls[(tenant, rid)] = make_record(tenant, rid, started_at=now + 36.0 * i, metadata="{}")
            now += HOUR
            store.commit(Checkpoint("c", calls=calls, expire_calls_before=now - kept_s))
            pages.append(_file_pages(store, path)[0])
        with store.engine.connect() as conn:
            oldest, count = conn.exec_driver_sql("SELECT MIN(started_at), COUNT(*) FROM calls").one()
    assert oldest >= now - kept_s - HOUR  # nothing older than the retention (and the hour in flight)
    assert count <= 25 * 100
    assert pages[30] > pages[5]  # the first day fills the file
    assert max(pages[30:]) - pages[30] <= 2, pages
