"""What the LangChain handler reads from callback arguments: model names, sizes, usage, errors, ids.

Pure functions over LangChain's objects and plain dicts; none of them raises on odd input (a missing
or malformed field gives None or 0) and none blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final
from uuid import UUID

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, GenerationChunk, LLMResult

from llmpulse.events._limits import MAX_NAME_LEN, MAX_TEXT_LEN
from llmpulse.sdk._usage import Usage, from_anthropic, from_openai_chat, from_openai_responses

#: Invocation parameters that name the model, in order of preference.
MODEL_PARAMS: Final = ("model", "model_name", "model_id", "deployment_name", "azure_deployment")
#: Invocation parameters that cap the completion's length, in order of preference.
MAX_OUTPUT_PARAMS: Final = (
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "max_new_tokens",
    "num_predict",
)
_SPAN_MASK: Final = (1 << 64) - 1


def name(value: object) -> str | None:
    """A value as an event name field: a non-empty string of at most `MAX_NAME_LEN` characters."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text[:MAX_NAME_LEN] or None


def text(value: str) -> str:
    """A free-text field cut to `MAX_TEXT_LEN` characters."""
    return value[:MAX_TEXT_LEN]


def span_id(run_id: UUID) -> str:
    """The W3C span id (16 hex digits) of a LangChain run: the low 64 bits of its run id."""
    return f"{run_id.int & _SPAN_MASK or 1:016x}"


def trace_id(root_run_id: UUID) -> str:
    """The W3C trace id (32 hex digits) of a run tree: its root run id."""
    return root_run_id.hex


def positive_int(value: object) -> int | None:
    """`value` when it is a positive int (not a bool), else None."""
    return value if type(value) is int and value > 0 else None


def model_of(
    invocation_params: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
    serialized: Mapping[str, Any] | None,
) -> str | None:
    """The model the application asked for: invocation params, then `ls_model_name`, then the
    serialized constructor kwargs."""
    for source in (invocation_params, _kwargs(serialized)):
        if source:
            for key in MODEL_PARAMS:
                found = source.get(key)
                if isinstance(found, str) and found:
                    return found
    found = (metadata or {}).get("ls_model_name")
    return found if isinstance(found, str) and found else None


def _kwargs(serialized: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    kwargs = (serialized or {}).get("kwargs")
    return kwargs if isinstance(kwargs, Mapping) else None


def max_output_tokens(
    invocation_params: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None
) -> int | None:
    """The completion length cap from the invocation params or `ls_max_tokens`, if any."""
    for key in MAX_OUTPUT_PARAMS:
        found = positive_int((invocation_params or {}).get(key))
        if found is not None:
            return found
    return positive_int((metadata or {}).get("ls_max_tokens"))


def content_chars(content: object) -> int:
    """Characters of text in a message content (a string or a list of content blocks)."""
    if isinstance(content, str):
        return len(content)
    total = 0
    if isinstance(content, Sequence):
        for block in content:
            if isinstance(block, str):
                total += len(block)
            elif isinstance(block, Mapping):
                for key in ("text", "thinking", "reasoning"):
                    value = block.get(key)
                    if isinstance(value, str):
                        total += len(value)
    return total


def messages_chars(messages: Sequence[BaseMessage]) -> int:
    """Characters of text in a prompt's messages, including tool-call arguments."""
    total = 0
    for message in messages:
        total += content_chars(message.content)
        for call in getattr(message, "tool_calls", None) or ():
            total += len(str(call.get("args", "")))
    return total


def chunk_has_content(token: object, chunk: object) -> bool:
    """True when a streamed chunk carries generated content: text or a tool-call delta.

    A role-only or empty chunk (the stream's opening or closing chunk) is not content, so it does not
    set the time to first token.
    """
    if content_chars(token) > 0:
        return True
    if isinstance(chunk, ChatGenerationChunk):
        message = chunk.message
        if content_chars(message.content) > 0 or getattr(message, "tool_call_chunks", None):
            return True
        extra = message.additional_kwargs
        return bool(extra.get("tool_calls") or extra.get("function_call"))
    return isinstance(chunk, GenerationChunk) and bool(chunk.text)


def chunk_chars(token: object, chunk: object) -> int:
    """Characters a streamed chunk adds to the completion (text, else tool-call argument deltas)."""
    chars = content_chars(token)
    if chars == 0 and isinstance(chunk, ChatGenerationChunk):
        for call in getattr(chunk.message, "tool_call_chunks", None) or ():
            args = call.get("args")
            chars += len(args) if isinstance(args, str) else 0
    return chars


def usage_from_metadata(usage_metadata: Mapping[str, Any]) -> Usage:
    """LangChain's `UsageMetadata` (already inclusive: input counts cache reads and writes)."""
    inputs = usage_metadata.get("input_token_details") or {}
    outputs = usage_metadata.get("output_token_details") or {}
    return Usage.of(
        positive_int(usage_metadata.get("input_tokens")) or 0,
        positive_int(usage_metadata.get("output_tokens")) or 0,
        positive_int(inputs.get("cache_read")) or 0,
        positive_int(inputs.get("cache_creation")) or 0,
        positive_int(outputs.get("reasoning")) or 0,
    )


def usage_from_llm_output(llm_output: Mapping[str, Any] | None) -> Usage | None:
    """Usage from a provider's raw figures in `LLMResult.llm_output` (OpenAI or Anthropic shapes)."""
    if not llm_output:
        return None
    raw = llm_output.get("token_usage") or llm_output.get("usage")
    if not isinstance(raw, Mapping) or not raw:
        return None
    if "prompt_tokens" in raw or "completion_tokens" in raw:
        return from_openai_chat(raw)
    if "cache_read_input_tokens" in raw or "cache_creation_input_tokens" in raw:
        return from_anthropic(raw)
    return from_openai_responses(raw)


def first_generation(response: LLMResult) -> Any:
    """The first generation of a run's result (a run answers one prompt), or None."""
    for candidates in response.generations:
        for generation in candidates:
            return generation
    return None


def usage_of(response: LLMResult) -> Usage | None:
    """The call's usage: the message's `usage_metadata` when present, else `llm_output`; None if
    the provider reported none."""
    generation = first_generation(response)
    if isinstance(generation, ChatGeneration):
        usage_metadata = getattr(generation.message, "usage_metadata", None)
        if usage_metadata:
            return usage_from_metadata(usage_metadata)
    return usage_from_llm_output(response.llm_output)


def response_details(response: LLMResult) -> tuple[str | None, str | None]:
    """`(response_model, finish_reason)` from the response metadata or `llm_output`."""
    generation = first_generation(response)
    found: dict[str, Any] = {}
    if isinstance(generation, ChatGeneration):
        found.update(generation.message.response_metadata or {})
    if generation is not None:
        found.update(generation.generation_info or {})
    output = response.llm_output or {}
    model = found.get("model_name") or found.get("model") or output.get("model_name") or output.get("model")
    reason = found.get("finish_reason") or found.get("stop_reason") or found.get("done_reason")
    return name(model), (text(str(reason)) if reason else None)


def error_info(error: BaseException) -> dict[str, Any]:
    """An exception as the call event's `error` object: its type and message."""
    return {"type": type(error).__name__, "message": text(str(error))}
