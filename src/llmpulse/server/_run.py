"""Running the server under uvicorn: `run(settings)`.

uvicorn installs the SIGTERM/SIGINT handlers: on either signal it stops accepting connections, lets
in-flight requests finish (their appends complete, so their acknowledgements hold), then runs the
lifespan shutdown, which commits the processor's last checkpoint and closes the log and the store.
"""

from __future__ import annotations

import gc
import importlib.util
import sys
from typing import Final, TextIO

import uvicorn

from llmpulse.server._app import create_app
from llmpulse.server._settings import ServerSettings

#: Exit status when the server could not start (uvicorn's own convention).
STARTUP_FAILURE: Final = 3
#: Longest wait for open connections to finish on shutdown before they are closed.
GRACEFUL_SHUTDOWN_S: Final = 30
#: Allocations between young-generation collections. The processor keeps hundreds of thousands of
#: long-lived objects (pending joins, remembered ids); with CPython's default of 700, collections
#: took about a tenth of the server's CPU under `make bench`.
GC_GEN0_THRESHOLD: Final = 50_000


def tune_gc() -> None:
    """Freeze what start-up allocated and collect the young generation less often. Does not block."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def client_host(host: str) -> str:
    """The host a local client should use to reach a server listening on `host`."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def base_url(settings: ServerSettings) -> str:
    """The server's base URL as a local client reaches it (``http://127.0.0.1:8080``)."""
    return f"http://{client_host(settings.host)}:{settings.port}"


def uvicorn_config(settings: ServerSettings) -> uvicorn.Config:
    """The uvicorn configuration for `settings`: uvloop when importable, httptools, no access log."""
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") is not None else "h11",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
        proxy_headers=False,  # no client addresses are used: skip the per-request middleware
    )


def banner(settings: ServerSettings) -> str:
    """What `run` prints on start: the URL, where the data lives and, in demo mode, what to try."""
    url = base_url(settings)
    lines = [f"llmpulse serving on {url}  (API docs: {url}/docs, health: {url}/health)"]
    if settings.broker_url:
        from llmpulse.pipeline._kafka_log import TOPICS, parse_brokers

        processing = (
            "in this process"
            if settings.run_processor
            else f"by 'llmpulse process' workers (consumer group {settings.consumer_group})"
        )
        lines += [
            f"  store: {settings.db_url}",
            f"  event log: Kafka at {parse_brokers(settings.broker_url)}, topics {', '.join(TOPICS)}",
            f"  processing: {processing}",
        ]
    else:
        lines.append(f"  store: {settings.db_url}   event log: {settings.resolved_log_url}")
    if settings.otlp_grpc_port is not None:
        shown = settings.otlp_grpc_port or "a free port"
        lines.append(f"  OTLP/gRPC: {client_host(settings.host)}:{shown} (TraceService/Export)")
    if settings.demo:
        lines += [
            "  demo mode: posting live traffic for tenant-1, tenant-2 and tenant-3 to the server itself",
            f"  try:  curl '{url}/v1/metrics?tenant_id=tenant-1&limit=5'",
            f"        curl '{url}/v1/metrics/summary?tenant_id=tenant-1&group_by=model'",
        ]
    lines.append("  press Ctrl+C to stop (everything acknowledged stays in the log)")
    return "\n".join(lines)


def run(settings: ServerSettings, *, out: TextIO | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully. Blocks until the server has stopped.

    Prints the URL (and in demo mode a hint) to `out` (stderr by default). Raises `SystemExit` with
    status `STARTUP_FAILURE` when the server could not start (port taken, store unreachable, ...;
    uvicorn has logged why).
    """
    config = uvicorn_config(settings)
    tune_gc()
    print(banner(settings), file=out or sys.stderr, flush=True)
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)
