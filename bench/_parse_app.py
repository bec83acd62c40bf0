"""Reference server for the ingest benchmark: a bare ASGI endpoint that only parses each batch."""

from __future__ import annotations

from typing import Any

import msgspec

_decoder = msgspec.json.Decoder()
_OK = b'{"ok":true}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Read the body, parse it as JSON, answer 200 with the item count."""
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    raw = b"".join(chunks)
    items = _decoder.decode(raw) if raw else []
    body = b'{"accepted":%d}' % len(items)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
