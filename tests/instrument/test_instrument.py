"""`instrument()` itself: scope, idempotence, attributes, collector, budget, tracing, metering."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import anthropic
import openai
import pytest

from llmpulse.events import LLMCall
from llmpulse.sdk import Collector, TelemetryConfig
from llmpulse.sdk._budget import Budget, BudgetExceeded
from llmpulse.sdk._stream import StreamMeter, StreamMetrics
from llmpulse.sdk.instrument import instrument
from llmpulse.testing import InMemoryExporter
from tests.instrument.conftest import MESSAGES, MODEL_ANTHROPIC, MODEL_OPENAI, ListRecorder
from tests.instrument.fake_provider import FakeProvider


def _openai(fake: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(api_key="k", base_url=fake.openai_url, max_retries=0)


def _chat(client: Any, x_fake: str = "", **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=MODEL_OPENAI, messages=MESSAGES, extra_headers={"x-fake": x_fake}, **kwargs
    )


def test_instrumenting_twice_records_once_and_takes_the_new_settings(fake: FakeProvider) -> None:
    first, second = ListRecorder(), ListRecorder()
    with _openai(fake) as client:
        assert instrument(client, first, route="a") is client
        wrapped = client.chat.completions.create
        assert instrument(client, second, route="b") is client
        assert client.chat.completions.create is wrapped  # not wrapped twice
        _chat(client)
    assert first.items == []
    assert [e.route for e in second.items] == ["b"]


def test_other_clients_of_the_same_class_are_untouched(fake: FakeProvider) -> None:
    recorder = ListRecorder()
    with _openai(fake) as client, _openai(fake) as other:
        instrument(client, recorder)
        assert "create" in vars(client.chat.completions)
        assert "create" not in vars(other.chat.completions)
        _chat(other)
        assert recorder.items == []
        _chat(client)
        assert len(recorder.items) == 1


def test_anthropic_other_client_untouched(fake: FakeProvider) -> None:
    recorder = ListRecorder()
    with (
        anthropic.Anthropic(api_key="k", base_url=fake.url, max_retries=0) as client,
        anthropic.Anthropic(api_key="k", base_url=fake.url, max_retries=0) as other,
    ):
        instrument(client, recorder)
        with other.messages.stream(model=MODEL_ANTHROPIC, max_tokens=5, messages=MESSAGES) as stream:
            stream.until_done()
        assert type(stream) is anthropic.MessageStream  # not swapped
        other.messages.create(model=MODEL_ANTHROPIC, max_tokens=5, messages=MESSAGES)
        assert recorder.items == []


def test_attributes_top_level_and_metadata(fake: FakeProvider) -> None:
    recorder = ListRecorder()
    attributes = {
        "tenant_id": "acme",
        "route": "chat",
        "user_id": "u1",
        "org_id": "o1",
        "session_id": "s1",
        "feature": "f",
        "endpoint": "/ask",
        "environment": "prod",
    }
    with _openai(fake) as client:
        instrument(client, recorder, **attributes, team="search", shard=3)
        _chat(client)
        _chat(client)
    first, second = recorder.items
    for key, value in attributes.items():
        assert getattr(first, key) == value
    assert first.metadata == {"team": "search", "shard": 3, "provider_request_id": "chatcmpl-fake"}
    assert first.metadata is not second.metadata  # each event owns its metadata


def test_unsupported_object_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="openai and anthropic"):
        instrument(object(), ListRecorder())


def test_without_collector_calls_pass_through_until_one_is_bound(fake: FakeProvider) -> None:
    exporter = InMemoryExporter()
    collector = Collector(TelemetryConfig(), exporters=[exporter])
    try:
        with _openai(fake) as client:
            instrument(client)
            assert _chat(client).usage.total_tokens == 24
            assert collector.flush(5.0)
            assert exporter.items == []
            with collector.bind():
                _chat(client)
            assert collector.flush(5.0)
            assert [item["model"] for item in exporter.items] == [MODEL_OPENAI]
    finally:
        collector.shutdown(5.0)


def test_real_collector_exports_the_call_with_cost(fake: FakeProvider) -> None:
    exporter = InMemoryExporter()
    collector = Collector(TelemetryConfig(), exporters=[exporter])
    try:
        with _openai(fake) as client:
            instrument(client, collector, tenant_id="acme")
            _chat(client, "prompt=1000,cached=400,chunks=4")
        assert collector.flush(5.0)
    finally:
        collector.shutdown(5.0)
    (item,) = exporter.items
    assert item["input_tokens"] == 1000
    assert item["cached_input_tokens"] == 400
    assert item["tenant_id"] == "acme"
    assert item["cost"] is not None
    assert item["cost"] > 0


def test_budget_reserves_before_and_settles_after(fake: FakeProvider) -> None:
    budget = Budget(1.0)
    with _openai(fake) as client:
        instrument(client, ListRecorder(), budget=budget)
        _chat(client, "prompt=1000,chunks=4", max_tokens=100)
        spent = budget.spent()
        assert 0 < spent < 0.01
        assert budget.reserved() == 0
        with pytest.raises(openai.RateLimitError):
            _chat(client, "error=429")
        assert budget.spent() == spent  # released, not charged
        assert budget.reserved() == 0
        stream = _chat(client, "chunks=3", stream=True)
        assert budget.reserved() > 0  # in flight
        list(stream)
        assert budget.reserved() == 0
        assert budget.spent() > spent


def test_budget_exceeded_is_raised_before_the_request(fake: FakeProvider) -> None:
    budget = Budget(1e-9)
    recorder = ListRecorder()
    with _openai(fake) as client:
        instrument(client, recorder, budget=budget)
        sent = len(fake.requests)
        with pytest.raises(BudgetExceeded):
            _chat(client, max_tokens=1000)
        assert len(fake.requests) == sent
    assert recorder.items == []


def test_call_inside_a_span_carries_its_trace(fake: FakeProvider) -> None:
    recorder = ListRecorder()
    collector = Collector(TelemetryConfig(), exporters=[])
    try:
        with _openai(fake) as client:
            instrument(client, recorder)
            with collector.span("handler") as span:
                _chat(client)
                stream = _chat(client, stream=True)
            _chat(client)
            list(stream)  # consumed outside the span: still the span's call
    finally:
        collector.shutdown(5.0)
    inside, outside, streamed = recorder.items
    assert streamed.trace_id == span.trace_id
    assert streamed.parent_span_id == span.span_id
    assert inside.trace_id == span.trace_id
    assert inside.parent_span_id == span.span_id
    assert inside.span_id is not None
    assert inside.span_id != span.span_id
    assert outside.trace_id is None


def test_meter_callback_cadence_and_final_metrics(fake: FakeProvider) -> None:
    reports: list[StreamMetrics] = []
    recorder = ListRecorder()
    with _openai(fake) as client:
        instrument(client, recorder, meter=StreamMeter(reports.append, metrics_interval_ms=40))
        list(_chat(client, "chunks=6,gap=0.025", stream=True))
    final = reports[-1]
    assert [m.status for m in reports[:-1]] == ["streaming"] * (len(reports) - 1)
    assert 1 <= len(reports) - 1 <= final.duration_ms // 40  # >= 125 ms of chunks, <= 1 report per 40 ms
    assert final.status == "completed"
    assert final.chunks_received == 9
    assert final.bytes_received > 0
    assert final.ttft_ms is not None
    assert final.gap_max_ms >= 20.0
    assert final.output_tokens == 6
    assert recorder.items[0].metadata is not None
    assert recorder.items[0].metadata["stream"]["stream_id"] == final.stream_id


def test_meter_per_request_override_and_disabled(fake: FakeProvider) -> None:
    default_reports: list[StreamMetrics] = []
    special: list[StreamMetrics] = []
    recorder = ListRecorder()
    with _openai(fake) as client:
        instrument(client, recorder, meter=StreamMeter(default_reports.append))
        with StreamMeter(special.append, include_raw_chunks=True).use():
            list(_chat(client, "chunks=2", stream=True))
        assert default_reports == []
        assert special[-1].raw_chunks is not None
        assert len(special[-1].raw_chunks) == 5
        with StreamMeter(enabled=False).use():
            list(_chat(client, "chunks=2", stream=True))
    assert len(special) == 1
    assert default_reports == []
    metered, unmetered = recorder.items
    assert metered.metadata is not None
    assert "stream" in metered.metadata
    assert unmetered.metadata == {"provider_request_id": "chatcmpl-fake"}  # a disabled meter adds nothing
    assert unmetered.ttft_ms is not None  # ttft does not depend on the meter


def test_failing_recorder_never_reaches_the_application(
    fake: FakeProvider, expect_telemetry_failure: None, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def record(self, item: LLMCall) -> None:
            raise RuntimeError("boom")

    with _openai(fake) as client:
        instrument(client, Broken())
        assert _chat(client).usage.total_tokens == 24
        assert len(list(_chat(client, stream=True))) == 6
    assert caplog.text.count("instrumentation failed while recording a call") == 1  # logged once


def test_importing_the_sdk_does_not_import_provider_packages() -> None:
    code = "import sys, llmpulse.sdk.instrument; print(sorted({'openai', 'anthropic'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_call_inside_an_opentelemetry_span_carries_its_trace(fake: FakeProvider) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    recorder = ListRecorder()
    with _openai(fake) as client:
        instrument(client, recorder)
        with tracer.start_as_current_span("outer") as span:
            _chat(client)
    context = span.get_span_context()
    (event,) = recorder.items
    assert event.trace_id == format(context.trace_id, "032x")
    assert event.parent_span_id == format(context.span_id, "016x")


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_stream_is_cut_off_when_its_budget_is_exhausted(fake: FakeProvider, is_async: bool) -> None:
    # The reservation covers max_tokens=2; the fake server ignores it and streams 400 tokens.
    budget = Budget(2e-5)
    recorder = ListRecorder()
    received: list[Any] = []

    async def consume_async() -> None:
        async with openai.AsyncOpenAI(api_key="k", base_url=fake.openai_url, max_retries=0) as client:
            instrument(client, recorder, budget=budget)
            stream = await _chat(client, "chunks=400", stream=True, max_tokens=2)
            async for chunk in stream:
                received.append(chunk)

    def consume() -> None:
        with _openai(fake) as client:
            instrument(client, recorder, budget=budget)
            for chunk in _chat(client, "chunks=400", stream=True, max_tokens=2):
                received.append(chunk)

    with pytest.raises(BudgetExceeded):
        asyncio.run(consume_async()) if is_async else consume()
    assert 4 <= len(received) < 100  # stopped early, not after 400 chunks
    (event,) = recorder.items
    assert event.status == "error"
    assert isinstance(event.error, dict)
    assert event.error["type"] == "BudgetExceeded"
    # the role chunk carried no token; the chunk that crossed the limit was generated (and is billed)
    # but not delivered
    assert event.output_tokens == len(received)
    assert budget.reserved() == 0
    assert budget.spent() > 0  # what was streamed is charged, not released


def test_cut_connection_settles_the_partial_cost(fake: FakeProvider) -> None:
    budget = Budget(1.0)
    with _openai(fake) as client:
        instrument(client, ListRecorder(), budget=budget)
        stream = _chat(client, "chunks=6,cutoff=3", stream=True)
        # openai >= 1.7x wraps the transport error in APIConnectionError; older versions do not
        with pytest.raises(Exception, match=r"onnection|incomplete"):
            list(stream)
    assert budget.reserved() == 0
    assert budget.spent() > 0
