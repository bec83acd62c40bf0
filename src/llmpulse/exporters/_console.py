"""`ConsoleExporter`: one line per item on a text stream (stderr by default)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

import msgspec

__all__ = ["ConsoleExporter"]

_encoder = msgspec.json.Encoder()


def _tokens(item: dict[str, Any]) -> str:
    text = f"{item.get('input_tokens', 0)}→{item.get('output_tokens', 0)} tok"
    cached = item.get("cached_input_tokens") or 0
    return f"{text} ({cached} cached)" if cached else text


def _short(item: dict[str, Any]) -> str:
    """A one-line human summary of an item's dict form."""
    kind = str(item.get("type", "?"))
    parts = [str(item.get("timestamp", "")), kind]
    if kind == "llm.call":
        cost = item.get("cost")
        parts += [
            str(item.get("model")),
            _tokens(item),
            "cost ?" if cost is None else f"${cost:.6f}",
        ]
        if item.get("latency_ms") is not None:
            parts.append(f"{item['latency_ms']:.0f} ms")
        if item.get("ttft_ms") is not None:
            parts.append(f"ttft {item['ttft_ms']:.0f} ms")
        parts.append(str(item.get("status")))
        parts.append(f"{item.get('tenant_id')}/{item.get('route')}")
    else:
        for key in ("name", "severity", "message", "value", "duration_ms", "status"):
            if item.get(key) is not None:
                parts.append(f"{key}={item[key]}")
    if item.get("error") is not None:
        parts.append(f"error={item['error']}")
    return " ".join(p for p in parts if p)


class ConsoleExporter:
    """Writes each item as one compact JSON line, or with `pretty=True` as a short human line.

    `stream` defaults to the `sys.stderr` of the moment of each export. One `write` and one `flush`
    per batch; blocks while the stream does. Errors of the stream are permanent failures of the batch.
    """

    def __init__(self, stream: TextIO | None = None, *, pretty: bool = False, name: str = "console") -> None:
        self._stream = stream
        self.pretty = pretty
        self.name = name

    def export(self, items: Sequence[dict[str, Any]]) -> None:
        """Write the batch to the stream; blocks on the stream."""
        if not items:
            return
        if self.pretty:
            text = "".join(_short(item) + "\n" for item in items)
        else:
            text = "".join(_encoder.encode(item).decode() + "\n" for item in items)
        stream = self._stream if self._stream is not None else sys.stderr
        stream.write(text)
        stream.flush()

    def force_flush(self, timeout: float) -> bool:
        """Nothing is buffered here beyond the stream, flushed after each batch; True."""
        return True

    def shutdown(self, timeout: float) -> None:
        """Nothing to release (the stream is the caller's); does not block."""
