"""Processors: sampling, content stripping, redaction, masking, user-id hashing, global tags."""

from __future__ import annotations

import copy
import hashlib
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from llmpulse.events import LLMCall, LogEvent, Metric, Orchestration, Span, ToolExecution, new_trace_id
from llmpulse.sdk import (
    ContentFilter,
    GlobalTags,
    Redactor,
    SampledOut,
    Sampler,
    SampleWeight,
    TelemetryConfig,
    UserIdHasher,
    build_processors,
)
from llmpulse.sdk._processors import luhn_ok, sample_bucket

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def call(**over: Any) -> LLMCall:
    fields: dict[str, Any] = {"model": "gpt-4o-mini", "timestamp": T0, "input_tokens": 10, "output_tokens": 5}
    fields.update(over)
    return LLMCall(**fields)


# ---------------------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5, 0.9])
def test_sampler_keeps_the_configured_fraction_of_random_traces(rate: float) -> None:
    sampler = Sampler(rate)
    n = 40_000
    kept = sum(sampler.keep(Span(name="s", trace_id=new_trace_id())) for _ in range(n))
    sigma = (n * rate * (1 - rate)) ** 0.5
    assert abs(kept - n * rate) < 5 * sigma


def test_sampler_keeps_the_fraction_of_sequential_request_ids() -> None:
    sampler = Sampler(0.2)
    n = 40_000
    kept = sum(sampler.keep(call(request_id=f"req-{i}")) for i in range(n))
    sigma = (n * 0.2 * 0.8) ** 0.5
    assert abs(kept - n * 0.2) < 5 * sigma


def test_sampling_is_deterministic_by_trace_id_so_a_trace_stays_whole() -> None:
    sampler = Sampler(0.5)
    decisions = set()
    for _ in range(200):
        trace = new_trace_id()
        parts = [
            Span(name="root", trace_id=trace),
            call(trace_id=trace, request_id=f"r-{random.random()}"),
            ToolExecution(name="t", trace_id=trace),
            LogEvent(name="l", trace_id=trace),
        ]
        verdicts = {sampler.keep(p) for p in parts}
        assert len(verdicts) == 1
        decisions |= verdicts
        assert Sampler(0.5).keep(parts[0]) == sampler.keep(parts[0])  # same answer in another instance
    assert decisions == {True, False}


def test_sampling_by_request_id_agrees_across_processes_by_construction() -> None:
    # crc32-based, not hash(): stable under PYTHONHASHSEED, so a known id has a known bucket.
    assert sample_bucket("req-42") == sample_bucket("req-42")
    assert 0.0 <= sample_bucket("req-42") < 1.0
    assert sample_bucket("req-42") != sample_bucket("req-43")


def test_metrics_are_never_sampled_out_and_rate_zero_drops_the_rest() -> None:
    sampler = Sampler(0.0)
    assert sampler.keep(Metric(name="m", value=1.0))
    assert not sampler.keep(call())
    with pytest.raises(SampledOut):
        sampler(call())
    with pytest.raises(ValueError, match="rate"):
        Sampler(1.5)


def test_sample_weight_goes_into_metadata_or_span_attributes() -> None:
    weight = SampleWeight(0.25)
    original = call(metadata={"a": 1})
    weighted = weight(original)
    assert weighted.metadata == {"a": 1, "sample_rate": 0.25}  # type: ignore[union-attr]
    assert original.metadata == {"a": 1}
    assert weight(Span(name="s")).attributes == {"sample_rate": 0.25}  # type: ignore[union-attr]
    metric = Metric(name="m", value=1.0)
    assert weight(metric) is metric


# ------------------------------------------------------------------------------------ content stripping


def test_record_inputs_false_strips_prompt_content_everywhere() -> None:
    strip = ContentFilter(inputs=False)
    c = strip(call(metadata={"input": "hi", "messages": [1], "output": "yo", "keep": 1}))
    assert c.metadata == {"output": "yo", "keep": 1}  # type: ignore[union-attr]
    s = strip(Span(name="s", attributes={"input": "hi", "prompt": "p"}))
    assert s.attributes is None  # type: ignore[union-attr]
    t = strip(ToolExecution(name="t", arguments={"q": 1}, result="r"))
    assert (t.arguments, t.result) == (None, "r")  # type: ignore[union-attr]
    o = strip(Orchestration(name="o", metadata={"prompt": "p", "k": 1}))
    assert o.metadata == {"k": 1}  # type: ignore[union-attr]


def test_record_outputs_false_strips_completion_content() -> None:
    strip = ContentFilter(outputs=False)
    c = strip(call(metadata={"input": "hi", "output": "yo", "completion": "c"}))
    assert c.metadata == {"input": "hi"}  # type: ignore[union-attr]
    t = strip(ToolExecution(name="t", arguments={"q": 1}, result="r"))
    assert (t.arguments, t.result) == ({"q": 1}, None)  # type: ignore[union-attr]


def test_record_metadata_false_removes_metadata_but_tags_and_weight_come_back() -> None:
    config = TelemetryConfig(record_metadata=False, tags={"env": "prod"}, sample_rate=0.5)
    item: Any = call(metadata={"secret": "x"})
    for processor in build_processors(config):
        item = processor(item)
    assert item.metadata == {"env": "prod", "sample_rate": 0.5}


def test_processors_never_mutate_the_callers_item() -> None:
    meta = {"input": "mail a@b.co", "user_id": "u1", "nested": {"k": "call +1 415 555 0100"}}
    original = call(metadata=meta, user_id="u1")
    snapshot = copy.deepcopy(meta)
    config = TelemetryConfig(
        record_inputs=False,
        redact=("email", "phone"),
        hash_user_ids=True,
        tags={"env": "p", "environment": "prod"},
        sample_rate=0.5,
    )
    item: Any = original
    for processor in build_processors(config):
        item = processor(item)
    assert item is not original
    assert original.metadata == snapshot
    assert original.user_id == "u1"
    assert original.environment is None
    assert item.metadata["nested"] == {"k": "call [REDACTED:phone]"}


def test_an_item_that_needs_no_change_is_returned_as_is() -> None:
    item = call(metadata={"k": "v"})
    for processor in build_processors(TelemetryConfig()):
        assert processor(item) is item


# ------------------------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("kind", "text", "secret"),
    [
        ("email", "write to jane.doe+x@example.co.uk today", "jane.doe+x@example.co.uk"),
        ("phone", "call +1 (415) 555-0100 now", "+1 (415) 555-0100"),
        ("phone", "call 415-555-0100 now", "415-555-0100"),
        ("phone", "ring +447911123456", "+447911123456"),
        ("card", "card 4111 1111 1111 1111 ok", "4111 1111 1111 1111"),
        ("card", "card 5500-0000-0000-0004 ok", "5500-0000-0000-0004"),
        ("card", "card 378282246310005.", "378282246310005"),
        (
            "jwt",
            "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U end",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ),
        ("api_key", "key sk-proj-abcdefghijklmnopqrstuvwx1234", "sk-proj-abcdefghijklmnopqrstuvwx1234"),
        ("api_key", "key sk-ant-api03-abcdefghijklmnopqrstuv", "sk-ant-api03-abcdefghijklmnopqrstuv"),
        ("api_key", "aws AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE"),
        ("api_key", "Authorization: Bearer abcdefghijklmnop1234", "abcdefghijklmnop1234"),
    ],
)
def test_each_redactor_replaces_its_kind(kind: str, text: str, secret: str) -> None:
    redactor = Redactor([kind])
    out = redactor.text(text)
    assert isinstance(out, str)
    assert secret not in out
    assert f"[REDACTED:{kind}]" in out


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112 shipped",  # fails Luhn
        "id 1234567890123456",  # fails Luhn
        "released 2024-01-15 at 12:30",
        "server 192.168.100.200 answered",
        "version 1.2.3.4567",
        "total 1234567 tokens",
        "sk-short",
        "a@b",
    ],
)
def test_harmless_text_is_left_alone(text: str) -> None:
    assert Redactor(["email", "phone", "card", "jwt", "api_key"]).text(text) == text


def test_luhn() -> None:
    assert luhn_ok("4111111111111111")
    assert luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112")


def test_redaction_reaches_every_free_text_field() -> None:
    redactor = Redactor(["email"])
    mail = "x@example.com"
    c = redactor(call(error=f"user {mail} failed", metadata={"deep": [{"k": mail}]}))
    assert c.error == "user [REDACTED:email] failed"  # type: ignore[union-attr]
    assert c.metadata == {"deep": [{"k": "[REDACTED:email]"}]}  # type: ignore[union-attr]
    s = redactor(Span(name="s", attributes={"a": mail}, error={"detail": mail}))
    assert (s.attributes, s.error) == ({"a": "[REDACTED:email]"}, {"detail": "[REDACTED:email]"})  # type: ignore[union-attr]
    t = redactor(ToolExecution(name="t", arguments={"to": mail}, result=mail))
    assert (t.arguments, t.result) == ({"to": "[REDACTED:email]"}, "[REDACTED:email]")  # type: ignore[union-attr]
    log = redactor(LogEvent(name="l", message=f"hi {mail}"))
    assert log.message == "hi [REDACTED:email]"  # type: ignore[union-attr]
    m = redactor(Metric(name="m", value=1.0, tags={"who": mail}))
    assert m.tags == {"who": "[REDACTED:email]"}  # type: ignore[union-attr]


def test_custom_mask_applies_after_redaction() -> None:
    redactor = Redactor(["email"], mask=lambda s: s.replace("acme", "<org>"))
    out = redactor(call(metadata={"input": "acme: a@b.io"}))
    assert out.metadata == {"input": "<org>: [REDACTED:email]"}  # type: ignore[union-attr]


def test_a_mask_that_raises_drops_the_field_instead_of_sending_it_raw() -> None:
    def mask(text: str) -> str:
        if "secret" in text:
            raise RuntimeError("cannot mask")
        return text

    redactor = Redactor([], mask=mask)
    c = redactor(
        call(error="a secret error", metadata={"input": "my secret", "ok": "fine", "l": ["secret", "x"]})
    )
    assert c.error is None  # type: ignore[union-attr]
    assert c.metadata == {"ok": "fine", "l": ["x"]}  # type: ignore[union-attr]
    log = redactor(LogEvent(name="l", message="secret!"))
    assert log.message == ""  # type: ignore[union-attr]


def test_a_mask_returning_a_non_string_also_drops_the_field() -> None:
    redactor = Redactor([], mask=lambda s: None)  # type: ignore[arg-type,return-value]
    out = redactor(call(metadata={"input": "x"}))
    assert out.metadata == {}  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------- user ids


def test_user_ids_are_replaced_by_a_salted_sha256() -> None:
    hasher = UserIdHasher("salt")
    expected = hashlib.sha256(b"saltu1").hexdigest()
    c = hasher(call(user_id="u1", metadata={"user_id": "u1", "k": 1}))
    assert c.user_id is None  # type: ignore[union-attr]
    assert c.user_id_hash == expected  # type: ignore[union-attr]
    assert c.metadata == {"user_id_hash": expected, "k": 1}  # type: ignore[union-attr]
    assert UserIdHasher("other").digest("u1") != expected
    s = hasher(Span(name="s", attributes={"user_id": "u1"}))
    assert s.attributes == {"user_id_hash": expected}  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------ global tags


def test_global_tags_fill_call_fields_and_metadata_without_overriding() -> None:
    tags = GlobalTags({"environment": "prod", "tenant_id": "acme", "version": "1"})
    c = tags(call(tenant_id="own", metadata={"version": "2"}))
    assert c.environment == "prod"  # type: ignore[union-attr]
    assert c.tenant_id == "own"  # type: ignore[union-attr]
    assert c.metadata == {"version": "2"}  # type: ignore[union-attr]
    assert tags(call()).tenant_id == "acme"  # type: ignore[union-attr]
    assert tags(Metric(name="m", value=1.0, tags={"a": "b"})).tags == {  # type: ignore[union-attr]
        "environment": "prod",
        "tenant_id": "acme",
        "version": "1",
        "a": "b",
    }
    assert tags(Span(name="s")).attributes == {"environment": "prod", "tenant_id": "acme", "version": "1"}  # type: ignore[union-attr]


def test_build_processors_leaves_out_what_would_do_nothing() -> None:
    assert build_processors(TelemetryConfig(redact=())) == []
    kinds = [
        type(p).__name__
        for p in build_processors(
            TelemetryConfig(record_inputs=False, hash_user_ids=True, tags={"a": "b"}, sample_rate=0.5)
        )
    ]
    assert kinds == ["ContentFilter", "UserIdHasher", "Redactor", "GlobalTags", "SampleWeight"]
