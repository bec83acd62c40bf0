"""A scripted HTTP/1.1 server on loopback (stdlib `http.server` in a thread) for exporter tests."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    close: bool = False


@dataclass
class Received:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    items: list[Any]
    client_port: int
    at: float
    body: bytes = b""  # the JSON body as sent (decompressed)


class StubServer(ThreadingHTTPServer):
    """Answers POSTs from `script` in turn (then 200 `{"accepted": n}`) and records each request."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[Reply] = []
        self.received: list[Received] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StubServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        items = json.loads(raw)
        with self.server.lock:
            self.server.received.append(
                Received(
                    self.path,
                    dict(self.headers.items()),
                    items,
                    self.client_address[1],
                    time.monotonic(),
                    raw,
                )
            )
            reply = self.server.script.pop(0) if self.server.script else Reply()
        if reply.delay_s:
            time.sleep(reply.delay_s)
        body = json.dumps(reply.body if reply.body is not None else {"accepted": len(items)}).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def stub_server() -> Iterator[StubServer]:
    """A running `StubServer`; shut down when the block exits."""
    server = StubServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
