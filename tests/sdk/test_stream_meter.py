"""StreamMeter: snapshot fields, callback cadence, final report, overrides, and the no-op meter."""

from __future__ import annotations

import itertools
import logging
import time

import pytest

from llmpulse.sdk import _stream
from llmpulse.sdk._stream import NOOP_STREAM, StreamMeter, StreamMetrics, current_meter


def _sleep_ms(ms: float) -> None:
    end = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < end:
        time.sleep(0.0005)


def test_final_metrics_of_a_completed_stream() -> None:
    reports: list[StreamMetrics] = []
    meter = StreamMeter(reports.append, metrics_interval_ms=10_000)
    start = time.perf_counter()
    live = meter.start(provider="acme", model="m1", stream_id="s1", start_perf=start)
    _sleep_ms(30)
    live.chunk(10, content=False)  # role-only: not the first token
    _sleep_ms(20)
    for size in (100, 200, 300):
        live.chunk(size)
        _sleep_ms(5)
    final = live.finish("completed", output_tokens=12)
    assert reports == [final]  # no interval report, exactly one final report
    assert final.stream_id == "s1"
    assert (final.provider, final.model) == ("acme", "m1")
    assert final.status == "completed"
    assert final.chunks_received == 4
    assert final.bytes_received == 610
    assert final.avg_chunk_size == pytest.approx(152.5)
    assert final.ttft_ms is not None
    assert final.ttft_ms >= 50.0  # to the first content chunk, not the role-only one
    assert final.duration_ms >= final.ttft_ms
    assert final.bytes_per_second == pytest.approx(610 / (final.duration_ms / 1000.0))
    assert final.chunks_per_second == pytest.approx(4 / (final.duration_ms / 1000.0))
    assert final.gap_max_ms >= 20.0
    assert final.gap_p50_ms >= 5.0
    assert final.gap_p50_ms <= final.gap_p95_ms <= final.gap_max_ms
    assert final.output_tokens == 12
    assert final.tokens_per_second > 0
    assert final.current_time - final.start_time == pytest.approx(final.duration_ms, abs=1.0)
    assert final.start_time == pytest.approx(time.time() * 1000.0, abs=5_000)
    assert final.error_count == 0
    assert final.raw_chunks is None


def test_callback_every_interval_while_streaming_then_once_at_the_end() -> None:
    reports: list[StreamMetrics] = []
    live = StreamMeter(reports.append, metrics_interval_ms=20).start()
    for _ in range(12):
        _sleep_ms(5)
        live.chunk(1)
    elapsed_ms = live.snapshot().duration_ms
    streaming = [r for r in reports if r.status == "streaming"]
    assert 2 <= len(streaming) <= elapsed_ms // 20  # >= 60 ms of chunks: at most one report per 20 ms
    gaps = [b.duration_ms - a.duration_ms for a, b in itertools.pairwise(streaming)]
    assert all(gap >= 20.0 for gap in gaps)
    assert [r.chunks_received for r in streaming] == sorted({r.chunks_received for r in streaming})
    live.finish("cancelled")
    live.finish("completed")  # idempotent: the first status wins, no second report
    assert reports[-1].status == "cancelled"
    assert len(reports) == len(streaming) + 1
    live.chunk(1)  # after the end: ignored
    assert live.snapshot().chunks_received == 12


def test_errors_and_error_status() -> None:
    reports: list[StreamMetrics] = []
    live = StreamMeter(reports.append).start()
    live.chunk(5)
    live.error(ValueError("bad chunk"))
    live.error("second")
    final = live.finish("error")
    assert final.status == "error"
    assert final.error_count == 2
    assert final.last_error == "second"
    assert reports == [final]


def test_raw_chunks_and_per_stream_overrides() -> None:
    base: list[StreamMetrics] = []
    override: list[StreamMetrics] = []
    meter = StreamMeter(base.append)
    live = meter.start(metrics_callback=override.append, include_raw_chunks=True, metrics_interval_ms=0)
    live.chunk(3, raw=b"abc")
    live.chunk(2, raw=b"de")
    live.finish()
    assert base == []
    assert len(override) == 3  # interval 0: a report per chunk, plus the final one
    assert override[-1].raw_chunks == (b"abc", b"de")
    assert override[-1].to_dict()["bytes_received"] == 5
    variant = meter.with_options(metrics_interval_ms=5, metrics_callback=None)
    assert variant.metrics_callback is None
    assert variant.metrics_interval_ms == 5
    assert meter.metrics_callback is not None


def test_disabled_meter_is_a_shared_no_op() -> None:
    calls: list[StreamMetrics] = []
    live = StreamMeter(calls.append, enabled=False).start(provider="p")
    assert live is NOOP_STREAM
    assert not live.enabled
    live.chunk(100)
    live.error("x")
    final = live.finish("completed")
    assert calls == []
    assert final.chunks_received == 0
    assert StreamMeter(calls.append).start(enabled=False) is NOOP_STREAM


def test_no_content_means_no_ttft_and_zero_rates() -> None:
    final = StreamMeter().start().finish("cancelled")
    assert final.ttft_ms is None
    assert final.chunks_received == 0
    assert final.avg_chunk_size == 0.0
    assert final.tokens_per_second == 0.0
    assert final.gap_max_ms == 0.0


def test_a_raising_callback_never_disturbs_the_stream(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(metrics: StreamMetrics) -> None:
        raise RuntimeError("callback failed")

    monkeypatch.setattr(_stream, "_callback_failure_logged", False)
    live = StreamMeter(boom, metrics_interval_ms=0).start()
    with caplog.at_level(logging.WARNING, logger="llmpulse.sdk"):
        live.chunk(1)
        final = live.finish()
    assert final.chunks_received == 1
    assert final.status == "completed"
    assert caplog.text.count("metrics_callback raised") == 1  # logged once, not per call


def test_use_sets_the_current_meter_for_a_block() -> None:
    meter = StreamMeter(metrics_interval_ms=1)
    assert current_meter() is None
    with meter.use() as active:
        assert active is meter
        assert current_meter() is meter
    assert current_meter() is None


def test_invalid_interval_names_the_field() -> None:
    with pytest.raises(ValueError, match="metrics_interval_ms"):
        StreamMeter(metrics_interval_ms=-1)
