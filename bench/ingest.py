"""Benchmark 2 and 3: end-to-end embedded ingest, beside its references, and the server's peak memory.

In one run, on the same generated batches of 100 events sent over HTTP from this (separate) process:
- llmpulse `serve` (embedded: SQLite log + processor + SQLite store): events/s acknowledged, events/s
  aggregated and queryable, ack → queryable latency p50/p95 (probe events polled on /v1/metrics), and
  the server's peak RSS;
- a bare ASGI endpoint under the same uvicorn that only parses each batch;
- plain batched SQLite inserts of the same events (one transaction per batch of 100, in process).

`BENCH_PAIRS` sets the number of request/response pairs (default 1,000,000 = 2M events).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from bench._http import LoadResult, get_json, post_bodies
from llmpulse.events import LLMRequest, LLMResponse
from llmpulse.testing.traffic import encode_batch_json, generate_events

HOST = "127.0.0.1"
MODELS = ["gpt-4o-mini", "gpt-4o", "claude-3-5-haiku-latest", "claude-3-5-sonnet-latest", "gemini-1.5-flash"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _wait_http(port: int, proc: subprocess.Popen[bytes], path: str = "/health", timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            status, _ = asyncio.run(get_json(HOST, port, path))
            if status < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"server on port {port} did not answer {path}")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


def live_figures(
    load: LoadResult,
    total: int,
    latencies: list[float],
    started: float,
    acked_at: float,
    aggregated_at: float,
) -> dict[str, Any]:
    """The figures of one live run: acknowledged and aggregated events/s, ack → queryable percentiles."""
    return {
        "acked_events": load.acked_events,
        "failures": load.failures,
        "retries_503": load.retries,
        "ack_events_per_s": load.acked_events / (acked_at - started),
        "aggregated_events_per_s": total / (aggregated_at - started),
        "ack_to_queryable_p50_s": _percentile(latencies, 0.50),
        "ack_to_queryable_p95_s": _percentile(latencies, 0.95),
        "probes": len(latencies),
    }


def make_batches(n_pairs: int, batch: int = 100) -> tuple[list[bytes], list[int], int]:
    """The generated events as JSON array bodies of `batch` events, their sizes, and the event count."""
    start = datetime.now(UTC) - timedelta(hours=1, minutes=5)
    events = generate_events(
        n_pairs, tenants=100, routes=10, models=MODELS, start=start, duration_s=3600, shuffle=50, seed=7
    )
    bodies = [encode_batch_json(events[i : i + batch]) for i in range(0, len(events), batch)]
    sizes = [min(batch, len(events) - i) for i in range(0, len(events), batch)]
    return bodies, sizes, len(events)


def bench_sqlite_inserts(bodies: list[bytes]) -> float:
    """Plain batched SQLite inserts (WAL, synchronous=NORMAL, a transaction per batch): events/s."""
    decoder = msgspec.json.Decoder(list[LLMRequest | LLMResponse])
    batches = [decoder.decode(b) for b in bodies]
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "plain.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE events (kind TEXT, request_id TEXT, tenant_id TEXT, route TEXT, model TEXT, "
            "ts TEXT, tokens INTEGER, latency_ms REAL, error TEXT)"
        )
        n = 0
        started = time.perf_counter()
        for batch in batches:
            rows = []
            for e in batch:
                if isinstance(e, LLMRequest):
                    rows.append(
                        ("request", e.request_id, e.tenant_id, e.route, e.model, e.timestamp.isoformat(),
                         e.prompt_tokens, None, None)
                    )  # fmt: skip
                else:
                    rows.append(
                        ("response", e.request_id, None, None, None, e.timestamp.isoformat(),
                         e.completion_tokens, e.latency_ms, None if e.error is None else str(e.error))
                    )  # fmt: skip
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
            n += len(rows)
        elapsed = time.perf_counter() - started
        conn.close()
    return n / elapsed


def _uvicorn_cmd(app: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port), "--loop", "uvloop",
        "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


def bench_parse_only(bodies: list[bytes], sizes: list[int]) -> float:
    """A bare ASGI endpoint that only parses each batch, under uvicorn: events/s acknowledged."""
    port = _free_port()
    proc = subprocess.Popen(_uvicorn_cmd("bench._parse_app:app", port), cwd=Path(__file__).parents[1])
    try:
        _wait_http(port, proc, "/")
        result = asyncio.run(post_bodies(HOST, port, "/", bodies, sizes))
    finally:
        _stop(proc)
    return result.acked_events / result.seconds


async def _probe_loop(port: int, stop: asyncio.Event, latencies: list[float]) -> None:
    k = 0
    while not stop.is_set():
        k += 1
        tenant = f"probe-{os.getpid()}-{k}"
        ts = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        body = msgspec.json.encode(
            [{"type": "llm.call", "tenant_id": tenant, "model": "gpt-4o-mini", "timestamp": ts,
              "input_tokens": 1, "output_tokens": 1, "latency_ms": 1.0}]
        )  # fmt: skip
        result = await post_bodies(HOST, port, "/v1/events", [body], [1], concurrency=1)
        acked = time.perf_counter()
        if not result.acked_events:
            continue
        while True:
            status, payload = await get_json(HOST, port, f"/v1/metrics?tenant_id={tenant}")
            if status == 200 and msgspec.json.decode(payload).get("count", 0) > 0:
                latencies.append(time.perf_counter() - acked)
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)


async def _drive_llmpulse(port: int, bodies: list[bytes], sizes: list[int], total: int) -> dict[str, Any]:
    stop = asyncio.Event()
    latencies: list[float] = []
    probe = asyncio.create_task(_probe_loop(port, stop, latencies))
    started = time.perf_counter()
    load = await post_bodies(HOST, port, "/v1/events", bodies, sizes)
    acked_at = time.perf_counter()
    while True:
        _, payload = await get_json(HOST, port, "/health")
        info = msgspec.json.decode(payload)
        processor = info.get("processor", {})
        if processor.get("processed_events", 0) >= total and processor.get("lag_records", 1) == 0:
            break
        await asyncio.sleep(0.02)
    aggregated_at = time.perf_counter()
    stop.set()
    await probe
    return live_figures(load, total, latencies, started, acked_at, aggregated_at)


def bench_llmpulse(bodies: list[bytes], sizes: list[int], total: int) -> dict[str, Any]:
    """llmpulse serve (embedded): acknowledged and aggregated events/s, ack→queryable, peak RSS."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "llmpulse", "serve", "--host", HOST, "--port", str(port),
               "--db", f"sqlite:///{tmp}/bench.db"]  # fmt: skip
        proc = subprocess.Popen(cmd)
        try:
            _wait_http(port, proc)
            result = asyncio.run(_drive_llmpulse(port, bodies, sizes, total))
            result["peak_rss_mb"] = _peak_rss_mb(proc.pid)
        finally:
            _stop(proc)
    return result


def run(n_pairs: int | None = None) -> dict[str, Any]:
    """Run all three measurements on the same batches and print them side by side."""
    n_pairs = n_pairs or int(os.environ.get("BENCH_PAIRS", "1000000"))
    bodies, sizes, total = make_batches(n_pairs)
    print(f"ingest benchmark: {total:,} events in {len(bodies):,} batches of 100")
    llmpulse = bench_llmpulse(bodies, sizes, total)
    parse = bench_parse_only(bodies, sizes)
    plain = bench_sqlite_inserts(bodies)
    print(f"  llmpulse acknowledged       {llmpulse['ack_events_per_s']:>12,.0f} events/s")
    print(f"  llmpulse aggregated         {llmpulse['aggregated_events_per_s']:>12,.0f} events/s")
    print(f"  reference: parse-only ASGI  {parse:>12,.0f} events/s  (llmpulse/ref = "
          f"{llmpulse['ack_events_per_s'] / parse:.2f})")  # fmt: skip
    print(f"  reference: plain SQLite     {plain:>12,.0f} events/s  (llmpulse/ref = "
          f"{llmpulse['aggregated_events_per_s'] / plain:.2f})")  # fmt: skip
    print(f"  ack→queryable p50 / p95     {llmpulse['ack_to_queryable_p50_s'] * 1000:>8.0f} / "
          f"{llmpulse['ack_to_queryable_p95_s'] * 1000:.0f} ms over {llmpulse['probes']} probes")  # fmt: skip
    print(f"  server peak RSS             {llmpulse['peak_rss_mb']:>12,.0f} MiB")
    print(f"  failures {llmpulse['failures']}, 503 retries {llmpulse['retries_503']}")
    return {"llmpulse": llmpulse, "parse_only_events_per_s": parse, "plain_sqlite_events_per_s": plain}


if __name__ == "__main__":
    run()
