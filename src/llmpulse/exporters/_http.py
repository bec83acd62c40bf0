"""One kept-alive HTTP/1.1 connection for the HTTP exporters (stdlib `http.client`, no dependency).

Network errors become `RetryableError`, so the pipeline's one retry helper decides what happens next.
A connection the receiver closed while idle is reopened once; a forked child never reuses its
parent's socket.
"""

from __future__ import annotations

import http.client
import os

from llmpulse.sdk._exporter import RetryableError


class KeepAliveClient:
    """POSTs over one reused connection to `host:port`. Not thread-safe: the pipeline serialises calls.

    `where` names the receiver in error messages (give it no secrets: no path or query).
    """

    def __init__(self, scheme: str, host: str, port: int | None, timeout_s: float, where: str) -> None:
        self._cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        self._host = host
        self._port = port
        self._timeout_s = timeout_s
        self._where = where
        self._conn: http.client.HTTPConnection | None = None
        self._pid = os.getpid()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is not None and self._pid != os.getpid():
            self._conn.close()  # the child's copy of the parent's socket; the parent keeps its own
            self._conn = None
        if self._conn is None:
            self._pid = os.getpid()
            self._conn = self._cls(self._host, self._port, timeout=self._timeout_s)
        return self._conn

    def close(self) -> None:
        """Close the connection (the next POST opens a new one). Does not block."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def post(self, target: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str | None]:
        """POST `body` to `target`; returns (status, body, Retry-After). Blocks on the network.

        Raises `RetryableError` for connection errors and timeouts.
        """
        for fresh in (self._conn is None, True):
            conn = self._connection()
            try:
                conn.request("POST", target, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self.close()
                if fresh:
                    raise RetryableError(f"{self._where}: {type(exc).__name__}: {exc}") from exc
                continue  # a reused connection the receiver had closed: try once on a new one
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                kind = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
                raise RetryableError(f"{self._where}: {kind}") from exc
            if response.will_close:
                self.close()
            return response.status, data, response.getheader("Retry-After")
        raise AssertionError("unreachable")  # pragma: no cover
