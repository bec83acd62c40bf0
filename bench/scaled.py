"""Benchmark 6: scale-out mode (Kafka log + Postgres store + `llmpulse process` workers) beside the
embedded mode, on the same generated batches in the same run.

Kafka mode: a tansu broker (`tests/kafka_broker.py`, memory storage), `llmpulse serve --broker …
--db postgresql://… --no-processor` and `llmpulse process` workers as subprocesses, on a fresh
database of the machine's Postgres (127.0.0.1:5432, or `BENCH_POSTGRES_DSN`'s server), dropped after.
Embedded mode: `llmpulse serve --db sqlite:///…`.

1. Live: the batches are POSTed (`bench/_http.py`, 16 connections) while the processor runs (one
   worker in Kafka mode); events/s acknowledged, events/s aggregated and committed (Kafka: the store's
   offsets reach the topics' end offsets), ack → queryable p50/p95 (the probes of `bench/ingest.py`).
2. Backlog: with every event already in the log, a fresh store and a fresh processor drain it
   (Kafka: 1, then 2 workers in a new consumer group each; embedded: `serve` restarted on the same
   SQLite log with an empty store). Events/s from the first committed progress to the last, per
   worker.

`BENCH_SCALED_PAIRS` sets the number of request/response pairs (default 100,000 = 200k events);
`BENCH_SCALED_WORKERS=1` skips the two-worker drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from bench._http import get_json, post_bodies
from bench.ingest import (
    HOST,
    _drive_llmpulse,
    _free_port,
    _peak_rss_mb,
    _probe_loop,
    _stop,
    _wait_http,
    live_figures,
    make_batches,
)

POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PARTITIONS = 6
SESSION_TIMEOUT_S = 3.0
_PROCESSED = re.compile(r"stopped \((\d+) events processed\)")


# -- helpers ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _pg_database() -> Iterator[str]:
    """A fresh Postgres database's URL; dropped on exit."""
    import psycopg

    admin = os.environ.get("BENCH_POSTGRES_DSN") or POSTGRES_DSN
    name = f"llmpulse_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _scalar(db: str, sql: str, params: tuple[Any, ...] = ()) -> int:
    """One integer from the store (0 when the table is not there yet)."""
    if db.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(db.removeprefix("sqlite:///"), timeout=10)) as conn:
            try:
                row = conn.execute(sql.replace("%s", "?"), params).fetchone()
            except sqlite3.OperationalError:
                return 0
    else:
        import psycopg

        with psycopg.connect(db, connect_timeout=5) as conn:
            try:
                row = conn.execute(sql, params).fetchone()
            except psycopg.errors.UndefinedTable:
                return 0
    return int(row[0] or 0) if row else 0


def _committed_offsets(db: str, group: str) -> int:
    """Sum of the store's next offsets over the group's partitions: records processed and committed."""
    return _scalar(
        db, "SELECT SUM(next_offset) FROM processor_offsets WHERE consumer LIKE %s", (f"group:{group}/%",)
    )


def _stored_requests(db: str) -> int:
    """Requests counted in the store's windows, probes left out."""
    return _scalar(db, "SELECT SUM(requests) FROM windows WHERE tenant_id NOT LIKE %s", ("probe-%",))


def _serve(args: list[str], log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    cmd = [sys.executable, "-m", "llmpulse", "serve", "--host", HOST, "--port", str(port), *args]
    with log_path.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_http(port, proc)
    except BaseException:
        _stop(proc)
        raise
    return proc, port


class _Worker:
    """One ``llmpulse process`` subprocess, its output in a file."""

    def __init__(self, broker: str, db: str, group: str, log_path: Path) -> None:
        self.log_path = log_path
        cmd = [
            sys.executable, "-m", "llmpulse", "process", "--broker", broker, "--db", db,
            "--group", group, "--session-timeout", str(SESSION_TIMEOUT_S),
        ]  # fmt: skip
        with log_path.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_assigned(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while "assigned partitions" not in self.output():
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.output()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker got no assignment in {timeout} s: {self.output()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM (commit, leave the group); the events it says it processed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        found = _PROCESSED.findall(self.output())
        return int(found[-1]) if found else 0


def _wait_progress(progress: Callable[[], tuple[int, bool]], timeout: float) -> tuple[float, int, float, int]:
    """Poll `progress` (events committed, done?) until done: (time and count of the first progress
    seen, time and count at the end)."""
    first_t, first_n = 0.0, 0
    deadline = time.monotonic() + timeout
    while True:
        n, done = progress()
        now = time.perf_counter()
        if n > 0 and not first_t:
            first_t, first_n = now, n
        if done and n > 0:
            return first_t, first_n, now, n
        if time.monotonic() > deadline:
            raise TimeoutError(f"processing stopped at {n} events")
        time.sleep(0.05)


def _drain_rate(first_t: float, first_n: int, done_t: float, done_n: int, started: float) -> float:
    """Events/s between the first commit seen and the last; when they are one commit (a backlog too
    small to see progress), the whole backlog over the time since the processor started."""
    if done_t > first_t and done_n > first_n:
        return (done_n - first_n) / (done_t - first_t)
    return done_n / (done_t - started)


# -- embedded mode ---------------------------------------------------------------------------------


def bench_embedded(bodies: list[bytes], sizes: list[int], total: int, tmp: Path) -> dict[str, Any]:
    """`serve --db sqlite:///…`: live ingest as bench/ingest.py measures it, then a backlog drain by a
    restarted server on the same log with an empty store."""
    log_url = f"sqlite:///{tmp}/embedded.log.db"
    proc, port = _serve(["--db", f"sqlite:///{tmp}/embedded.db", "--log", log_url], tmp / "embedded.out")
    try:
        result = asyncio.run(_drive_llmpulse(port, bodies, sizes, total))
        result["peak_rss_mb"] = _peak_rss_mb(proc.pid)
    finally:
        _stop(proc)
    result["stored_requests"] = _stored_requests(f"sqlite:///{tmp}/embedded.db")

    started = time.perf_counter()
    proc, port = _serve(["--db", f"sqlite:///{tmp}/drain.db", "--log", log_url], tmp / "drain.out")

    def progress() -> tuple[int, bool]:
        _, payload = asyncio.run(get_json(HOST, port, "/health"))
        health = msgspec.json.decode(payload)
        stats, ends = health.get("processor", {}), health["log"]["end_offsets"]
        committed = stats.get("committed_offsets", {})
        done = stats.get("lag_records") == 0 and all(committed.get(p) == end for p, end in ends.items())
        return int(stats.get("processed_events", 0)), done

    try:
        first_t, first_n, done_t, done_n = _wait_progress(progress, timeout=600)
    finally:
        _stop(proc)
    result["drain_events_per_s"] = _drain_rate(first_t, first_n, done_t, done_n, started)
    result["drain_s"] = done_t - started
    return result


# -- Kafka mode ------------------------------------------------------------------------------------


async def _drive_kafka(
    port: int, db: str, group: str, bodies: list[bytes], sizes: list[int], total: int
) -> dict[str, Any]:
    stop = asyncio.Event()
    latencies: list[float] = []
    probe = asyncio.create_task(_probe_loop(port, stop, latencies))
    started = time.perf_counter()
    load = await post_bodies(HOST, port, "/v1/events", bodies, sizes)
    acked_at = time.perf_counter()
    while await asyncio.to_thread(_committed_offsets, db, group) < total:
        await asyncio.sleep(0.05)
    aggregated_at = time.perf_counter()
    stop.set()
    await probe
    return live_figures(load, total, latencies, started, acked_at, aggregated_at)


def _kafka_drain(broker_url: str, records: int, n_workers: int, tmp: Path) -> dict[str, Any]:
    """n workers of a new group drain the `records` records already in the topics into a fresh database."""
    group = f"drain-{n_workers}"
    with _pg_database() as db:
        started = time.perf_counter()
        workers = [_Worker(broker_url, db, group, tmp / f"{group}-{i}.out") for i in range(n_workers)]
        try:

            def progress() -> tuple[int, bool]:
                n = _committed_offsets(db, group)
                return n, n >= records

            first_t, first_n, done_t, done_n = _wait_progress(progress, timeout=900)
        finally:
            processed = [w.stop() for w in workers]
        stored = _stored_requests(db)
    rate = _drain_rate(first_t, first_n, done_t, done_n, started)
    return {
        "workers": n_workers,
        "records": records,
        "drain_s": done_t - started,
        "events_per_s": rate,
        "events_per_s_per_worker": rate / n_workers,
        "processed_by_worker": processed,
        "stored_requests": stored,
    }


def bench_kafka(
    bodies: list[bytes], sizes: list[int], total: int, tmp: Path, drain_workers: list[int]
) -> dict[str, Any]:
    """tansu + Postgres + `serve --no-processor` + 1 live worker; then backlog drains."""
    from tests.kafka_broker import TansuBroker

    with TansuBroker() as broker, _pg_database() as db:
        broker_url = f"kafka://{broker.bootstrap}"
        # --group: serve's back-pressure reads the lag of the live worker's group
        args = ["--broker", broker_url, "--db", db, "--no-processor", "--group", "live"]
        args += ["--kafka-partitions", str(PARTITIONS)]
        proc, port = _serve(args, tmp / "kafka-serve.out")
        try:
            worker = _Worker(broker_url, db, "live", tmp / "live-worker.out")
            try:
                worker.wait_assigned()
                result = asyncio.run(_drive_kafka(port, db, "live", bodies, sizes, total))
                result["serve_peak_rss_mb"] = _peak_rss_mb(proc.pid)
            finally:
                result_processed = worker.stop()
            result["live_worker_processed"] = result_processed
            result["stored_requests"] = _stored_requests(db)
            # every record in the topics (the load and the probes), as the live worker committed them
            result["records"] = records = _committed_offsets(db, "live")
            result["drains"] = [_kafka_drain(broker_url, records, n, tmp) for n in drain_workers]
        finally:
            _stop(proc)
    return result


# -- the run ---------------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def run(n_pairs: int | None = None) -> dict[str, Any]:
    """Both modes on the same batches; prints the figures side by side with Kafka/embedded ratios."""
    n_pairs = n_pairs or int(os.environ.get("BENCH_SCALED_PAIRS", "100000"))
    drain_workers = [1] if os.environ.get("BENCH_SCALED_WORKERS") == "1" else [1, 2]
    bodies, sizes, total = make_batches(n_pairs)
    print(f"scale-out benchmark: {total:,} events in {len(bodies):,} batches of 100")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llmpulse-scaled-") as tmpdir:
        tmp = Path(tmpdir)
        embedded = bench_embedded(bodies, sizes, total, tmp)
        kafka = bench_kafka(bodies, sizes, total, tmp, drain_workers)
    one = kafka["drains"][0]
    emb_drain = embedded["drain_events_per_s"]
    rows: list[tuple[str, str, float, float]] = [
        ("ack_events_per_s", "ingest acknowledged (events/s)", kafka["ack_events_per_s"],
         embedded["ack_events_per_s"]),
        ("aggregated_events_per_s", "aggregated, live (events/s)", kafka["aggregated_events_per_s"],
         embedded["aggregated_events_per_s"]),
        ("processor_events_per_s_per_worker", "processor backlog, per worker", one["events_per_s_per_worker"],
         emb_drain),
    ]  # fmt: skip
    for d in kafka["drains"][1:]:
        key = f"processor_events_per_s_per_worker_{d['workers']}"
        rows.append((key, f"  {d['workers']} workers, per worker", d["events_per_s_per_worker"], emb_drain))
    for q in ("p50", "p95"):
        key = f"ack_to_queryable_{q}_s"
        rows.append((key, f"ack→queryable {q} (ms)", kafka[key] * 1000, embedded[key] * 1000))
    ratios = {key: _ratio(k, e) for key, _, k, e in rows}
    print(f"  {'':34}{'Kafka':>12}{'embedded':>12}{'Kafka/emb':>11}")
    for key, name, k, e in rows:
        print(f"  {name:34}{k:>12,.0f}{e:>12,.0f}{ratios[key]:>11.2f}")
    for d in kafka["drains"]:
        print(
            f"  Kafka drain, {d['workers']} worker(s): {d['events_per_s']:,.0f} events/s in all, "
            f"events per worker {d['processed_by_worker']}"
        )
    print(
        f"  probes: Kafka {kafka['probes']}, embedded {embedded['probes']}; failures "
        f"{kafka['failures']}/{embedded['failures']}, 503 retries "
        f"{kafka['retries_503']}/{embedded['retries_503']}"
    )
    print(
        f"  requests in the store: Kafka {kafka['stored_requests']:,}, embedded "
        f"{embedded['stored_requests']:,} (sent {n_pairs:,}); run took {time.perf_counter() - started:.0f} s"
    )
    return {"pairs": n_pairs, "events": total, "kafka": kafka, "embedded": embedded, "ratios": ratios}


if __name__ == "__main__":
    run()
