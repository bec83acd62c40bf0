"""`Pricer`: the cost of one model call in USD, from genai-prices' bundled (offline) data snapshot.

genai-prices resolves a model reference to a provider and a price, and prices usage by decomposing it
into leaf units (`input_tokens` minus cached reads and cache writes, cached reads, cache writes,
`output_tokens` minus reasoning, reasoning), each at its own rate. That is exact but takes ~100 µs a
call, too slow for the processor's hot path. Without tiers, though, the price is a linear function of
the five token counts, so `Pricer` probes it once per price with `ModelPrice.calc_price` and keeps
the coefficients (`Rates`). Tiered prices (a cliff on the prompt size) are linear within each band
between tier starts, so they get one `Rates` per band. Prices that change with the date or the time of
day (`ConditionalPrice`) resolve to a `ModelPrice` per call and reuse the same per-price cache.

Nothing here touches the network: genai-prices' update functions are never called.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, NamedTuple

import genai_prices
from genai_prices import data_snapshot
from genai_prices import types as gp_types

from llmpulse.pricing._errors import InvalidUsage

_MTOK: Final = 1_000_000


class Rates(NamedTuple):
    """A linear price: `base` USD per call plus USD per token of each kind.

    `input` applies to prompt tokens that are neither cached reads nor cache writes, `output` to
    completion tokens that are not reasoning tokens (the leaf units of genai-prices).
    """

    base: float
    input: float
    cache_read: float
    cache_write: float
    output: float
    reasoning: float

    def cost(
        self, input_tokens: int, output_tokens: int, cached: int = 0, cache_write: int = 0, reasoning: int = 0
    ) -> float:
        """The cost in USD of one call with this usage (OpenTelemetry token convention). Does not block."""
        return (
            self.base
            + self.input * (input_tokens - cached - cache_write)
            + self.cache_read * cached
            + self.cache_write * cache_write
            + self.output * (output_tokens - reasoning)
            + self.reasoning * reasoning
        )


class _Banded:
    """A price linear within each band of prompt sizes: band i covers `starts[i-1] < input ≤ starts[i]`."""

    __slots__ = ("bands", "starts")

    def __init__(self, starts: tuple[int, ...], bands: tuple[Rates, ...]) -> None:
        self.starts = starts
        self.bands = bands

    def rates_for(self, input_tokens: int) -> Rates:
        band = 0
        for start in self.starts:
            if input_tokens > start:
                band += 1
            else:
                break
        return self.bands[band]


_Price = Rates | _Banded


class _Model:
    """A resolved model: its genai-prices entry, and its price when that does not depend on time."""

    __slots__ = ("fixed", "info", "provider_id")

    def __init__(self, info: Any, provider_id: str, fixed: _Price | None) -> None:
        self.info = info
        self.provider_id = provider_id
        self.fixed = fixed


def _usage(
    input_tokens: int, output_tokens: int, cached: int, cache_write: int, reasoning: int
) -> genai_prices.Usage:
    values: dict[str, int] = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    if cached:
        values["cache_read_tokens"] = cached
    if cache_write:
        values["cache_write_tokens"] = cache_write
    if reasoning:
        values["output_reasoning_tokens"] = reasoning
    return genai_prices.Usage(**values)


def _probe(price: Any) -> Rates:
    """The linear coefficients of a price without tiers, measured with genai-prices itself."""

    def at(i: int = 0, o: int = 0, cr: int = 0, cw: int = 0, r: int = 0) -> Decimal:
        result: Decimal = price.calc_price(_usage(i, o, cr, cw, r))["total_price"]
        return result

    m = _MTOK
    base = at()
    per_input = at(i=m) - base
    per_output = at(o=m) - base
    per_read = at(i=m, cr=m) - base
    per_write = at(i=m, cw=m) - base
    per_reasoning = at(o=m, r=m) - base
    return Rates(
        float(base),
        float(per_input / m),
        float(per_read / m),
        float(per_write / m),
        float(per_output / m),
        float(per_reasoning / m),
    )


def _flatten(price: Any, input_tokens: int) -> Any:
    """A copy of a tiered price with every tier resolved for a prompt of `input_tokens` tokens."""
    values: dict[str, Any] = {}
    for key, value in price.__dict__.items():
        if key.startswith("_"):
            continue
        if isinstance(value, gp_types.TieredPrices):
            chosen = value.base
            for tier in reversed(value.tiers):
                if input_tokens > tier.start:
                    chosen = tier.price
                    break
            value = chosen
        values[key] = value
    return gp_types.ModelPrice(**values)


def _compile(price: Any) -> _Price:
    tiered = [v for v in price.__dict__.values() if isinstance(v, gp_types.TieredPrices)]
    if not tiered:
        return _probe(price)
    starts = tuple(sorted({tier.start for v in tiered for tier in v.tiers}))
    # band 0 is input ≤ starts[0]; band k is starts[k-1] < input ≤ starts[k]
    bands = tuple(_probe(_flatten(price, 0 if k == 0 else starts[k - 1] + 1)) for k in range(len(starts) + 1))
    return _Banded(starts, bands)


class Pricer:
    """Prices model calls from genai-prices' bundled snapshot, with a per-model cache for the hot path.

    Token convention (OpenTelemetry GenAI, genai-prices): `input_tokens` is the whole prompt, cached
    reads and cache writes included; `output_tokens` includes reasoning tokens. Each token is charged
    once, at the rate of its most specific kind. Not thread-safe for concurrent first lookups of the
    same model (the cache is a plain dict; a race only repeats work). Never blocks on I/O.
    """

    __slots__ = ("_by_price", "_models")

    def __init__(self) -> None:
        self._models: dict[tuple[str, str | None], _Model | None] = {}
        self._by_price: dict[int, tuple[Any, _Price]] = {}

    @property
    def source(self) -> str:
        """Where prices come from, for recording beside a cost (e.g. ``"genai-prices 0.2.3"``)."""
        return f"genai-prices {genai_prices.__version__}"

    def _resolve(self, model: str, provider: str | None) -> _Model | None:
        snapshot = data_snapshot.get_snapshot()
        try:
            found_provider, info = snapshot.find_provider_model(model, None, provider, None)
        except LookupError:
            if provider is None:
                return None
            # An unknown provider name (a gateway, a proxy) is only a hint: match on the model alone.
            try:
                snapshot.find_provider(None, provider, None)
            except LookupError:
                return self._lookup(model, None)
            return None
        fixed = self._price_of(info.prices) if isinstance(info.prices, gp_types.ModelPrice) else None
        return _Model(info, found_provider.id, fixed)

    def _lookup(self, model: str, provider: str | None) -> _Model | None:
        key = (model, provider)
        try:
            return self._models[key]
        except KeyError:
            found = self._models[key] = self._resolve(model, provider)
            return found

    def _price_of(self, price: Any) -> _Price:
        cached = self._by_price.get(id(price))
        if cached is not None and cached[0] is price:
            return cached[1]
        compiled = _compile(price)
        self._by_price[id(price)] = (price, compiled)
        return compiled

    def knows(self, model: str, *, provider: str | None = None) -> bool:
        """True when genai-prices has a price for `model` (with the optional provider hint); no I/O."""
        return self._lookup(model, provider) is not None

    def linear_rates(self, model: str, *, provider: str | None = None) -> Rates | None:
        """The model's price as `Rates` when it is linear and does not change with time, else None.

        None also when the model is unknown; use `cost` then (it handles tiers, dated and time-of-day
        prices, and answers None for an unknown model). Lets a hot loop price a call with a few
        multiplications. Does not block.
        """
        found = self._lookup(model, provider)
        if found is None or not isinstance(found.fixed, Rates):
            return None
        return found.fixed

    def cost(
        self,
        model: str,
        *,
        provider: str | None = None,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
        at: datetime | None = None,
    ) -> float | None:
        """The cost of one call in USD, or None when genai-prices does not know the model.

        `provider` is a hint (a genai-prices provider id such as ``"openai"``); an unknown provider
        name falls back to matching on the model alone. `at` is when the call was made, for prices that
        change with the date or time of day (default: now). Raises `InvalidUsage` when the counts are
        negative or the parts exceed their wholes. About a microsecond once the model has been seen;
        the first call for a model takes a few milliseconds. Does not block on I/O.
        """
        if (
            cached_input_tokens + cache_write_tokens > input_tokens
            or reasoning_tokens > output_tokens
            # a bitwise or of ints is negative exactly when one of them is
            or (output_tokens | cached_input_tokens | cache_write_tokens | reasoning_tokens) < 0
        ):
            raise InvalidUsage(
                f"invalid usage for {model!r}: input_tokens={input_tokens}, output_tokens={output_tokens}, "
                f"cached_input_tokens={cached_input_tokens}, cache_write_tokens={cache_write_tokens}, "
                f"reasoning_tokens={reasoning_tokens} (input includes cached and cache writes; output "
                "includes reasoning; none may be negative)"
            )
        found = self._models.get((model, provider))
        if found is None:
            found = self._lookup(model, provider)
            if found is None:
                return None
        price = found.fixed
        if price is None:
            when = at if at is not None else datetime.now(tz=UTC)
            price = self._price_of(found.info.get_prices(when))
        rates = price if isinstance(price, Rates) else price.rates_for(input_tokens)
        return (
            rates.base
            + rates.input * (input_tokens - cached_input_tokens - cache_write_tokens)
            + rates.cache_read * cached_input_tokens
            + rates.cache_write * cache_write_tokens
            + rates.output * (output_tokens - reasoning_tokens)
            + rates.reasoning * reasoning_tokens
        )

    def provider_of(self, model: str, *, provider: str | None = None) -> str | None:
        """The genai-prices provider id that prices `model`, or None when the model is unknown."""
        found = self._lookup(model, provider)
        return None if found is None else found.provider_id
