"""A fake OpenAI + Anthropic HTTP server on a free loopback port, for the real client libraries.

Speaks `POST /v1/chat/completions`, `POST /v1/responses` (OpenAI) and `POST /v1/messages`
(Anthropic), as JSON or as server-sent events when the body says `"stream": true`. Each request is
shaped by an `x-fake` header of comma-separated options (`extra_headers={"x-fake": "..."}`):

- `chunks=N`        content deltas in the answer (default 4); each is one output token
- `prompt=N`        prompt size in tokens, cached and cache-write tokens included (default 20)
- `cached=N`        prompt tokens read from the cache (default 0)
- `write=N`         prompt tokens written to the cache (default 0)
- `reasoning=N`     reasoning tokens on top of the content tokens (OpenAI only; default 0)
- `delay=S`         seconds to wait before the first content chunk (after the role/start event)
- `gap=S`           seconds between later chunks
- `cumulative`      OpenAI chat: a running usage total in every chunk (as some compatible servers do)
- `error=CODE`      answer with that HTTP status and the provider's error JSON
- `cutoff=N`        stream N content chunks, then drop the connection without the final events
- `tools`           OpenAI chat: answer with tool-call argument deltas instead of text
- `failed`          streams end with the provider's failure event after the content (responses:
                    `response.failed`; Anthropic: an `error` event) instead of the normal end

Token figures follow each provider's own convention: OpenAI's `prompt_tokens`/`input_tokens`
include cached tokens; Anthropic's `input_tokens` excludes cache reads and writes. Every request is
kept in `requests` (path, JSON body, headers). Blocking: `start()` returns once the port listens.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeProvider", "Options"]

CREATED = 1_700_000_000


@dataclass
class Options:
    """The parsed `x-fake` header."""

    chunks: int = 4
    prompt: int = 20
    cached: int = 0
    write: int = 0
    reasoning: int = 0
    delay: float = 0.0
    gap: float = 0.0
    cumulative: bool = False
    error: int | None = None
    cutoff: int | None = None
    tools: bool = False
    failed: bool = False

    @classmethod
    def parse(cls, header: str | None) -> Options:
        """Options from a header value such as ``"chunks=3,delay=0.1,cumulative"``."""
        opts = cls()
        for part in filter(None, (p.strip() for p in (header or "").split(","))):
            key, _, value = part.partition("=")
            if key in ("cumulative", "tools", "failed"):
                setattr(opts, key, True)
            elif key in ("delay", "gap"):
                setattr(opts, key, float(value))
            elif key in ("chunks", "prompt", "cached", "write", "reasoning", "error", "cutoff"):
                setattr(opts, key, int(value))
            else:
                raise ValueError(f"unknown x-fake option {key!r}")
        return opts

    def words(self) -> list[str]:
        """The content deltas of the answer."""
        return [f"w{i} " for i in range(self.chunks)]


class _Cut(Exception):
    """Raised inside a stream to drop the connection mid-way."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small SSE writes must not wait for delayed ACKs
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    # -- plumbing ---------------------------------------------------------------------------------

    def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _sse(self, events: Iterator[tuple[str | None, Any]], headers: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        try:
            for name, data in events:
                text = data if isinstance(data, str) else json.dumps(data)
                line = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
                self._write_chunk(line.encode())
        except _Cut:
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        opts = Options.parse(self.headers.get("x-fake"))
        self.server.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
        number = len(self.server.requests)
        if self.path.endswith("/chat/completions"):
            self._chat(body, opts, number)
        elif self.path.endswith("/responses"):
            self._responses(body, opts, number)
        elif self.path.endswith("/messages"):
            self._messages(body, opts, number)
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def _openai_error(self, code: int) -> None:
        kind = "rate_limit_exceeded" if code == 429 else "server_error"
        self._json(
            code,
            {"error": {"message": f"fake error {code}", "type": "requests", "param": None, "code": kind}},
            {"x-request-id": f"req_err_{code}"},
        )

    def _pause(self, index: int, opts: Options) -> None:
        if index == 0 and opts.delay:
            time.sleep(opts.delay)
        elif index > 0 and opts.gap:
            time.sleep(opts.gap)

    # -- OpenAI chat completions ----------------------------------------------------------------

    def _chat(self, body: dict[str, Any], opts: Options, number: int) -> None:
        if opts.error:
            self._openai_error(opts.error)
            return
        model = str(body.get("model"))
        served = f"{model}-2025-01-01"
        rid = "chatcmpl-fake"
        words = opts.words()

        def usage(done: int) -> dict[str, Any]:
            reasoning = opts.reasoning if done == len(words) else 0
            return {
                "prompt_tokens": opts.prompt,
                "completion_tokens": done + reasoning,
                "total_tokens": opts.prompt + done + reasoning,
                "prompt_tokens_details": {
                    "cached_tokens": opts.cached,
                    "cache_write_tokens": opts.write,
                    "audio_tokens": 0,
                },
                "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0},
            }

        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": "".join(words), "refusal": None}
            self._json(
                200,
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": served,
                    "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
                    "usage": usage(len(words)),
                },
                {"x-request-id": f"req_{number}"},
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None, done: int) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": served,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if opts.cumulative:
                out["usage"] = usage(done)
            elif include_usage:
                out["usage"] = None
            return out

        def events() -> Iterator[tuple[str | None, Any]]:
            yield None, chunk({"role": "assistant", "content": ""}, None, 0)
            for i, word in enumerate(words):
                if opts.cutoff is not None and i == opts.cutoff:
                    raise _Cut
                self._pause(i, opts)
                if opts.tools:
                    call: dict[str, Any] = {"index": 0, "function": {"arguments": word}}
                    if i == 0:
                        call.update(id="call_1", type="function")
                        call["function"]["name"] = "lookup"
                    yield None, chunk({"tool_calls": [call]}, None, i + 1)
                else:
                    yield None, chunk({"content": word}, None, i + 1)
            yield None, chunk({}, "tool_calls" if opts.tools else "stop", len(words))
            if include_usage:
                final = {"id": rid, "object": "chat.completion.chunk", "created": CREATED, "model": served}
                yield None, {**final, "choices": [], "usage": usage(len(words))}
            yield None, "[DONE]"

        self._sse(events(), {"x-request-id": f"req_{number}"})

    # -- OpenAI responses -----------------------------------------------------------------------

    def _responses(self, body: dict[str, Any], opts: Options, number: int) -> None:
        if opts.error:
            self._openai_error(opts.error)
            return
        model = str(body.get("model"))
        words = opts.words()
        rid = "resp_fake"

        def response(status: str, text: str | None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": rid,
                "object": "response",
                "created_at": CREATED,
                "model": f"{model}-2025-01-01",
                "status": status,
                "output": [],
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "error": None,
                "incomplete_details": None,
                "usage": None,
            }
            if text is not None:
                out["output"] = [
                    {
                        "id": "msg_1",
                        "type": "message",
                        "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}],
                    }
                ]
                out["usage"] = {
                    "input_tokens": opts.prompt,
                    "input_tokens_details": {"cached_tokens": opts.cached, "cache_write_tokens": opts.write},
                    "output_tokens": len(words) + opts.reasoning,
                    "output_tokens_details": {"reasoning_tokens": opts.reasoning},
                    "total_tokens": opts.prompt + len(words) + opts.reasoning,
                }
            return out

        if not body.get("stream"):
            self._json(200, response("completed", "".join(words)), {"x-request-id": f"req_{number}"})
            return

        def events() -> Iterator[tuple[str | None, Any]]:
            seq = iter(range(10_000))
            yield (
                "response.created",
                {
                    "type": "response.created",
                    "sequence_number": next(seq),
                    "response": response("in_progress", None),
                },
            )
            for i, word in enumerate(words):
                if opts.cutoff is not None and i == opts.cutoff:
                    raise _Cut
                self._pause(i, opts)
                yield (
                    "response.output_text.delta",
                    {
                        "type": "response.output_text.delta",
                        "sequence_number": next(seq),
                        "item_id": "msg_1",
                        "output_index": 0,
                        "content_index": 0,
                        "delta": word,
                        "logprobs": [],
                    },
                )
            if opts.failed:
                failed = {**response("failed", None), "error": {"code": "server_error", "message": "boom"}}
                yield (
                    "response.failed",
                    {"type": "response.failed", "sequence_number": next(seq), "response": failed},
                )
                return
            yield (
                "response.completed",
                {
                    "type": "response.completed",
                    "sequence_number": next(seq),
                    "response": response("completed", "".join(words)),
                },
            )

        self._sse(events(), {"x-request-id": f"req_{number}"})

    # -- Anthropic messages ---------------------------------------------------------------------

    def _messages(self, body: dict[str, Any], opts: Options, number: int) -> None:
        if opts.error:
            kind = "rate_limit_error" if opts.error == 429 else "api_error"
            self._json(
                opts.error,
                {"type": "error", "error": {"type": kind, "message": f"fake error {opts.error}"}},
                {"request-id": f"req_err_{opts.error}"},
            )
            return
        model = str(body.get("model"))
        words = opts.words()
        mid = "msg_fake"
        usage = {
            "input_tokens": opts.prompt - opts.cached - opts.write,
            "cache_read_input_tokens": opts.cached,
            "cache_creation_input_tokens": opts.write,
            "output_tokens": len(words),
        }
        message: dict[str, Any] = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": f"{model}-20250101",
            "content": [{"type": "text", "text": "".join(words)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            self._json(200, message, {"request-id": f"req_{number}"})
            return

        def events() -> Iterator[tuple[str | None, Any]]:
            start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
            yield "message_start", {"type": "message_start", "message": start}
            yield (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
            yield "ping", {"type": "ping"}
            for i, word in enumerate(words):
                if opts.cutoff is not None and i == opts.cutoff:
                    raise _Cut
                self._pause(i, opts)
                yield (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": word},
                    },
                )
            if opts.failed:
                yield (
                    "error",
                    {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
                )
                return
            yield "content_block_stop", {"type": "content_block_stop", "index": 0}
            yield (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": len(words)},
                },
            )
            yield "message_stop", {"type": "message_stop"}

        self._sse(events(), {"request-id": f"req_{number}"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[dict[str, Any]]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that drop a connection (abandoned or cut streams) are expected: stay quiet."""


class FakeProvider:
    """The fake server; use as a context manager or `start()`/`stop()`. `url` is its base URL."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.requests = []
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-provider", daemon=True)

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT` (OpenAI clients add `/v1` themselves via `openai_url`)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def openai_url(self) -> str:
        """The base URL for `openai.OpenAI(base_url=...)`."""
        return f"{self.url}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request received so far (path, JSON body, headers)."""
        return self._server.requests

    def start(self) -> FakeProvider:
        """Start serving in a daemon thread; returns once listening."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (blocks until the loop ends)."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
