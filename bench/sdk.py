"""Benchmark 4: the SDK's cost to the application, beside OpenTelemetry and a plain-dict baseline.

In one run (`python -m bench.sdk`; the machines are shared and noisy, so ratios are what to read):

1. **Caller-thread cost per LLM call event** — building one call with the same 16 fields and handing
   it over: `collector.record(LLMCall(...))` with the default `TelemetryConfig` and one exporter (a
   no-op one, and the `FileExporter` to a temporary file), beside (a) a plain ``dict`` appended to a
   ``deque`` and (b) an OpenTelemetry SDK span carrying the same fields as 16 attributes
   (`TracerProvider` + `BatchSpanProcessor`; `start_span` / `set_attributes` / `end`). Measured with
   `time.thread_time_ns` (the caller thread's own CPU, without the export worker's) and with
   `time.perf_counter_ns` (wall time, which also counts the worker holding the GIL), per event.
2. **Total CPU per event** — `time.process_time` for recording the events and flushing until all are
   exported, per event: the same systems, OpenTelemetry also with the OTLP/HTTP (protobuf) exporter
   to a loopback sink in a child process (whose CPU is not counted), and the baseline also writing
   its dicts as JSON lines to a file (the least an exporting SDK can do).
   Events are recorded in chunks of 2,000 with a flush after each, so that OpenTelemetry's default
   queue (2,048) never drops and every figure is per delivered event; the figures are the best of
   three interleaved rounds.
3. **Burst loss** — 50,000 records as fast as possible on one thread with default settings, each
   system in a fresh process: llmpulse with the `FileExporter` (right after start, and once warm)
   and the `PulseExporter` to the sink; OpenTelemetry's defaults with the OTLP exporter. Reports
   the loss and whether every loss is counted (``emitted == exported + queued + dropped``).
4. **Instrumented openai overhead** — the real `openai` client against the fake provider of
   `tests/instrument/fake_provider.py` (in a child process), `chat.completions.create` instrumented
   with `llmpulse.sdk.instrument.instrument` vs. not, interleaved; added µs at p50 and p99, and the
   caller-thread CPU added per call. Non-streaming, and streaming (4 chunks, consumed fully).
5. **Memory with every exporter dead** — 5 × `buffer_size` records into a collector whose exporter
   always raises `RetryableError` (and one that hangs), in a fresh process: RSS growth and the
   largest queue depth.
6. **Import time** — `import llmpulse`, `import llmpulse.sdk` and `llmpulse.Collector`, measured in
   fresh interpreters (best of 5), with `-X importtime`'s heaviest modules.

`BENCH_SDK_EVENTS` sets the number of events of 1–2 (default 200,000; OTLP gets a quarter) and the
burst is a quarter of it (default 50,000). The run takes about a minute.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from bench import _sdk_burst, _sdk_memory
from bench._sdk_servers import Server, sink_counts
from llmpulse.events import LLMCall
from llmpulse.exporters import FileExporter
from llmpulse.sdk import Collector, TelemetryConfig

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 2_000  # events between flushes in 1–2: below OpenTelemetry's default queue of 2,048
ROUNDS = 3  # interleaved rounds of 1–2; the best counts

#: The issue's reference figures (µs) and targets.
REFERENCE_BASELINE_US = 0.8
REFERENCE_OTEL_SPAN_US = 23.0
REFERENCE_OTEL_OTLP_CPU_US = 95.0
TARGET_CALLER_X_BASELINE = 3.0
TARGET_TOTAL_X_BASELINE = 6.0
TARGET_BURST_LOSS_PCT = 1.0
TARGET_OPENAI_P99_US = 50.0
TARGET_IMPORT_MS = 50.0

MODEL = "gpt-4o-mini"
RESPONSE_MODEL = "gpt-4o-mini-2024-07-18"
REQUEST_ID = "req-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "Say hello to the fake provider, please."}]


def _events_from_env(default: int) -> int:
    value = os.environ.get("BENCH_SDK_EVENTS")
    return int(value) if value else default


# -- 1 and 2: the systems -------------------------------------------------------------------------


class _NoopExporter:
    """An llmpulse exporter that only counts what it receives."""

    name = "noop"

    def __init__(self) -> None:
        self.count = 0

    def export(self, items: Sequence[dict[str, Any]]) -> None:
        self.count += len(items)

    def force_flush(self, timeout: float) -> bool:
        return True

    def shutdown(self, timeout: float) -> None:
        return None


class _System:
    """One way of recording the benchmark's event; subclasses hold the timed loop."""

    name = ""

    def record_chunk(self, start: int, n: int) -> None:
        """Record events `start` … `start + n - 1` on this thread (the timed part)."""
        raise NotImplementedError

    def flush(self) -> None:
        """Wait until everything recorded so far is delivered (its CPU counts in the total)."""

    def delivered(self) -> int:
        """How many events reached the destination so far."""
        raise NotImplementedError

    def close(self) -> None:
        """Release threads, files and connections."""


class _Baseline(_System):
    """A plain dict with the same 16 fields appended to a bounded deque: the floor."""

    name = "baseline"

    def __init__(self, ts: datetime) -> None:
        self.ts = ts
        self.queue: deque[dict[str, Any]] = deque(maxlen=TelemetryConfig().buffer_size)
        self.count = 0

    def record_chunk(self, start: int, n: int) -> None:
        append, ts = self.queue.append, self.ts
        for i in range(start, start + n):
            append(
                {
                    "model": MODEL,
                    "timestamp": ts,
                    "input_tokens": 100 + (i & 63),
                    "output_tokens": 20,
                    "latency_ms": 120.0,
                    "ttft_ms": 30.0,
                    "provider": "openai",
                    "tenant_id": "acme",
                    "route": "chat",
                    "user_id": "u1",
                    "request_id": REQUEST_ID,
                    "finish_reason": "stop",
                    "response_model": RESPONSE_MODEL,
                    "environment": "prod",
                    "feature": "chat",
                    "session_id": "s1",
                }
            )

    def flush(self) -> None:
        self.count += len(self.queue)
        self.queue.clear()

    def delivered(self) -> int:
        return self.count


class _BaselineJsonl(_Baseline):
    """The baseline, then each flush writes the dicts as JSON lines (msgspec) to a file."""

    name = "baseline+jsonl"

    def __init__(self, ts: datetime, path: Path) -> None:
        super().__init__(ts)
        self.file = path.open("ab", buffering=0)
        self.encoder = msgspec.json.Encoder()

    def flush(self) -> None:
        self.file.write(self.encoder.encode_lines(self.queue))
        super().flush()

    def close(self) -> None:
        self.file.close()


class _Llmpulse(_System):
    """`collector.record(LLMCall(...))` with the default config and one exporter."""

    def __init__(self, ts: datetime, exporter: Any, name: str) -> None:
        self.name = name
        self.ts = ts
        self.exporter = exporter
        self.collector = Collector(TelemetryConfig(), [exporter])

    def record_chunk(self, start: int, n: int) -> None:
        record, ts = self.collector.record, self.ts
        for i in range(start, start + n):
            record(
                LLMCall(
                    model=MODEL,
                    timestamp=ts,
                    input_tokens=100 + (i & 63),
                    output_tokens=20,
                    latency_ms=120.0,
                    ttft_ms=30.0,
                    provider="openai",
                    tenant_id="acme",
                    route="chat",
                    user_id="u1",
                    request_id=REQUEST_ID,
                    finish_reason="stop",
                    response_model=RESPONSE_MODEL,
                    environment="prod",
                    feature="chat",
                    session_id="s1",
                )
            )

    def flush(self) -> None:
        self.collector.flush(60)

    def delivered(self) -> int:
        stats = self.collector.stats()["exporters"]
        return int(next(iter(stats.values()))["exported"])

    def stats(self) -> dict[str, Any]:
        """The exporter's counters."""
        stats: dict[str, Any] = next(iter(self.collector.stats()["exporters"].values()))
        return stats

    def close(self) -> None:
        self.collector.shutdown(10)


class _Otel(_System):
    """An OpenTelemetry SDK span with the same 16 fields as attributes, through a BatchSpanProcessor."""

    def __init__(self, exporter: Any, name: str, count: Callable[[], int]) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.name = name
        self.provider = TracerProvider(shutdown_on_exit=False)
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("bench")
        self._count = count

    def record_chunk(self, start: int, n: int) -> None:
        start_span = self.tracer.start_span
        for i in range(start, start + n):
            span = start_span("chat gpt-4o-mini")
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": MODEL,
                    "gen_ai.usage.input_tokens": 100 + (i & 63),
                    "gen_ai.usage.output_tokens": 20,
                    "llm.latency_ms": 120.0,
                    "llm.ttft_ms": 30.0,
                    "gen_ai.system": "openai",
                    "tenant_id": "acme",
                    "route": "chat",
                    "user.id": "u1",
                    "gen_ai.response.id": REQUEST_ID,
                    "gen_ai.response.finish_reasons": "stop",
                    "gen_ai.response.model": RESPONSE_MODEL,
                    "deployment.environment": "prod",
                    "feature": "chat",
                    "session.id": "s1",
                }
            )
            span.end()

    def flush(self) -> None:
        self.provider.force_flush(60_000)

    def delivered(self) -> int:
        return self._count()

    def close(self) -> None:
        self.provider.shutdown()


def _otel_noop_exporter() -> Any:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class NoopSpanExporter(SpanExporter):
        """Counts the spans it is given."""

        def __init__(self) -> None:
            self.count = 0

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            self.count += len(spans)
            return SpanExportResult.SUCCESS

    return NoopSpanExporter()


@dataclass
class _Figures:
    """Per-event figures of one system in one round."""

    events: int
    caller_wall_us: float
    caller_cpu_us: float
    total_cpu_us: float


def _run_round(system: _System, start: int, n: int, chunk: int) -> _Figures:
    wall = cpu = 0
    perf, thread_time = time.perf_counter_ns, time.thread_time_ns
    cpu_start = time.process_time()
    for offset in range(0, n, chunk):
        k = min(chunk, n - offset)
        w0, c0 = perf(), thread_time()
        system.record_chunk(start + offset, k)
        c1, w1 = thread_time(), perf()
        wall += w1 - w0
        cpu += c1 - c0
        system.flush()
    total = time.process_time() - cpu_start
    return _Figures(n, wall / n / 1e3, cpu / n / 1e3, total / n * 1e6)


def measure_hot_path(
    n: int, *, sink_url: str | None = None, otlp_events: int | None = None, chunk: int = CHUNK
) -> dict[str, dict[str, Any]]:
    """Figures 1 and 2 for every system: per-event caller wall/CPU µs and total CPU µs (best round).

    `n` events per system over `ROUNDS` interleaved rounds (OTLP: `otlp_events`, default `n // 4`,
    only when `sink_url` is given). Each system is warmed up first (price table, file, connection).
    Also reports `delivered` (must equal the events recorded) and, for llmpulse, `dropped`.
    """
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    ts = datetime.now(UTC)
    otlp_n = max(ROUNDS, otlp_events if otlp_events is not None else n // 4)
    with tempfile.TemporaryDirectory(prefix="llmpulse-bench-") as tmp:
        noop_otel = _otel_noop_exporter()
        systems: list[tuple[_System, int]] = [
            (_Baseline(ts), n),
            (_BaselineJsonl(ts, Path(tmp) / "baseline.jsonl"), n),
            (_Llmpulse(ts, _NoopExporter(), "llmpulse noop"), n),
            # rotation bounds the disk used; it is part of what the FileExporter does
            (
                _Llmpulse(
                    ts,
                    FileExporter(Path(tmp) / "calls.jsonl", max_bytes=32 << 20, backup_count=1),
                    "llmpulse file",
                ),
                n,
            ),
            (_Otel(noop_otel, "otel noop", lambda: noop_otel.count), n),
        ]
        if sink_url is not None:
            url = sink_url
            otlp = OTLPSpanExporter(endpoint=f"{url}/v1/traces")
            before = sink_counts(url)["spans"]
            systems.append((_Otel(otlp, "otel otlp", lambda: sink_counts(url)["spans"] - before), otlp_n))
        best: dict[str, _Figures] = {}
        recorded: dict[str, int] = {}
        try:
            for system, _ in systems:  # warm-up: price table, open file, connection, code paths
                system.record_chunk(0, min(chunk, 1_000))
                system.flush()
                recorded[system.name] = min(chunk, 1_000)
            for r in range(ROUNDS):
                for system, total in systems:
                    per_round = total // ROUNDS
                    gc.collect()
                    fig = _run_round(system, r * per_round, per_round, chunk)
                    recorded[system.name] += per_round
                    old = best.get(system.name)
                    best[system.name] = fig if old is None else _best(old, fig)
            results: dict[str, dict[str, Any]] = {}
            for system, total in systems:
                fig = best[system.name]
                entry: dict[str, Any] = {
                    "events": total,
                    "caller_cpu_us": fig.caller_cpu_us,
                    "caller_wall_us": fig.caller_wall_us,
                    "total_cpu_us": fig.total_cpu_us,
                    "recorded": recorded[system.name],
                    "delivered": system.delivered(),
                }
                if isinstance(system, _Llmpulse):
                    entry["dropped"] = system.stats()["dropped"]
                results[system.name] = entry
        finally:
            for system, _ in systems:
                system.close()
    return results


def _best(a: _Figures, b: _Figures) -> _Figures:
    """Each figure's minimum over two rounds (noise only ever adds time)."""
    return _Figures(
        a.events,
        min(a.caller_wall_us, b.caller_wall_us),
        min(a.caller_cpu_us, b.caller_cpu_us),
        min(a.total_cpu_us, b.total_cpu_us),
    )


# -- 3: burst ---------------------------------------------------------------------------------------


def measure_burst(n: int, sink_url: str | None) -> dict[str, dict[str, Any]]:
    """Figure 3: each burst system in a fresh process (see `bench._sdk_burst`); without a sink, only the
    `FileExporter` ones."""
    systems = _sdk_burst.SYSTEMS if sink_url is not None else ("llmpulse-file-cold", "llmpulse-file")
    return {system: _sdk_burst.measure(system, n, sink_url) for system in systems}


# -- 4: instrumented openai -------------------------------------------------------------------------


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure_openai(calls: int, provider_url: str, *, stream: bool = False) -> dict[str, Any]:
    """Figure 4: `calls` interleaved calls each through a plain and an instrumented openai client.

    Returns p50/p99 latency (µs) of both, the added µs at p50 and p99, and the mean caller-thread CPU
    (µs) per call of both. Streams are consumed fully; both clients ask for usage in the last chunk.
    """
    import openai

    from llmpulse.sdk.instrument import instrument

    exporter = _NoopExporter()
    collector = Collector(TelemetryConfig(), [exporter])
    kwargs: dict[str, Any] = {"model": MODEL, "messages": MESSAGES}
    if stream:
        kwargs.update(stream=True, stream_options={"include_usage": True})
    base_url = f"{provider_url}/v1"
    warm_up = max(5, min(50, calls // 10))
    wall: dict[str, list[float]] = {"plain": [], "instrumented": []}
    cpu: dict[str, list[float]] = {"plain": [], "instrumented": []}
    try:
        with (
            openai.OpenAI(api_key="sk-test", base_url=base_url, max_retries=0) as plain,
            openai.OpenAI(api_key="sk-test", base_url=base_url, max_retries=0) as instrumented,
        ):
            instrument(instrumented, collector=collector, tenant_id="acme", route="chat", user_id="u1")
            clients = {"plain": plain, "instrumented": instrumented}
            perf, thread_time = time.perf_counter_ns, time.thread_time_ns
            for i in range(-warm_up, calls):
                order = ("plain", "instrumented") if i % 2 == 0 else ("instrumented", "plain")
                for name in order:
                    create = clients[name].chat.completions.create
                    w0, c0 = perf(), thread_time()
                    response = create(**kwargs)
                    if stream:
                        for _ in response:
                            pass
                    c1, w1 = thread_time(), perf()
                    del response
                    if i >= 0:
                        wall[name].append((w1 - w0) / 1e3)
                        cpu[name].append((c1 - c0) / 1e3)
        collector.flush(30)
        recorded = exporter.count
    finally:
        collector.shutdown(10)
    result: dict[str, Any] = {
        "calls": calls,
        "warm_up_calls": warm_up,
        "stream": stream,
        "events_exported": recorded,
    }
    for name in ("plain", "instrumented"):
        result[f"{name}_p50_us"] = _percentile(wall[name], 0.50)
        result[f"{name}_p99_us"] = _percentile(wall[name], 0.99)
        result[f"{name}_cpu_us"] = statistics.fmean(cpu[name])
    result["added_p50_us"] = result["instrumented_p50_us"] - result["plain_p50_us"]
    result["added_p99_us"] = result["instrumented_p99_us"] - result["plain_p99_us"]
    result["added_cpu_us"] = result["instrumented_cpu_us"] - result["plain_cpu_us"]
    return result


# -- 5: memory --------------------------------------------------------------------------------------


def measure_memory(buffer_size: int | None = None, multiple: int = 5) -> dict[str, dict[str, Any]]:
    """Figure 5: a failing and a hanging exporter, each in a fresh process (see `bench._sdk_memory`)."""
    size = buffer_size if buffer_size is not None else TelemetryConfig().buffer_size
    max_batch = TelemetryConfig().max_batch_size
    results = {mode: _sdk_memory.measure(mode, size, multiple) for mode in ("failing", "blocking")}
    for figures in results.values():
        # the worker holds one batch (at most max_batch_size items) outside the queue while exporting
        figures["in_flight_allowance"] = min(max_batch, size)
        figures["bounded_with_in_flight"] = figures["max_queued"] <= size + min(max_batch, size)
    return results


# -- 6: import time ---------------------------------------------------------------------------------

IMPORT_SNIPPETS = {
    "import llmpulse": "import llmpulse",
    "import llmpulse.sdk": "import llmpulse.sdk",
    "llmpulse.Collector": "import llmpulse; llmpulse.Collector",
}
_IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def _python(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONPROFILE")}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=60
    )


def _importtime_rows(stderr: str) -> list[tuple[int, int, int, str]]:
    """(self µs, cumulative µs, depth, module) of each `-X importtime` line, in order."""
    return [(int(s), int(c), len(indent), name) for s, c, indent, name in _IMPORTTIME.findall(stderr)]


def measure_imports(repeat: int = 5) -> dict[str, dict[str, Any]]:
    """Figure 6: wall ms of each snippet in a fresh interpreter (best of `repeat`), and `-X importtime`.

    `importtime_ms` sums the cumulative time of the snippet's top-level imports; `heaviest` lists
    the five nested imports with the most cumulative time (ms), to show where the time goes.
    """
    startup = _importtime_rows(_python(["-X", "importtime", "-c", "pass"]).stderr)
    results: dict[str, dict[str, Any]] = {}
    for label, snippet in IMPORT_SNIPPETS.items():
        code = f"import time\nt = time.perf_counter()\n{snippet}\nprint(time.perf_counter() - t)"
        best = min(float(_python(["-c", code]).stdout.strip()) for _ in range(repeat))
        rows = _importtime_rows(_python(["-X", "importtime", "-c", snippet]).stderr)
        ours = rows[len(startup) :]  # the interpreter's own start-up imports come first
        cumulative = sum(c for _, c, depth, _ in ours if depth == 1)
        heaviest = sorted((r for r in ours if r[2] > 1), key=lambda r: -r[1])[:5]
        results[label] = {
            "wall_ms": best * 1e3,
            "importtime_ms": cumulative / 1e3,
            "modules": len(ours),
            "heaviest": [(name, cumulative_us / 1e3) for _, cumulative_us, _, name in heaviest],
        }
    return results


# -- the run ----------------------------------------------------------------------------------------


def _mark(ok: bool) -> str:
    return "met" if ok else "MISSED"


def run(
    n_events: int | None = None,
    *,
    burst_events: int | None = None,
    openai_calls: int = 1_000,
    memory_buffer: int | None = None,
    import_repeat: int = 5,
) -> dict[str, Any]:
    """Run benchmark 4 and return its figures (also printed as a table). About a minute by default.

    `n_events` defaults to `BENCH_SDK_EVENTS`, else 200,000; `burst_events` to a quarter of it;
    `memory_buffer` to the default `buffer_size`. Smaller values make a quick smoke run.
    """
    n = n_events if n_events is not None else _events_from_env(200_000)
    burst_n = burst_events if burst_events is not None else max(1, n // 4)
    started = time.perf_counter()
    otel_logger = logging.getLogger("opentelemetry")
    level = otel_logger.level
    otel_logger.setLevel(logging.ERROR)
    try:
        with Server("sink") as sink:
            hot = measure_hot_path(n, sink_url=sink.url)
            burst = measure_burst(burst_n, sink.url)
        with Server("provider") as provider:
            openai_plain = measure_openai(openai_calls, provider.url)
            openai_stream = measure_openai(max(1, openai_calls // 2), provider.url, stream=True)
    finally:
        otel_logger.setLevel(level)
    memory = measure_memory(memory_buffer)
    imports = measure_imports(import_repeat)

    base = hot["baseline"]
    ratios = {
        "caller_noop_x_baseline": hot["llmpulse noop"]["caller_cpu_us"] / base["caller_cpu_us"],
        "caller_file_x_baseline": hot["llmpulse file"]["caller_cpu_us"] / base["caller_cpu_us"],
        "caller_noop_x_otel": hot["llmpulse noop"]["caller_cpu_us"] / hot["otel noop"]["caller_cpu_us"],
        "total_noop_x_baseline": hot["llmpulse noop"]["total_cpu_us"] / base["total_cpu_us"],
        "total_file_x_baseline": hot["llmpulse file"]["total_cpu_us"] / base["total_cpu_us"],
        "total_file_x_baseline_jsonl": hot["llmpulse file"]["total_cpu_us"]
        / hot["baseline+jsonl"]["total_cpu_us"],
        "otel_noop_caller_x_baseline": hot["otel noop"]["caller_cpu_us"] / base["caller_cpu_us"],
        # against the baseline figure (0.8 µs, measured on another machine)
        "caller_noop_x_issue_baseline": hot["llmpulse noop"]["caller_cpu_us"] / REFERENCE_BASELINE_US,
        "total_noop_x_issue_baseline": hot["llmpulse noop"]["total_cpu_us"] / REFERENCE_BASELINE_US,
        "total_file_x_issue_baseline": hot["llmpulse file"]["total_cpu_us"] / REFERENCE_BASELINE_US,
    }
    if "otel otlp" in hot:
        ratios["total_file_x_otel_otlp"] = (
            hot["llmpulse file"]["total_cpu_us"] / hot["otel otlp"]["total_cpu_us"]
        )
    worst_burst = max(v["lost_pct"] for k, v in burst.items() if k.startswith("llmpulse"))
    targets = {
        "caller <= 3x baseline": max(ratios["caller_noop_x_baseline"], ratios["caller_file_x_baseline"])
        <= TARGET_CALLER_X_BASELINE,
        "total CPU <= 6x baseline": max(ratios["total_noop_x_baseline"], ratios["total_file_x_baseline"])
        <= TARGET_TOTAL_X_BASELINE,
        "burst loss <= 1% (every case)": worst_burst <= TARGET_BURST_LOSS_PCT,
        "burst losses all counted": all(v["accounted"] for k, v in burst.items() if k.startswith("llmpulse")),
        "openai +p99 <= 50 us": max(openai_plain["added_p99_us"], openai_stream["added_p99_us"])
        <= TARGET_OPENAI_P99_US,
        "memory bounded (queue <= buffer_size)": all(m["bounded"] for m in memory.values()),
        "memory bounded (queue <= buffer + 1 batch)": all(
            m["bounded_with_in_flight"] for m in memory.values()
        ),
        "import llmpulse < 50 ms": imports["import llmpulse"]["wall_ms"] < TARGET_IMPORT_MS,
    }
    results: dict[str, Any] = {
        "events": n,
        "burst_events": burst_n,
        "hot_path": hot,
        "ratios": ratios,
        "burst": burst,
        "openai": {"chat": openai_plain, "chat_stream": openai_stream},
        "memory": memory,
        "imports": imports,
        "targets": targets,
        "seconds": time.perf_counter() - started,
    }
    _print(results)
    return results


def _print(r: dict[str, Any]) -> None:
    hot, ratios, burst = r["hot_path"], r["ratios"], r["burst"]
    lines = [
        f"SDK benchmark: {r['events']:,} events per system (chunks of {CHUNK:,}, best of {ROUNDS} rounds)",
        f"{'per event (µs)':<16}{'caller CPU':>11}{'caller wall':>12}{'total CPU':>11}{'delivered':>12}"
        "   reference (issue)",
    ]
    refs = {
        "baseline": f"≈ {REFERENCE_BASELINE_US} µs",
        "otel noop": f"span ≈ {REFERENCE_OTEL_SPAN_US:.0f} µs",
        "otel otlp": f"≈ {REFERENCE_OTEL_OTLP_CPU_US:.0f} µs CPU",
    }
    for name, f in hot.items():
        lost = "" if f["delivered"] == f["recorded"] else " (LOST)"
        lines.append(
            f"{name:<16}{f['caller_cpu_us']:>11.2f}{f['caller_wall_us']:>12.2f}{f['total_cpu_us']:>11.2f}"
            f"{f['delivered']:>12,}{lost}   {refs.get(name, '')}"
        )
    lines.append(
        f"caller: noop {ratios['caller_noop_x_baseline']:.2f}× / file "
        f"{ratios['caller_file_x_baseline']:.2f}× baseline (target ≤ {TARGET_CALLER_X_BASELINE:.0f}×), "
        f"{ratios['caller_noop_x_otel']:.3f}× the OTel span "
        f"(≈ 0.1×); total CPU: noop {ratios['total_noop_x_baseline']:.2f}× / file "
        f"{ratios['total_file_x_baseline']:.2f}× baseline (target ≤ {TARGET_TOTAL_X_BASELINE:.0f}×), file "
        f"{ratios['total_file_x_baseline_jsonl']:.2f}× baseline+jsonl"
    )
    lines.append(
        f"against the issue's {REFERENCE_BASELINE_US} µs baseline: caller "
        f"{ratios['caller_noop_x_issue_baseline']:.2f}×, total CPU noop "
        f"{ratios['total_noop_x_issue_baseline']:.2f}× / file {ratios['total_file_x_issue_baseline']:.2f}×"
    )
    lines.append(f"burst of {r['burst_events']:,} (fresh process each)   lost    counted   events/s")
    for name, b in burst.items():
        counted = "yes" if b["accounted"] else "no (silent)"
        lines.append(f"  {name:<22}{b['lost_pct']:>8.2f} %  {counted:<12}{b['events_per_s']:>10,.0f}")
    lines.append(f"  (target ≤ {TARGET_BURST_LOSS_PCT:.0f} %; OTel's defaults dropped 55 % in the issue)")
    for label, o in r["openai"].items():
        lines.append(
            f"openai {label:<12} p50 {o['plain_p50_us']:,.0f} → {o['instrumented_p50_us']:,.0f} µs "
            f"({o['added_p50_us']:+.0f}), p99 {o['plain_p99_us']:,.0f} → {o['instrumented_p99_us']:,.0f} µs "
            f"({o['added_p99_us']:+.0f}; target ≤ {TARGET_OPENAI_P99_US:.0f}), caller CPU "
            f"{o['added_cpu_us']:+.0f} µs/call"
        )
    for mode, m in r["memory"].items():
        lines.append(
            f"dead exporter ({mode}): {m['recorded']:,} records, RSS +{m['growth_mb']:.1f} MB "
            f"(+{m['growth_after_full_mb']:.2f} MB after the buffer filled, "
            f"{m['bytes_per_queued_item']:.0f} B/item), "
            f"max queued {m['max_queued']:,} / buffer {m['buffer_size']:,}, counted: {m['accounted']}"
        )
    for label, i in r["imports"].items():
        heavy = ", ".join(f"{name} {ms:.1f}" for name, ms in i["heaviest"][:3])
        lines.append(f"{label:<20} {i['wall_ms']:6.1f} ms (importtime {i['importtime_ms']:.1f} ms; {heavy})")
    lines.append("targets: " + "; ".join(f"{k}: {_mark(v)}" for k, v in r["targets"].items()))
    lines.append(f"({r['seconds']:.0f} s)")
    print("\n".join(lines))


if __name__ == "__main__":
    run()
