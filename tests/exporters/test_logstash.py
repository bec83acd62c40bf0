"""`LogstashExporter` against a local JSON-lines TCP receiver (loopback only), plain and TLS."""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from llmpulse.events import to_dict
from llmpulse.exporters._logstash import LogstashExporter
from llmpulse.sdk import Collector, TelemetryConfig
from llmpulse.sdk._exporter import EncodedBatch, RetryableError
from tests.exporters.certs import make_cert
from tests.sdk.test_pipeline import call, wait_until


class _Handler(socketserver.StreamRequestHandler):
    server: Receiver

    def handle(self) -> None:
        self.server.track(self.request)
        for raw in self.rfile:
            if raw.endswith(b"\n"):
                self.server.add(raw)


class Receiver(socketserver.ThreadingTCPServer):
    """Collects the JSON lines it receives; `stop` closes the listener and every connection."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, port: int = 0, context: ssl.SSLContext | None = None) -> None:
        self.lines: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._context = context
        super().__init__(("127.0.0.1", port), _Handler)
        self.port: int = self.server_address[1]
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self._context is not None:
            sock = self._context.wrap_socket(sock, server_side=True)
        return sock, addr

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns.append(sock)

    def add(self, raw: bytes) -> None:
        with self._lock:
            self.raw.append(raw)
            self.lines.append(json.loads(raw))

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
        self._thread.join(2.0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _exporter(port: int, **kwargs: Any) -> LogstashExporter:
    kwargs.setdefault("timeout_s", 2.0)
    return LogstashExporter("127.0.0.1", port, **kwargs)


# -- the wire format ------------------------------------------------------------------------------


def test_each_item_is_one_json_line_with_logstash_fields(receiver: Receiver) -> None:
    exporter = _exporter(
        receiver.port, index="llm-costs", tags=("llm", "prod"), extra_fields={"service": "api", "env": "p"}
    )
    items = [to_dict(call(i)) for i in range(3)]
    exporter.export(items)
    assert wait_until(lambda: len(receiver.lines) == 3)
    for item, line in zip(items, receiver.lines, strict=True):
        assert line["@timestamp"] == item["timestamp"]
        assert line["@version"] == "1"
        assert line["tags"] == ["llm", "prod"]
        assert line["@metadata"] == {"index": "llm-costs"}
        assert (line["service"], line["env"]) == ("api", "p")
        assert {k: line[k] for k in item} == item
    exporter.shutdown(1.0)


def test_defaults_send_empty_tags_and_no_metadata(receiver: Receiver) -> None:
    exporter = _exporter(receiver.port)
    exporter.export([to_dict(call())])
    assert wait_until(lambda: len(receiver.lines) == 1)
    assert receiver.lines[0]["tags"] == []
    assert "@metadata" not in receiver.lines[0]
    exporter.shutdown(1.0)


def test_extra_fields_win_over_item_fields_on_both_paths() -> None:
    exporter = LogstashExporter("127.0.0.1", 5000, extra_fields={"environment": "prod"})
    item = call(environment=None)
    slow = json.loads(exporter.encode([to_dict(item)]))
    batch = EncodedBatch([item], msgspec.json.encode(to_dict(item)) + b"\n")
    fast = json.loads(exporter._encode_batch(batch))
    assert slow["environment"] == fast["environment"] == "prod"


def test_the_encoded_fast_path_matches_the_dict_path() -> None:
    exporter = LogstashExporter("127.0.0.1", 5000, index="i", tags=["t"], extra_fields={"svc": "x"})
    items = [call(i) for i in range(3)]
    lines = msgspec.json.Encoder().encode_lines([to_dict(it) for it in items])
    fast = exporter._encode_batch(EncodedBatch(items, lines))
    slow = exporter.encode([to_dict(it) for it in items])
    assert [json.loads(x) for x in fast.splitlines()] == [json.loads(x) for x in slow.splitlines()]
    assert fast.count(b"\n") == 3


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="port"):
        LogstashExporter("h", 0)
    with pytest.raises(ValueError, match="tags"):
        LogstashExporter("h", 1, tags="llm")
    with pytest.raises(ValueError, match="@version"):
        LogstashExporter("h", 1, extra_fields={"@version": "2"})


def test_from_env() -> None:
    assert LogstashExporter.from_env({}) is None
    assert LogstashExporter.from_env({"LOGSTASH_HOST": "h"}) is None
    made = LogstashExporter.from_env({"LOGSTASH_HOST": "ls", "LOGSTASH_PORT": "5044"}, index="x")
    assert made is not None
    assert (made.host, made.port, made.index, made.tls) == ("ls", 5044, "x", False)
    with pytest.raises(ValueError, match="LOGSTASH_PORT"):
        LogstashExporter.from_env({"LOGSTASH_HOST": "ls", "LOGSTASH_PORT": "abc"})


# -- connections and failures ---------------------------------------------------------------------


def test_a_dead_receiver_is_retryable() -> None:
    exporter = _exporter(_free_port())
    with pytest.raises(RetryableError, match="ConnectionRefusedError"):
        exporter.export([to_dict(call())])
    exporter.shutdown(1.0)


def test_a_receiver_restart_between_batches_is_detected_before_writing(receiver: Receiver) -> None:
    exporter = _exporter(receiver.port)
    exporter.export([to_dict(call(0))])
    assert wait_until(lambda: len(receiver.lines) == 1)
    port = receiver.port
    receiver.stop()
    time.sleep(0.05)
    second = Receiver(port)
    try:
        exporter.export([to_dict(call(1))])  # the idle connection was closed: reconnect, no error
        assert wait_until(lambda: len(second.lines) == 1)
        assert second.lines[0]["request_id"] == "r1"
    finally:
        exporter.shutdown(1.0)
        second.stop()


def _collector(exporter: LogstashExporter, **config: Any) -> Collector:
    return Collector(TelemetryConfig(flush_interval_ms=60_000, **config), exporters=[exporter])


def test_collector_restart_between_batches_loses_nothing(receiver: Receiver) -> None:
    port = receiver.port
    collector = _collector(_exporter(port))
    for i in range(3):
        collector.record(call(i))
    assert collector.flush(timeout=5.0)
    assert wait_until(lambda: len(receiver.lines) == 3)
    receiver.stop()
    for i in range(3, 6):
        collector.record(call(i))
    collector.flush(timeout=0.3)  # the receiver is down: the batch fails and waits for a retry
    second = Receiver(port)
    try:
        assert collector.shutdown(timeout=10.0)
        assert wait_until(lambda: len(second.lines) == 3)
        got = [line["request_id"] for line in receiver.lines + second.lines]
        assert got == [f"r{i}" for i in range(6)]
        stats = collector.stats()["exporters"]["logstash"]
        assert (stats["emitted"], stats["exported"], stats["dropped"]) == (6, 6, 0)
        assert stats["failed"] >= 1
        assert stats["retried"] >= 1
    finally:
        second.stop()


def test_collector_with_the_receiver_down_accounts_for_every_item() -> None:
    exporter = _exporter(_free_port(), timeout_s=0.5)
    collector = Collector(TelemetryConfig(flush_interval_ms=20, shutdown_timeout_s=1.0), exporters=[exporter])
    for i in range(5):
        collector.record(call(i))
    collector.shutdown(timeout=1.5)
    stats = collector.stats()["exporters"]["logstash"]
    assert stats["exported"] == 0
    assert stats["failed"] >= 1
    assert stats["emitted"] == stats["exported"] + stats["queued"] + stats["dropped"] == 5
    assert "ConnectionRefusedError" in stats["last_error"]


# -- TLS ------------------------------------------------------------------------------------------


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    return make_cert(tmp_path)


def test_tls_delivers_and_verifies_the_certificate(cert: tuple[Path, Path]) -> None:
    key, crt = cert
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(crt, key)
    receiver = Receiver(context=server_ctx)
    try:
        trusted = _exporter(receiver.port, ssl_context=ssl.create_default_context(cafile=str(crt)))
        assert trusted.tls
        trusted.export([to_dict(call(0))])
        trusted.export([to_dict(call(1))])  # the same TLS connection, checked idle first
        assert wait_until(lambda: len(receiver.lines) == 2)
        assert [line["request_id"] for line in receiver.lines] == ["r0", "r1"]
        trusted.shutdown(1.0)

        untrusted = _exporter(receiver.port, tls=True)  # default context: the self-signed cert fails
        with pytest.raises(RetryableError, match="SSL"):
            untrusted.export([to_dict(call(2))])
        untrusted.shutdown(1.0)
    finally:
        receiver.stop()
