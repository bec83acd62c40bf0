"""Benchmark 9: shared budgets (issue 13), each figure beside its reference in the same run.

1. **Ledger throughput**: `Store.budgets.reserve` + `commit` pairs per second from 1 and 8 threads
   on one budget, on SQLite (a file, WAL) and on Postgres, beside a bare SQL loop on the same ledger
   row through the same engine (same pool, pragmas, `BEGIN IMMEDIATE` on SQLite and the store's
   in-process write lock): ``UPDATE budget_periods SET reserved_nano = reserved_nano + :e WHERE …
   AND committed_nano + reserved_nano + :e <= :amount RETURNING …`` then ``UPDATE … SET
   committed_nano = committed_nano + :c, reserved_nano = reserved_nano - :e RETURNING …``, one
   transaction each, as the ledger's pair is two. Also each reservation's latency (p50/p99) beside
   the bare reserving UPDATE's. Rounds alternate (ledger, bare, ledger, bare); the better counts.
2. **HTTP round trip**: ``POST /v1/budgets/{id}/reservations`` (and its ``…/commit``) against a
   running ``llmpulse serve`` (SQLite, then Postgres), one keep-alive loopback connection from this
   process, p50/p99, beside the bare reserving UPDATE's p50/p99 on the same database measured right
   after.
3. **SDK added latency**: the real `openai` client against the fake provider (a child process),
   instrumented with a collector and no budget, and instrumented with a `SharedBudget` on the SQLite
   server, interleaved; p50/p99 of each and the difference (the shared budget's cost per call: one
   reservation round trip on the caller's thread, the commit on a background thread), beside a
   reservation alone (`SharedBudget.reserve`, timed in the same loop, its settle sent as a call's).

Postgres is a fresh database of the machine's server (127.0.0.1:5432, or `BENCH_POSTGRES_DSN`'s),
dropped after the run; `BENCH_BUDGET_POSTGRES=0` skips Postgres. Sizes: `BENCH_BUDGET_PAIRS`
(reserve+commit pairs per measurement, default 2,000), `BENCH_BUDGET_THREADS` (default ``1,8``),
`BENCH_BUDGET_HTTP_CALLS` (default 1,000), `BENCH_BUDGET_SDK_CALLS` (default 500).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench._sdk_servers import Server
from bench.ingest import HOST, _free_port, _stop, _wait_http
from bench.scaled import _pg_database
from llmpulse.store import BudgetSpec, Store
from llmpulse.store._budgets import period_bounds, to_nano
from llmpulse.store._engine import write_transaction

BUDGET = "bench-budget"
TENANT = "bench"
AMOUNT_USD = 1e9  # never runs out: every reservation is admitted, as in a budget with room left
ESTIMATE_USD = 0.01
COST_USD = 0.008
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hello to the fake provider, please."}]

_RESERVE_SQL = sa.text(
    "UPDATE budget_periods SET reserved_nano = reserved_nano + :e, open_count = open_count + 1 "
    "WHERE budget_id = :b AND period_start = :p AND committed_nano + reserved_nano + :e <= :amount "
    "RETURNING committed_nano, reserved_nano"
)
_COMMIT_SQL = sa.text(
    "UPDATE budget_periods SET committed_nano = committed_nano + :c, reserved_nano = reserved_nano - :e, "
    "open_count = open_count - 1 WHERE budget_id = :b AND period_start = :p "
    "RETURNING committed_nano, reserved_nano"
)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _pcts(ms: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": _percentile(ms, 0.50), "p99_ms": _percentile(ms, 0.99)}


# -- 1: the ledger beside bare SQL ------------------------------------------------------------------


def _in_threads(threads: int, pairs: int, pair: Callable[[], float]) -> tuple[float, list[float]]:
    """`pairs` calls of `pair` (which returns its reservation's latency in ms) spread over `threads`
    threads started together; (pairs per second, latencies)."""
    per = [pairs // threads + (1 if i < pairs % threads else 0) for i in range(threads)]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    gate = threading.Barrier(threads + 1)

    def work(i: int) -> None:
        gate.wait()
        try:
            out = latencies[i]
            for _ in range(per[i]):
                out.append(pair())
        except BaseException as exc:  # re-raised below, on the caller's thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    gate.wait()
    started = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return pairs / elapsed, [ms for out in latencies for ms in out]


def _ledger_pair(store: Store) -> Callable[[], float]:
    ledger = store.budgets

    def pair() -> float:
        t0 = time.perf_counter()
        result = ledger.reserve(BUDGET, ESTIMATE_USD, time.time())
        t1 = time.perf_counter()
        assert result.reservation_id is not None, "the benchmark's budget ran out"
        ledger.commit(BUDGET, result.reservation_id, COST_USD, time.time())
        return (t1 - t0) * 1000

    return pair


def _bare_pair(store: Store) -> Callable[[], float]:
    engine, lock = store.engine, store.write_lock
    start, _ = period_bounds("total", "UTC", time.time())
    params = {"b": BUDGET, "p": start, "e": to_nano(ESTIMATE_USD), "amount": to_nano(AMOUNT_USD)}
    settle = {"b": BUDGET, "p": start, "e": to_nano(ESTIMATE_USD), "c": to_nano(COST_USD)}

    def pair() -> float:
        t0 = time.perf_counter()
        with lock, write_transaction(engine) as conn:
            row = conn.execute(_RESERVE_SQL, params).first()
        t1 = time.perf_counter()
        assert row is not None, "the benchmark's budget ran out"
        with lock, write_transaction(engine) as conn:
            conn.execute(_COMMIT_SQL, settle).first()
        return (t1 - t0) * 1000

    return pair


def _define(store: Store) -> None:
    store.budgets.put(BudgetSpec(BUDGET, TENANT, AMOUNT_USD, period="total", hard=True), time.time())
    # the period's ledger row exists before the bare loop runs (the first reservation creates it)
    result = store.budgets.reserve(BUDGET, 0.0, time.time())
    assert result.reservation_id is not None
    store.budgets.release(BUDGET, result.reservation_id, time.time())


def measure_ledger(url: str, pairs: int, thread_counts: Sequence[int], rounds: int = 2) -> dict[str, Any]:
    """Figure 1 on one database: ledger and bare pairs/s and reservation latency per thread count."""
    store = Store.open(url)
    try:
        _define(store)
        for pair in (_ledger_pair(store), _bare_pair(store)):  # warm-up: pool, statement caches
            for _ in range(20):
                pair()
        out: dict[str, Any] = {}
        for threads in thread_counts:
            best: dict[str, tuple[float, list[float]]] = {}
            for _ in range(rounds):
                for name, pair in (("ledger", _ledger_pair(store)), ("bare", _bare_pair(store))):
                    rate, lat = _in_threads(threads, pairs, pair)
                    if name not in best or rate > best[name][0]:
                        best[name] = (rate, lat)
            fig: dict[str, Any] = {"threads": threads, "pairs": pairs}
            for name, (rate, lat) in best.items():
                fig[f"{name}_pairs_per_s"] = rate
                fig[f"{name}_reserve_p50_ms"] = _percentile(lat, 0.50)
                fig[f"{name}_reserve_p99_ms"] = _percentile(lat, 0.99)
            fig["ledger_vs_bare"] = fig["ledger_pairs_per_s"] / fig["bare_pairs_per_s"]
            out[f"threads_{threads}"] = fig
        view = store.budgets.get(BUDGET, time.time())
        out["committed_usd"] = view.as_json()["committed_usd"]
        out["reserved_usd"] = view.as_json()["reserved_usd"]
        return out
    finally:
        store.close()


def bare_latency(url: str, n: int) -> dict[str, float]:
    """The bare reserving UPDATE's latency (p50/p99 ms) on `url`, one thread, `n` pairs."""
    store = Store.open(url)
    try:
        pair = _bare_pair(store)
        for _ in range(20):
            pair()
        return _pcts([pair() for _ in range(n)])
    finally:
        store.close()


# -- 2: HTTP round trips ----------------------------------------------------------------------------


@contextlib.contextmanager
def _serve(db: str, log: str) -> Iterator[int]:
    port = _free_port()
    cmd = [sys.executable, "-m", "llmpulse", "serve", "--host", HOST, "--port", str(port), "--db", db,
           "--log", log, "--log-sync", "NORMAL"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(port, proc)
        yield port
    finally:
        _stop(proc)


def _call(conn: http.client.HTTPConnection, method: str, path: str, body: Any) -> tuple[int, Any]:
    data = json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    return response.status, json.loads(payload) if payload else None


def measure_http(port: int, calls: int, budget_id: str) -> dict[str, Any]:
    """Figure 2 on a running server: `calls` reservations, each committed, over one keep-alive
    connection; p50/p99 ms of the reservation and of the commit."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        status, _ = _call(conn, "PUT", f"/v1/budgets/{budget_id}", {
            "amount_usd": AMOUNT_USD, "period": "total", "hard": True, "scope": {"tenant_id": TENANT}
        })  # fmt: skip
        assert status == 200, status
        base = f"/v1/budgets/{budget_id}/reservations"
        reserve_ms: list[float] = []
        commit_ms: list[float] = []
        warm_up = min(50, max(5, calls // 10))
        for i in range(-warm_up, calls):
            t0 = time.perf_counter()
            status, answer = _call(conn, "POST", base, {"estimate_usd": ESTIMATE_USD})
            t1 = time.perf_counter()
            assert status == 201, (status, answer)
            status, answer = _call(
                conn, "POST", f"{base}/{answer['reservation_id']}/commit", {"cost_usd": COST_USD}
            )
            t2 = time.perf_counter()
            assert status == 200, (status, answer)
            if i >= 0:
                reserve_ms.append((t1 - t0) * 1000)
                commit_ms.append((t2 - t1) * 1000)
        return {
            "calls": calls,
            "reserve": _pcts(reserve_ms),
            "commit": _pcts(commit_ms),
            "reservations_per_s": calls / ((sum(reserve_ms) + sum(commit_ms)) / 1000),
        }
    finally:
        conn.close()


# -- 3: the SDK's added latency ---------------------------------------------------------------------


class _NoopExporter:
    name = "noop"

    def __init__(self) -> None:
        self.count = 0

    def export(self, items: Sequence[dict[str, Any]]) -> None:
        self.count += len(items)

    def force_flush(self, timeout: float) -> bool:
        return True

    def shutdown(self, timeout: float) -> None:
        return None


def measure_sdk(server_url: str, provider_url: str, calls: int) -> dict[str, Any]:
    """Figure 3: interleaved calls through an instrumented openai client without and with a shared
    budget; p50/p99 (ms) of each, the difference, and the budget's counters."""
    import openai

    from llmpulse.sdk import Collector, SharedBudget, TelemetryConfig
    from llmpulse.sdk.instrument import instrument

    exporter = _NoopExporter()
    collector = Collector(TelemetryConfig(), [exporter])
    budget = SharedBudget("bench-sdk", url=server_url, on_unavailable="fail_closed", timeout_s=10.0)
    budget.define(AMOUNT_USD, scope={"tenant_id": TENANT})
    base_url = f"{provider_url}/v1"
    warm_up = min(50, max(5, calls // 10))
    wall: dict[str, list[float]] = {"without": [], "shared": [], "reserve_only": []}
    try:
        with (
            openai.OpenAI(api_key="sk-test", base_url=base_url, max_retries=0) as without,
            openai.OpenAI(api_key="sk-test", base_url=base_url, max_retries=0) as shared,
        ):
            instrument(without, collector=collector, tenant_id=TENANT, route="chat")
            instrument(shared, collector=collector, budget=budget, tenant_id=TENANT, route="chat")
            clients = {"without": without, "shared": shared}
            for i in range(-warm_up, calls):
                order = ("without", "shared") if i % 2 == 0 else ("shared", "without")
                for name in order:
                    create = clients[name].chat.completions.create
                    t0 = time.perf_counter()
                    create(model=MODEL, messages=MESSAGES, max_tokens=16)  # type: ignore[arg-type]
                    t1 = time.perf_counter()
                    if i >= 0:
                        wall[name].append((t1 - t0) * 1000)
                t0 = time.perf_counter()
                reservation = budget.reserve({}, ESTIMATE_USD)
                t1 = time.perf_counter()
                reservation.settle(COST_USD)
                if i >= 0:
                    wall["reserve_only"].append((t1 - t0) * 1000)
        flushed = budget.flush(30)
        stats = budget.stats()
    finally:
        budget.close()
        collector.shutdown(10)
    result: dict[str, Any] = {"calls": calls, "settled": flushed, "budget_stats": dict(stats)}
    for name, ms in wall.items():
        result[name] = {**_pcts(ms), "mean_ms": statistics.fmean(ms)}
    result["added_p50_ms"] = result["shared"]["p50_ms"] - result["without"]["p50_ms"]
    result["added_p99_ms"] = result["shared"]["p99_ms"] - result["without"]["p99_ms"]
    result["added_p50_vs_reserve_p50"] = result["added_p50_ms"] / result["reserve_only"]["p50_ms"]
    return result


# -- the run ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _databases(tmp: Path, postgres: bool) -> Iterator[dict[str, str]]:
    with contextlib.ExitStack() as stack:
        dbs = {"sqlite": f"sqlite:///{tmp}/budgets.db"}
        if postgres:
            dbs["postgres"] = stack.enter_context(_pg_database())
        yield dbs


def run(
    pairs: int | None = None,
    http_calls: int | None = None,
    sdk_calls: int | None = None,
    *,
    thread_counts: Sequence[int] | None = None,
    postgres: bool | None = None,
) -> dict[str, Any]:
    """Run the three measurements and print each beside its reference."""
    pairs = pairs or _env_int("BENCH_BUDGET_PAIRS", 2_000)
    http_calls = http_calls or _env_int("BENCH_BUDGET_HTTP_CALLS", 1_000)
    sdk_calls = sdk_calls or _env_int("BENCH_BUDGET_SDK_CALLS", 500)
    if thread_counts is None:
        thread_counts = [int(t) for t in os.environ.get("BENCH_BUDGET_THREADS", "1,8").split(",")]
    if postgres is None:
        postgres = os.environ.get("BENCH_BUDGET_POSTGRES", "1") != "0"
    results: dict[str, Any] = {"ledger": {}, "http": {}}
    print(f"budgets benchmark: {pairs:,} reserve+commit pairs per figure, {http_calls:,} HTTP round "
          f"trips, {sdk_calls:,} SDK calls")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp_name, _databases(Path(tmp_name), postgres) as dbs:
        tmp = Path(tmp_name)
        for dialect, url in dbs.items():
            ledger = results["ledger"][dialect] = measure_ledger(url, pairs, thread_counts)
            for threads in thread_counts:
                f = ledger[f"threads_{threads}"]
                print(f"  {dialect:8} {threads} thread(s): ledger {f['ledger_pairs_per_s']:>8,.0f} pairs/s, "
                      f"bare UPDATE {f['bare_pairs_per_s']:>8,.0f} pairs/s (ledger/bare = "
                      f"{f['ledger_vs_bare']:.2f}); reserve p50/p99 {f['ledger_reserve_p50_ms']:.2f}/"
                      f"{f['ledger_reserve_p99_ms']:.2f} ms, bare {f['bare_reserve_p50_ms']:.2f}/"
                      f"{f['bare_reserve_p99_ms']:.2f} ms")  # fmt: skip
        for dialect, url in dbs.items():
            with _serve(url, f"sqlite:///{tmp}/{dialect}.log.db") as port:
                fig = measure_http(port, http_calls, f"bench-http-{dialect}")
            fig["bare"] = bare_latency(url, http_calls)
            fig["reserve_p50_vs_bare"] = fig["reserve"]["p50_ms"] / fig["bare"]["p50_ms"]
            fig["reserve_p99_vs_bare"] = fig["reserve"]["p99_ms"] / fig["bare"]["p99_ms"]
            results["http"][dialect] = fig
            r, c, b = fig["reserve"], fig["commit"], fig["bare"]
            print(f"  {dialect:8} HTTP reserve p50/p99 {r['p50_ms']:.2f}/{r['p99_ms']:.2f} ms"
                  f" (commit {c['p50_ms']:.2f}/{c['p99_ms']:.2f}), bare UPDATE "
                  f"{b['p50_ms']:.2f}/{b['p99_ms']:.2f} ms (HTTP/bare = "
                  f"{fig['reserve_p50_vs_bare']:.1f} / {fig['reserve_p99_vs_bare']:.1f})")  # fmt: skip
        with (
            _serve(f"sqlite:///{tmp}/sdk.db", f"sqlite:///{tmp}/sdk.log.db") as port,
            Server("provider") as provider,
        ):
            sdk = results["sdk"] = measure_sdk(f"http://{HOST}:{port}", provider.url, sdk_calls)
        w, s = sdk["without"], sdk["shared"]
        print(f"  SDK call without budget p50/p99 {w['p50_ms']:.2f}/{w['p99_ms']:.2f} ms,"
              f" with a shared budget {s['p50_ms']:.2f}/{s['p99_ms']:.2f} ms: added "
              f"{sdk['added_p50_ms']:.2f}/{sdk['added_p99_ms']:.2f} ms")  # fmt: skip
        r = sdk["reserve_only"]
        print(f"  SDK reservation alone (SharedBudget.reserve) p50/p99 "
              f"{r['p50_ms']:.2f}/{r['p99_ms']:.2f} ms "
              f"(added p50 / reservation p50 = {sdk['added_p50_vs_reserve_p50']:.1f})")  # fmt: skip
    return results


if __name__ == "__main__":
    run()
