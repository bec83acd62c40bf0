"""A minimal keep-alive HTTP/1.1 load client for the benchmarks (asyncio streams, pre-encoded bodies).

It costs the machine as little CPU as a Python client can, so the server under test gets the cores.
A 503 is retried after its Retry-After; every other non-2xx counts as a failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    """What a load run saw: acknowledged bodies and events, failures, retries, and the wall time."""

    acked_bodies: int = 0
    acked_events: int = 0
    failures: int = 0
    retries: int = 0
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes
) -> tuple[int, dict[str, str], bytes]:
    writer.write(head + body)
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    payload = await reader.readexactly(length) if length else b""
    return status, headers, payload


def _head(host: str, port: int, path: str, length: int, content_type: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


async def post_bodies(
    host: str,
    port: int,
    path: str,
    bodies: Sequence[bytes],
    events_per_body: Sequence[int],
    *,
    concurrency: int = 16,
    content_type: str = "application/json",
) -> LoadResult:
    """POST every body once (retrying 503s), over `concurrency` keep-alive connections."""
    result = LoadResult()
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while next_index < len(bodies):
                i = next_index
                next_index += 1
                body = bodies[i]
                head = _head(host, port, path, len(body), content_type)
                while True:
                    status, headers, _ = await _request(reader, writer, head, body)
                    result.statuses[status] = result.statuses.get(status, 0) + 1
                    if status == 503:
                        result.retries += 1
                        await asyncio.sleep(float(headers.get("retry-after", "1")))
                        continue
                    break
                if 200 <= status < 300:
                    result.acked_bodies += 1
                    result.acked_events += events_per_body[i]
                else:
                    result.failures += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


async def get_json(host: str, port: int, path: str) -> tuple[int, bytes]:
    """One GET on a fresh connection; returns (status, body)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        status_line = await reader.readline()
        status = int(status_line.split()[1])
        length = -1
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await (reader.readexactly(length) if length >= 0 else reader.read())
        return status, body
    finally:
        writer.close()
