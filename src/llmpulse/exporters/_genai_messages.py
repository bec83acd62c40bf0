"""GenAI message content: what the SDK recorded as a prompt or completion, in the conventions' shape.

The OpenTelemetry GenAI conventions carry message content as ``gen_ai.input.messages`` and
``gen_ai.output.messages``: lists of messages, each a ``role`` and a list of typed ``parts`` (``text``
with ``content``, ``tool_call`` with ``id``/``name``/``arguments``, ``tool_call_response`` with
``id``/``response``, or another type kept as a generic part), output messages with a
``finish_reason`` (the conventions' input and output message JSON schemas). `genai_input_messages`
and `genai_output_messages` turn a recorded string, an OpenAI- or Anthropic-style message or list of
messages, or messages already in that shape into those lists. Pure functions; they do not raise on
odd input (anything unknown becomes text).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["genai_input_messages", "genai_output_messages"]


def _parts(content: Any) -> list[dict[str, Any]]:
    """A message's `content` as GenAI message parts: strings and text parts as ``text``, others kept."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, Mapping):
        text = content.get("text", content.get("content"))
        if content.get("type") in (None, "text", "input_text", "output_text") and isinstance(text, str):
            return [{"type": "text", "content": text}]
        if isinstance(content.get("type"), str):
            return [dict(content)]  # a part of another kind (image, file, ...): a generic part as given
        return [{"type": "text", "content": json.dumps(content, default=str)}]
    if isinstance(content, list | tuple):
        return [part for inner in content for part in _parts(inner)]
    return [{"type": "text", "content": str(content)}]


def _tool_call_part(call: Any) -> dict[str, Any] | None:
    """An OpenAI-style ``tool_calls`` entry as a ``tool_call`` part; None when it names no tool."""
    if not isinstance(call, Mapping):
        return None
    inner = call.get("function")
    function: Mapping[str, Any] = inner if isinstance(inner, Mapping) else call
    name = function.get("name")
    if not isinstance(name, str):
        return None
    arguments = function.get("arguments", function.get("input"))
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):  # arguments that are not JSON are kept as the string
            arguments = json.loads(arguments)
    part: dict[str, Any] = {"type": "tool_call", "name": name, "arguments": arguments}
    if call.get("id") is not None:
        part["id"] = str(call["id"])
    return part


def _message(value: Any, role: str) -> dict[str, Any]:
    """One chat message (a string, an OpenAI/Anthropic-style mapping, or one already in the GenAI
    shape with ``parts``) as a GenAI message with ``role`` and ``parts``; `role` when it names none."""
    if not isinstance(value, Mapping):
        return {"role": role, "parts": _parts(value)}
    if isinstance(value.get("parts"), list):
        return {**value, "role": str(value.get("role") or role)}
    role = str(value.get("role") or role)
    if role == "tool":
        response: dict[str, Any] = {"type": "tool_call_response", "response": value.get("content")}
        if value.get("tool_call_id") is not None:
            response["id"] = str(value["tool_call_id"])
        return {"role": role, "parts": [response]}
    parts = _parts(value.get("content"))
    for call in value.get("tool_calls") or ():
        part = _tool_call_part(call)
        if part is not None:
            parts.append(part)
    message: dict[str, Any] = {"role": role, "parts": parts}
    if isinstance(value.get("name"), str):
        message["name"] = value["name"]
    return message


def genai_input_messages(content: Any) -> list[dict[str, Any]]:
    """The prompt an item recorded (a string, one message or a list of messages) as the
    ``gen_ai.input.messages`` list of the GenAI conventions (a bare string is one ``user`` message). Pure."""
    messages = content if isinstance(content, list | tuple) else [content]
    return [_message(message, "user") for message in messages]


def genai_output_messages(content: Any, finish_reason: str) -> list[dict[str, Any]]:
    """The completion an item recorded as the ``gen_ai.output.messages`` list of the GenAI conventions:
    one ``assistant`` message per choice, each with `finish_reason` unless it names its own. Pure."""
    choices = (
        content
        if isinstance(content, list | tuple)
        and all(isinstance(c, Mapping) and ("role" in c or "parts" in c) for c in content)
        and content
        else [content]
    )
    result = []
    for choice in choices:
        message = _message(choice, "assistant")
        reason = choice.get("finish_reason") if isinstance(choice, Mapping) else None
        message["finish_reason"] = str(reason or finish_reason)
        result.append(message)
    return result
