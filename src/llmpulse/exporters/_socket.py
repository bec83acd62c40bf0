"""Sockets for exporters that write raw bytes: one persistent TCP/TLS stream, or UDP datagrams.

`StreamConnection` is the connection handling of the Logstash and syslog exporters:
opened lazily on the first write, kept between batches, checked before each write by a
non-blocking peek that detects a receiver which closed the idle connection (a restart) so the write
goes to a new connection instead of into a dead one, and never shared with a forked child (the child
opens its own). `DatagramSocket` is a connected UDP socket with the same fork rule; being connected,
it receives the ICMP "port unreachable" a receiver's host answers, so a refused datagram raises on
the next send instead of vanishing silently.

Both bound every blocking step (connecting, the TLS handshake, each write) by `timeout_s`; host name
resolution is bounded only by the system resolver's own timeout. Neither retries: any socket error
closes the socket and raises `RetryableError` (labelled with the exporter's name and address), so the
pipeline's single retry helper retries the whole batch.

Errors: `RetryableError` from `llmpulse.sdk._exporter`.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
from collections.abc import Iterable

from llmpulse.sdk._exporter import RetryableError

__all__ = ["DatagramSocket", "StreamConnection"]


class StreamConnection:
    """A persistent TCP connection to `host`:`port`, wrapped in TLS when `tls` is set.

    `ssl_context` defaults to `ssl.create_default_context()` (certificate and host name checked),
    made once on the first TLS connection. `label` prefixes error messages (``"syslog
    tcp://host:514"``). Constructing it does not block or connect. Not thread-safe: an exporter's
    pipeline serialises its calls.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout_s: float,
        label: str,
        tls: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.label = label
        self.tls = tls or ssl_context is not None
        self._ssl_context = ssl_context
        self._sock: socket.socket | None = None
        self._pid = os.getpid()

    def sendall(self, data: bytes) -> None:
        """Write `data`, connecting first when needed; blocks up to `timeout_s` per step.

        Raises `RetryableError` (after closing the connection) on any socket or TLS error.
        """
        try:
            self._socket().sendall(data)
        except (OSError, ValueError) as exc:
            self.close()
            raise RetryableError(f"{self.label}: {type(exc).__name__}: {exc}") from exc

    def close(self, timeout: float = 0.0) -> None:
        """Close the connection; with `timeout` > 0 a TLS connection first says goodbye (close_notify)
        and waits that long at most for the receiver's answer. Blocks at most `timeout` seconds."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if timeout > 0 and isinstance(sock, ssl.SSLSocket) and self._pid == os.getpid():
            with contextlib.suppress(OSError, ValueError):
                sock.settimeout(min(timeout, self.timeout_s))
                sock = sock.unwrap()
        with contextlib.suppress(OSError):
            sock.close()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self.tls:
                if self._ssl_context is None:
                    self._ssl_context = ssl.create_default_context()
                sock = self._ssl_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        return sock

    def _closed_by_peer(self, sock: socket.socket) -> bool:
        """True when the receiver closed or reset the idle connection (checked without blocking)."""
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            sock.setblocking(False)
            try:
                # SSL sockets cannot peek: read one byte there (stream receivers never send any)
                tls = isinstance(sock, ssl.SSLSocket)
                data = sock.recv(1) if tls else sock.recv(1, socket.MSG_PEEK)
            finally:
                sock.settimeout(self.timeout_s)
            return data == b""
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except (OSError, ValueError):
            return True

    def _socket(self) -> socket.socket:
        if self._pid != os.getpid():  # forked: the connection belongs to the parent
            self.close()  # closes only this process's descriptor; the parent's connection lives on
            self._pid = os.getpid()
        sock = self._sock
        if sock is not None:
            if not self._closed_by_peer(sock):
                return sock
            self.close()
        sock = self._connect()
        self._sock = sock
        return sock


class DatagramSocket:
    """A UDP socket connected to `host`:`port` (resolved when it is opened), one datagram per send.

    Opened lazily (constructing it does not block), reopened (and the name resolved again) after an
    error or in a forked child. `label` prefixes error messages. Not thread-safe: an exporter's
    pipeline serialises its calls.
    """

    def __init__(self, host: str, port: int, *, timeout_s: float, label: str) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.label = label
        self._sock: socket.socket | None = None
        self._pid = os.getpid()

    def send_each(self, datagrams: Iterable[bytes]) -> None:
        """Send each datagram in turn; blocks at most `timeout_s` per datagram (a full send buffer).

        Raises `RetryableError` (after closing the socket) on any error, including the refusal
        (``ConnectionRefusedError``) an earlier datagram's ICMP "port unreachable" left pending.
        """
        try:
            sock = self._socket()
            for datagram in datagrams:
                sock.send(datagram)
        except OSError as exc:
            self.close()
            raise RetryableError(f"{self.label}: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        """Close the socket; does not block."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _socket(self) -> socket.socket:
        if self._pid != os.getpid():
            self.close()
            self._pid = os.getpid()
        if self._sock is None:
            family, kind, proto, _, address = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_DGRAM
            )[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self.timeout_s)
                sock.connect(address)
            except BaseException:
                sock.close()
                raise
            self._sock = sock
        return self._sock
