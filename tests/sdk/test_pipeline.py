"""ExportPipeline: batching, drop-oldest, exact accounting under threads, enrichment, flush, shutdown."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from llmpulse.events import LLMCall, Span
from llmpulse.pricing import Pricer
from llmpulse.sdk._exporter import EncodedBatch, ExportResult, RetryableError, as_exporter
from llmpulse.sdk._pipeline import ExportPipeline
from llmpulse.sdk._retry import RetryPolicy
from llmpulse.testing import InMemoryExporter

FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02, jitter=0.0)


def call(i: int = 0, **fields: Any) -> LLMCall:
    values: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "timestamp": datetime.now(UTC),
        "input_tokens": 100,
        "output_tokens": 20,
        "request_id": f"r{i}",
    }
    values.update(fields)
    return LLMCall(**values)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def balanced(stats: dict[str, Any]) -> bool:
    return bool(stats["offered"] == stats["exported"] + stats["queued"] + stats["dropped"])


class GateExporter(InMemoryExporter):
    """Blocks every export until `gate` is set; records when each export began."""

    def __init__(self) -> None:
        super().__init__("gate")
        self.gate = threading.Event()
        self.entered = threading.Event()

    def export(self, items: Sequence[dict[str, Any]]) -> None:
        self.entered.set()
        self.gate.wait()
        super().export(items)


class ScriptedExporter(InMemoryExporter):
    """Raises the scripted exceptions in turn (None: succeed), then succeeds; records attempt times."""

    def __init__(self, script: Sequence[Exception | None], *, forever: Exception | None = None) -> None:
        super().__init__("scripted")
        self.script = list(script)
        self.forever = forever
        self.attempts: list[float] = []

    def export(self, items: Sequence[dict[str, Any]]) -> None:
        self.attempts.append(time.monotonic())
        if self.script:
            error = self.script.pop(0)
            if error is not None:
                raise error
        elif self.forever is not None:
            raise self.forever
        super().export(items)


@pytest.fixture
def pipelines() -> Any:
    made: list[ExportPipeline] = []

    def make(exporter: Any, **kwargs: Any) -> ExportPipeline:
        pipeline = ExportPipeline(exporter, **kwargs)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        gate = getattr(pipeline.exporter, "gate", None)
        if gate is not None:
            gate.set()
        pipeline.shutdown(timeout=2.0)


def test_batches_by_size_without_waiting_for_the_interval(pipelines: Any) -> None:
    sink = InMemoryExporter()
    pipeline = pipelines(sink, max_batch=10, flush_interval_s=60.0)
    for i in range(25):
        pipeline.offer(call(i))
    assert wait_until(lambda: pipeline.stats()["exported"] == 20)
    time.sleep(0.05)
    assert pipeline.stats()["queued"] == 5
    assert sink.batches == [10, 10]
    assert pipeline.force_flush(timeout=5.0)
    assert sink.batches == [10, 10, 5]
    assert [item["request_id"] for item in sink.items] == [f"r{i}" for i in range(25)]


def test_batches_by_interval_when_no_batch_fills(pipelines: Any) -> None:
    sink = InMemoryExporter()
    pipeline = pipelines(sink, max_batch=1000, flush_interval_s=0.1)
    started = time.monotonic()
    for i in range(3):
        pipeline.offer(call(i))
    assert wait_until(lambda: len(sink.items) == 3, timeout=3.0)
    assert time.monotonic() - started < 2.0
    assert sink.batches == [3]


def test_full_queue_drops_the_oldest_waiting_items_and_counts_them(pipelines: Any) -> None:
    sink = GateExporter()
    # the batch in flight counts against max_queue: 5 in flight leave room for 5 waiting
    pipeline = pipelines(sink, max_queue=10, max_batch=5, flush_interval_s=60.0)
    for i in range(5):
        pipeline.offer(call(i))
    assert sink.entered.wait(5.0)
    assert wait_until(lambda: pipeline.stats()["in_flight"] == 5)
    for i in range(5, 15):
        pipeline.offer(call(i))
    stats = pipeline.stats()
    assert stats["dropped_by_reason"] == {"queue_full": 5}
    assert stats["queued"] == 10
    assert balanced(stats)
    sink.gate.set()
    assert pipeline.force_flush(timeout=5.0)
    assert [item["request_id"] for item in sink.items] == [f"r{i}" for i in (*range(5), *range(10, 15))]


def test_the_batch_in_flight_counts_against_max_queue(pipelines: Any) -> None:
    sink = GateExporter()
    pipeline = pipelines(sink, max_queue=5, max_batch=5, flush_interval_s=60.0)
    for i in range(5):
        pipeline.offer(call(i))
    assert sink.entered.wait(5.0)
    assert wait_until(lambda: pipeline.stats()["in_flight"] == 5)
    for i in range(5, 15):  # the whole buffer is in flight: each new item is dropped at once
        pipeline.offer(call(i))
        assert pipeline.stats()["queued"] == 5
    stats = pipeline.stats()
    assert stats["dropped_by_reason"] == {"queue_full": 10}
    assert balanced(stats)
    sink.gate.set()
    assert pipeline.force_flush(timeout=5.0)
    pipeline.offer(call(15))
    assert pipeline.force_flush(timeout=5.0)
    assert [item["request_id"] for item in sink.items] == [f"r{i}" for i in (*range(5), 15)]


def test_many_producers_keep_offered_equal_to_exported_queued_dropped_at_every_sample(
    pipelines: Any,
) -> None:
    class SlowSink(InMemoryExporter):
        def export(self, items: Sequence[dict[str, Any]]) -> None:
            time.sleep(0.001)
            super().export(items)

    sink = SlowSink()
    pipeline = pipelines(sink, max_queue=256, max_batch=64, flush_interval_s=0.01)
    producers, per_producer = 8, 4000
    item = call()
    stop = threading.Event()
    broken: list[dict[str, Any]] = []
    samples = 0

    def sample() -> None:
        nonlocal samples
        last = 0
        while not stop.is_set():
            stats = pipeline.stats()
            samples += 1
            if not balanced(stats) or stats["offered"] < last or stats["queued"] > 256 + producers:
                broken.append(stats)
            last = stats["offered"]

    def produce() -> None:
        for _ in range(per_producer):
            pipeline.offer(item)

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=produce) for _ in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert pipeline.force_flush(timeout=10.0)
    stop.set()
    sampler.join()
    stats = pipeline.stats()
    assert not broken
    assert samples > 10
    assert stats["offered"] == producers * per_producer
    assert stats["queued"] == 0
    assert stats["exported"] + stats["dropped"] == producers * per_producer
    assert stats["exported"] == len(sink.items)
    assert stats["dropped"] == stats["dropped_by_reason"].get("queue_full", 0)


def test_worker_fills_unknown_cost_and_request_id_without_touching_the_item(pipelines: Any) -> None:
    sink = InMemoryExporter()
    pipeline = pipelines(sink, flush_interval_s=60.0)
    unpriced = call(1, request_id=None, cached_input_tokens=50)
    provider_priced = call(2, cost=0.5)
    unknown = call(3, model="no-such-model-xyz")
    for item in (unpriced, provider_priced, unknown):
        pipeline.offer(item)
    assert pipeline.force_flush(timeout=5.0)
    first, second, third = sink.items
    expected = Pricer().cost("gpt-4o-mini", input_tokens=100, output_tokens=20, cached_input_tokens=50)
    assert expected is not None
    assert first["cost"] == pytest.approx(expected)
    assert first["request_id"]
    assert unpriced.cost is None
    assert unpriced.request_id is None
    assert second["cost"] == 0.5
    assert third["cost"] is None
    # where each cost came from: priced here, the sender's own (an estimate unless it says), unknown
    assert (first["cost_source"], second["cost_source"], third["cost_source"]) == ("genai-prices", None, None)
    assert unpriced.cost_source is None
    assert first["type"] == "llm.call"
    assert isinstance(first["timestamp"], str)


def test_items_of_every_kind_are_exported_as_their_dict_form(pipelines: Any) -> None:
    sink = InMemoryExporter()
    pipeline = pipelines(sink, flush_interval_s=60.0)
    span = Span(name="retrieve", attributes={"k": "v"})
    pipeline.offer(span)
    assert pipeline.force_flush(timeout=5.0)
    assert sink.items[0]["type"] == "span"
    assert sink.items[0]["name"] == "retrieve"
    assert sink.items[0]["span_id"] == span.span_id


def test_an_unencodable_item_is_dropped_alone(pipelines: Any) -> None:
    sink = InMemoryExporter()
    pipeline = pipelines(sink, flush_interval_s=60.0)
    pipeline.offer(call(1))
    pipeline.offer(call(2, metadata={"bad": object()}))
    pipeline.offer(call(3))
    assert pipeline.force_flush(timeout=5.0)
    assert [item["request_id"] for item in sink.items] == ["r1", "r3"]
    stats = pipeline.stats()
    assert stats["dropped_by_reason"] == {"serialization_error": 1}
    assert "object" in stats["last_error"]


def test_permanent_error_drops_the_batch_at_once(pipelines: Any) -> None:
    sink = ScriptedExporter([], forever=ValueError("schema mismatch"))
    pipeline = pipelines(sink, flush_interval_s=60.0, retry=RetryPolicy(initial_backoff_s=5.0))
    for i in range(4):
        pipeline.offer(call(i))
    started = time.monotonic()
    assert pipeline.force_flush(timeout=5.0)
    assert time.monotonic() - started < 1.0
    stats = pipeline.stats()
    assert stats["dropped_by_reason"] == {"permanent_error": 4}
    assert (stats["failed"], stats["retried"], stats["exported"]) == (1, 0, 0)
    assert "schema mismatch" in stats["last_error"]
    assert len(sink.attempts) == 1


def test_retryable_errors_are_retried_after_retry_after(pipelines: Any) -> None:
    sink = ScriptedExporter([RetryableError("busy", retry_after_s=0.3), RetryableError("busy", 0.3)])
    pipeline = pipelines(sink, flush_interval_s=60.0, retry=RetryPolicy(initial_backoff_s=0.01, jitter=0.0))
    for i in range(3):
        pipeline.offer(call(i))
    assert pipeline.force_flush(timeout=5.0)
    gaps = [b - a for a, b in zip(sink.attempts, sink.attempts[1:], strict=False)]
    assert len(gaps) == 2
    assert all(0.28 <= gap < 1.5 for gap in gaps)
    stats = pipeline.stats()
    assert (stats["exported"], stats["failed"], stats["retried"], stats["dropped"]) == (3, 2, 2, 0)
    assert "busy" in stats["last_error"]


def test_retries_give_up_after_max_attempts(pipelines: Any) -> None:
    sink = ScriptedExporter([], forever=RetryableError("down"))
    pipeline = pipelines(sink, flush_interval_s=60.0, retry=FAST_RETRY)
    for i in range(6):
        pipeline.offer(call(i))
    assert pipeline.force_flush(timeout=5.0)
    stats = pipeline.stats()
    assert stats["dropped_by_reason"] == {"retries_exhausted": 6}
    assert (stats["failed"], stats["retried"], stats["exported"], stats["queued"]) == (3, 2, 0, 0)
    assert len(sink.attempts) == 3


def test_partial_result_counts_the_named_items_as_dropped(pipelines: Any) -> None:
    class Partial(InMemoryExporter):
        def export(self, items: Sequence[dict[str, Any]]) -> ExportResult:  # type: ignore[override]
            super().export(items)
            return ExportResult({"rejected_by_server": 2}, ("item 0: bad",))

    pipeline = pipelines(Partial(), flush_interval_s=60.0)
    for i in range(5):
        pipeline.offer(call(i))
    assert pipeline.force_flush(timeout=5.0)
    stats = pipeline.stats()
    assert (stats["exported"], stats["dropped_by_reason"]) == (3, {"rejected_by_server": 2})
    assert "item 0: bad" in stats["last_error"]


def test_a_plain_callable_gets_each_item_with_its_kind(pipelines: Any) -> None:
    seen: list[tuple[str, str]] = []

    def exporter(kind: str, item: dict[str, Any]) -> None:
        if item["request_id"] == "r1":
            raise RuntimeError("nope")
        seen.append((kind, item["request_id"]))

    pipeline = pipelines(exporter, flush_interval_s=60.0)
    for i in range(3):
        pipeline.offer(call(i))
    assert pipeline.force_flush(timeout=5.0)
    assert seen == [("llm.call", "r0"), ("llm.call", "r2")]
    stats = pipeline.stats()
    assert (stats["exported"], stats["dropped_by_reason"]) == (2, {"permanent_error": 1})


def test_force_flush_returns_false_at_its_deadline_and_true_once_delivered(pipelines: Any) -> None:
    sink = GateExporter()
    pipeline = pipelines(sink, flush_interval_s=60.0)
    pipeline.offer(call(1))
    started = time.monotonic()
    assert not pipeline.force_flush(timeout=0.3)
    assert 0.25 <= time.monotonic() - started < 1.0
    sink.gate.set()
    assert pipeline.force_flush(timeout=5.0)
    assert pipeline.stats()["exported"] == 1


def test_shutdown_delivers_what_is_queued_then_shuts_the_exporter(pipelines: Any) -> None:
    sink = InMemoryExporter()
    pipeline = pipelines(sink, flush_interval_s=60.0)
    for i in range(7):
        pipeline.offer(call(i))
    assert pipeline.shutdown(timeout=5.0)
    assert len(sink.items) == 7
    assert sink.is_shutdown
    pipeline.offer(call(99))
    stats = pipeline.stats()
    assert stats["dropped_by_reason"] == {"shutdown": 1}
    assert balanced(stats)
    assert not pipeline.shutdown(timeout=1.0)
    assert not pipeline.force_flush(timeout=1.0)


def test_shutdown_honours_its_deadline_with_an_exporter_that_never_returns(pipelines: Any) -> None:
    sink = GateExporter()
    pipeline = pipelines(sink, max_batch=4, flush_interval_s=60.0)
    for i in range(10):
        pipeline.offer(call(i))
    assert sink.entered.wait(5.0)
    started = time.monotonic()
    assert not pipeline.shutdown(timeout=0.5)
    assert time.monotonic() - started < 0.5 + 0.3
    stats = pipeline.stats()
    assert stats["in_flight"] == 4
    assert stats["dropped_by_reason"] == {"shutdown": 6}
    assert balanced(stats)
    # the exporter is not shut down under its running `export` (the protocol promises shutdown comes
    # after the last export): the worker does it when the call returns
    assert not sink.is_shutdown
    sink.gate.set()
    assert wait_until(lambda: pipeline.stats()["exported"] == 4)
    assert wait_until(lambda: sink.is_shutdown)
    assert balanced(pipeline.stats())


def test_shutdown_cuts_a_long_retry_wait_short(pipelines: Any) -> None:
    sink = ScriptedExporter([], forever=RetryableError("overloaded", retry_after_s=30.0))
    pipeline = pipelines(sink, flush_interval_s=60.0)
    for i in range(3):
        pipeline.offer(call(i))
    pipeline.start()
    pipeline.force_flush(timeout=0.2)  # the worker is now waiting 30 s before its retry
    assert len(sink.attempts) == 1
    started = time.monotonic()
    assert not pipeline.shutdown(timeout=1.0)
    assert time.monotonic() - started < 0.5
    stats = pipeline.stats()
    assert stats["dropped_by_reason"] == {"shutdown": 3}
    assert balanced(stats)
    assert len(sink.attempts) == 1


def test_failures_are_logged_at_most_once_per_interval(
    pipelines: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sink = ScriptedExporter([], forever=ValueError("broken exporter"))
    pipeline = pipelines(sink, max_batch=1, flush_interval_s=60.0, log_interval_s=60.0)
    with caplog.at_level(logging.WARNING, logger="llmpulse.sdk"):
        for i in range(5):
            pipeline.offer(call(i))
        assert pipeline.force_flush(timeout=5.0)
    assert len(sink.attempts) == 5
    records = [r for r in caplog.records if r.name == "llmpulse.sdk"]
    assert len(records) == 1
    assert "broken exporter" in records[0].getMessage()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_queue": 0}, "max_queue"),
        ({"max_batch": -1}, "max_batch"),
        ({"flush_interval_s": 0}, "flush_interval_s"),
        ({"log_interval_s": -1.0}, "log_interval_s"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ExportPipeline(InMemoryExporter(), **kwargs)


def test_objects_that_are_not_exporters_are_refused() -> None:
    with pytest.raises(TypeError, match="export"):
        ExportPipeline(42)  # type: ignore[arg-type]


def test_a_hanging_exporter_slows_neither_the_caller_nor_another_exporter(pipelines: Any) -> None:
    stuck, healthy = GateExporter(), InMemoryExporter()
    stuck_pipeline = pipelines(stuck, max_queue=100, max_batch=10, flush_interval_s=0.05)
    healthy_pipeline = pipelines(healthy, max_queue=100, max_batch=10, flush_interval_s=0.05)
    item = call()
    started = time.perf_counter()
    for _ in range(5000):
        stuck_pipeline.offer(item)
        healthy_pipeline.offer(item)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0  # 10 000 offers; about 0.3 µs each when idle
    assert healthy_pipeline.force_flush(timeout=5.0)
    assert not stuck_pipeline.force_flush(timeout=0.1)
    stuck_stats = stuck_pipeline.stats()
    assert stuck_stats["queued"] <= 100 + 10
    assert stuck_stats["dropped_by_reason"]["queue_full"] >= 4890
    assert balanced(stuck_stats)
    assert healthy_pipeline.stats()["exported"] + healthy_pipeline.stats()["dropped"] == 5000


def test_as_exporter_keeps_full_exporters_and_completes_partial_ones() -> None:
    full = InMemoryExporter()
    assert as_exporter(full) is full

    class OnlyExport:
        def __init__(self) -> None:
            self.got: list[dict[str, Any]] = []

        def export(self, items: Sequence[dict[str, Any]]) -> None:
            self.got.extend(items)

    partial = OnlyExport()
    adapted = as_exporter(partial)
    assert not isinstance(adapted, OnlyExport)
    assert adapted.name == "OnlyExport"
    assert adapted.export([{"type": "span"}]) is None
    assert partial.got == [{"type": "span"}]
    assert adapted.force_flush(1.0) is True
    adapted.shutdown(1.0)


# ------------------------------------------------------------------------- the pre-encoded path


class LinesExporter(InMemoryExporter):
    """Takes batches pre-encoded by the pipeline (`export_encoded`) and keeps their bytes."""

    def __init__(self) -> None:
        super().__init__("lines")
        self.chunks: list[bytes] = []
        self.arrays: list[bytes] = []

    def export_encoded(self, batch: EncodedBatch) -> None:
        self.chunks.append(batch.lines)
        self.arrays.append(batch.json_array())
        super().export(batch.dicts())


def _mixed_items() -> list[Any]:
    from llmpulse.events import LogEvent, Metric

    return [
        call(0),  # priced by the worker
        call(1, request_id=None, cached_input_tokens=40, cache_write_tokens=10, reasoning_tokens=5),
        call(2, cost=0.25, metadata={"text": 'line\nbreak \u2028 "quoted"', "n": [1, 2.5, None]}),
        call(3, model="claude-3-5-sonnet", provider="anthropic", error="boom"),
        call(4, model="no-such-model-xyz"),
        Span(name="retrieve", attributes={"k": "v"}),
        Metric(name="tokens", value=3.0, tags={"route": "chat"}),
        LogEvent(name="note", message="hello\r\nworld"),
    ]


def test_the_encoded_path_writes_the_same_bytes_as_the_dict_path(pipelines: Any) -> None:
    import msgspec

    items = _mixed_items()
    by_dicts, by_lines = InMemoryExporter(), LinesExporter()
    for sink in (by_dicts, by_lines):
        pipeline = pipelines(sink, flush_interval_s=60.0)
        for item in items:
            pipeline.offer(item)
        assert pipeline.force_flush(timeout=5.0)
    assert by_lines.batches == [len(items)]
    # call ids filled in by the worker are random: compare them apart
    first, second = by_dicts.items[1]["request_id"], by_lines.items[1]["request_id"]
    assert first
    assert second
    assert first != second
    by_dicts.items[1]["request_id"] = second
    encoder = msgspec.json.Encoder()
    (chunk,) = by_lines.chunks
    assert chunk == encoder.encode_lines(by_dicts.items)  # byte-identical lines
    assert by_lines.arrays[0] == encoder.encode(by_dicts.items)  # and the same JSON array
    assert by_lines.items == by_dicts.items
    assert by_lines.items[0]["cost"] is not None
    assert by_lines.items[0]["cost_source"] == "genai-prices"
    assert items[0].cost is None
    assert items[1].request_id is None


@pytest.mark.parametrize(
    ("model", "provider", "usage"),
    [
        ("gpt-4o-mini", "openai", {"input_tokens": 1234, "output_tokens": 567}),
        ("gpt-4o-mini", None, {"input_tokens": 1000, "output_tokens": 10, "cached_input_tokens": 600}),
        ("o3-mini", None, {"input_tokens": 77, "output_tokens": 900, "reasoning_tokens": 800}),
        (
            "claude-3-5-sonnet",
            "anthropic",
            {
                "input_tokens": 5000,
                "output_tokens": 3,
                "cached_input_tokens": 1000,
                "cache_write_tokens": 2000,
            },
        ),
        ("gemini-1.5-pro", None, {"input_tokens": 300_000, "output_tokens": 1000}),  # tiered
        ("no-such-model-xyz", None, {"input_tokens": 1, "output_tokens": 1}),
    ],
)
def test_cached_linear_rates_give_pricer_cost_to_the_last_bit(
    model: str, provider: str | None, usage: dict[str, int]
) -> None:
    pipeline = ExportPipeline(InMemoryExporter(), pricer=Pricer())
    try:
        calls = [call(i, model=model, provider=provider, **usage) for i in range(3)]
        expected = Pricer().cost(model, provider=provider, at=calls[0].timestamp, **usage)
        assert pipeline._costs(calls) == [expected] * 3
    finally:
        pipeline.shutdown(timeout=1.0)


def test_an_inconsistent_usage_leaves_the_cost_unknown_on_the_encoded_path(pipelines: Any) -> None:
    sink = LinesExporter()
    pipeline = pipelines(sink, flush_interval_s=60.0)
    bad = call(1)
    bad.output_tokens = -5  # structs are mutable: the worker must not trust the constructor's checks
    pipeline.offer(bad)
    pipeline.offer(call(2))
    assert pipeline.force_flush(timeout=5.0)
    assert sink.items[0]["cost"] is None
    assert sink.items[1]["cost"] is not None
    assert "cannot price" in (pipeline.stats()["last_error"] or "")


def test_an_unencodable_item_is_dropped_alone_on_the_encoded_path(pipelines: Any) -> None:
    sink = LinesExporter()
    pipeline = pipelines(sink, flush_interval_s=60.0)
    pipeline.offer(call(1))
    pipeline.offer(call(2, metadata={"bad": object()}))
    pipeline.offer(call(3))
    assert pipeline.force_flush(timeout=5.0)
    stats = pipeline.stats()
    assert [item["request_id"] for item in sink.items] == ["r1", "r3"]
    assert stats["dropped_by_reason"] == {"serialization_error": 1}
    assert balanced(stats)
