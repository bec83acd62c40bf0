"""Usage normalisation: one convention (input includes cache reads and writes; output includes reasoning)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import anthropic.types
import openai.types
import openai.types.responses
from hypothesis import given
from hypothesis import strategies as st

from llmpulse.events import LLMCall
from llmpulse.sdk._usage import (
    StreamUsage,
    Usage,
    from_anthropic,
    from_openai_chat,
    from_openai_responses,
)


def test_openai_chat_prompt_tokens_already_include_cached() -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 30,
        "total_tokens": 130,
        "prompt_tokens_details": {"cached_tokens": 40},
        "completion_tokens_details": {"reasoning_tokens": 12},
    }
    assert from_openai_chat(usage) == Usage(100, 30, 40, 0, 12)
    sdk_object = openai.types.CompletionUsage.model_validate(usage)
    assert from_openai_chat(sdk_object) == Usage(100, 30, 40, 0, 12)


def test_openai_chat_without_details_or_with_nulls() -> None:
    assert from_openai_chat({"prompt_tokens": 7, "completion_tokens": 3}) == Usage(7, 3)
    nulls = {"prompt_tokens": 7, "completion_tokens": 3, "prompt_tokens_details": None}
    assert from_openai_chat(nulls) == Usage(7, 3)
    assert from_openai_chat(None) == Usage()


def test_openai_chat_cache_writes_are_part_of_the_prompt() -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 1,
        "prompt_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 50},
    }
    assert from_openai_chat(usage) == Usage(100, 1, 40, 50, 0)


def test_openai_responses_usage() -> None:
    usage = {
        "input_tokens": 500,
        "input_tokens_details": {"cached_tokens": 300, "cache_write_tokens": 150},
        "output_tokens": 90,
        "output_tokens_details": {"reasoning_tokens": 60},
        "total_tokens": 590,
    }
    assert from_openai_responses(usage) == Usage(500, 90, 300, 150, 60)
    sdk_object = openai.types.responses.ResponseUsage.model_validate(usage)
    assert from_openai_responses(sdk_object) == Usage(500, 90, 300, 150, 60)


def test_anthropic_input_excludes_cache_so_it_is_added() -> None:
    usage = {
        "input_tokens": 15,
        "cache_read_input_tokens": 60,
        "cache_creation_input_tokens": 25,
        "output_tokens": 8,
    }
    result = from_anthropic(usage)
    assert result == Usage(100, 8, 60, 25, 0)
    assert result.total_tokens == 108
    sdk_object = anthropic.types.Usage.model_validate(usage)
    assert from_anthropic(sdk_object) == result


def test_anthropic_message_delta_usage_with_missing_input() -> None:
    assert from_anthropic({"output_tokens": 42}) == Usage(0, 42)
    assert from_anthropic(SimpleNamespace(input_tokens=None, output_tokens=5)) == Usage(0, 5)


def test_malformed_values_count_as_zero_and_parts_are_clamped() -> None:
    assert from_openai_chat({"prompt_tokens": "12", "completion_tokens": -4}) == Usage(0, 0)
    assert from_openai_chat({"prompt_tokens": True, "completion_tokens": 2.0}) == Usage(0, 2)
    clamped = from_openai_chat(
        {
            "prompt_tokens": 10,
            "completion_tokens": 2,
            "prompt_tokens_details": {"cached_tokens": 50},
            "completion_tokens_details": {"reasoning_tokens": 9},
        }
    )
    assert clamped == Usage(10, 2, 10, 0, 2)


def test_stream_usage_takes_running_totals_never_sums() -> None:
    acc = StreamUsage()
    assert not acc.seen
    for done in range(1, 6):  # cumulative usage in every chunk
        acc.add(from_openai_chat({"prompt_tokens": 20, "completion_tokens": done}))
    acc.add(from_openai_chat({"prompt_tokens": 20, "completion_tokens": 5}))  # and the final chunk again
    assert acc.seen
    assert acc.usage == Usage(20, 5)


def test_stream_usage_anthropic_start_then_deltas() -> None:
    acc = StreamUsage()
    acc.add(from_anthropic({"input_tokens": 10, "cache_read_input_tokens": 30, "output_tokens": 1}))
    acc.add(from_anthropic({"output_tokens": 7}))
    acc.add(from_anthropic({"output_tokens": 19}))
    assert acc.usage == Usage(40, 19, 30, 0, 0)


counts = st.integers(min_value=0, max_value=10**6)


@given(counts, counts, counts, counts, counts)
def test_any_normalised_usage_makes_a_valid_call_event(
    p: int, c: int, cached: int, write: int, r: int
) -> None:
    for usage in (
        from_openai_chat(
            {
                "prompt_tokens": p,
                "completion_tokens": c,
                "prompt_tokens_details": {"cached_tokens": cached},
                "completion_tokens_details": {"reasoning_tokens": r},
            }
        ),
        from_anthropic(
            {
                "input_tokens": p,
                "output_tokens": c,
                "cache_read_input_tokens": cached,
                "cache_creation_input_tokens": write,
            }
        ),
    ):
        assert usage.cached_input_tokens + usage.cache_write_tokens <= usage.input_tokens
        assert usage.reasoning_tokens <= usage.output_tokens
        LLMCall(
            model="m",
            timestamp=datetime.now(UTC),
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
        )


@given(st.lists(st.tuples(counts, counts, counts), min_size=1, max_size=20))
def test_merging_running_totals_is_the_fieldwise_max(totals: list[tuple[int, int, int]]) -> None:
    acc = StreamUsage()
    for p, c, cached in totals:
        acc.add(Usage.of(p, c, cached))
    assert acc.usage.input_tokens == max(p for p, _, _ in totals)
    assert acc.usage.output_tokens == max(c for _, c, _ in totals)
    assert acc.usage.cached_input_tokens <= acc.usage.input_tokens
