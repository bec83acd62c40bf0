"""Benchmark 8: soak at full speed. The embedded server's memory and disk over 20M events (issue 11).

`llmpulse serve` runs as a child process (its RSS is its own: ``VmRSS`` of /proc/<pid>/status), on a
fresh SQLite store and event log in a temporary directory, with ``--log-sync NORMAL``. This process
feeds it at full speed over HTTP: realistic traffic from `generate_events` (100 tenants, 10 routes,
5 models, 2,000 users; pairs and call events, 1 % duplicates, orphans of both kinds, 2 % errors) in
batches of 1,000 events posted to ``/v1/events`` by `CONCURRENCY` keep-alive connections (httpx);
a 503 is retried after its Retry-After. The events are generated and encoded in chunks of
`CHUNK_PAIRS` calls just before they are sent (a thread generates the next chunk while this one is
sent), each chunk with its own seed, so every request id is distinct, and timestamps that move
forward with the wall clock.

Every `BENCH_SOAK_SAMPLE` acknowledged events (default 1,000,000) it samples the server's RSS, the
size on disk of the store and of the log (``*.db`` + ``*-wal``), and ``/health`` (the processor's
state sizes, the log's and the pruner's deletions); `BENCH_SOAK_EVENTS` (default 20,000,000) events
in all. Figures: RSS at the end / RSS at a quarter of the run (20M / 5M; target ≤ 1.25), and the
same ratio of the disk.

Retention within a run of minutes. The store keeps call records, minute windows and hourly rollups
at least a day (`RetentionPolicy`'s minimum), and a run lasts minutes: with timestamps at "now"
nothing but the log would ever expire. So, with ``BENCH_SOAK_KEEP_S`` = K > 0 (default 300), the
server keeps calls, minute windows and hourly rollups 1 day (``LLMPULSE_RETENTION_*_DAYS=1``) and
the events are stamped 1 day − K seconds before the wall clock as they are sent (well inside the
30-day age limit; the processor's state follows its own clock, not event time): each call record and
minute window expires K seconds after it arrives, and the pruner (every `PRUNE_INTERVAL_S`) deletes
it, so the store reaches the steady state of a 30-day store in minutes, every insert matched by the
delete of an expired record, at full speed. The store should then level off at about rate × (K +
interval) × bytes per record. The log keeps consumed records ``LLMPULSE_RETENTION_LOG_S=60``
seconds. ``BENCH_SOAK_KEEP_S=0`` stamps events at "now" with the default retention (30 days: no call
record expires, the store grows by its bytes per record). Either way the run ends by measuring the
call records' bytes per record (table and indexes, `dbstat`) and prints the store a 30-day retention
would hold in steady state: calls/s × 30 days × bytes per record; and the call records written,
those that had expired by the end (arrived more than K seconds before it) and those deleted, flagged
when the pruner deleted fewer than half of the expired ones.
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx

from bench.ingest import HOST, MODELS, _free_port, _stop, _wait_http
from llmpulse.testing.traffic import encode_batch_json, generate_events

#: Size knobs (environment variables) and their defaults.
ENV_EVENTS: Final = "BENCH_SOAK_EVENTS"
ENV_SAMPLE: Final = "BENCH_SOAK_SAMPLE"
ENV_KEEP: Final = "BENCH_SOAK_KEEP_S"
DEFAULT_EVENTS: Final = 20_000_000
DEFAULT_SAMPLE: Final = 1_000_000
DEFAULT_KEEP_S: Final = 300
#: Events in one POST, connections posting at once, calls generated per chunk.
BATCH: Final = 1_000
CONCURRENCY: Final = 8
CHUNK_PAIRS: Final = 30_000
#: Server retention: the log's consumed records (seconds), the pruner's interval (seconds).
LOG_KEEP_S: Final = 60
PRUNE_INTERVAL_S: Final = 30
DAY_S: Final = 86_400
#: The retention a steady-state store is projected for (the default of call records).
PROJECTED_DAYS: Final = 30
#: The ratio the issue asks of RSS at the end over RSS at a quarter of the run.
TARGET_RSS_RATIO: Final = 1.25
#: Traffic shape.
TENANTS: Final = 100
ROUTES: Final = 10
USERS: Final = 2_000
#: Processor and log figures of /health kept in each sample.
_PROCESSOR_KEYS: Final = (
    "processed_events",
    "pending_requests",
    "pending_responses",
    "expired_requests",
    "expired_responses",
    "dedup_keys",
    "filter_keys",
    "filter_bytes",
    "cold_lookups",
    "joined",
    "calls",
    "timeouts",
    "duplicates",
)
_LOG_KEYS: Final = ("tail_events", "pruned_records", "queued_events")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _proc_status(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon and RssFile of `pid` in MiB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[name] = int(value.split()[0]) / 1024
    return out


def _file_bytes(*paths: Path) -> int:
    return sum(p.stat().st_size for p in paths if p.exists())


@dataclass
class Sample:
    """The server at one point of the run."""

    events: int  # acknowledged when sampled
    elapsed_s: float
    rss_mib: float
    hwm_mib: float
    anon_mib: float
    store_bytes: int  # store .db + -wal
    log_bytes: int  # log .db + -wal
    processor: dict[str, int] = field(default_factory=dict)
    log: dict[str, int] = field(default_factory=dict)
    pruned: dict[str, int] = field(default_factory=dict)  # rows deleted by the prunes completed
    prunes: int = 0  # prunes completed (one stuck behind the processor's commits completes none)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(self.__dict__)


@dataclass
class _Feed:
    acked: int = 0
    failures: int = 0
    retries: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    drained_s: float = math.nan  # when the processor had counted every acknowledged event
    drained: dict[str, int] = field(default_factory=dict)  # its figures then


class _Server:
    """The `llmpulse serve` child process and its files."""

    def __init__(self, tmp: Path, keep_s: int) -> None:
        self.port = _free_port()
        self.store = tmp / "soak.db"
        self.log = tmp / "soak.log.db"
        env = dict(os.environ)
        for name in [n for n in env if n.startswith(("LLMPULSE_RETENTION_", "LLMPULSE_PRUNE_"))]:
            del env[name]
        self.env = {
            "LLMPULSE_RETENTION_LOG_S": str(LOG_KEEP_S),
            "LLMPULSE_PRUNE_INTERVAL_S": str(PRUNE_INTERVAL_S),
        }
        if keep_s:
            self.env.update(
                LLMPULSE_RETENTION_CALLS_DAYS="1",
                LLMPULSE_RETENTION_MINUTES_DAYS="1",
                LLMPULSE_RETENTION_HOURS_DAYS="1",
            )
        env.update(self.env)
        cmd = [sys.executable, "-m", "llmpulse", "serve", "--host", HOST, "--port", str(self.port),
               "--db", f"sqlite:///{self.store}", "--log", f"sqlite:///{self.log}",
               "--log-sync", "NORMAL"]  # fmt: skip
        self.output = tmp / "server.out"
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)

    def tail(self, lines: int = 20) -> str:
        """The last lines the server wrote."""
        text = self.output.read_text(errors="replace") if self.output.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def disk(self) -> tuple[int, int]:
        """(store, log) bytes on disk: the database files and their write-ahead logs."""
        wal = Path(f"{self.store}-wal")
        log_wal = Path(f"{self.log}-wal")
        return _file_bytes(self.store, wal), _file_bytes(self.log, log_wal)


def _chunk(seed: int, start: datetime, duration_s: float, limit: int) -> list[tuple[bytes, int]]:
    """One chunk of `CHUNK_PAIRS` calls as encoded batches (at most `limit` events)."""
    events = generate_events(
        CHUNK_PAIRS,
        tenants=TENANTS,
        routes=ROUTES,
        models=MODELS,
        start=start,
        duration_s=duration_s,
        duplicate_rate=0.01,
        orphan_request_rate=0.002,
        orphan_response_rate=0.002,
        call_rate=0.3,
        shuffle=50,
        seed=seed,
        users=USERS,
    )[:limit]
    return [
        (encode_batch_json(events[i : i + BATCH]), len(events[i : i + BATCH]))
        for i in range(0, len(events), BATCH)
    ]


def _pick(source: Any, keys: tuple[str, ...]) -> dict[str, int]:
    if not isinstance(source, dict):
        return {}
    return {k: source[k] for k in keys if isinstance(source.get(k), int)}


async def _health(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/health", timeout=60)
    body: dict[str, Any] = response.json()
    return body


async def _sample(client: httpx.AsyncClient, server: _Server, events: int, started: float) -> Sample:
    status = _proc_status(server.proc.pid)
    store_bytes, log_bytes = server.disk()
    elapsed = time.perf_counter() - started
    info = await _health(client)
    pruner = (info.get("retention") or {}).get("pruner") or {}
    return Sample(
        events=events,
        elapsed_s=elapsed,
        rss_mib=status["VmRSS"],
        hwm_mib=status["VmHWM"],
        anon_mib=status.get("RssAnon", math.nan),
        store_bytes=store_bytes,
        log_bytes=log_bytes,
        processor=_pick(info.get("processor"), _PROCESSOR_KEYS),
        log=_pick(info.get("log"), _LOG_KEYS),
        pruned=dict(pruner.get("deleted_total") or {}),
        prunes=int(pruner.get("runs") or 0),
    )


async def _feed(server: _Server, n_events: int, sample_every: int, keep_s: int) -> _Feed:
    """Generate, send and sample; returns once `n_events` are acknowledged and processed."""
    feed = _Feed()
    lag = timedelta(seconds=DAY_S - keep_s) if keep_s else timedelta(0)
    queue: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue(maxsize=CHUNK_PAIRS * 2 // BATCH)
    loop = asyncio.get_running_loop()
    limits = httpx.Limits(max_connections=CONCURRENCY + 2, max_keepalive_connections=CONCURRENCY + 2)
    base_url = f"http://{HOST}:{server.port}"
    headers = {"content-type": "application/json"}
    started = time.perf_counter()
    next_sample = sample_every
    sampling = asyncio.Lock()

    async def produce() -> None:
        sent, seed = 0, 1
        rate = 20_000.0  # events/s: the first guess of how long a chunk takes to send
        while sent < n_events:
            began = time.perf_counter()
            span = max(1.0, CHUNK_PAIRS * 1.7 / rate)
            start = datetime.now(UTC) - lag
            batches = await loop.run_in_executor(None, _chunk, seed, start, span, n_events - sent)
            for item in batches:
                await queue.put(item)
            sent += sum(n for _, n in batches)
            seed += 1
            rate = max(1_000.0, sum(n for _, n in batches) / max(1e-3, time.perf_counter() - began))
        for _ in range(CONCURRENCY):
            await queue.put(None)

    async def send(client: httpx.AsyncClient) -> None:
        nonlocal next_sample
        while (item := await queue.get()) is not None:
            body, n = item
            while True:
                response = await client.post("/v1/events", content=body, headers=headers, timeout=120)
                feed.statuses[response.status_code] = feed.statuses.get(response.status_code, 0) + 1
                if response.status_code != 503:
                    break
                feed.retries += 1
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))
            if not response.is_success:
                feed.failures += 1
                continue
            feed.acked += n
            if feed.acked >= next_sample and feed.acked < n_events:
                mark = next_sample
                next_sample += sample_every
                async with sampling:
                    _keep(feed, await _sample(client, server, mark, started))

    async with httpx.AsyncClient(base_url=base_url, limits=limits) as client:
        await asyncio.gather(produce(), *(send(client) for _ in range(CONCURRENCY)))
        _keep(feed, await _sample(client, server, feed.acked, started))
        # then wait until the processor has counted everything acknowledged
        while True:
            info = await _health(client)
            processor = info.get("processor") or {}
            if processor.get("processed_events", 0) >= feed.acked and processor.get("lag_records", 1) == 0:
                feed.drained_s = time.perf_counter() - started
                feed.drained = _pick(processor, _PROCESSOR_KEYS)
                break
            await asyncio.sleep(0.2)
    return feed


def _call_record_bytes(store: Path) -> dict[str, Any]:
    """Rows of ``calls`` and the bytes its table and indexes take (`dbstat`), free pages, page size."""
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'calls'")]
        used = 0
        for name in names:
            row = conn.execute(
                "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = ?", (name,)
            ).fetchone()
            used += int(row[0])
        rows = int(conn.execute("SELECT count(*) FROM calls").fetchone()[0])
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    finally:
        conn.close()
    return {
        "rows": rows,
        "bytes": used,
        "bytes_per_record": used / rows if rows else math.nan,
        "file_pages": pages,
        "free_pages": free,
        "page_size": page_size,
    }


def _at(samples: list[Sample], events: int) -> Sample:
    """The sample taken nearest `events`."""
    return min(samples, key=lambda s: abs(s.events - events))


def _mib(n: float) -> float:
    return n / 2**20


def _pending(p: dict[str, int]) -> int:
    return sum(
        p.get(k, 0)
        for k in ("pending_requests", "pending_responses", "expired_requests", "expired_responses")
    )


#: The table's columns: heading, width, and the cell of a sample.
_COLUMNS: Final[tuple[tuple[str, int, Callable[[Sample], str]], ...]] = (
    ("events", 11, lambda s: f"{s.events:,}"),
    ("s", 6, lambda s: f"{s.elapsed_s:.0f}"),
    ("RSS MiB", 8, lambda s: f"{s.rss_mib:.1f}"),
    ("anon MiB", 9, lambda s: f"{s.anon_mib:.1f}"),
    ("store MiB", 10, lambda s: f"{_mib(s.store_bytes):.1f}"),
    ("log MiB", 8, lambda s: f"{_mib(s.log_bytes):.1f}"),
    ("pending", 8, lambda s: f"{_pending(s.processor):,}"),
    ("dedup", 8, lambda s: f"{s.processor.get('dedup_keys', 0):,}"),
    ("filter keys", 12, lambda s: f"{s.processor.get('filter_keys', 0):,}"),
    ("filter KiB", 11, lambda s: f"{s.processor.get('filter_bytes', 0) / 1024:,.0f}"),
    ("prunes", 7, lambda s: f"{s.prunes:,}"),
    ("calls pruned", 13, lambda s: f"{s.pruned.get('calls', 0):,}"),
    ("log pruned", 11, lambda s: f"{s.log.get('pruned_records', 0):,}"),
)


def _print_header() -> None:
    print("  " + " ".join(f"{name:>{width}}" for name, width, _ in _COLUMNS), flush=True)


def _keep(feed: _Feed, sample: Sample) -> None:
    """Keep `sample` and print its row of the table."""
    feed.samples.append(sample)
    print("  " + " ".join(f"{cell(sample):>{width}}" for _, width, cell in _COLUMNS), flush=True)


def _records(p: dict[str, int]) -> int:
    """Call records the processor wrote: joined pairs, call events, timeouts."""
    return p.get("joined", 0) + p.get("calls", 0) + p.get("timeouts", 0)


def _figures(feed: _Feed, n_events: int, keep_s: int, records: dict[str, Any]) -> dict[str, Any]:
    samples = feed.samples
    last, quarter = samples[-1], _at(samples, n_events // 4)
    seconds = last.elapsed_s
    written = _records(feed.drained)
    calls_per_s = written / feed.drained_s
    per_record = records["bytes_per_record"]
    return {
        # what the pruner should have deleted by the end (arrived more than K s before it), and did
        "call_records_written": written,
        "call_records_expired_estimate": calls_per_s * max(0.0, feed.drained_s - keep_s) if keep_s else 0.0,
        "call_records_deleted": max(0, written - records["rows"]),
        "events": last.events,
        "quarter_events": quarter.events,
        "seconds": seconds,
        "ack_events_per_s": last.events / seconds,
        "drained_s": feed.drained_s,
        "call_records_per_s": calls_per_s,
        "failures": feed.failures,
        "retries_503": feed.retries,
        "statuses": feed.statuses,
        "rss_at_quarter_mib": quarter.rss_mib,
        "rss_at_end_mib": last.rss_mib,
        "peak_rss_mib": last.hwm_mib,
        "rss_ratio": last.rss_mib / quarter.rss_mib,
        "rss_target": TARGET_RSS_RATIO,
        "rss_target_met": last.rss_mib / quarter.rss_mib <= TARGET_RSS_RATIO,
        "disk_ratio": (last.store_bytes + last.log_bytes) / (quarter.store_bytes + quarter.log_bytes),
        "store_ratio": last.store_bytes / quarter.store_bytes,
        "log_ratio": last.log_bytes / quarter.log_bytes,
        "call_records": records,
        # what the store should level off at: records arriving while one lives (K + a prune interval)
        "steady_state_bytes": calls_per_s * (keep_s + PRUNE_INTERVAL_S) * per_record if keep_s else math.nan,
        "projected_30d_bytes_at_this_rate": calls_per_s * PROJECTED_DAYS * DAY_S * per_record,
        "projected_30d_bytes_per_million_calls_a_day": 1e6 * PROJECTED_DAYS * per_record,
    }


def _report(out: dict[str, Any], keep_s: int) -> None:
    rec = out["call_records"]
    per_record = rec["bytes_per_record"]
    print(f"  {out['events']:,} events in {out['seconds']:,.0f} s: {out['ack_events_per_s']:,.0f} events/s "
          f"acknowledged, {out['call_records_per_s']:,.0f} call records/s; failures {out['failures']}, "
          f"503 retries {out['retries_503']}")  # fmt: skip
    print(f"  RSS idle {out['idle_rss_mib']:,.0f} MiB; at {out['quarter_events']:,} events (reference) "
          f"{out['rss_at_quarter_mib']:,.0f} MiB; at {out['events']:,} {out['rss_at_end_mib']:,.0f} MiB; "
          f"peak {out['peak_rss_mib']:,.0f} MiB")  # fmt: skip
    print(f"  RSS@end / RSS@quarter    {out['rss_ratio']:>6.2f}  (target ≤ {TARGET_RSS_RATIO}; before this "
          f"week: 2.74)")  # fmt: skip
    print(f"  disk@end / disk@quarter  {out['disk_ratio']:>6.2f}  (store {out['store_ratio']:.2f}, "
          f"log {out['log_ratio']:.2f})")  # fmt: skip
    print(f"  call records: {rec['rows']:,} in the store at the end, {per_record:,.0f} B each (table + "
          f"indexes); store file {rec['file_pages'] * rec['page_size'] / 2**20:,.0f} MiB, of it "
          f"{rec['free_pages'] * rec['page_size'] / 2**20:,.0f} MiB free pages")  # fmt: skip
    if keep_s:
        expired, deleted = out["call_records_expired_estimate"], out["call_records_deleted"]
        behind = "  <- the pruner is falling behind" if deleted < expired / 2 else ""
        print(f"  call records written {out['call_records_written']:,}, expired by the end ~{expired:,.0f}, "
              f"deleted ~{deleted:,}{behind}")  # fmt: skip
        print(f"  steady state expected: {out['call_records_per_s']:,.0f} calls/s × ({keep_s} + "
              f"{PRUNE_INTERVAL_S}) s × {per_record:,.0f} B = {_mib(out['steady_state_bytes']):,.0f} MiB "
              f"of call records")  # fmt: skip
    print(f"  a {PROJECTED_DAYS}-day store holds calls/s × {PROJECTED_DAYS} d × {per_record:,.0f} B in "
          f"steady state: {out['projected_30d_bytes_at_this_rate'] / 2**40:,.1f} TiB at this run's rate, "
          f"{out['projected_30d_bytes_per_million_calls_a_day'] / 2**30:,.1f} GiB per million calls "
          f"a day")  # fmt: skip


def run(
    n_events: int | None = None, sample_every: int | None = None, keep_s: int | None = None
) -> dict[str, Any]:
    """Soak the server with `n_events` (sampling every `sample_every`), print and return the figures."""
    n_events = n_events or _env_int(ENV_EVENTS, DEFAULT_EVENTS)
    sample_every = sample_every or _env_int(ENV_SAMPLE, DEFAULT_SAMPLE)
    keep_s = _env_int(ENV_KEEP, DEFAULT_KEEP_S) if keep_s is None else keep_s
    if not 0 <= keep_s < DAY_S:
        raise ValueError(f"{ENV_KEEP} must be in 0..{DAY_S - 1}, got {keep_s}")
    print(f"soak benchmark: {n_events:,} events in batches of {BATCH:,} over {CONCURRENCY} connections, "
          f"sampled every {sample_every:,}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="llmpulse-soak-") as tmp:
        server = _Server(Path(tmp), keep_s)
        settings = " ".join(f"{k}={v}" for k, v in server.env.items())
        if keep_s:
            print(f"  events stamped 1 day - {keep_s} s before the clock; {settings}: a call "
                  f"record expires {keep_s} s after it arrives, the pruner runs every "
                  f"{PRUNE_INTERVAL_S} s")  # fmt: skip
        else:
            print(f"  events stamped at the clock; {settings}")
        try:
            _wait_http(server.port, server.proc)
            idle = _proc_status(server.proc.pid)["VmRSS"]
            print("  RSS: the server's VmRSS (anon: RssAnon); store, log: their .db + -wal files; pending, "
                  "dedup, filter: /health's processor; prunes, calls pruned: the pruner's completed runs; "
                  "log pruned: log records deleted")  # fmt: skip
            _print_header()
            feed = asyncio.run(_feed(server, n_events, sample_every, keep_s))
        except BaseException:
            print(f"  server output:\n{server.tail()}")
            raise
        finally:
            _stop(server.proc)
        records = _call_record_bytes(server.store)
    out = _figures(feed, n_events, keep_s, records)
    out.update(keep_s=keep_s, server_env=server.env, idle_rss_mib=idle)
    _report(out, keep_s)
    out["samples"] = [s.as_dict() for s in feed.samples]
    return out


if __name__ == "__main__":
    run()
