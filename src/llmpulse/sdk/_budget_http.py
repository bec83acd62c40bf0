"""HTTP for shared budgets: kept-alive connections to the llmpulse server, pooled across threads.

Stdlib `http.client` (as the exporters' `KeepAliveClient`, which is POST-only, single-threaded and
lives in `llmpulse.exporters`, where the SDK may not import from), so the SDK's import stays light.

Errors: `Unreachable` (a `RetryableError`) for network errors, timeouts, 5xx answers and answers
that are not JSON objects.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

from llmpulse._version import __version__
from llmpulse.sdk._exporter import RetryableError

__all__ = ["Connections", "Unreachable"]

_USER_AGENT: Final = f"llmpulse-sdk/{__version__}"


class Unreachable(RetryableError):
    """The server could not be reached, timed out, or answered 5xx (retryable in the background)."""


class Connections:
    """Kept-alive HTTP/1.1 connections to one server (stdlib `http.client`), pooled across threads.

    Each request takes an idle connection or opens one, so concurrent threads never share a socket;
    a forked child drops its parent's connections. A reused connection the server had closed is
    replaced once.
    """

    def __init__(self, url: str, timeout_s: float, api_key: str | None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.hostname is None:
            raise ValueError(f"url must name a host, got {url!r}")
        self._cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout_s = timeout_s
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
        }
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []
        self._pid = os.getpid()

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the sockets are the parent's
                self._idle = []
                self._pid = os.getpid()
            if self._idle:
                return self._idle.pop(), True
        return self._cls(self._host, self._port, timeout=self._timeout_s), False

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if self._pid == os.getpid():
                self._idle.append(conn)
                return
        conn.close()

    def request(self, method: str, path: str, body: Mapping[str, Any] | None) -> tuple[int, dict[str, Any]]:
        """Send one request; (status, JSON object answered). Blocks up to about the timeout.

        Raises `Unreachable` for network errors, timeouts, 5xx and answers that are not JSON objects.
        """
        payload = None if body is None else json.dumps(body).encode()
        where = f"{method} {path}"
        for _ in range(2):
            conn, reused = self._take()
            try:
                conn.request(method, self._prefix + path, body=payload, headers=self._headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                conn.close()
                if reused:
                    continue  # an idle connection the server had closed: once more on a new one
                raise Unreachable(f"{where}: {type(exc).__name__}: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                kind = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
                raise Unreachable(f"{where}: {kind}") from exc
            if response.will_close:
                conn.close()
            else:
                self._give(conn)
            if response.status >= 500:
                raise Unreachable(f"{where}: HTTP {response.status}")
            try:
                answer = json.loads(data) if data else {}
            except ValueError:
                answer = None
            if not isinstance(answer, dict):
                raise Unreachable(f"{where}: HTTP {response.status}, not a JSON object")
            return response.status, answer
        raise Unreachable(f"{where}: the connection was closed twice")

    def close(self) -> None:
        """Close the idle connections. Does not block."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
