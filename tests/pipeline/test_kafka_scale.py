"""Scale-out at full size (issue 6): 100k events through every processing mode, and through five
SIGKILLs, against a real tansu broker and the machine's Postgres.

The fixtures and helpers (fresh Postgres databases, the broker, `_events`, `_produce`, the `Worker`
subprocesses, `_wait_for_oracle`) are those of `tests.pipeline.test_kafka_workers`, whose docstring
says why a test waits for a started worker's first assignment before stopping another.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from llmpulse.events import Event
from llmpulse.pipeline import ProcessorConfig, ProcessorRunner, SQLiteEventLog
from llmpulse.store import Store, metrics_row, roll_up
from llmpulse.store._tables import calls, processor_offsets, rollups_day, windows
from llmpulse.testing.traffic import iter_batches
from tests.kafka_broker import TansuBroker
from tests.oracle import Expected, expected_windows
from tests.pipeline.test_kafka_workers import (
    ORPHAN_TIMEOUT_S,
    Worker,
    _check_final,
    _events,
    _produce,
    _Producer,
    _wait_for_oracle,
    _workers,
    broker,  # noqa: F401  (a fixture)
    new_pg_database,  # noqa: F401  (a fixture: pg_url needs it)
    pg_databases,
    pg_url,  # noqa: F401  (a fixture)
)

#: Main pairs per run: with the duplicates, orphans, calls and the late tail of `_events`, a little over
#: 100,000 events for the seeds used here (asserted).
PAIRS = 49_000
TOTAL = 100_000
#: Float sums are added in a different order in each mode (one processor reading the log in order;
#: units reading their partitions, merged additively in the store), so only these fields may differ,
#: and by rounding alone.
FLOAT_SUM_FIELDS = frozenset({"avg_latency_ms", "avg_ttft_ms", "estimated_cost_usd"})
_NOW = datetime.now(UTC)

Row = dict[str, Any]
Rows = dict[tuple[str, str, str, str], Row]


def _rows(db: str, tenants: set[str]) -> Rows:
    """Every window of `tenants` as the `/v1/metrics` row the API would return, by window key."""
    with Store.open(db) as store:
        rows = [
            metrics_row(w, now=_NOW, final_after_s=60.0)
            for t in sorted(tenants)
            for w in store.query_windows(t, limit=100_000)
        ]
    return {(r["tenant_id"], r["route"], r["model"], r["window_start"]): r for r in rows}


def _records(db: str) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Every call record by (tenant, request id), without ``updated_at`` (the processor's clock)."""
    with Store.open(db) as store, store.engine.connect() as conn:
        rows = conn.execute(sa.select(*(c for c in calls.c if c.name != "updated_at"))).all()
    return {(r.tenant_id, r.request_id): tuple(r) for r in rows}


def _day_totals(db: str) -> dict[tuple[str, str, str], tuple[int, ...]]:
    """Per (tenant, route, model): requests, errors, prompt and completion tokens of the daily
    rollups and of the minute windows, side by side, once every hour is rolled up; (tenant, "", "")
    holds the tenant's sums of the minute windows beside its rollups' total rows."""
    out: dict[tuple[str, str, str], tuple[int, ...]] = {}
    with Store.open(db) as store:
        roll_up(store, time.time() + 2 * 86400)
    with Store.open(db) as store, store.engine.connect() as conn:
        tenants = sa.select(
            windows.c.tenant_id,
            sa.literal(""),
            sa.literal(""),
            sa.func.sum(windows.c.requests),
            sa.func.sum(windows.c.errors),
            sa.func.sum(windows.c.prompt_tokens),
            sa.func.sum(windows.c.completion_tokens),
        ).group_by(windows.c.tenant_id)
        for t, r, m, *sums in conn.execute(tenants):
            out[(t, r, m)] = tuple(int(x) for x in sums)
        for table in (windows, rollups_day):
            query = sa.select(
                table.c.tenant_id,
                table.c.route,
                table.c.model,
                sa.func.sum(table.c.requests),
                sa.func.sum(table.c.errors),
                sa.func.sum(table.c.prompt_tokens),
                sa.func.sum(table.c.completion_tokens),
            ).group_by(table.c.tenant_id, table.c.route, table.c.model)
            for t, r, m, *sums in conn.execute(query):
                out[(t, r, m)] = out.get((t, r, m), ()) + tuple(int(x) for x in sums)
    return out


def _differences(got: Rows, want: Rows, *, fields: set[str] | None = None) -> list[tuple[Any, ...]]:
    """(window key, field, got, want) wherever `got` differs from `want` (in `fields`, default all):
    exactly, except the float sums (within 1e-9 relative)."""
    assert set(got) == set(want), (
        f"missing {sorted(set(want) - set(got))[:5]}, unexpected {sorted(set(got) - set(want))[:5]}"
    )
    out: list[tuple[Any, ...]] = []
    for key, row in want.items():
        other = got[key]
        assert list(other) == list(row), key
        for field, value in row.items():
            if fields is not None and field not in fields:
                continue
            if field in FLOAT_SUM_FIELDS and value is not None and other[field] is not None:
                same = math.isclose(other[field], value, rel_tol=1e-9)
            else:  # integers, percentiles (one histogram, one nearest rank), keys, late counts: exact
                same = other[field] == value
            if not same:
                out.append((key, field, other[field], value))
    return out


def _late_figures(rows: Rows, cut: float) -> dict[str, int]:
    tail = [r for r in rows.values() if datetime.fromisoformat(r["window_start"]).timestamp() < cut]
    main = [r for r in rows.values() if datetime.fromisoformat(r["window_start"]).timestamp() >= cut]
    return {
        "late in main windows": sum(r["late_events"] for r in main),
        "late in late-tail windows": sum(r["late_events"] for r in tail),
        "late-tail requests − timeouts": sum(r["requests"] - r["timeouts"] for r in tail),
        "windows with late events": sum(1 for r in rows.values() if r["late_events"]),
    }


def _embedded_rows(tmp_path: Path, events: list[Event], expected: Expected) -> tuple[Rows, str]:
    """The events through the embedded mode (SQLite log, one in-process processor, SQLite store)."""
    log = SQLiteEventLog(f"sqlite:///{tmp_path / 'log.db'}", sync="NORMAL")
    db = f"sqlite:///{tmp_path / 'embedded.db'}"
    try:

        async def append() -> None:
            for batch in iter_batches(events, 500):
                await log.append(batch)

        asyncio.run(append())
        with Store.open(db) as store:
            runner = ProcessorRunner(log, store, ProcessorConfig(orphan_timeout_s=ORPHAN_TIMEOUT_S))
            runner.start()
            try:
                assert runner.wait_committed(0, log.end_offset(0), timeout=120), runner.stats()
                _wait_for_oracle(db, expected, [], timeout=30)  # the orphan timeouts, a commit later
            finally:
                runner.stop()
            assert runner.stats()["failures"] == 0, runner.stats()
    finally:
        log.close()
    return _rows(db, {k.tenant_id for k in expected.windows}), db


@dataclass
class ThreeModes:
    """One set of ~100k events through the embedded mode, one worker and three workers."""

    events: list[Event]
    expected: Expected
    rows: dict[str, Rows]
    records: dict[str, dict[tuple[str, str], tuple[Any, ...]]]
    day_totals: dict[str, dict[tuple[str, str, str], tuple[int, ...]]]

    @property
    def late_cut(self) -> float:
        """Windows starting before this (epoch s) are the late tail's: it is hours behind the main
        traffic, which spans 30 minutes up to the newest event."""
        return max(e.timestamp for e in self.events).timestamp() - 3600


@pytest.fixture(scope="module")
def three_modes(tmp_path_factory: pytest.TempPathFactory) -> ThreeModes:
    """Runs the three modes once for the module's tests (about a minute)."""
    tmp_path = tmp_path_factory.mktemp("three-modes")
    events = _events(PAIRS, seed=71)
    assert len(events) >= TOTAL
    expected = expected_windows(events, unanswered_are_timeouts=True)
    assert expected.duplicates
    assert expected.orphan_responses
    assert expected.unanswered_requests
    tenants = {k.tenant_id for k in expected.windows}
    embedded, embedded_db = _embedded_rows(tmp_path, events, expected)
    rows = {"embedded": embedded}
    records = {"embedded": _records(embedded_db)}
    day_totals = {"embedded": _day_totals(embedded_db)}
    with TansuBroker() as tansu, pg_databases() as new_db:
        _produce(tansu, events)
        for n in (1, 3):
            db = new_db()
            with _workers(tmp_path, tansu, db, n) as workers:
                _wait_for_oracle(db, expected, workers, timeout=120)
                assert [w.terminate() for w in workers] == [0] * n, [w.output()[-2000:] for w in workers]
            _check_final(db, expected)
            name = f"{n} worker{'s' if n > 1 else ''}"
            rows[name] = _rows(db, tenants)
            records[name] = _records(db)
            day_totals[name] = _day_totals(db)
    return ThreeModes(events, expected, rows, records, day_totals)


@pytest.mark.slow
def test_embedded_one_worker_and_three_workers_give_identical_metrics_rows_for_100k_events(
    three_modes: ThreeModes,
) -> None:
    """Every mode equals the oracle (checked while running); here every /v1/metrics field but
    ``late_events`` (see the next test) is equal across the modes."""
    rows = dict(three_modes.rows)
    reference = rows.pop("embedded")
    assert len(reference) == len(three_modes.expected.windows)
    fields = set(next(iter(reference.values()))) - {"late_events"}
    for name, other in rows.items():
        diffs = _differences(other, reference, fields=fields)
        assert not diffs, f"{name} differs from embedded in {len(diffs)} fields: {diffs[:10]}"


@pytest.mark.slow
def test_every_mode_writes_the_same_call_records_and_rollups(three_modes: ThreeModes) -> None:
    """One record per counted call, field for field the same in every mode (the processor's clock
    aside); the daily rollups hold what the minute windows hold, in every mode."""
    reference = three_modes.records["embedded"]
    expected_calls = sum(w.requests for w in three_modes.expected.windows.values())
    assert len(reference) == expected_calls
    for name, other in three_modes.records.items():
        assert set(other) == set(reference), name
        diffs = [k for k in reference if other[k] != reference[k]]
        assert not diffs, (
            f"{name}: {len(diffs)} records differ, e.g. {[(reference[k], other[k]) for k in diffs[:2]]}"
        )
    for name, totals in three_modes.day_totals.items():
        halves = {k: (v[:4], v[4:]) for k, v in totals.items()}
        assert all(minutes == days for minutes, days in halves.values()), name
        assert totals == three_modes.day_totals["embedded"], name


@pytest.mark.slow
def test_late_counts_are_the_late_tail_in_the_embedded_mode(three_modes: ThreeModes) -> None:
    """The late tail (appended after everything else, hours old) is late in full except its timeouts
    (never late); no main window has a late event."""
    figures = _late_figures(three_modes.rows["embedded"], three_modes.late_cut)
    assert figures["late in late-tail windows"] > 0
    assert figures["late in late-tail windows"] == figures["late-tail requests − timeouts"], figures
    assert figures["late in main windows"] == 0, figures


@pytest.mark.slow
def test_workers_count_the_same_late_events_as_the_embedded_mode(three_modes: ThreeModes) -> None:
    """With this data (the late tail appended after everything else, hours old) every mode must count
    the same late events per window: only the late tail's."""
    rows = dict(three_modes.rows)
    reference = rows.pop("embedded")
    figures = {name: _late_figures(r, three_modes.late_cut) for name, r in three_modes.rows.items()}
    for name, other in rows.items():
        diffs = _differences(other, reference, fields={"late_events"})
        assert not diffs, f"{name}: late_events differ in {len(diffs)} windows: {figures}; {diffs[:5]}"


def _committed_events(db: str) -> int:
    """Events the workers committed so far: the sum of every unit's stored next offsets."""
    with Store.open(db) as store, store.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(processor_offsets.c.next_offset), 0))
            ).scalar()
        )


def _wait_for_progress(db: str, committed: int, workers: list[Worker], timeout: float = 60) -> None:
    """Wait until the workers committed more than `committed` events."""
    deadline = time.monotonic() + timeout
    while _committed_events(db) <= committed:
        if time.monotonic() > deadline:
            logs = "\n".join(w.output()[-1500:] for w in workers if w.proc.returncode is None)
            raise AssertionError(f"no commit beyond {committed} events in {timeout} s; worker logs:\n{logs}")
        time.sleep(0.2)


@pytest.mark.slow
def test_five_sigkills_while_100k_events_flow_end_with_the_oracle_windows(
    tmp_path: Path,
    broker: TansuBroker,  # noqa: F811
    pg_url: str,  # noqa: F811
) -> None:
    """3 workers consume while ~100k events are produced over about a minute; five times, once the
    workers committed more than at the last kill, the oldest live worker is SIGKILLed and a replacement
    started (and awaited in a rebalance). Nothing is lost or counted twice."""
    events = _events(PAIRS, seed=81)
    assert len(events) >= TOTAL
    expected = expected_windows(events, unanswered_are_timeouts=True)
    producer = _Producer(broker, events, pace_s=0.3)
    with _workers(tmp_path, broker, pg_url, 3) as workers:
        for w in workers:
            w.wait_assigned(60)
        producer.start()
        at_kill: list[int] = []
        for i in range(5):
            time.sleep(1.5)
            _wait_for_progress(pg_url, at_kill[-1] if at_kill else 0, workers)
            victim = next(w for w in workers if w.proc.returncode is None)  # the oldest: it was assigned
            victim.kill()  # uncommitted work is lost; its partitions move after the session timeout
            at_kill.append(_committed_events(pg_url))
            assert producer.is_alive(), f"the events stopped flowing before kill {i + 1}: {at_kill}"
            workers.append(Worker(tmp_path, broker, pg_url, f"r{i}"))
            workers[-1].wait_assigned(60)
        producer.join(120)
        print(f"committed events at each kill: {at_kill} of {len(events)}")
        assert producer.error is None, producer.error
        assert not producer.is_alive()
        assert at_kill == sorted(set(at_kill)), at_kill  # the workers made progress between kills
        assert at_kill[0] > 0, at_kill
        assert at_kill[-1] < len(events), at_kill  # the last kill came before everything was committed
        live = [w for w in workers if w.proc.returncode is None]
        assert len(live) == 3
        _wait_for_oracle(pg_url, expected, live, timeout=120)
        assert [w.terminate() for w in live] == [0] * 3, [w.output()[-2000:] for w in live]
    _check_final(pg_url, expected)
    assert _committed_events(pg_url) == len(events)
