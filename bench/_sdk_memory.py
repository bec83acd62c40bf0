"""Memory of a collector whose only exporter is dead, measured in a fresh process.

`python -m bench._sdk_memory MODE BUFFER_SIZE MULTIPLE` records ``MULTIPLE × BUFFER_SIZE`` LLM call
events into a `Collector` (default config but `buffer_size`) whose exporter either raises
`RetryableError` on every export (``MODE=failing``) or blocks in it until shutdown (``MODE=blocking``),
and prints one JSON object: RSS (VmRSS) before, once the buffer is full, and at the end; the largest
queue depth seen; and the final accounting. A fresh process keeps the RSS figures free of what
earlier benchmarks allocated. `measure` runs it and returns the dict.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _rss_bytes() -> int:
    """Current resident set size (VmRSS), or the peak from getrusage where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _DeadExporter:
    """Fails every batch (``failing``: `RetryableError`) or hangs in it until released (``blocking``)."""

    def __init__(self, mode: str) -> None:
        self.name = f"dead-{mode}"
        self.mode = mode
        self.release = threading.Event()
        self.attempts = 0

    def export(self, items: Sequence[dict[str, Any]]) -> None:
        from llmpulse.sdk import RetryableError

        self.attempts += 1
        if self.mode == "blocking":
            self.release.wait()
            raise RetryableError("released at shutdown")
        raise RetryableError("the destination is down")

    def force_flush(self, timeout: float) -> bool:
        return False

    def shutdown(self, timeout: float) -> None:
        self.release.set()


def _measure_here(mode: str, buffer_size: int, multiple: int) -> dict[str, Any]:
    from llmpulse.events import LLMCall
    from llmpulse.pricing import Pricer
    from llmpulse.sdk import Collector, TelemetryConfig

    exporter = _DeadExporter(mode)
    # the price table is loaded up front, so its memory is not mistaken for the queue's
    collector = Collector(TelemetryConfig(buffer_size=buffer_size), [exporter], pricer=Pricer())
    ts = datetime.now(UTC)
    record = collector.record
    stats = collector.stats
    name = exporter.name
    gc.collect()
    rss_start = _rss_bytes()
    rss_full = rss_start
    max_queued = 0
    step = max(1, buffer_size // 16)
    total = buffer_size * multiple
    for i in range(total):
        record(
            LLMCall(
                model="gpt-4o-mini",
                timestamp=ts,
                input_tokens=100 + (i & 63),
                output_tokens=20,
                latency_ms=120.0,
                provider="openai",
                tenant_id="acme",
                route="chat",
                user_id="u1",
                request_id=f"req-{i:016x}",
                finish_reason="stop",
                metadata={"feature": "chat", "attempt": 1},
            )
        )
        if i % step == step - 1:
            max_queued = max(max_queued, stats()["exporters"][name]["queued"])
            if i + 1 == buffer_size:
                rss_full = _rss_bytes()
    final = stats()["exporters"][name]
    max_queued = max(max_queued, final["queued"])
    rss_end = _rss_bytes()
    collector.shutdown(timeout=2.0)
    after = collector.stats()["exporters"][name]
    return {
        "mode": mode,
        "buffer_size": buffer_size,
        "recorded": total,
        "rss_start_mb": rss_start / 2**20,
        "rss_full_mb": rss_full / 2**20,
        "rss_end_mb": rss_end / 2**20,
        "growth_mb": (rss_end - rss_start) / 2**20,
        "growth_after_full_mb": (rss_end - rss_full) / 2**20,
        "bytes_per_queued_item": (rss_full - rss_start) / buffer_size,
        "max_queued": max_queued,
        "bounded": max_queued <= buffer_size,
        "export_attempts": exporter.attempts,
        "emitted": final["emitted"],
        "exported": final["exported"],
        "queued": final["queued"],
        "dropped": final["dropped"],
        "dropped_by_reason": final["dropped_by_reason"],
        "accounted": final["emitted"] == final["exported"] + final["queued"] + final["dropped"],
        "accounted_after_shutdown": after["emitted"]
        == after["exported"] + after["queued"] + after["dropped"],
    }


def measure(mode: str, buffer_size: int, multiple: int = 5) -> dict[str, Any]:
    """Run the measurement in a fresh interpreter and return its figures (blocks a few seconds)."""
    if mode not in ("failing", "blocking"):
        raise ValueError(f"mode must be 'failing' or 'blocking', got {mode!r}")
    out = subprocess.run(
        [sys.executable, "-m", "bench._sdk_memory", mode, str(buffer_size), str(multiple)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    import logging

    logging.disable(logging.WARNING)  # the dead exporter's warnings are expected
    print(json.dumps(_measure_here(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
