"""Loopback servers for the SDK benchmark, each run in its own process so its CPU is not counted.

`python -m bench._sdk_servers sink` serves a telemetry sink: ``POST /v1/traces`` (OTLP/HTTP protobuf:
counts the spans), ``POST /v1/events`` (llmpulse JSON arrays, gzip or not: counts the events), any
other POST (counted as ``other``), all answering 200, and ``GET /count`` (JSON ``{"spans", "events",
"other", "requests"}``).
`python -m bench._sdk_servers provider` serves `tests/instrument/fake_provider.FakeProvider` (the fake
OpenAI/Anthropic API the instrumentation tests use). Either prints its base URL on one stdout line,
serves until its stdin reaches end of file, then stops.

`Server` starts and stops one of them from the benchmark (a context manager); `sink_counts` reads
the sink's counters.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]


class _SinkHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body are two writes: without TCP_NODELAY the body waits for the client's delayed
    # ACK (~40 ms per request), which would make every exporter look slow
    disable_nagle_algorithm = True
    server: _SinkServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path != "/count":
            self._answer(404, b"{}", "application/json")
            return
        with self.server.lock:
            counts = dict(self.server.counts)
        self._answer(200, json.dumps(counts).encode(), "application/json")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path.endswith("/v1/traces"):
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

            if self.headers.get("content-type", "").startswith("application/json"):
                data = json.loads(body)
                spans = sum(len(s["spans"]) for r in data["resourceSpans"] for s in r["scopeSpans"])
                self._count("spans", spans)
                self._answer(200, b"{}", "application/json")
            else:
                request = ExportTraceServiceRequest.FromString(body)
                spans = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
                self._count("spans", spans)
                self._answer(200, b"", "application/x-protobuf")  # an empty ExportTraceServiceResponse
        elif self.path.endswith("/v1/events"):
            events = len(json.loads(body))
            self._count("events", events)
            self._answer(200, json.dumps({"accepted": events}).encode(), "application/json")
        else:  # any other POST (webhook, Langfuse, Helicone): counted and accepted
            self._count("other", 1)
            self._answer(200, b"{}", "application/json")

    def _count(self, key: str, n: int) -> None:
        with self.server.lock:
            self.server.counts[key] += n
            self.server.counts["requests"] += 1


class _SinkServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.lock = threading.Lock()
        self.counts = {"spans": 0, "events": 0, "other": 0, "requests": 0}


def _serve(kind: str) -> None:
    """Serve `kind` (``sink`` or ``provider``) until stdin closes."""
    if kind == "sink":
        sink = _SinkServer()
        thread = threading.Thread(target=sink.serve_forever, daemon=True)
        thread.start()
        host, port = sink.server_address[:2]
        print(f"http://{host!s}:{port}", flush=True)
        sys.stdin.read()
        sink.shutdown()
        sink.server_close()
        return
    from tests.instrument.fake_provider import FakeProvider

    with FakeProvider() as provider:
        print(provider.url, flush=True)
        sys.stdin.read()


class Server:
    """One of the servers above in a child process; `url` is its base URL once started.

    Use as a context manager: entering blocks until the server listens, leaving stops it and reaps
    the process (closing its pipes). Raises `RuntimeError` when the child fails to start.
    """

    def __init__(self, kind: str) -> None:
        if kind not in ("sink", "provider"):
            raise ValueError(f"kind must be 'sink' or 'provider', got {kind!r}")
        self.kind = kind
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Server:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench._sdk_servers", self.kind],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._proc = proc
        stdout: IO[str] | None = proc.stdout
        line = stdout.readline().strip() if stdout is not None else ""
        if not line.startswith("http://"):
            self.__exit__(None, None, None)
            raise RuntimeError(f"the {self.kind} server did not start (exit code {proc.poll()})")
        self.url = line
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def counts(self) -> dict[str, int]:
        """The sink's counters (``spans``, ``events``, ``requests``); sink only."""
        return sink_counts(self.url)


def sink_counts(url: str) -> dict[str, int]:
    """The counters of the sink at `url`: spans and events received, requests answered."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/count", timeout=10) as response:
        counts: dict[str, int] = json.loads(response.read())
    return counts


if __name__ == "__main__":
    _serve(sys.argv[1])
