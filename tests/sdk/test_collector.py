"""`Collector`: the hot path, accounting, flush and shutdown deadlines, sampling accounting, asyncio."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from llmpulse.events import LLMCall, LogEvent, Metric, Span, TelemetryItem
from llmpulse.exporters import FileExporter
from llmpulse.pricing import Pricer
from llmpulse.sdk import Collector, DropItem, TelemetryConfig
from llmpulse.testing import InMemoryExporter

T0 = datetime.now(UTC)


def call(i: int = 0, **over: Any) -> LLMCall:
    fields: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "timestamp": T0,
        "input_tokens": 100 + i % 7,
        "output_tokens": 10 + i % 3,
        "request_id": f"r{i}",
    }
    fields.update(over)
    return LLMCall(**fields)


def fast(**over: Any) -> TelemetryConfig:
    return TelemetryConfig(flush_interval_ms=20, **over)


class Gate:
    """An exporter that blocks in `export` until released (a dead or slow destination)."""

    def __init__(self, name: str = "gate") -> None:
        self.name = name
        self.release = threading.Event()
        self.entered = threading.Event()
        self.items: list[dict[str, Any]] = []

    def export(self, items: Sequence[dict[str, Any]]) -> None:
        self.entered.set()
        self.release.wait()
        self.items.extend(items)

    def force_flush(self, timeout: float) -> bool:
        return True

    def shutdown(self, timeout: float) -> None:
        return None


class Broken:
    """An exporter whose every method raises."""

    name = "broken"

    def export(self, items: Sequence[dict[str, Any]]) -> None:
        raise RuntimeError("export exploded")

    def force_flush(self, timeout: float) -> bool:
        raise RuntimeError("flush exploded")

    def shutdown(self, timeout: float) -> None:
        raise RuntimeError("shutdown exploded")


def _check_invariant(stats: dict[str, Any]) -> None:
    for name, ex in stats["exporters"].items():
        assert ex["emitted"] == ex["exported"] + ex["queued"] + ex["dropped"], name


# ------------------------------------------------------------------------------------------ delivery


def test_recorded_items_reach_every_exporter_with_cost_filled_in() -> None:
    a, b = InMemoryExporter("a"), InMemoryExporter("b")
    with Collector(fast(), exporters=[a, b]) as collector:
        original = call(1)
        collector.record(original)
        collector.record(Metric(name="m", value=1.0))
        assert collector.flush(5.0)
    assert original.cost is None  # the caller's object is untouched
    for sink in (a, b):
        assert [item["type"] for item in sink.items] == ["llm.call", "metric"]
        expected = Pricer().cost("gpt-4o-mini", input_tokens=101, output_tokens=11)
        assert sink.items[0]["cost"] == pytest.approx(expected)
        assert sink.is_shutdown


def test_flush_before_shutdown_delivers_everything_to_a_real_file(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    collector = Collector(TelemetryConfig(flush_interval_ms=60_000), exporters=[FileExporter(path)])
    for i in range(1000):
        collector.record(call(i))
    assert collector.flush(10.0)
    lines = path.read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == [f"r{i}" for i in range(1000)]
    assert collector.shutdown(5.0)
    stats = collector.stats()
    assert stats["emitted"] == 1000
    assert stats["exporters"]["file:calls.jsonl"]["exported"] == 1000
    _check_invariant(stats)


def test_plain_callables_and_late_exporters_are_accepted() -> None:
    got: list[tuple[str, dict[str, Any]]] = []

    def sink(kind: str, item: dict[str, Any]) -> None:
        got.append((kind, item))

    collector = Collector(fast())
    collector.register_exporter(sink)
    collector.add_exporter(InMemoryExporter())
    collector.add_exporter(InMemoryExporter())  # same name: gets a suffix
    collector.record(LogEvent(name="e", message="hello"))
    assert collector.shutdown(5.0)
    assert [(kind, item["message"]) for kind, item in got] == [("log", "hello")]
    names = list(collector.stats()["exporters"])
    assert names[1:] == ["memory", "memory#2"]
    assert names[0].endswith("sink")
    with pytest.raises(RuntimeError, match="shut down"):
        collector.add_exporter(InMemoryExporter())
    with pytest.raises(TypeError):
        Collector(exporters=[42])  # type: ignore[list-item]


def test_disabled_collector_records_nothing() -> None:
    sink = InMemoryExporter()
    collector = Collector(fast(enabled=False), exporters=[sink])
    collector.record(call())
    assert collector.flush(2.0)
    assert sink.items == []
    assert collector.stats()["emitted"] == 0
    collector.shutdown(1.0)


# ---------------------------------------------------------------------------------- accounting


def test_every_item_is_exported_queued_or_dropped_under_concurrent_recording() -> None:
    gate = Gate()
    memory = InMemoryExporter()
    collector = Collector(
        TelemetryConfig(buffer_size=500, max_batch_size=50, flush_interval_ms=5), [gate, memory]
    )
    per_thread, threads = 3000, 8

    def work(t: int) -> None:
        for i in range(per_thread):
            collector.record(call(t * per_thread + i))

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stats = collector.stats()
    assert stats["emitted"] == per_thread * threads
    assert stats["exporters"]["gate"]["dropped"] > 0  # the blocked exporter overflowed, counted
    for ex in stats["exporters"].values():
        assert ex["emitted"] == stats["emitted"]
    _check_invariant(stats)
    gate.release.set()
    assert collector.shutdown(10.0)
    final = collector.stats()
    _check_invariant(final)
    assert final["exporters"]["memory"]["exported"] + final["exporters"]["memory"]["dropped"] == 24_000
    assert final["exporters"]["gate"]["queued"] == 0


def test_shutdown_deadline_is_honoured_with_a_dead_exporter() -> None:
    dead = Gate("dead")
    collector = Collector(fast(), exporters=[dead])
    for i in range(10):
        collector.record(call(i))
    assert dead.entered.wait(5.0)  # the worker is now stuck inside export
    collector.record(call(99))
    started = time.monotonic()
    assert collector.shutdown(timeout=0.5) is False
    elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 1.0
    stats = collector.stats()["exporters"]["dead"]
    assert stats["emitted"] == 11
    assert stats["dropped"] >= 1  # what was still queued is dropped and counted
    _check_invariant(collector.stats())
    collector.record(call(100))  # after shutdown: counted, never raised
    assert collector.stats()["exporters"]["dead"]["dropped_by_reason"].get("shutdown", 0) >= 2
    dead.release.set()


def test_shutdown_is_idempotent_and_flush_after_shutdown_reports_false() -> None:
    collector = Collector(fast(), exporters=[InMemoryExporter()])
    assert collector.shutdown(1.0)
    assert collector.is_shut_down
    assert collector.shutdown(1.0) is False
    assert collector.flush(0.1) is False


# -------------------------------------------------------------------------------------- hot path


def test_hot_path_never_raises_with_broken_processors_and_exporters() -> None:
    def explode(item: TelemetryItem) -> TelemetryItem:
        if isinstance(item, LogEvent):
            raise RuntimeError("processor bug")
        return item

    def drop_metrics(item: TelemetryItem) -> TelemetryItem:
        if isinstance(item, Metric):
            raise DropItem
        return item

    memory = InMemoryExporter()
    collector = Collector(fast(), [Broken(), memory], processors=[explode, drop_metrics])
    collector.record(LogEvent(name="l"))
    assert collector.stats()["last_error"] == "RuntimeError: processor bug"
    collector.record(Metric(name="m", value=1.0))
    collector.record("not an item")  # type: ignore[arg-type]
    collector.record(call(1))
    assert collector.flush(2.0) is False  # the broken exporter's flush failed, and said so
    stats = collector.stats()
    assert stats["errors"] == 2
    assert stats["dropped_by_processors"] == 1
    assert stats["emitted"] == 1
    assert [i["request_id"] for i in memory.items] == ["r1"]
    broken = stats["exporters"]["broken"]
    assert broken["dropped"] == 1
    assert broken["failed"] >= 1
    assert "exploded" in broken["last_error"]
    assert collector.shutdown(2.0) is False


def test_record_does_not_block_while_an_exporter_hangs() -> None:
    dead = Gate("dead")
    collector = Collector(TelemetryConfig(buffer_size=100, max_batch_size=10, flush_interval_ms=5), [dead])
    started = time.perf_counter()
    for i in range(20_000):
        collector.record(call(i))
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0  # ~µs per call; a blocking put would hang forever
    stats = collector.stats()["exporters"]["dead"]
    assert stats["queued"] <= 100 + 10  # bounded: queue plus the batch in flight
    assert stats["dropped_by_reason"]["queue_full"] > 0
    dead.release.set()
    collector.shutdown(5.0)


# -------------------------------------------------------------------------------------- sampling


def test_unsampled_calls_still_count_in_aggregated_tokens_and_cost() -> None:
    memory = InMemoryExporter()
    collector = Collector(fast(sample_rate=0.3), [memory])
    calls = [call(i) for i in range(3000)]
    calls += [call(i, cost=0.5, request_id=f"paid{i}") for i in range(200)]
    for c in calls:
        collector.record(c)
    assert collector.shutdown(10.0)
    stats = collector.stats()
    exported = memory.items
    unsampled = stats["unsampled"]
    assert 0.2 < len(exported) / len(calls) < 0.4
    assert unsampled["calls"] + len(exported) == len(calls) == stats["sampled_out"] + stats["emitted"]
    assert unsampled["input_tokens"] + sum(i["input_tokens"] for i in exported) == sum(
        c.input_tokens for c in calls
    )
    assert unsampled["output_tokens"] + sum(i["output_tokens"] for i in exported) == sum(
        c.output_tokens for c in calls
    )
    pricer = Pricer()
    exported_ids = {i["request_id"] for i in exported}

    def cost_of(c: LLMCall) -> float:
        if c.cost is not None:
            return c.cost
        value = pricer.cost(c.model, input_tokens=c.input_tokens, output_tokens=c.output_tokens)
        assert value is not None
        return value

    expected = sum(cost_of(c) for c in calls if c.request_id not in exported_ids)
    assert unsampled["cost"] == pytest.approx(expected, rel=1e-9)
    assert unsampled["unpriced_calls"] == 0
    assert {i["metadata"]["sample_rate"] for i in exported} == {0.3}


def test_unknown_models_are_reported_as_unpriced_not_free() -> None:
    collector = Collector(fast(sample_rate=0.0))
    collector.record(call(1, model="no-such-model-xyz"))
    assert collector.stats()["unsampled"]["unpriced_calls"] == 1
    assert collector.stats()["unsampled"]["cost"] == 0.0
    collector.shutdown(1.0)


def test_discard_mode_only_counts_unsampled_calls() -> None:
    collector = Collector(fast(sample_rate=0.0, sampling="discard"))
    collector.record(call(1))
    stats = collector.stats()
    assert stats["sampled_out"] == 1
    assert stats["unsampled"]["calls"] == 0
    collector.shutdown(1.0)


def test_metrics_survive_any_sample_rate() -> None:
    memory = InMemoryExporter()
    collector = Collector(fast(sample_rate=0.0), [memory])
    collector.record(Metric(name="m", value=2.0))
    collector.record(Span(name="s"))
    assert collector.shutdown(5.0)
    assert [i["type"] for i in memory.items] == ["metric"]


# ---------------------------------------------------------------------------------------- lifecycle


def test_a_collector_without_references_is_collected_and_still_delivers() -> None:
    memory = InMemoryExporter()
    collector = Collector(TelemetryConfig(flush_interval_ms=60_000), [memory])
    collector.record(call(1))
    ref = weakref.ref(collector)
    del collector
    gc.collect()
    assert ref() is None  # neither atexit nor the fork hook keeps it alive
    deadline = time.monotonic() + 5.0
    while not memory.is_shutdown and time.monotonic() < deadline:
        time.sleep(0.01)
    assert memory.is_shutdown
    assert [i["request_id"] for i in memory.items] == ["r1"]


def test_asyncio_code_records_and_flushes_without_blocking_the_loop() -> None:
    gate = Gate("slow")
    memory = InMemoryExporter()
    collector = Collector(fast(), [memory, gate])

    async def main() -> int:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        async def producer(n: int) -> None:
            for i in range(100):
                collector.record(call(n * 100 + i))
                await asyncio.sleep(0)

        tick_task = asyncio.create_task(ticker())
        await asyncio.gather(*(producer(n) for n in range(10)))
        assert await collector.aflush(0.3) is False  # the gate holds one exporter back...
        stop.set()
        await tick_task
        gate.release.set()
        assert await collector.ashutdown(5.0)
        return ticks

    ticks = asyncio.run(main())
    assert ticks >= 10  # ...and the loop kept running meanwhile
    assert len(memory.items) == 1000
    assert len(gate.items) == 1000


def test_a_hung_exporter_does_not_eat_the_others_shutdown_time(tmp_path: Path) -> None:
    release = threading.Event()

    class Hung:
        name = "hung"

        def export(self, items: object) -> None:
            release.wait(30)

        def force_flush(self, timeout: float) -> bool:
            return True

        def shutdown(self, timeout: float) -> None:
            return None

    path = tmp_path / "calls.jsonl"
    collector = Collector(TelemetryConfig(flush_interval_ms=10), exporters=[Hung(), FileExporter(path)])
    try:
        for _ in range(5):
            collector.record(LLMCall(model="gpt-4o-mini", timestamp=datetime.now(UTC), input_tokens=1))
        started = time.monotonic()
        assert collector.shutdown(timeout=1.0) is False  # the hung one did not finish
        assert time.monotonic() - started < 2.5
        assert len(path.read_text().splitlines()) == 5  # the file exporter got its share in time
    finally:
        release.set()


def test_the_invariant_holds_at_every_stats_read_while_threads_record() -> None:
    """`record` takes no lock: stats() must still balance exactly whenever it is read."""
    memory = InMemoryExporter()
    collector = Collector(TelemetryConfig(buffer_size=300, max_batch_size=64, flush_interval_ms=2), [memory])
    per_thread, threads = 4000, 6
    stop = threading.Event()
    broken: list[dict[str, Any]] = []
    samples = 0

    def sample() -> None:
        nonlocal samples
        while not stop.is_set():
            stats = collector.stats()
            samples += 1
            ex = stats["exporters"]["memory"]
            if ex["emitted"] != ex["exported"] + ex["queued"] + ex["dropped"] or ex["queued"] > 300 + threads:
                broken.append(ex)

    item = call()

    def work() -> None:
        for _ in range(per_thread):
            collector.record(item)

    sampler = threading.Thread(target=sample)
    sampler.start()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert collector.flush(10.0)
    stop.set()
    sampler.join()
    stats = collector.stats()
    ex = stats["exporters"]["memory"]
    assert not broken
    assert samples > 10
    assert stats["emitted"] == ex["emitted"] == per_thread * threads
    assert ex["queued"] == 0
    assert ex["exported"] == len(memory.items)
    assert ex["exported"] + ex["dropped_by_reason"].get("queue_full", 0) == per_thread * threads
