"""Every exporter with its receiver dead: the application is not held, memory stays bounded, and
``emitted = exported + queued + dropped`` holds exactly.

Two kinds of dead receiver, both on loopback:

- ``refused``: nothing listens on the port (connections are refused at once);
- ``blackhole``: a listener that accepts connections and never reads or answers, so every export
  hangs until the exporter's own timeout (the worst case for a worker thread).

The application thread records far more calls than the buffer holds while every export fails; no
single `record` may take as long as one export timeout (which a call waiting on I/O would), the queue
never holds more than the buffer, and a live exporter beside the dead ones receives everything.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from llmpulse.exporters import (
    HeliconeExporter,
    KafkaExporter,
    LangfuseExporter,
    LogstashExporter,
    OTLPExporter,
    PulseExporter,
    SyslogExporter,
    WebhookExporter,
)
from llmpulse.sdk import Collector, TelemetryConfig
from llmpulse.testing import InMemoryExporter
from tests.sdk.test_pipeline import call, wait_until

#: How long one export may wait on a dead receiver; the app thread must never wait this long.
EXPORT_TIMEOUT_S = 0.5
BUFFER = 1_000
CALLS = 12_000

ExporterFactory = Callable[[int], Any]

#: Stream transports with no application-level acknowledgement: a black hole's kernel buffers take
#: a few MB before writes block, and those items count as exported (TCP cannot tell; documented).
UNACKNOWLEDGED = frozenset({"logstash", "syslog-tcp"})

FACTORIES: dict[str, ExporterFactory] = {
    "webhook": lambda port: WebhookExporter(f"http://127.0.0.1:{port}/hook", timeout_s=EXPORT_TIMEOUT_S),
    "pulse": lambda port: PulseExporter(f"http://127.0.0.1:{port}", timeout_s=EXPORT_TIMEOUT_S),
    "otlp-protobuf": lambda port: OTLPExporter(f"http://127.0.0.1:{port}", timeout_s=EXPORT_TIMEOUT_S),
    "otlp-json": lambda port: OTLPExporter(
        f"http://127.0.0.1:{port}", protocol="http/json", timeout_s=EXPORT_TIMEOUT_S
    ),
    "otlp-grpc": lambda port: OTLPExporter(
        f"http://127.0.0.1:{port}", protocol="grpc", timeout_s=EXPORT_TIMEOUT_S, name="otlp-grpc"
    ),
    "helicone": lambda port: HeliconeExporter(
        "sk-helicone-test", base_url=f"http://127.0.0.1:{port}", timeout_s=EXPORT_TIMEOUT_S
    ),
    "langfuse": lambda port: LangfuseExporter(
        "pk-lf-test", "sk-lf-test", host=f"http://127.0.0.1:{port}", timeout_s=EXPORT_TIMEOUT_S
    ),
    "kafka": lambda port: KafkaExporter(f"127.0.0.1:{port}", timeout_s=EXPORT_TIMEOUT_S),
    "logstash": lambda port: LogstashExporter("127.0.0.1", port, timeout_s=EXPORT_TIMEOUT_S),
    "syslog-tcp": lambda port: SyslogExporter(
        "127.0.0.1", port, protocol="tcp", timeout_s=EXPORT_TIMEOUT_S, name="syslog-tcp"
    ),
    "syslog-tls": lambda port: SyslogExporter(
        "127.0.0.1", port, protocol="tls", timeout_s=EXPORT_TIMEOUT_S, name="syslog-tls"
    ),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class BlackHole:
    """Accepts TCP connections on loopback and never reads from or writes to them."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port: int = self._listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._listener.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            self._conns.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._listener.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.close()


@pytest.fixture(params=["refused", "blackhole"])
def dead(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    """(mode, port) of a dead receiver."""
    if request.param == "refused":
        yield "refused", _free_port()
        return
    hole = BlackHole()
    try:
        yield "blackhole", hole.port
    finally:
        hole.close()


def _config() -> TelemetryConfig:
    return TelemetryConfig(
        buffer_size=BUFFER, max_batch_size=200, flush_interval_ms=20, shutdown_timeout_s=EXPORT_TIMEOUT_S
    )


def _record_all(collector: Collector, names: list[str], pause_every: int = 0) -> tuple[float, int]:
    """Record CALLS calls; return the slowest single `record` and the most items ever queued.

    With `pause_every`, the loop sleeps 5 ms after that many calls (an application's pace, not a burst).
    """
    slowest = 0.0
    most_queued = 0
    for i in range(CALLS):
        started = time.perf_counter()
        collector.record(call(i))
        slowest = max(slowest, time.perf_counter() - started)
        if pause_every and i % pause_every == pause_every - 1:
            time.sleep(0.005)
        if i % 1000 == 999:
            exporters = collector.stats()["exporters"]
            most_queued = max(most_queued, *(exporters[n]["queued"] for n in names))
    return slowest, most_queued


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_a_dead_receiver_neither_holds_the_app_nor_grows_memory_nor_loses_count(
    kind: str, dead: tuple[str, int]
) -> None:
    mode, port = dead
    exporter = FACTORIES[kind](port)
    collector = Collector(_config(), exporters=[exporter])
    try:
        slowest, most_queued = _record_all(collector, [exporter.name])
        # an export is in flight on the worker and waits up to EXPORT_TIMEOUT_S; record never does
        assert slowest < EXPORT_TIMEOUT_S / 2
        assert most_queued <= BUFFER
        if not (mode == "blackhole" and kind in UNACKNOWLEDGED):
            assert wait_until(lambda: collector.stats()["exporters"][exporter.name]["failed"] >= 1, 10.0)
    finally:
        collector.shutdown(timeout=EXPORT_TIMEOUT_S)
    stats = collector.stats()["exporters"][exporter.name]
    assert stats["emitted"] == CALLS
    if mode == "blackhole" and kind in UNACKNOWLEDGED:
        assert stats["exported"] < CALLS - BUFFER  # what the kernel buffers took, then timeouts
    else:
        assert stats["exported"] == 0
    assert stats["emitted"] == stats["exported"] + stats["queued"] + stats["dropped"]
    assert stats["queued"] <= BUFFER
    assert stats["dropped_by_reason"].get("queue_full", 0) >= CALLS - BUFFER - stats["exported"]
    if stats["failed"]:
        assert stats["last_error"]


def test_every_dead_receiver_at_once_leaves_a_live_exporter_untouched() -> None:
    hole = BlackHole()
    live = InMemoryExporter(name="live")
    dead = [factory(hole.port if i % 2 else _free_port()) for i, factory in enumerate(FACTORIES.values())]
    collector = Collector(_config(), exporters=[*dead, live])
    try:
        slowest, most_queued = _record_all(collector, [e.name for e in dead], pause_every=50)
        assert slowest < EXPORT_TIMEOUT_S / 2
        assert most_queued <= BUFFER
        # the live exporter gets every call while each dead one's worker waits out its timeouts
        assert wait_until(lambda: len(live.items) == CALLS, timeout=10.0)
    finally:
        collector.shutdown(timeout=EXPORT_TIMEOUT_S)
        hole.close()
    every = collector.stats()["exporters"]
    assert every["live"]["exported"] == CALLS
    assert every["live"]["dropped"] == 0
    assert [item["request_id"] for item in live.items] == [f"r{i}" for i in range(CALLS)]
    for exporter in dead:
        stats = every[exporter.name]
        assert stats["emitted"] == CALLS == stats["exported"] + stats["queued"] + stats["dropped"]
        assert stats["exported"] + stats["dropped"] >= CALLS - BUFFER, exporter.name
        assert stats["failed"] >= 1 or exporter.name in UNACKNOWLEDGED, exporter.name
