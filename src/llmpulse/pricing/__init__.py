"""Cost of model calls in USD from genai-prices' bundled data, offline; unknown is None, never $0.

`Pricer.cost` prices one call (OpenTelemetry GenAI token convention: `input_tokens` is the whole
prompt, cached reads and cache writes included; `output_tokens` includes reasoning tokens) and caches
each model's price so that a repeated model costs about a microsecond.

Errors: `PricingError` is the base; `InvalidUsage` (also a `ValueError`) means token counts that
cannot describe a call (negative, or cached/reasoning tokens larger than the total they belong to).
An unknown model is not an error: its cost is None.
"""

from __future__ import annotations

from llmpulse.pricing._cost import Pricer, Rates
from llmpulse.pricing._errors import InvalidUsage, PricingError

__all__ = ["InvalidUsage", "Pricer", "PricingError", "Rates"]
