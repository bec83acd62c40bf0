"""The real `openai` client (sync and async) instrumented against the fake provider server."""

from __future__ import annotations

import openai
import pytest

from llmpulse.sdk.instrument import instrument
from tests.instrument.conftest import MESSAGES, MODEL_OPENAI, Harness, ListRecorder, dump, error_shape
from tests.instrument.fake_provider import FakeProvider


def test_chat_json_records_inclusive_tokens_once(openai_harness: Harness) -> None:
    run = openai_harness.run("chat", x_fake="prompt=30,cached=12,write=6,reasoning=5,chunks=4")
    assert run.error is None
    assert run.value.usage.prompt_tokens == 30
    event = run.event
    # cached reads and writes counted once, inside input
    assert (event.input_tokens, event.cached_input_tokens, event.cache_write_tokens) == (30, 12, 6)
    assert (event.output_tokens, event.reasoning_tokens, event.total_tokens) == (9, 5, 39)
    assert event.model == MODEL_OPENAI
    assert event.response_model == f"{MODEL_OPENAI}-2025-01-01"
    assert event.provider == "openai"
    assert event.metadata is not None
    assert event.metadata["provider_request_id"] == "chatcmpl-fake"
    assert event.request_id is not None
    assert len(event.request_id) == 32
    assert event.status == "ok"
    assert event.finish_reason == "stop"
    assert event.ttft_ms is None
    assert event.latency_ms is not None
    assert event.latency_ms > 0
    assert event.cost is None  # left to the collector's worker


def test_chat_stream_reports_final_usage_and_ttft_from_first_content(openai_harness: Harness) -> None:
    run = openai_harness.run("chat", stream=True, x_fake="prompt=25,cached=10,chunks=5,delay=0.15")
    assert run.error is None
    event = run.event
    assert (event.input_tokens, event.cached_input_tokens, event.output_tokens) == (25, 10, 5)
    assert event.status == "ok"
    assert event.finish_reason == "stop"
    assert event.ttft_ms is not None
    assert event.ttft_ms >= 150.0  # the role-only chunk came at once; content only after the delay
    assert event.latency_ms is not None
    assert event.latency_ms >= event.ttft_ms
    assert event.metadata is not None
    assert "usage_estimated" not in event.metadata
    assert event.metadata["stream"]["chunks"] == 8  # role + 5 content + finish + usage-only


def test_chat_stream_asks_for_usage_and_hides_the_usage_only_chunk(
    openai_harness: Harness, fake: FakeProvider
) -> None:
    plain = openai_harness.run("chat", stream=True, x_fake="chunks=3", instrumented=False)
    assert "stream_options" not in fake.requests[-1]["body"]
    metered = openai_harness.run("chat", stream=True, x_fake="chunks=3")
    assert fake.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    assert all(chunk.choices for chunk in metered.items)  # `chunk.choices[0]` stays safe
    assert [dump(c) for c in metered.items] == [dump(c) for c in plain.items]
    assert metered.event.output_tokens == 3


def test_chat_stream_keeps_the_applications_stream_options(
    openai_harness: Harness, fake: FakeProvider
) -> None:
    run = openai_harness.run("chat", stream=True, x_fake="chunks=3", stream_options={"include_usage": True})
    assert fake.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    assert run.items[-1].choices == []  # the application asked: it gets the usage chunk
    assert run.items[-1].usage.completion_tokens == 3
    assert run.event.output_tokens == 3


def test_stream_usage_false_sends_no_stream_options_and_estimates(
    openai_harness: Harness, fake: FakeProvider
) -> None:
    run = openai_harness.run("chat", stream=True, x_fake="chunks=4", options={"stream_usage": False})
    assert "stream_options" not in fake.requests[-1]["body"]
    event = run.event
    assert event.status == "ok"
    assert event.output_tokens == 4  # one per content chunk
    assert event.input_tokens > 0
    assert event.metadata is not None
    assert event.metadata["usage_estimated"] is True


def test_cumulative_usage_in_every_chunk_is_not_double_counted(openai_harness: Harness) -> None:
    run = openai_harness.run("chat", stream=True, x_fake="cumulative,prompt=40,cached=8,chunks=6,reasoning=2")
    event = run.event
    assert (event.input_tokens, event.cached_input_tokens) == (40, 8)
    assert (event.output_tokens, event.reasoning_tokens) == (8, 2)


def test_chat_stream_tool_call_deltas_count_as_content(openai_harness: Harness) -> None:
    run = openai_harness.run("chat", stream=True, x_fake="tools,chunks=3,delay=0.1")
    event = run.event
    assert event.finish_reason == "tool_calls"
    assert event.ttft_ms is not None
    assert event.ttft_ms >= 100.0


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("code", [429, 500])
def test_error_status_is_recorded_and_reraised_unchanged(
    openai_harness: Harness, api: str, code: int
) -> None:
    plain = openai_harness.run(api, x_fake=f"error={code}", instrumented=False)
    run = openai_harness.run(api, x_fake=f"error={code}")
    assert isinstance(run.error, openai.APIStatusError)
    assert error_shape(run.error) == error_shape(plain.error)
    event = run.event
    assert event.status == "error"
    assert isinstance(event.error, dict)
    assert event.error["type"] == type(run.error).__name__
    assert event.error["status_code"] == code
    assert event.metadata is not None
    assert event.metadata["provider_request_id"] == f"req_err_{code}"
    assert event.request_id is not None
    assert len(event.request_id) == 32
    assert (event.input_tokens, event.output_tokens) == (0, 0)


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_stream_error_status_is_recorded(openai_harness: Harness, api: str) -> None:
    run = openai_harness.run(api, stream=True, x_fake="error=429")
    assert isinstance(run.error, openai.RateLimitError)
    assert run.event.status == "error"


def test_responses_json_and_stream(openai_harness: Harness) -> None:
    run = openai_harness.run("responses", x_fake="prompt=50,cached=20,reasoning=7,chunks=3")
    event = run.event
    assert run.value.usage.input_tokens == 50
    assert (event.input_tokens, event.cached_input_tokens, event.output_tokens, event.reasoning_tokens) == (
        50,
        20,
        10,
        7,
    )
    assert event.metadata is not None
    assert event.metadata["provider_request_id"] == "resp_fake"
    assert event.request_id is not None
    assert len(event.request_id) == 32
    assert event.finish_reason == "completed"
    streamed = openai_harness.run("responses", stream=True, x_fake="prompt=50,cached=20,chunks=3,delay=0.12")
    event = streamed.event
    assert (event.input_tokens, event.cached_input_tokens, event.output_tokens) == (50, 20, 3)
    assert event.status == "ok"
    assert event.ttft_ms is not None
    assert event.ttft_ms >= 120.0
    assert event.latency_ms is not None
    assert event.latency_ms >= event.ttft_ms


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_app_sees_identical_values_and_chunks(openai_harness: Harness, api: str) -> None:
    for stream in (False, True):
        plain = openai_harness.run(api, stream=stream, x_fake="chunks=4,cached=3", instrumented=False)
        metered = openai_harness.run(api, stream=stream, x_fake="chunks=4,cached=3")
        assert plain.error is None
        assert metered.error is None
        assert type(metered.value) is type(plain.value)
        assert dump(metered.value) == dump(plain.value)
        assert [dump(i) for i in metered.items] == [dump(i) for i in plain.items]
        assert [type(i) for i in metered.items] == [type(i) for i in plain.items]


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_abandoned_stream_yields_one_cancelled_event_with_partial_usage(
    openai_harness: Harness, api: str
) -> None:
    run = openai_harness.run(api, stream=True, x_fake="chunks=10,cumulative", take=4)
    assert len(run.items) == 4
    event = run.event
    assert event.status == "cancelled"
    assert event.output_tokens >= 3  # the content chunks received before the break
    assert event.output_tokens < 10
    assert event.input_tokens > 0


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_cut_off_stream_yields_error(openai_harness: Harness, api: str) -> None:
    plain = openai_harness.run(api, stream=True, x_fake="chunks=6,cutoff=2", instrumented=False)
    run = openai_harness.run(api, stream=True, x_fake="chunks=6,cutoff=2")
    assert run.error is not None
    assert error_shape(run.error) == error_shape(plain.error)
    assert [dump(i) for i in run.items] == [dump(i) for i in plain.items]
    event = run.event
    assert event.status == "error"
    assert isinstance(event.error, dict)
    assert event.error["type"] == type(run.error).__name__
    assert event.output_tokens == 2  # partial: the two content chunks that arrived


def test_stream_type_and_context_manager_close(fake: FakeProvider) -> None:
    recorder = ListRecorder()
    with openai.OpenAI(api_key="k", base_url=fake.openai_url, max_retries=0) as client:
        instrument(client, recorder)
        with client.chat.completions.create(
            model=MODEL_OPENAI, messages=MESSAGES, stream=True, extra_headers={"x-fake": "chunks=5"}
        ) as stream:
            assert isinstance(stream, openai.Stream)
            first = next(stream)
            assert first.choices[0].delta.role == "assistant"
            assert recorder.items == []  # not ended yet
        assert [e.status for e in recorder.items] == ["cancelled"]  # left its `with` block early
        stream = client.chat.completions.create(
            model=MODEL_OPENAI, messages=MESSAGES, stream=True, extra_headers={"x-fake": "chunks=2"}
        )
        assert len(list(stream)) == 4
        stream.close()
        assert [e.status for e in recorder.items] == ["cancelled", "ok"]  # close() after the end: no second


def test_raw_response_calls_pass_through_unrecorded(fake: FakeProvider) -> None:
    recorder = ListRecorder()
    with openai.OpenAI(api_key="k", base_url=fake.openai_url, max_retries=0) as client:
        instrument(client, recorder)
        raw = client.chat.completions.with_raw_response.create(model=MODEL_OPENAI, messages=MESSAGES)
        assert raw.parse().usage is not None
        assert recorder.items == []


def test_with_options_copy_is_instrumented_too(fake: FakeProvider) -> None:
    recorder = ListRecorder()
    with openai.OpenAI(api_key="k", base_url=fake.openai_url, max_retries=0) as client:
        instrument(client, recorder, tenant_id="acme")
        derived = client.with_options(timeout=5.0)
        derived.chat.completions.create(model=MODEL_OPENAI, messages=MESSAGES)
        assert [e.tenant_id for e in recorder.items] == ["acme"]


def test_responses_failed_event_is_an_error(openai_harness: Harness) -> None:
    plain = openai_harness.run("responses", stream=True, x_fake="chunks=2,failed", instrumented=False)
    run = openai_harness.run("responses", stream=True, x_fake="chunks=2,failed")
    assert [dump(i) for i in run.items] == [dump(i) for i in plain.items]
    assert error_shape(run.error) == error_shape(plain.error)
    event = run.event
    assert event.status == "error"
    assert event.error == {"type": "server_error", "message": "boom"}
    assert event.finish_reason == "failed"
