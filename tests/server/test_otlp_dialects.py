"""The span -> call mapping's per-instrumentation readers, on hand-made spans (`read_export`, pure).

The real instrumentations are driven in test_otlp_clients.py; these pin the edges they do not reach
(malformed attributes, a Logfire stream that failed, the proposed GenAI cost attributes).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from llmpulse.events import LLMCall
from llmpulse.server import ServerSettings
from llmpulse.server._otlp_calls import Export, read_export
from tests.server.test_otlp_receiver import BASE, chat, pb_span

NOW = BASE + timedelta(minutes=1)


def export(*spans: PbSpan) -> Export:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.extend(spans)
    return read_export(request, ServerSettings(), NOW)


def one(attrs: dict[str, Any], **span: Any) -> LLMCall:
    result = export(pb_span(0, attrs, **span))
    assert result.rejections == []
    (call,) = result.calls
    return call


def rejected(attrs: dict[str, Any]) -> str:
    result = export(pb_span(0, attrs))
    assert result.calls == []
    (reason,) = result.rejections
    return reason


def openinference(**attrs: Any) -> dict[str, Any]:
    return {"openinference.span.kind": "LLM", "llm.system": "openai", **attrs}


# -- model -------------------------------------------------------------------------------------------


def test_openinference_failed_call_takes_its_model_from_the_invocation_parameters() -> None:
    call = one(
        openinference(**{"llm.invocation_parameters": '{"model": "gpt-4o", "stream": true}'}), error=True
    )
    assert (call.model, call.status, call.response_model) == ("gpt-4o", "error", None)


def test_openinference_success_keeps_the_requested_model_and_the_answering_one() -> None:
    call = one(
        openinference(
            **{"llm.invocation_parameters": '{"model": "gpt-4o"}', "llm.model_name": "gpt-4o-2024-08-06"}
        )
    )
    assert (call.model, call.response_model) == ("gpt-4o", "gpt-4o-2024-08-06")


@pytest.mark.parametrize("params", ["{not json", '["gpt-4o"]', '{"model": 4}', '{"model": ""}', "x" * 70_000])
def test_unusable_invocation_parameters_are_ignored_not_the_call(params: str) -> None:
    assert one(openinference(**{"llm.invocation_parameters": params})).model == "unknown"
    named = one(openinference(**{"llm.invocation_parameters": params, "llm.model_name": "gpt-4o"}))
    assert named.model == "gpt-4o"


def test_gen_ai_request_model_wins_over_the_invocation_parameters() -> None:
    attrs = chat("gpt-4o-mini", **{"llm.invocation_parameters": '{"model": "other"}'})
    assert one(attrs).model == "gpt-4o-mini"


# -- time to first token -----------------------------------------------------------------------------


def test_openlit_time_to_first_token_attribute_is_read_for_streams_only() -> None:
    ttft = {"gen_ai.server.time_to_first_token": 0.125}
    assert one(chat(**ttft, **{"gen_ai.request.stream": True})).ttft_ms == pytest.approx(125.0)
    assert one(chat(**ttft)).ttft_ms == pytest.approx(125.0)  # no flag: taken as sent
    assert one(chat(**ttft, **{"gen_ai.request.stream": False})).ttft_ms is None


def test_the_conventions_attribute_wins_over_openlits() -> None:
    attrs = chat(**{"gen_ai.response.time_to_first_chunk": 0.2, "gen_ai.server.time_to_first_token": 0.9})
    assert one(attrs).ttft_ms == pytest.approx(200.0)


def test_a_negative_openlit_time_to_first_token_rejects_the_span_naming_it() -> None:
    assert "`gen_ai.server.time_to_first_token` must be a non-negative number" in rejected(
        chat(**{"gen_ai.server.time_to_first_token": -1.0})
    )


@pytest.mark.parametrize("event", ["gen_ai.content.completion.chunk", "First Token Stream Event"])
def test_the_first_chunk_event_gives_the_time_to_first_token(event: str) -> None:
    span = pb_span(0, chat(), duration_ms=500.0)
    for offset_ms, name in ((5.0, "other"), (40.0, event), (90.0, event)):
        added = span.events.add()
        added.name = name
        added.time_unix_nano = span.start_time_unix_nano + round(offset_ms * 1e6)
    (call,) = export(span).calls
    assert call.ttft_ms == pytest.approx(40.0)


def test_no_attribute_and_no_chunk_event_means_no_time_to_first_token() -> None:
    assert one(chat()).ttft_ms is None


# -- tokens ------------------------------------------------------------------------------------------


def test_openllmetry_reasoning_tokens_are_read() -> None:
    assert one(chat(**{"gen_ai.usage.reasoning_tokens": 7})).reasoning_tokens == 7


def test_logfire_raw_usage_gives_reasoning_and_cached_tokens() -> None:
    raw = (
        '{"prompt_tokens": 100, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 30},'
        ' "completion_tokens_details": {"reasoning_tokens": 6}}'
    )
    call = one(chat(**{"gen_ai.usage.raw": raw}))
    assert (call.cached_input_tokens, call.reasoning_tokens) == (30, 6)
    responses = (
        '{"input_tokens_details": {"cached_tokens": 4}, "output_tokens_details": {"reasoning_tokens": 2}}'
    )
    call = one(chat(**{"gen_ai.usage.raw": responses}))
    assert (call.cached_input_tokens, call.reasoning_tokens) == (4, 2)


def test_a_named_token_attribute_wins_over_the_raw_usage() -> None:
    raw = '{"completion_tokens_details": {"reasoning_tokens": 6}}'
    assert (
        one(chat(**{"gen_ai.usage.raw": raw, "gen_ai.usage.reasoning.output_tokens": 3})).reasoning_tokens
        == 3
    )


@pytest.mark.parametrize("raw", ['{"completion_tokens_details": {"reasoning_tokens": -1}}', "nope", "[]"])
def test_unusable_raw_usage_is_ignored(raw: str) -> None:
    assert one(chat(**{"gen_ai.usage.raw": raw})).reasoning_tokens == 0


# -- Logfire's stream pair ---------------------------------------------------------------------------


def logfire(span_type: str, template: str, **attrs: Any) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "logfire.span_type": span_type,
        "logfire.msg_template": template,
        **attrs,
    }


HEAD = "Chat Completion with {request_data[model]!r}"
LOG = "streaming response from {request_data[model]!r} took {duration:.2f}s"


def test_logfire_stream_is_one_call_timed_by_its_log() -> None:
    head = pb_span(0, logfire("span", HEAD), duration_ms=12.0)
    usage = {"gen_ai.usage.input_tokens": 25, "gen_ai.usage.output_tokens": 6, "duration": 0.75}
    log = pb_span(1, logfire("log", LOG, **usage), start_s=1.0, duration_ms=0.0)
    result = export(head, log)
    assert (result.received, result.ignored, result.rejections) == (2, 1, [])
    (call,) = result.calls
    assert call.span_id == "0000000000000002"
    assert (call.input_tokens, call.output_tokens) == (25, 6)
    assert call.latency_ms == pytest.approx(750.0)
    # the log is written when the stream ends: the call started `duration` before it
    assert call.timestamp == BASE + timedelta(seconds=0.25)


def test_a_logfire_log_without_a_usable_duration_keeps_its_own_times() -> None:
    log = pb_span(0, logfire("log", LOG, duration="slow"), start_s=1.0, duration_ms=0.0)
    (call,) = export(log).calls
    assert call.latency_ms == 0.0
    assert call.timestamp == BASE + timedelta(seconds=1)


def test_logfire_request_spans_that_answered_or_failed_are_calls() -> None:
    answered = pb_span(
        0, logfire("span", HEAD, **{"gen_ai.response.id": "c-1", "gen_ai.usage.input_tokens": 3})
    )
    failed = pb_span(1, logfire("span", HEAD), error=True)
    result = export(answered, failed)
    assert [c.status for c in result.calls] == ["ok", "error"]
    assert result.ignored == 0


def test_a_failed_logfire_stream_log_is_an_error_call() -> None:
    log = pb_span(
        0, logfire("log", LOG, duration=0.1, **{"error.type": "APIConnectionError"}), duration_ms=0.0
    )
    (call,) = export(log).calls
    assert (call.status, call.error) == ("error", {"type": "APIConnectionError"})


def test_spans_of_other_instrumentations_are_never_taken_for_a_stream_head() -> None:
    # an answerless, successful span without Logfire's attributes is still a call
    assert len(export(pb_span(0, {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"})).calls) == 1


# -- cost --------------------------------------------------------------------------------------------


def test_the_proposed_gen_ai_cost_attributes_are_read_with_their_source() -> None:
    provider = one(chat(**{"gen_ai.usage.cost.amount": 0.5, "gen_ai.usage.cost.source": "provider"}))
    assert (provider.cost, provider.cost_source) == (0.5, "provider")
    local = one(chat(**{"gen_ai.usage.cost.amount": 0.25, "gen_ai.usage.cost.currency": "USD"}))
    assert (local.cost, local.cost_source) == (0.25, "estimate")
    euros = one(chat(**{"gen_ai.usage.cost.amount": 0.25, "gen_ai.usage.cost.currency": "EUR"}))
    assert (euros.cost, euros.cost_source) == (None, None)


def test_llmpulse_cost_attributes_win_and_an_unknown_source_is_rejected() -> None:
    call = one(
        chat(
            **{"llmpulse.cost_usd": 0.1, "llmpulse.cost_source": "provider", "gen_ai.usage.cost.amount": 9.0}
        )
    )
    assert (call.cost, call.cost_source) == (0.1, "provider")
    assert "`llmpulse.cost_source` must be one of" in rejected(
        chat(**{"llmpulse.cost_usd": 0.1, "llmpulse.cost_source": "guess"})
    )
