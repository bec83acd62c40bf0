"""`instrument(client, collector, **attributes)`: telemetry for one openai or anthropic client object.

Supported: `openai.OpenAI` / `openai.AsyncOpenAI` (and subclasses such as `AzureOpenAI`):
`chat.completions.create` and `responses.create`, streaming or not; `anthropic.Anthropic` /
`anthropic.AsyncAnthropic`: `messages.create` (also `stream=True`) and the `messages.stream()` helper.
Each call becomes one `llmpulse.events.LLMCall` given to `collector.record` (see
docs/instrumentation.md for every field). The openai and anthropic packages are imported by the
application, never by `import llmpulse.sdk`.

Errors: `TypeError` for a client this module cannot instrument. Everything else the application
sees is its own: the provider's return values, stream objects and exceptions pass through unchanged,
and a failure of the telemetry is logged once, never raised. `BudgetExceeded` comes from the budget
the application passes: before the request is sent, or from a stream's iteration when the stream
exhausts it.
"""

from __future__ import annotations

from typing import Any, TypeVar

from llmpulse.sdk._stream import StreamMeter
from llmpulse.sdk.instrument._common import (
    HOLDER_ATTR,
    BudgetLike,
    Holder,
    Recorder,
    Settings,
    is_async_method,
)

__all__ = ["instrument"]

_Client = TypeVar("_Client")
#: The meter of `instrument(meter=None)`: meters every stream, no callback (summary in metadata).
_DEFAULT_METER = StreamMeter()


def _provider_of(client: object) -> str | None:
    for cls in type(client).__mro__:
        package = cls.__module__.partition(".")[0]
        if package in ("openai", "anthropic"):
            return package
    return None


def _probe(client: Any, provider: str) -> Any:
    """The method whose wrapper tells whether (and how) `client` is instrumented."""
    return client.chat.completions.create if provider == "openai" else client.messages.create


def _wrap_copy(client: Any, holder: Holder, provider: str) -> None:
    """Make `client.copy()` / `client.with_options()` return clients instrumented like this one."""
    original = client.copy

    def copy(*args: Any, **kwargs: Any) -> Any:
        new = original(*args, **kwargs)
        _attach(new, holder, provider)
        return new

    copy.__doc__ = original.__doc__
    copy.__wrapped__ = original  # type: ignore[attr-defined]
    client.copy = copy
    client.with_options = copy


def _attach(client: Any, holder: Holder, provider: str) -> None:
    if provider == "openai":
        from llmpulse.sdk.instrument._openai import instrument_openai

        instrument_openai(client, holder)
    else:
        from llmpulse.sdk.instrument._anthropic import instrument_anthropic

        instrument_anthropic(client, holder, is_async=is_async_method(client.messages.create))
    _wrap_copy(client, holder, provider)


def instrument(
    client: _Client,
    collector: Recorder | None = None,
    *,
    budget: BudgetLike | None = None,
    stream_usage: bool = True,
    meter: StreamMeter | None = None,
    **attributes: Any,
) -> _Client:
    """Instrument this one openai/anthropic client object in place and return it.

    Only this object (and clients derived from it with `copy()`/`with_options()`) is affected: its
    resource methods are wrapped on the instance; no class or module is patched. Each call sends one
    `LLMCall` to `collector.record` (`cost` is left to the collector's worker). `attributes`
    `tenant_id, route, user_id, org_id, session_id, feature, endpoint, environment` become top-level
    fields of every event; any other keyword goes into `metadata`.

    `budget`: an object with `reserve(attributes, max_cost_usd) -> reservation` (and the
    reservation's `settle(cost)`/`release()`), such as `llmpulse.Budget`; each call reserves its
    estimated maximum cost before it is sent (`BudgetExceeded` propagates) and settles the real cost
    afterwards; a stream that exhausts a `"raise"` budget is closed and raises `BudgetExceeded` from
    its iteration (prices are then looked up on the calling thread).

    `stream_usage=False` stops asking OpenAI chat streams for `stream_options.include_usage`.
    `meter` meters every stream (default: a `StreamMeter()` without callback, whose summary lands in
    the event's `metadata["stream"]`; `StreamMeter(enabled=False)` turns metering off). With neither
    `collector` (given, or bound to the context with `Collector.bind()`) nor `budget`, calls pass
    straight through.

    Instrumenting the same client again does not wrap twice: the new settings replace the old.
    Raises `TypeError` for an object that is not an openai or anthropic client. Does not block.
    """
    provider = _provider_of(client)
    if provider is None:
        raise TypeError(
            f"instrument() supports openai and anthropic clients, not {type(client).__module__}."
            f"{type(client).__qualname__}"
        )
    settings = Settings(
        collector, budget, stream_usage, meter if meter is not None else _DEFAULT_METER, attributes
    )
    existing = getattr(_probe(client, provider), HOLDER_ATTR, None)
    if isinstance(existing, Holder):
        existing.settings = settings
        return client
    _attach(client, Holder(settings), provider)
    return client
