"""Decoding, validation and encodings of the wire schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from llmpulse.events import (
    EventValidationError,
    Limits,
    LLMCall,
    LLMRequest,
    LLMResponse,
    decode_batch,
    decode_log,
    decode_one,
    encode_json,
    encode_log,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TS = "2026-03-01T11:59:00Z"


def _req(**over: object) -> dict[str, object]:
    body: dict[str, object] = {
        "type": "llm.request",
        "request_id": "r1",
        "tenant_id": "acme",
        "route": "chat",
        "model": "gpt-4o-mini",
        "timestamp": TS,
        "prompt_tokens": 321,
        "user_id_hash": "abc",
        "metadata": {"experiment": "v3"},
    }
    body.update(over)
    return body


def _enc(obj: object) -> bytes:
    return msgspec.json.encode(obj)


def test_streamlens_request_body_decodes_unchanged() -> None:
    body = _req()
    del body["type"]
    event = decode_one(_enc(body), LLMRequest, Limits(), NOW)
    assert isinstance(event, LLMRequest)
    assert (event.request_id, event.tenant_id, event.route, event.prompt_tokens) == (
        "r1",
        "acme",
        "chat",
        321,
    )
    assert event.metadata == {"experiment": "v3"}


def test_timestamps_with_offsets_are_stored_in_utc() -> None:
    event = decode_one(_enc(_req(timestamp="2026-03-01T13:59:00+02:00")), LLMRequest, Limits(), NOW)
    assert event.timestamp == datetime(2026, 3, 1, 11, 59, tzinfo=UTC)
    assert event.timestamp.tzinfo is UTC


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"prompt_tokens": "321"}, "prompt_tokens"),
        ({"prompt_tokens": -1}, "prompt_tokens"),
        ({"prompt_tokens": 10**9 + 1}, "prompt_tokens"),
        ({"prompt_tokens": 1.5}, "prompt_tokens"),
        ({"timestamp": "2026-03-01T11:59:00"}, "timestamp"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"tenant_id": ""}, "tenant_id"),
        ({"tenant_id": "x" * 257}, "tenant_id"),
        ({"request_id": None}, "request_id"),
    ],
)
def test_bad_request_fields_are_rejected_naming_the_field(over: dict[str, object], field: str) -> None:
    with pytest.raises(EventValidationError, match=field):
        decode_one(_enc(_req(**over)), LLMRequest, Limits(), NOW)


def test_missing_required_field_is_named() -> None:
    body = _req()
    del body["model"]
    with pytest.raises(EventValidationError, match="model"):
        decode_one(_enc(body), LLMRequest, Limits(), NOW)


def test_timestamp_window_is_enforced() -> None:
    future = (NOW + timedelta(days=1, seconds=5)).isoformat()
    with pytest.raises(EventValidationError, match="future"):
        decode_one(_enc(_req(timestamp=future)), LLMRequest, Limits(), NOW)
    past = (NOW - timedelta(days=31)).isoformat()
    with pytest.raises(EventValidationError, match="past"):
        decode_one(_enc(_req(timestamp=past)), LLMRequest, Limits(), NOW)
    event = decode_one(_enc(_req(timestamp=past)), LLMRequest, Limits(max_past_s=40 * 86400), NOW)
    assert event.timestamp < NOW


def test_metadata_size_and_depth_limits() -> None:
    limits = Limits(max_metadata_bytes=100, max_metadata_depth=3)
    with pytest.raises(EventValidationError, match="metadata"):
        decode_one(_enc(_req(metadata={"k": "v" * 200})), LLMRequest, limits, NOW)
    with pytest.raises(EventValidationError, match="metadata"):
        decode_one(_enc(_req(metadata={"a": {"b": {"c": {"d": 1}}}})), LLMRequest, limits, NOW)
    ok = decode_one(_enc(_req(metadata={"a": {"b": {"c": 1}}})), LLMRequest, limits, NOW)
    assert ok.metadata == {"a": {"b": {"c": 1}}}  # type: ignore[union-attr]


def test_invalid_utf8_is_rejected() -> None:
    body = _enc(_req()).replace(b'"acme"', b'"ac\xffme"')
    with pytest.raises(EventValidationError, match="UTF-8"):
        decode_one(body, LLMRequest, Limits(), NOW)


def test_response_error_may_be_null_string_or_object() -> None:
    for error in (None, "rate limited", {"code": 429}):
        body = {"request_id": "r1", "timestamp": TS, "latency_ms": 12.5, "error": error}
        event = decode_one(_enc(body), LLMResponse, Limits(), NOW)
        assert isinstance(event, LLMResponse)
        assert event.is_error is (error is not None)
    with pytest.raises(EventValidationError, match="error"):
        decode_one(
            _enc({"request_id": "r", "timestamp": TS, "latency_ms": 1, "error": 5}), LLMResponse, Limits()
        )


def test_latency_must_be_a_finite_non_negative_number() -> None:
    for bad in (-1, 1e400, "12"):
        body = _enc({"request_id": "r1", "timestamp": TS, "latency_ms": bad})
        with pytest.raises(EventValidationError, match="latency_ms"):
            decode_one(body, LLMResponse, Limits(), NOW)


def test_call_event_defaults_and_token_rules() -> None:
    call = decode_one(
        _enc({"model": "gpt-4o", "timestamp": TS, "input_tokens": 10, "output_tokens": 5, "error": "boom"}),
        LLMCall,
        Limits(),
        NOW,
    )
    assert isinstance(call, LLMCall)
    assert call.total_tokens == 15
    assert call.status == "error"
    assert call.request_id  # assigned at ingest
    assert call.event_type == "llm_cost"
    with pytest.raises(EventValidationError, match="cached_input_tokens"):
        decode_one(
            _enc({"model": "m", "timestamp": TS, "input_tokens": 1, "cached_input_tokens": 2}),
            LLMCall,
            Limits(),
        )
    with pytest.raises(EventValidationError, match="reasoning_tokens"):
        decode_one(
            _enc({"model": "m", "timestamp": TS, "output_tokens": 1, "reasoning_tokens": 2}),
            LLMCall,
            Limits(),
        )


def test_call_json_carries_token_copilot_and_llmpulse_fields() -> None:
    call = LLMCall(model="gpt-4o", timestamp=NOW, input_tokens=3, output_tokens=4, cost=0.5, request_id="x")
    decoded = msgspec.json.decode(encode_json(call))
    for name in (
        "timestamp", "event_type", "model", "input_tokens", "output_tokens", "total_tokens", "cost",
        "user_id", "org_id", "session_id", "feature", "endpoint", "environment", "metadata",
        "type", "request_id", "tenant_id", "route", "provider", "response_model", "latency_ms", "ttft_ms",
        "cached_input_tokens", "cache_write_tokens", "reasoning_tokens", "finish_reason", "error", "status",
        "user_id_hash", "trace_id", "span_id", "parent_span_id",
    ):  # fmt: skip
        assert name in decoded, name
    assert decoded["type"] == "llm.call"
    assert decoded["event_type"] == "llm_cost"
    assert decoded["timestamp"] == "2026-03-01T12:00:00Z"
    assert decoded["total_tokens"] == 7


def test_batch_reports_each_bad_item_and_keeps_the_good_ones() -> None:
    items = [
        _req(request_id="a"),
        _req(request_id="b", prompt_tokens="x"),
        {"type": "nope"},
        _req(request_id="c"),
    ]
    result = decode_batch(_enc(items), Limits(), now=NOW)
    assert [e.request_id for e in result.events] == ["a", "c"]  # type: ignore[union-attr]
    assert [r.index for r in result.rejected] == [1, 2]
    assert "prompt_tokens" in result.rejected[0].error
    assert "type" in result.rejected[1].error


def test_token_copilot_item_without_type_is_a_call() -> None:
    item = {"timestamp": TS, "event_type": "llm_cost", "model": "gpt-4o-mini", "input_tokens": 1000,
            "output_tokens": 500, "total_tokens": 1500, "cost": 0.0245, "user_id": "user_123"}  # fmt: skip
    for body in (_enc(item), _enc([item])):
        result = decode_batch(body, Limits(), now=NOW)
        assert not result.rejected
        (call,) = result.events
        assert isinstance(call, LLMCall)
        assert call.cost == 0.0245
        assert call.user_id == "user_123"


def test_ndjson_batches() -> None:
    body = b"\n".join(_enc(_req(request_id=str(i))) for i in range(3)) + b"\n"
    for ndjson in (True, False):
        result = decode_batch(body, Limits(), ndjson=ndjson, now=NOW)
        assert [e.request_id for e in result.events] == ["0", "1", "2"]  # type: ignore[union-attr]


def test_batch_size_limit_and_malformed_bodies() -> None:
    with pytest.raises(EventValidationError, match="limit is 2"):
        decode_batch(_enc([_req(), _req(), _req()]), Limits(max_batch_items=2), now=NOW)
    for body in (b"[1,", b"42", b"", b'"x"'):
        with pytest.raises(EventValidationError):
            decode_batch(body, Limits(), now=NOW)


def test_log_encoding_round_trips_every_kind() -> None:
    events = [
        LLMRequest(
            request_id="r", tenant_id="t", model="m", timestamp=NOW, prompt_tokens=1, metadata={"a": [1]}
        ),
        LLMResponse(request_id="r", timestamp=NOW, latency_ms=1.5, error={"code": 500}),
        LLMCall(model="m", timestamp=NOW, input_tokens=5, cached_input_tokens=2, request_id="c"),
    ]
    assert decode_log(encode_log(events)) == events


def test_a_fully_accepted_unchanged_array_is_kept_raw_for_the_log() -> None:
    body = _enc([_req(request_id="a"), _req(request_id="b")])
    result = decode_batch(body, Limits(), now=NOW)
    assert result.raw == body
    assert decode_log(result.raw) == result.events
    # normalised (a non-UTC offset), partly rejected, or not an array: re-encoded instead
    shifted = decode_batch(_enc([_req(timestamp="2026-03-01T13:59:00+02:00")]), Limits(), now=NOW)
    assert shifted.raw is None
    partial = decode_batch(_enc([_req(), _req(timestamp="2020-01-01T00:00:00Z")]), Limits(), now=NOW)
    assert partial.raw is None
    single = decode_batch(_enc(_req()), Limits(), now=NOW)
    assert single.raw is None
    anonymous_call = decode_batch(
        _enc([{"type": "llm.call", "model": "m", "timestamp": TS}]), Limits(), now=NOW
    )
    assert anonymous_call.raw is None
