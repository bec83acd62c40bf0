"""Token usage normalisation: one place that turns each provider's usage into one convention.

`Usage` follows the OpenTelemetry GenAI convention that `llmpulse.events.LLMCall` and
`llmpulse.pricing.Pricer` use: `input_tokens` is the whole prompt, cached reads and cache writes
included; `output_tokens` includes reasoning tokens. Each provider reports differently:

- OpenAI chat completions: `prompt_tokens` already includes `prompt_tokens_details.cached_tokens`
  (and `prompt_tokens_details.cache_write_tokens`, where reported); `completion_tokens` includes
  `completion_tokens_details.reasoning_tokens`.
- OpenAI responses API: `input_tokens` includes `input_tokens_details.cached_tokens` (and
  `cache_write_tokens`); `output_tokens` includes `output_tokens_details.reasoning_tokens`.
- Anthropic messages: `input_tokens` EXCLUDES `cache_read_input_tokens` and
  `cache_creation_input_tokens`, so they are added to get the whole prompt.

Streams report usage in different ways too. OpenAI sends the total once in the final chunk (or, with
some OpenAI-compatible servers, a running total in every chunk); Anthropic sends the input side in
`message_start` and a running `output_tokens` total in each `message_delta`. Every one of these is a
running total, never a delta, so `StreamUsage` keeps the largest value seen per field and never sums:
usage is never double-counted however many chunks repeat it.

Every function accepts the provider SDK's objects or plain dicts (the JSON form), tolerates missing or
`None` fields, and never raises on malformed input (unknown values count as 0). Nothing here blocks.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = ["StreamUsage", "Usage", "from_anthropic", "from_openai_chat", "from_openai_responses"]


_MISSING: Final = object()


def field(obj: Any, name: str) -> Any:
    """`obj[name]` for dicts (the JSON form), `obj.name` otherwise; None when absent. Does not block.

    Reads an SDK object's instance `__dict__` first (pydantic keeps declared fields there): a dict
    lookup is cheaper than attribute access on the hot path.
    """
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    values = getattr(obj, "__dict__", None)
    if values is not None:
        value = values.get(name, _MISSING)
        if value is not _MISSING:
            return value
    return getattr(obj, name, None)


_field = field


def _count(value: Any) -> int:
    """A token count: a non-negative int (bools and anything else count as 0)."""
    if type(value) is int and value > 0:
        return value
    if isinstance(value, float) and value > 0 and value.is_integer():
        return int(value)
    return 0


class Usage(msgspec.Struct, frozen=True, gc=False):
    """Token usage of one call in the inclusive convention (see the module docstring).

    `input_tokens` includes `cached_input_tokens` (cache reads) and `cache_write_tokens`;
    `output_tokens` includes `reasoning_tokens`. Build it with `Usage.of` (which clamps parts to their
    wholes) or the `from_*` functions; the plain constructor does not check. Immutable.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @classmethod
    def of(
        cls,
        input_tokens: int,
        output_tokens: int,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> Usage:
        """A consistent `Usage`: negative counts become 0, parts are clamped to their wholes.

        A provider that reports more cached than prompt tokens would otherwise produce a call event
        that fails validation; the wholes are what is billed, so they are kept. Does not block.
        """
        if (
            cached_input_tokens + cache_write_tokens <= input_tokens
            and reasoning_tokens <= output_tokens
            # a bitwise or of ints is negative exactly when one of them is
            and (input_tokens | output_tokens | cached_input_tokens | cache_write_tokens | reasoning_tokens)
            >= 0
        ):
            return cls(input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens)
        input_tokens = max(input_tokens, 0)
        output_tokens = max(output_tokens, 0)
        cached = min(max(cached_input_tokens, 0), input_tokens)
        write = min(max(cache_write_tokens, 0), input_tokens - cached)
        reasoning = min(max(reasoning_tokens, 0), output_tokens)
        return cls(input_tokens, output_tokens, cached, write, reasoning)

    @property
    def total_tokens(self) -> int:
        """`input_tokens + output_tokens`."""
        return self.input_tokens + self.output_tokens

    def merge_max(self, other: Usage) -> Usage:
        """The field-wise maximum of two running totals of the same call (never a sum). Does not block."""
        return Usage.of(
            max(self.input_tokens, other.input_tokens),
            max(self.output_tokens, other.output_tokens),
            max(self.cached_input_tokens, other.cached_input_tokens),
            max(self.cache_write_tokens, other.cache_write_tokens),
            max(self.reasoning_tokens, other.reasoning_tokens),
        )


#: Usage of a call that reported none.
ZERO: Final = Usage()


def from_openai_chat(usage: Any) -> Usage:
    """Normalise an OpenAI chat completions `usage` (object or dict); `None` gives zero usage.

    `prompt_tokens` already includes `prompt_tokens_details.cached_tokens` and
    `prompt_tokens_details.cache_write_tokens`, so it is kept as is. Does not block, never raises.
    """
    if usage is None:
        return ZERO
    prompt = _field(usage, "prompt_tokens_details")
    completion = _field(usage, "completion_tokens_details")
    return Usage.of(
        _count(_field(usage, "prompt_tokens")),
        _count(_field(usage, "completion_tokens")),
        _count(_field(prompt, "cached_tokens")),
        _count(_field(prompt, "cache_write_tokens")),
        _count(_field(completion, "reasoning_tokens")),
    )


def from_openai_responses(usage: Any) -> Usage:
    """Normalise an OpenAI responses API `usage` (object or dict); `None` gives zero usage.

    `input_tokens` already includes `input_tokens_details.cached_tokens` and `cache_write_tokens`;
    `output_tokens` includes `output_tokens_details.reasoning_tokens`. Does not block, never raises.
    """
    if usage is None:
        return ZERO
    details = _field(usage, "input_tokens_details")
    return Usage.of(
        _count(_field(usage, "input_tokens")),
        _count(_field(usage, "output_tokens")),
        _count(_field(details, "cached_tokens")),
        _count(_field(details, "cache_write_tokens")),
        _count(_field(_field(usage, "output_tokens_details"), "reasoning_tokens")),
    )


def from_anthropic(usage: Any) -> Usage:
    """Normalise an Anthropic messages `usage` (object or dict, also a `message_delta` usage).

    Anthropic's `input_tokens` excludes `cache_read_input_tokens` and `cache_creation_input_tokens`;
    they are added so that `input_tokens` is the whole prompt. Anthropic reports no separate
    reasoning count (thinking tokens are inside `output_tokens`), so `reasoning_tokens` is 0.
    `None` gives zero usage. Does not block, never raises.
    """
    if usage is None:
        return ZERO
    read = _count(_field(usage, "cache_read_input_tokens"))
    write = _count(_field(usage, "cache_creation_input_tokens"))
    return Usage.of(
        _count(_field(usage, "input_tokens")) + read + write,
        _count(_field(usage, "output_tokens")),
        read,
        write,
        0,
    )


class StreamUsage:
    """Accumulates the usage reported during one stream, counting every token once.

    Providers report running totals (OpenAI's final usage chunk, cumulative usage in every chunk,
    Anthropic's `message_start` input and `message_delta` output totals), so `add` keeps the
    field-wise maximum: a total repeated in many chunks, or a final total after partial ones, is
    counted once. `usage` is the best figure so far (partial when the stream stopped early); `seen`
    says whether the provider reported any usage at all. Not thread-safe (one stream, one consumer).
    """

    __slots__ = ("seen", "usage")

    def __init__(self) -> None:
        self.usage: Usage = ZERO
        self.seen = False

    def add(self, usage: Usage) -> None:
        """Merge one reported running total. Does not block."""
        self.usage = usage if not self.seen else self.usage.merge_max(usage)
        self.seen = True
