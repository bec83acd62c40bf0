"""Benchmark 10: alerts evaluated on the stream (issue 14), each figure beside its reference.

1. **Ack → notification**: ``llmpulse serve --alerts FILE`` (SQLite) with one threshold rule per
   probe tenant (``requests`` over 2 minutes above 0, ``for: 0s``, notifying a signed webhook), and
   the webhook's receiver on loopback in this process. A probe is one call event of a fresh probe
   tenant on ``POST /v1/events``; its figure is the time from the 200 to the arrival of that rule's
   ``firing`` notification (each probe crosses only its own rule: exactly one notification). The
   path: the processor's commit (every 0.25 s), the commit's ``poke`` waking the evaluator, a pass
   over the probe tenant's rule, the dispatcher's POST. p50/p95 over `BENCH_ALERTS_PROBES` (30).
2. **Evaluation cost per committed window**: a SQLite store holding `BENCH_ALERTS_TENANTS` (100)
   tenants × 2 routes × 2 models of minute windows and their calls' records (1–4 calls a window),
   as the processor writes them — every minute of the last
   `BENCH_ALERTS_HOURS` (6) hours, and the 70 minutes before now on each of the previous
   `BENCH_ALERTS_BASELINE_DAYS` (7) days (the anomaly rules' baseline), hours rolled up as a
   server's roller does — and `BENCH_ALERTS_RULES` (1,000) rules spread evenly over the tenants,
   ten kinds in turn (four thresholds, three SLOs, two anomalies, a runway; scopes of tenant, route
   or model). Then, `BENCH_ALERTS_COMMITS` (20) times: `Store.commit` of a checkpoint like the
   processor's (the current minute of every series of `BENCH_ALERTS_COMMIT_TENANTS` (10) tenants,
   5 calls a window with their call records), timed, and the pass that commit triggers
   (`Evaluator.run_once(tenants=…)` of the tenants it touched), timed; each divided by the windows
   the commit wrote, medians. And a full pass over every rule (median of 3). The rules are what
   `parse_rules` makes of a rules file.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from bench.ingest import HOST, _free_port, _percentile, _stop, _wait_http
from llmpulse.alerts import Evaluator, Notification, parse_rules
from llmpulse.store import CallRecord, Checkpoint, Store, WindowDelta, WindowKey, bucket_of, roll_up

SECRET = "bench-secret"
ROUTES = ("chat", "search")
MODELS = ("gpt-4o-mini", "claude-3-5-haiku-latest")
MINUTE = 60
DAY = 86_400


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


# -- 1: ack → notification ----------------------------------------------------------------------------


class _Receiver:
    """A webhook receiver on loopback: the arrival time of each rule's firing notification."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.bodies = 0
        self.bad_signatures = 0
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                at = time.perf_counter()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                note = json.loads(body)
                with receiver.cond:
                    receiver.bodies += 1
                    receiver.bad_signatures += self.headers.get("X-Llmpulse-Signature") != want
                    if note.get("status") == "firing":
                        receiver.arrived.setdefault(note["rule"], at)
                    receiver.cond.notify_all()

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, rule: str, timeout: float) -> float | None:
        """The arrival time (perf_counter) of `rule`'s firing notification; None after `timeout`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while rule not in self.arrived:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.arrived[rule]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def probe_rules(hook_url: str, probes: int) -> dict[str, Any]:
    """The rules file of figure 1: a threshold rule per probe tenant."""
    return {
        "notifiers": [{"name": "hook", "type": "webhook", "url": hook_url, "secret": SECRET}],
        "rules": [
            {
                "name": f"probe-{k}",
                "scope": {"tenant_id": f"probe-{k}"},
                "threshold": {"metric": "requests", "window": "2m", "above": 0, "for": "0s"},
                "notify": ["hook"],
            }
            for k in range(probes)
        ],
    }


def _post_probe(conn: http.client.HTTPConnection, tenant: str) -> int:
    ts = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    body = json.dumps(
        [{"type": "llm.call", "tenant_id": tenant, "model": "gpt-4o-mini", "timestamp": ts,
          "request_id": f"{tenant}-{time.time_ns()}", "input_tokens": 10, "output_tokens": 5,
          "latency_ms": 100.0}]
    ).encode()  # fmt: skip
    conn.request("POST", "/v1/events", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status


def measure_ack_to_notification(probes: int, timeout_s: float = 30.0) -> dict[str, Any]:
    """Figure 1: `probes` probes one after another against a fresh server; p50/p95 seconds."""
    receiver = _Receiver()
    latencies: list[float] = []
    missed = 0
    warm_up = 2
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rules = Path(tmp) / "alerts.yaml"
            rules.write_text(yaml.safe_dump(probe_rules(receiver.url, probes + warm_up)))
            port = _free_port()
            cmd = [sys.executable, "-m", "llmpulse", "serve", "--host", HOST, "--port", str(port),
                   "--db", f"sqlite:///{tmp}/alerts.db", "--log-sync", "NORMAL",
                   "--alerts", str(rules)]  # fmt: skip
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                _wait_http(port, proc)
                conn = http.client.HTTPConnection(HOST, port, timeout=30)
                for k in range(probes + warm_up):
                    rule = f"probe-{k}"
                    status = _post_probe(conn, rule)
                    acked = time.perf_counter()
                    if status != 200:
                        raise RuntimeError(f"probe {k}: POST /v1/events answered {status}")
                    arrived = receiver.wait_for(rule, timeout_s)
                    if arrived is None:
                        missed += 1
                    elif k >= warm_up:
                        latencies.append(arrived - acked)
                    time.sleep(0.1)
                conn.close()
            finally:
                _stop(proc)
    finally:
        receiver.close()
    return {
        "probes": len(latencies),
        "missed": missed,
        "notifications": receiver.bodies,
        "bad_signatures": receiver.bad_signatures,
        "p50_s": _percentile(latencies, 0.50),
        "p95_s": _percentile(latencies, 0.95),
        "max_s": max(latencies, default=float("nan")),
    }


# -- 2: evaluation cost per committed window ----------------------------------------------------------


def _window(
    rng: random.Random, key: WindowKey, requests: int, records: dict[tuple[str, str], CallRecord], now: float
) -> WindowDelta:
    """A window of `requests` calls (log-normal latencies, 2 % errors), each also as its call record."""
    d = WindowDelta()
    for _ in range(requests):
        latency = math.exp(rng.gauss(6.5, 0.5))  # ~700 ms median
        ttft = latency * 0.3
        failed = rng.random() < 0.02
        d.requests += 1
        d.errors += failed
        d.prompt_tokens += 600
        d.completion_tokens += 200
        d.latency_count += 1
        d.latency_sum_ms += latency
        b = bucket_of(latency)
        d.latency_hist[b] = d.latency_hist.get(b, 0) + 1
        d.ttft_count += 1
        d.ttft_sum_ms += ttft
        b = bucket_of(ttft)
        d.ttft_hist[b] = d.ttft_hist.get(b, 0) + 1
        d.cost_usd += 0.0002
        rid = f"{rng.getrandbits(128):032x}"
        records[(key.tenant_id, rid)] = CallRecord(
            key.tenant_id, rid, key.window_start + rng.random() * MINUTE, key.route, key.model, "openai",
            "error" if failed else "ok", "server_error" if failed else None, None, latency, ttft, 600, 200,
            0, 0, 0, 0.0002, "genai-prices", None, None, None, None, None, None, None, None, None, "{}", now,
        )  # fmt: skip
    return d


def _tenant(i: int) -> str:
    return f"tenant-{i:03d}"


def build_store(store: Store, tenants: int, hours: int, baseline_days: int, now: float) -> dict[str, Any]:
    """Minute windows of every series, with their calls' records, as the processor writes them: the
    last `hours` hours, and the 70 minutes before now on each of the previous `baseline_days` days;
    then roll finished hours up. Blocks."""
    rng = random.Random(5)
    current = int(now) // MINUTE * MINUTE
    minutes = list(range(current - hours * 3600, current, MINUTE))
    for day in range(1, baseline_days + 1):
        minutes.extend(range(current - day * DAY - 70 * MINUTE, current - day * DAY + MINUTE, MINUTE))
    started = time.perf_counter()
    written = calls = 0
    for chunk in range(0, tenants, 2):
        windows: dict[WindowKey, WindowDelta] = {}
        records: dict[tuple[str, str], CallRecord] = {}
        for i in range(chunk, min(tenants, chunk + 2)):
            for route in ROUTES:
                for model in MODELS:
                    for m in minutes:
                        key = WindowKey(_tenant(i), route, model, m)
                        windows[key] = _window(rng, key, rng.randint(1, 4), records, now)
        store.commit(
            Checkpoint("bench-build", offsets={0: chunk + 1}, windows=windows, calls=records, watermark=now)
        )
        written += len(windows)
        calls += len(records)
    build_s = time.perf_counter() - started
    rolled = roll_up(store, now)
    return {"windows": written, "calls": calls, "build_s": build_s, "rolled_hours": rolled.hours}


_KINDS: tuple[dict[str, Any], ...] = (
    {"threshold": {"metric": "cost_usd", "window": "5m", "above": 1000.0}},
    {"scope": "route", "threshold": {"metric": "error_rate", "window": "15m", "above": 0.5}},
    {"scope": "model", "threshold": {"metric": "p95_latency_ms", "window": "5m", "above": 60000}},
    {"threshold": {"metric": "requests", "window": "10m", "below": 0}},
    {"slo": {"objective": 0.99, "good": "ok_calls"}},
    {"scope": "route", "slo": {"objective": 0.95, "good": "latency_below_ms", "value": 5000}},
    {"scope": "model", "slo": {"objective": 0.9, "good": "ok_calls"}},
    {"anomaly": {"metric": "cost_usd", "window": "1h", "factor": 3, "min_requests": 50}},
    {"scope": "route", "anomaly": {"metric": "requests", "window": "1h", "factor": 3, "min_requests": 50}},
    {"runway": {"period": "month", "amount_usd": 1_000_000, "at": [0.5, 0.8, 1.0]}},
)


def load_rules(n_rules: int, tenants: int, baseline_days: int) -> dict[str, Any]:
    """`n_rules` rules over `tenants` tenants, the kinds of `_KINDS` in turn."""
    rules = []
    for k in range(n_rules):
        tenant = _tenant(k % tenants)
        kind = dict(_KINDS[(k // tenants) % len(_KINDS)])
        scope: dict[str, str] = {"tenant_id": tenant}
        on = kind.pop("scope", None)
        if on == "route":
            scope["route"] = ROUTES[k % len(ROUTES)]
        elif on == "model":
            scope["model"] = MODELS[k % len(MODELS)]
        if "anomaly" in kind:
            kind["anomaly"] = {**kind["anomaly"], "baseline": f"{max(1, baseline_days)}d"}
        rules.append({"name": f"rule-{k:04d}", "scope": scope, "labels": {"severity": "page"}, **kind})
    return {"rules": rules}


class _ListSink:
    def __init__(self) -> None:
        self.notes: list[Notification] = []

    def submit(self, notification: Notification) -> None:
        self.notes.append(notification)


def _live_checkpoint(
    rng: random.Random, tenants: list[str], now: float, offset: int
) -> tuple[Checkpoint, int]:
    """A processor-like checkpoint: the current minute of every series of `tenants`, 5 calls each with
    their call records."""
    minute = int(now) // MINUTE * MINUTE
    windows: dict[WindowKey, WindowDelta] = {}
    records: dict[tuple[str, str], CallRecord] = {}
    for tenant in tenants:
        for route in ROUTES:
            for model in MODELS:
                key = WindowKey(tenant, route, model, minute)
                windows[key] = _window(rng, key, 5, records, now)
    checkpoint = Checkpoint("bench-live", offsets={0: offset}, windows=windows, calls=records, watermark=now)
    return checkpoint, len(windows)


def measure_evaluation(
    n_rules: int, tenants: int, hours: int, baseline_days: int, commits: int, commit_tenants: int
) -> dict[str, Any]:
    """Figure 2 (see the module's doc)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(f"sqlite:///{tmp}/alerts-eval.db")
        try:
            now = time.time()
            built = build_store(store, tenants, hours, baseline_days, now)
            loaded = parse_rules(load_rules(n_rules, tenants, baseline_days), "bench rules")
            sink = _ListSink()
            evaluators = {
                path: Evaluator(store, rules, sink, interval_s=10.0, min_gap_s=0.0, holder="bench")
                for path, rules in (("rules", loaded),)
            }
            first = {path: ev.run_once().seconds for path, ev in evaluators.items()}  # reads the states
            rng = random.Random(9)
            names = [_tenant(i) for i in range(tenants)]
            commit_s: list[float] = []
            pass_s: dict[str, list[float]] = {path: [] for path in evaluators}
            judged: list[int] = []
            windows = 0
            for c in range(commits):
                touched = [names[(c * commit_tenants + j) % tenants] for j in range(commit_tenants)]
                checkpoint, windows = _live_checkpoint(rng, touched, time.time(), c + 1)
                t0 = time.perf_counter()
                store.commit(checkpoint)
                commit_s.append(time.perf_counter() - t0)
                for path, ev in evaluators.items():
                    t0 = time.perf_counter()
                    result = ev.run_once(tenants=set(touched))
                    pass_s[path].append(time.perf_counter() - t0)
                judged.append(result.evaluated)
            full: dict[str, list[float]] = {path: [] for path in evaluators}
            full_judged = 0
            for _ in range(3):
                for path, ev in evaluators.items():
                    t0 = time.perf_counter()
                    full_judged = ev.run_once().evaluated
                    full[path].append(time.perf_counter() - t0)
        finally:
            store.close()
    commit_med = statistics.median(commit_s)
    out: dict[str, Any] = {
        "store": built,
        "rules": n_rules,
        "tenants": tenants,
        "commits": commits,
        "windows_per_commit": windows,
        "rules_per_commit_pass": statistics.median(judged),
        "commit_s": commit_med,
        "commit_per_window_ms": commit_med / windows * 1000,
        "full_pass_rules": full_judged,
        "notifications": len(sink.notes),
    }
    for path in evaluators:
        pass_med, full_med = statistics.median(pass_s[path]), statistics.median(full[path])
        out[path] = {
            "first_pass_s": first[path],
            "pass_s": pass_med,
            "pass_per_window_ms": pass_med / windows * 1000,
            "pass_vs_commit": pass_med / commit_med,
            "full_pass_s": full_med,
            "full_pass_per_rule_ms": full_med / max(1, full_judged) * 1000,
        }
    return out


def run(
    probes: int | None = None,
    rules: int | None = None,
    tenants: int | None = None,
    *,
    hours: int | None = None,
    baseline_days: int | None = None,
    commits: int | None = None,
    commit_tenants: int | None = None,
) -> dict[str, Any]:
    """Run both measurements and print each beside its reference."""
    probes = probes or _env_int("BENCH_ALERTS_PROBES", 30)
    rules = rules or _env_int("BENCH_ALERTS_RULES", 1_000)
    tenants = tenants or _env_int("BENCH_ALERTS_TENANTS", 100)
    hours = hours or _env_int("BENCH_ALERTS_HOURS", 6)
    baseline_days = baseline_days if baseline_days is not None else _env_int("BENCH_ALERTS_BASELINE_DAYS", 7)
    commits = commits or _env_int("BENCH_ALERTS_COMMITS", 20)
    commit_tenants = min(tenants, commit_tenants or _env_int("BENCH_ALERTS_COMMIT_TENANTS", 10))
    print(f"alerts benchmark: {probes} probes; {rules:,} rules over {tenants} tenants, {hours} h of windows "
          f"and {baseline_days} baseline days, {commits} commits of {commit_tenants} tenants")  # fmt: skip
    ack = measure_ack_to_notification(probes)
    print(f"  ack → notification p50 / p95   {ack['p50_s'] * 1000:8.0f} / {ack['p95_s'] * 1000:.0f} ms "
          f"over {ack['probes']} probes (missed {ack['missed']}, bad signatures "
          f"{ack['bad_signatures']})")  # fmt: skip
    ev = measure_evaluation(rules, tenants, hours, baseline_days, commits, commit_tenants)
    print(f"  store: {ev['store']['windows']:,} minute windows, {ev['store']['calls']:,} call records, "
          f"built in {ev['store']['build_s']:.1f} s")  # fmt: skip
    print(f"  commit of {ev['windows_per_commit']} windows   {ev['commit_s'] * 1000:8.1f} ms "
          f"({ev['commit_per_window_ms']:.3f} ms a window)")  # fmt: skip
    for path, what in (("rules", "rules from the file"),):
        f = ev[path]
        print(f"  {what}: its pass over {ev['rules_per_commit_pass']:.0f} rules {f['pass_s'] * 1000:.1f} ms "
              f"({f['pass_per_window_ms']:.3f} ms a window; pass/commit = {f['pass_vs_commit']:.2f}); "
              f"full pass over {ev['full_pass_rules']:,} rules {f['full_pass_s'] * 1000:.0f} ms "
              f"({f['full_pass_per_rule_ms']:.2f} ms a rule)")  # fmt: skip
    return {"ack_to_notification": ack, "evaluation": ev}


if __name__ == "__main__":
    run()
