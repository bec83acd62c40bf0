"""One kept-alive HTTP/1.1 connection for the HTTP exporters (stdlib `http.client`, no dependency).

Network errors become `RetryableError`, so the pipeline's one retry helper decides what happens next.
A connection the receiver closed while idle is reopened once; a forked child never reuses its
parent's socket.
"""

from __future__ import annotations

import http.client
import os
import urllib.parse
from collections.abc import Callable
from typing import Final

from llmpulse._version import __version__
from llmpulse.sdk._exporter import ExportError, RetryableError
from llmpulse.sdk._retry import parse_retry_after


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


#: The User-Agent every HTTP exporter sends.
USER_AGENT: Final = f"llmpulse-sdk/{__version__}"
#: Characters of a refusing receiver's body quoted in the error message.
SNIPPET_CHARS: Final = 200


def is_retryable_status(status: int) -> bool:
    """408, 429 and 5xx answers are worth retrying; any other non-2xx is permanent."""
    return status in (408, 429) or 500 <= status <= 599


def raise_for_status(
    status: int,
    data: bytes,
    retry_after: str | None,
    where: str,
    *,
    retryable: Callable[[int], bool] = is_retryable_status,
    printable_only: bool = False,
) -> None:
    """Return on 2xx; else raise `RetryableError` (with Retry-After) or `ExportError` quoting the body.

    `printable_only` leaves a binary body (a protobuf status, say) out of the message.
    """
    if 200 <= status <= 299:
        return
    text = data[:SNIPPET_CHARS].decode("utf-8", "replace").strip()
    if printable_only and text and not text.isprintable():
        text = ""
    message = f"{where}: HTTP {status}" + (f" {text}" if text else "")
    if retryable(status):
        raise RetryableError(message, retry_after_s=parse_retry_after(retry_after))
    raise ExportError(message)


def parse_http_url(url: object, arg: str, example: str) -> tuple[urllib.parse.SplitResult, str, int | None]:
    """Split an http(s) URL given as argument `arg` into (parts, host, port); `ValueError` naming `arg`."""
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{arg} must be an http(s) URL such as {example}, got {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{arg} has an invalid port: {exc}") from exc
    return parts, parts.hostname, port


def check_timeout(timeout_s: object) -> float:
    """`timeout_s` as a float; `ValueError` unless it is a positive number."""
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s > 0:
        raise ValueError(f"timeout_s must be a positive number, got {timeout_s!r}")
    return float(timeout_s)
