"""Fixtures: the fake provider server, a recording collector, and a harness that drives the real clients.

`Harness.run(...)` makes one call through a fresh real client (sync or async, instrumented or not),
consumes a stream fully or abandons it, and returns what the application saw and the recorded events,
so each test states one scenario and its expectations for both client flavours.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
import pytest

from llmpulse.events import LLMCall
from llmpulse.sdk.instrument import _common, instrument
from tests.instrument.fake_provider import FakeProvider

MODEL_OPENAI = "gpt-4o-mini"
MODEL_ANTHROPIC = "claude-test-1"
MESSAGES = [{"role": "user", "content": "Say hello to the fake provider, please."}]


class ListRecorder:
    """A minimal collector: keeps every recorded item."""

    def __init__(self) -> None:
        self.items: list[LLMCall] = []

    def record(self, item: LLMCall) -> None:
        self.items.append(item)


@dataclass
class Run:
    """What one call gave the application, and what was recorded."""

    value: Any = None
    items: list[Any] = field(default_factory=list)
    error: BaseException | None = None
    events: list[LLMCall] = field(default_factory=list)

    @property
    def event(self) -> LLMCall:
        """The one event of the call (a dropped stream's comes from the reaper thread: wait for it)."""
        wait_for(self.events, 1)
        assert len(self.events) == 1, self.events
        return self.events[0]


def wait_for(events: list[Any], count: int, timeout: float = 5.0) -> None:
    """Wait until `events` holds `count` items (events of dropped streams arrive asynchronously)."""
    deadline = time.monotonic() + timeout
    while len(events) < count and time.monotonic() < deadline:
        time.sleep(0.002)


def dump(item: Any) -> Any:
    """A comparable form of an SDK object (pydantic model) or plain value."""
    return item.model_dump() if hasattr(item, "model_dump") else item


def error_shape(exc: BaseException | None) -> tuple[type[BaseException], str] | None:
    return None if exc is None else (type(exc), str(exc))


class Harness:
    """Drives one API of one provider through fresh real clients pointed at the fake server."""

    def __init__(self, fake: FakeProvider, provider: str, is_async: bool) -> None:
        self.fake = fake
        self.provider = provider
        self.is_async = is_async

    def client(self) -> Any:
        if self.provider == "openai":
            cls: Any = openai.AsyncOpenAI if self.is_async else openai.OpenAI
            return cls(api_key="sk-test", base_url=self.fake.openai_url, max_retries=0)
        cls = anthropic.AsyncAnthropic if self.is_async else anthropic.Anthropic
        return cls(api_key="sk-test", base_url=self.fake.url, max_retries=0)

    def _call(self, client: Any, api: str, stream: bool, x_fake: str, kwargs: dict[str, Any]) -> Any:
        headers = {"x-fake": x_fake}
        if api == "chat":
            return client.chat.completions.create(
                model=MODEL_OPENAI, messages=MESSAGES, stream=stream, extra_headers=headers, **kwargs
            )
        if api == "responses":
            return client.responses.create(
                model=MODEL_OPENAI, input="Say hello.", stream=stream, extra_headers=headers, **kwargs
            )
        if api == "messages":
            return client.messages.create(
                model=MODEL_ANTHROPIC,
                max_tokens=64,
                messages=MESSAGES,
                stream=stream,
                extra_headers=headers,
                **kwargs,
            )
        assert api == "messages_stream"
        return client.messages.stream(
            model=MODEL_ANTHROPIC, max_tokens=64, messages=MESSAGES, extra_headers=headers, **kwargs
        )

    def run(
        self,
        api: str,
        *,
        stream: bool = False,
        x_fake: str = "",
        instrumented: bool = True,
        take: int | None = None,
        options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Run:
        """One call; `take=N` abandons the stream after N items (break, del, gc.collect())."""
        recorder = ListRecorder()
        result = Run(events=recorder.items)
        if self.is_async:
            asyncio.run(
                self._run_async(result, recorder, api, stream, x_fake, instrumented, take, options, kwargs)
            )
        else:
            self._run_sync(result, recorder, api, stream, x_fake, instrumented, take, options, kwargs)
        gc.collect()
        return result

    def _run_sync(
        self,
        result: Run,
        recorder: ListRecorder,
        api: str,
        stream: bool,
        x_fake: str,
        instrumented: bool,
        take: int | None,
        options: dict[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> None:
        with self.client() as client:
            if instrumented:
                instrument(client, recorder, **(options or {}))
            try:
                if api == "messages_stream":
                    with self._call(client, api, stream, x_fake, kwargs) as s:
                        for item in s:
                            result.items.append(item)
                            if take is not None and len(result.items) >= take:
                                break
                        result.value = s if take is None else None
                    return
                value = self._call(client, api, stream, x_fake, kwargs)
                if not stream:
                    result.value = value
                    return
                for item in value:
                    result.items.append(item)
                    if take is not None and len(result.items) >= take:
                        break
                del value
                gc.collect()
            except Exception as exc:
                result.error = exc

    async def _run_async(
        self,
        result: Run,
        recorder: ListRecorder,
        api: str,
        stream: bool,
        x_fake: str,
        instrumented: bool,
        take: int | None,
        options: dict[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> None:
        async with self.client() as client:
            if instrumented:
                instrument(client, recorder, **(options or {}))
            try:
                if api == "messages_stream":
                    async with self._call(client, api, stream, x_fake, kwargs) as s:
                        async for item in s:
                            result.items.append(item)
                            if take is not None and len(result.items) >= take:
                                break
                        result.value = s if take is None else None
                    return
                value = await self._call(client, api, stream, x_fake, kwargs)
                if not stream:
                    result.value = value
                    return
                async for item in value:
                    result.items.append(item)
                    if take is not None and len(result.items) >= take:
                        break
                if take is not None:
                    await asyncio.sleep(0)
                del value
                gc.collect()
            except Exception as exc:
                result.error = exc


@pytest.fixture(autouse=True)
def telemetry_never_fails(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Fail a test when the instrumentation swallowed an internal error (unless the test expects one)."""
    monkeypatch.setattr(_common, "_failure_logged", False)
    with caplog.at_level(logging.WARNING, logger="llmpulse.sdk"):
        yield
    if "expect_telemetry_failure" not in request.fixturenames:
        failures = [r.getMessage() for r in caplog.records if "instrumentation failed" in r.getMessage()]
        assert failures == []


@pytest.fixture
def expect_telemetry_failure() -> None:
    """Declares that the test provokes a failure inside the telemetry."""


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as server:
        yield server


@pytest.fixture(params=[False, True], ids=["sync", "async"])
def is_async(request: pytest.FixtureRequest) -> bool:
    flag: bool = request.param
    return flag


@pytest.fixture
def openai_harness(fake: FakeProvider, is_async: bool) -> Harness:
    return Harness(fake, "openai", is_async)


@pytest.fixture
def anthropic_harness(fake: FakeProvider, is_async: bool) -> Harness:
    return Harness(fake, "anthropic", is_async)
