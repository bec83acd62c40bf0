"""A fake chat model speaking real langchain-core (usage metadata, streaming chunks) and a recorder."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from llmpulse.events import LLMCall, Span


class ProviderError(RuntimeError):
    """What the fake provider raises when told to fail."""


def usage(
    input_tokens: int, output_tokens: int, cache_read: int = 0, reasoning: int = 0, cache_creation: int = 0
) -> UsageMetadata:
    """LangChain's normalised usage (input includes cache reads/writes; output includes reasoning)."""
    return UsageMetadata(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        input_token_details={"cache_read": cache_read, "cache_creation": cache_creation},
        output_token_details={"reasoning": reasoning},
    )


class FakeChatModel(BaseChatModel):
    """Answers `reply` with `usage_metadata`; streams it word by word after a role-only chunk."""

    model_name: str = "gpt-4o-mini"
    reply: str = "Paris is the capital of France"
    usage: UsageMetadata | None = None
    response_model: str = "gpt-4o-mini-2024-07-18"
    max_tokens: int | None = None
    fail: bool = False
    fail_after_chunks: int | None = None
    delay_s: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "fake-usage-chat"

    def _usage_for(self, messages: list[BaseMessage]) -> UsageMetadata:
        return self.usage if self.usage is not None else usage(12, len(self.reply.split()))

    def _response_metadata(self) -> dict[str, Any]:
        return {"model_name": self.response_model, "finish_reason": "stop"}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail:
            raise ProviderError("provider exploded")
        message = AIMessage(
            content=self.reply,
            usage_metadata=self._usage_for(messages),
            response_metadata=self._response_metadata(),
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _chunks(self, messages: list[BaseMessage]) -> Iterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=AIMessageChunk(content=""))  # role-only opening chunk
        words = self.reply.split(" ")
        for i, word in enumerate(words):
            if self.fail_after_chunks is not None and i == self.fail_after_chunks:
                raise ProviderError("stream cut off")
            yield ChatGenerationChunk(message=AIMessageChunk(content=word if i == 0 else " " + word))
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=self._usage_for(messages),
                response_metadata=self._response_metadata(),
            )
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail:
            raise ProviderError("provider exploded")
        yield from self._chunks(messages)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            raise ProviderError("provider exploded")
        for chunk in self._chunks(messages):
            await asyncio.sleep(0)
            yield chunk


class Recorder:
    """A stand-in for `llmpulse.sdk.Collector`: `record(item)` appends to `items` (thread-safe)."""

    def __init__(self) -> None:
        self.items: list[object] = []
        self._lock = threading.Lock()

    def record(self, item: object, /) -> None:
        with self._lock:
            self.items.append(item)

    @property
    def calls(self) -> list[LLMCall]:
        return [item for item in self.items if isinstance(item, LLMCall)]

    @property
    def spans(self) -> list[Span]:
        return [item for item in self.items if isinstance(item, Span)]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
