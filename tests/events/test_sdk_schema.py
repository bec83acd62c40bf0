"""The SDK's telemetry items: tags, JSON form, validation against the limits."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from llmpulse.events import (
    ITEM_TYPES,
    EventValidationError,
    LLMCall,
    LogEvent,
    Metric,
    Orchestration,
    Span,
    ToolExecution,
    decode_items,
    encode_item,
    encode_json,
    items_to_dicts,
    new_span_id,
    new_trace_id,
    to_dict,
    validate_item,
)
from llmpulse.events._limits import MAX_ID_LEN, MAX_NAME_LEN

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _examples() -> list[object]:
    return [
        LLMCall(model="gpt-4o-mini", timestamp=T0, input_tokens=10, output_tokens=5, metadata={"a": 1}),
        Span(
            name="retrieve",
            trace_id="a" * 32,
            span_id="b" * 16,
            parent_span_id="c" * 16,
            start_time=T0,
            end_time=T0 + timedelta(milliseconds=5),
            duration_ms=5.0,
            attributes={"k": "v"},
        ),
        ToolExecution(name="search", timestamp=T0, arguments={"q": "x"}, result=[1, 2], duration_ms=3.0),
        Orchestration(name="plan", kind="workflow", timestamp=T0, steps=["a", "b"], duration_ms=9.0),
        Metric(name="latency", value=125.5, metric_type="histogram", tags={"endpoint": "/x"}, timestamp=T0),
        LogEvent(name="checkout", message="done", severity="warning", timestamp=T0, metadata={"n": 2}),
    ]


@pytest.mark.parametrize("item", _examples(), ids=lambda i: type(i).__name__)
def test_to_dict_equals_the_decoded_json_form(item: object) -> None:
    as_dict = to_dict(item)  # type: ignore[arg-type]
    assert as_dict == msgspec.json.decode(encode_json(item))  # type: ignore[arg-type]
    assert as_dict["type"] in ITEM_TYPES


def test_each_kind_has_its_documented_tag() -> None:
    tags = [to_dict(item)["type"] for item in _examples()]  # type: ignore[arg-type]
    assert tags == ["llm.call", "span", "tool", "orchestration", "metric", "log"]


def test_a_mixed_list_round_trips_through_json() -> None:
    items = _examples()
    decoded = decode_items(msgspec.json.encode(items))
    assert decoded == items
    assert items_to_dicts(decoded) == [to_dict(i) for i in decoded]
    assert encode_item(items[1]) == encode_json(items[1])  # type: ignore[arg-type]


def test_ids_are_w3c_hex_and_generated_by_default() -> None:
    span = Span(name="x")
    assert re.fullmatch(r"[0-9a-f]{32}", span.trace_id)
    assert re.fullmatch(r"[0-9a-f]{16}", span.span_id)
    assert len({new_trace_id() for _ in range(1000)}) == 1000
    assert len({new_span_id() for _ in range(1000)}) == 1000
    assert span.status == "ok"


def test_tool_status_follows_its_error() -> None:
    assert ToolExecution(name="t").status == "ok"
    assert ToolExecution(name="t", error="boom").status == "error"


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Span(name="x", duration_ms=-1.0), "duration_ms"),
        (lambda: Span(name="x", start_time=T0, end_time=T0 - timedelta(seconds=1)), "end_time"),
        (lambda: Metric(name="x", value=float("nan")), "value"),
        (lambda: Metric(name="x", value=-1.0, metric_type="counter"), "value"),
        (lambda: ToolExecution(name="x", duration_ms=-2.0), "duration_ms"),
    ],
)
def test_constructors_reject_impossible_values_naming_the_field(build: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        build()  # type: ignore[operator]


def test_validate_item_enforces_the_static_limits() -> None:
    span = Span(name="ok", start_time=T0)
    assert validate_item(span) == span
    with pytest.raises(EventValidationError, match="name"):
        validate_item(Span(name="x" * (MAX_NAME_LEN + 1)))
    with pytest.raises(EventValidationError, match="trace_id"):
        validate_item(Span(name="x", trace_id="t" * (MAX_ID_LEN + 1)))
    with pytest.raises(EventValidationError, match="severity"):
        validate_item(LogEvent(name="x", severity="fatal"))  # type: ignore[arg-type]
    with pytest.raises(EventValidationError, match="timestamp"):
        validate_item(Metric(name="x", value=1.0, timestamp=datetime(2026, 1, 1)))


def test_validate_item_checks_attribute_size_and_depth() -> None:
    deep: dict[str, object] = {"v": 1}
    for _ in range(10):
        deep = {"d": deep}
    with pytest.raises(EventValidationError, match="attributes"):
        validate_item(Span(name="x", attributes=deep))
    with pytest.raises(EventValidationError, match="metadata"):
        validate_item(LogEvent(name="x", metadata={"big": "x" * 20_000}))


def test_validate_item_returns_an_equal_valid_item() -> None:
    item = ToolExecution(name="search", timestamp=T0, arguments={"q": "x"})
    assert validate_item(item) == item


def test_decode_items_names_the_bad_field() -> None:
    body = msgspec.json.encode([{"type": "metric", "name": "m", "value": "high"}])
    with pytest.raises(EventValidationError, match="value"):
        decode_items(body)
