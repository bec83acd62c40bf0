"""A TCP and a UDP sink for the exporter benchmark, run in its own process so its CPU is not counted.

`python -m bench._stream_sink` listens on two loopback ports, prints ``TCP_PORT UDP_PORT`` on one
stdout line, reads and discards everything sent to them (counting bytes, newlines and datagrams),
and when its stdin reaches end of file prints those counts as one JSON line and exits.
`StreamSink` runs it from the benchmark (a context manager).
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _serve() -> None:
    tcp = socket.create_server(("127.0.0.1", 0), backlog=64)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    udp.bind(("127.0.0.1", 0))
    counts = {"tcp_bytes": 0, "tcp_lines": 0, "udp_datagrams": 0, "udp_bytes": 0}
    stop = threading.Event()

    def loop() -> None:
        sel = selectors.DefaultSelector()
        tcp.setblocking(False)
        udp.setblocking(False)
        sel.register(tcp, selectors.EVENT_READ, "accept")
        sel.register(udp, selectors.EVENT_READ, "udp")
        while not stop.is_set():
            for key, _ in sel.select(0.1):
                sock: Any = key.fileobj
                if key.data == "accept":
                    conn, _ = sock.accept()
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ, "conn")
                elif key.data == "udp":
                    while True:
                        try:
                            data = sock.recv(65536)
                        except BlockingIOError:
                            break
                        counts["udp_datagrams"] += 1
                        counts["udp_bytes"] += len(data)
                else:
                    try:
                        data = sock.recv(1 << 20)
                    except (BlockingIOError, ConnectionError):
                        data = b"?"
                    if not data:
                        sel.unregister(sock)
                        sock.close()
                    elif data != b"?":
                        counts["tcp_bytes"] += len(data)
                        counts["tcp_lines"] += data.count(b"\n")

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    print(f"{tcp.getsockname()[1]} {udp.getsockname()[1]}", flush=True)
    sys.stdin.read()
    stop.set()
    thread.join(2.0)
    print(json.dumps(counts), flush=True)


class StreamSink:
    """The sink above in a child process; `tcp_port` and `udp_port` once entered; `counts` after exit."""

    def __init__(self, cpu: int | None = None) -> None:
        self.tcp_port = 0
        self.udp_port = 0
        self.counts: dict[str, int] = {}
        self._cpu = cpu
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> StreamSink:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench._stream_sink"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._proc = proc
        if self._cpu is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(proc.pid, {self._cpu})
        assert proc.stdout is not None
        tcp_port, udp_port = proc.stdout.readline().split()
        self.tcp_port, self.udp_port = int(tcp_port), int(udp_port)
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
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.close()
        line = proc.stdout.readline()
        self.counts = json.loads(line) if line.strip() else {}
        proc.wait(10)
        proc.stdout.close()


if __name__ == "__main__":
    _serve()
