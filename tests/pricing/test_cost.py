"""`Pricer`: genai-prices' own prices, cheaper cached tokens, unknown models, provider hints, speed."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import genai_prices
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmpulse.pricing import InvalidUsage, Pricer, PricingError, Rates

AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def calc(
    model: str,
    *,
    provider: str | None = None,
    input_tokens: int,
    output_tokens: int,
    cached: int = 0,
    cache_write: int = 0,
    reasoning: int = 0,
    at: datetime = AT,
) -> float:
    usage: dict[str, int] = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    if cached:
        usage["cache_read_tokens"] = cached
    if cache_write:
        usage["cache_write_tokens"] = cache_write
    if reasoning:
        usage["output_reasoning_tokens"] = reasoning
    result = genai_prices.calc_price(
        genai_prices.Usage(**usage), model, provider_id=provider, genai_request_timestamp=at
    )
    return float(result.total_price)


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return Pricer()


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o-mini",
        "gpt-4o",
        "claude-3-5-haiku-latest",
        "claude-3-5-sonnet-latest",
        "gemini-2.0-flash",
        "o3-mini",
        "gemini-2.5-pro",  # tiered: the price changes above 200k prompt tokens
        "deepseek-chat",  # time-of-day price
    ],
)
@pytest.mark.parametrize(
    ("input_tokens", "output_tokens", "cached", "cache_write", "reasoning"),
    [
        (0, 0, 0, 0, 0),
        (1000, 200, 0, 0, 0),
        (1000, 200, 400, 0, 0),
        (1000, 200, 300, 100, 50),
        (250_000, 4000, 10_000, 0, 1000),
    ],
)
def test_cost_equals_genai_prices(
    pricer: Pricer,
    model: str,
    input_tokens: int,
    output_tokens: int,
    cached: int,
    cache_write: int,
    reasoning: int,
) -> None:
    for at in (AT, datetime(2025, 6, 1, 20, 0, tzinfo=UTC)):
        got = pricer.cost(
            model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=cached,
            cache_write_tokens=cache_write,
            reasoning_tokens=reasoning,
            at=at,
        )
        want = calc(
            model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached=cached,
            cache_write=cache_write,
            reasoning=reasoning,
            at=at,
        )
        assert got is not None
        assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-15)


@settings(max_examples=100, deadline=None)
@given(
    model=st.sampled_from(["gpt-4o-mini", "claude-3-5-sonnet-latest", "gemini-2.5-pro", "gemini-1.5-pro"]),
    input_tokens=st.integers(0, 1_000_000),
    output_tokens=st.integers(0, 100_000),
    data=st.data(),
)
def test_cost_equals_genai_prices_for_any_usage(
    pricer: Pricer, model: str, input_tokens: int, output_tokens: int, data: st.DataObject
) -> None:
    cached = data.draw(st.integers(0, input_tokens))
    cache_write = data.draw(st.integers(0, input_tokens - cached))
    reasoning = data.draw(st.integers(0, output_tokens))
    got = pricer.cost(
        model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
        at=AT,
    )
    want = calc(
        model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached=cached,
        cache_write=cache_write,
        reasoning=reasoning,
    )
    assert got is not None
    assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-15)


def test_tier_boundary_matches_genai_prices(pricer: Pricer) -> None:
    for input_tokens in (199_999, 200_000, 200_001):
        got = pricer.cost("gemini-2.5-pro", input_tokens=input_tokens, output_tokens=10, at=AT)
        assert got == pytest.approx(calc("gemini-2.5-pro", input_tokens=input_tokens, output_tokens=10))
    below = pricer.cost("gemini-2.5-pro", input_tokens=200_000, output_tokens=0, at=AT)
    above = pricer.cost("gemini-2.5-pro", input_tokens=200_001, output_tokens=0, at=AT)
    assert below is not None
    assert above is not None
    assert above > below * 1.5  # the whole prompt moves to the higher rate


def test_cached_tokens_are_cheaper_and_never_charged_twice(pricer: Pricer) -> None:
    plain = pricer.cost("gpt-4o-mini", input_tokens=10_000, output_tokens=0)
    cached = pricer.cost("gpt-4o-mini", input_tokens=10_000, output_tokens=0, cached_input_tokens=8_000)
    assert plain is not None
    assert cached is not None
    assert cached < plain
    # 2,000 at $0.15/MTok + 8,000 at $0.075/MTok: the cached part is not also charged as input
    assert cached == pytest.approx(2_000 * 0.15e-6 + 8_000 * 0.075e-6)


def test_reasoning_tokens_are_part_of_output(pricer: Pricer) -> None:
    without = pricer.cost("o3-mini", input_tokens=0, output_tokens=1000)
    with_reasoning = pricer.cost("o3-mini", input_tokens=0, output_tokens=1000, reasoning_tokens=600)
    assert without is not None
    assert with_reasoning == pytest.approx(without)  # same rate: reasoning is inside output_tokens


def test_unknown_model_is_none_never_zero(pricer: Pricer) -> None:
    assert pricer.cost("acme-llm-1", input_tokens=1000, output_tokens=100) is None
    assert pricer.cost("acme-llm-1", input_tokens=0, output_tokens=0) is None
    assert not pricer.knows("acme-llm-1")
    assert pricer.linear_rates("acme-llm-1") is None


def test_provider_hint(pricer: Pricer) -> None:
    assert pricer.provider_of("gpt-4o-mini", provider="openai") == "openai"
    assert pricer.cost("gpt-4o-mini", provider="openai", input_tokens=1000, output_tokens=0) == pytest.approx(
        calc("gpt-4o-mini", provider="openai", input_tokens=1000, output_tokens=0)
    )
    # a known provider that does not sell the model: unknown, not another provider's price
    assert pricer.cost("gpt-4o-mini", provider="anthropic", input_tokens=1000, output_tokens=0) is None
    # an unknown provider name (a gateway) is only a hint: the model alone decides
    assert pricer.cost("gpt-4o-mini", provider="my-gateway", input_tokens=1000, output_tokens=0) == (
        pytest.approx(calc("gpt-4o-mini", input_tokens=1000, output_tokens=0))
    )


def test_linear_rates_only_for_time_independent_linear_prices(pricer: Pricer) -> None:
    rates = pricer.linear_rates("gpt-4o-mini")
    assert isinstance(rates, Rates)
    assert rates.input == pytest.approx(0.15e-6)
    assert rates.cost(1000, 200, cached=100) == pytest.approx(
        calc("gpt-4o-mini", input_tokens=1000, output_tokens=200, cached=100)
    )
    assert pricer.linear_rates("gemini-2.5-pro") is None  # tiered
    assert pricer.linear_rates("deepseek-chat") is None  # time of day


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": 10, "output_tokens": 0, "cached_input_tokens": 11},
        {"input_tokens": 10, "output_tokens": 0, "cached_input_tokens": 6, "cache_write_tokens": 5},
        {"input_tokens": 10, "output_tokens": 1, "reasoning_tokens": 2},
        {"input_tokens": 10, "output_tokens": -1},
        {"input_tokens": -1, "output_tokens": 0},
    ],
)
def test_impossible_usage_raises(pricer: Pricer, usage: dict[str, int]) -> None:
    with pytest.raises(InvalidUsage) as info:
        pricer.cost("gpt-4o-mini", **usage)
    assert isinstance(info.value, PricingError)
    assert isinstance(info.value, ValueError)


def test_source_names_genai_prices_and_its_version(pricer: Pricer) -> None:
    assert pricer.source == f"genai-prices {genai_prices.__version__}"
