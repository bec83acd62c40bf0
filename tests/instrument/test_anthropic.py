"""The real `anthropic` client (sync and async) instrumented against the fake provider server."""

from __future__ import annotations

import anthropic
import pytest

from llmpulse.sdk.instrument import instrument
from tests.instrument.conftest import MESSAGES, MODEL_ANTHROPIC, Harness, ListRecorder, dump, error_shape
from tests.instrument.fake_provider import FakeProvider

STREAM_APIS = ["messages", "messages_stream"]
#: (api, stream=True?) for every way of calling: create JSON, create stream, the stream() helper.
CALLS = [("messages", False), ("messages", True), ("messages_stream", False)]


def _stream_kwargs(api: str) -> dict[str, bool]:
    return {"stream": True} if api == "messages" else {}


def test_json_adds_cache_reads_and_writes_to_input(anthropic_harness: Harness) -> None:
    run = anthropic_harness.run("messages", x_fake="prompt=100,cached=60,write=25,chunks=4")
    assert run.error is None
    assert run.value.usage.input_tokens == 15  # Anthropic's own figure excludes the cache
    event = run.event
    assert (event.input_tokens, event.cached_input_tokens, event.cache_write_tokens) == (100, 60, 25)
    assert (event.output_tokens, event.total_tokens) == (4, 104)
    assert event.provider == "anthropic"
    assert event.model == MODEL_ANTHROPIC
    assert event.response_model == f"{MODEL_ANTHROPIC}-20250101"
    assert event.metadata is not None
    assert event.metadata["provider_request_id"] == "msg_fake"
    assert event.request_id is not None
    assert len(event.request_id) == 32
    assert event.finish_reason == "end_turn"
    assert event.status == "ok"


@pytest.mark.parametrize("api", STREAM_APIS)
def test_stream_usage_ttft_and_final_event(anthropic_harness: Harness, api: str) -> None:
    run = anthropic_harness.run(
        api, x_fake="prompt=80,cached=30,write=10,chunks=5,delay=0.15", **_stream_kwargs(api)
    )
    assert run.error is None
    event = run.event
    assert (event.input_tokens, event.cached_input_tokens, event.cache_write_tokens) == (80, 30, 10)
    assert event.output_tokens == 5  # message_delta's running total, not message_start's 1 added to it
    assert event.status == "ok"
    assert event.finish_reason == "end_turn"
    assert event.ttft_ms is not None
    assert event.ttft_ms >= 150.0  # measured to the first text delta, not to message_start
    assert event.latency_ms is not None
    assert event.latency_ms >= event.ttft_ms
    assert event.metadata is not None
    assert event.metadata["stream"]["chunks"] == 10  # start, block start, 5 deltas, block stop, delta, stop


@pytest.mark.parametrize(("api", "stream"), CALLS)
def test_app_sees_identical_values_and_events(anthropic_harness: Harness, api: str, stream: bool) -> None:
    kwargs = {"stream": True} if stream else {}
    plain = anthropic_harness.run(api, x_fake="chunks=3,cached=2", instrumented=False, **kwargs)
    metered = anthropic_harness.run(api, x_fake="chunks=3,cached=2", **kwargs)
    assert metered.error is None
    if api == "messages" and not stream:
        assert type(metered.value) is type(plain.value)
        assert dump(metered.value) == dump(plain.value)
    assert [dump(i) for i in metered.items] == [dump(i) for i in plain.items]
    assert [type(i) for i in metered.items] == [type(i) for i in plain.items]
    assert len(metered.events) == 1


@pytest.mark.parametrize("code", [429, 500])
@pytest.mark.parametrize(("api", "stream"), CALLS)
def test_error_status_is_recorded_and_reraised_unchanged(
    anthropic_harness: Harness, api: str, stream: bool, code: int
) -> None:
    kwargs = {"stream": True} if stream else {}
    plain = anthropic_harness.run(api, x_fake=f"error={code}", instrumented=False, **kwargs)
    run = anthropic_harness.run(api, x_fake=f"error={code}", **kwargs)
    assert isinstance(run.error, anthropic.APIStatusError)
    assert error_shape(run.error) == error_shape(plain.error)
    event = run.event
    assert event.status == "error"
    assert isinstance(event.error, dict)
    assert event.error["status_code"] == code
    assert event.error["type"] == type(run.error).__name__
    assert event.metadata is not None
    assert event.metadata["provider_request_id"] == f"req_err_{code}"
    assert event.request_id is not None
    assert len(event.request_id) == 32


@pytest.mark.parametrize("api", STREAM_APIS)
def test_abandoned_stream_is_cancelled_with_partial_usage(anthropic_harness: Harness, api: str) -> None:
    # items: message_start, content_block_start, then deltas (the helper adds a `text` event per delta)
    take = 5 if api == "messages" else 7
    run = anthropic_harness.run(api, x_fake="prompt=40,cached=10,chunks=12", take=take, **_stream_kwargs(api))
    event = run.event
    assert event.status == "cancelled"
    assert (event.input_tokens, event.cached_input_tokens) == (40, 10)  # from message_start
    assert event.output_tokens == 3  # three text deltas arrived (message_start said 1)
    assert event.finish_reason is None


@pytest.mark.parametrize("api", STREAM_APIS)
def test_cut_off_stream_is_an_error(anthropic_harness: Harness, api: str) -> None:
    plain = anthropic_harness.run(api, x_fake="chunks=6,cutoff=2", instrumented=False, **_stream_kwargs(api))
    run = anthropic_harness.run(api, x_fake="chunks=6,cutoff=2", **_stream_kwargs(api))
    assert run.error is not None
    assert error_shape(run.error) == error_shape(plain.error)
    event = run.event
    assert event.status == "error"
    assert isinstance(event.error, dict)
    assert event.error["type"] == type(run.error).__name__
    assert event.input_tokens == 20
    assert event.output_tokens == 2


def test_stream_helper_final_message_and_text_stream(fake: FakeProvider) -> None:
    recorder = ListRecorder()
    with anthropic.Anthropic(api_key="k", base_url=fake.url, max_retries=0) as client:
        instrument(client, recorder)
        manager = client.messages.stream(model=MODEL_ANTHROPIC, max_tokens=10, messages=MESSAGES)
        assert isinstance(manager, anthropic.MessageStreamManager)
        with manager as stream:
            assert isinstance(stream, anthropic.MessageStream)
            assert "".join(stream.text_stream) == "w0 w1 w2 w3 "
            assert stream.get_final_message().usage.output_tokens == 4
        assert [(e.status, e.output_tokens) for e in recorder.items] == [("ok", 4)]


@pytest.mark.parametrize("api", STREAM_APIS)
def test_error_event_mid_stream_is_an_error(anthropic_harness: Harness, api: str) -> None:
    run = anthropic_harness.run(api, x_fake="chunks=3,failed", **_stream_kwargs(api))
    assert isinstance(run.error, anthropic.APIStatusError)
    assert "overloaded_error" in str(run.error)
    event = run.event
    assert event.status == "error"
    assert isinstance(event.error, dict)
    assert event.error["type"] == type(run.error).__name__
    assert event.output_tokens == 3  # the text that arrived before the error
