"""`WebhookExporter`: batches of telemetry items POSTed as JSON to any HTTP(S) endpoint.

Stdlib `http.client` only, one keep-alive connection reused across batches (reopened after any error,
after the receiver closes it, and in a forked child). The body is the batch's items as the pipeline
encoded them (LLM calls as the call event JSON: token-copilot fields plus llmpulse's), either one JSON
array (``format="json"``) or one JSON object per line (``format="ndjson"``), optionally gzipped.

| answer | meaning for the batch |
|---|---|
| 2xx | every item exported |
| 408, 429, 5xx, connection errors, timeouts | `RetryableError`, honouring `Retry-After` |
| anything else (3xx, other 4xx, 1xx) | permanent: `ExportError` naming the status and the body's start |

Error messages name only the URL's origin (``scheme://host:port``): webhook URLs often carry a secret
in their path or query.

Errors: `RetryableError` and `ExportError` from `llmpulse.sdk._exporter` (raised by `export` to the
pipeline, never into the application); `ValueError` naming the argument for a bad configuration.
"""

from __future__ import annotations

import gzip as gzip_module
import os
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import msgspec

from llmpulse.exporters._http import (
    USER_AGENT,
    KeepAliveClient,
    check_timeout,
    parse_http_url,
    raise_for_status,
)
from llmpulse.exporters._pulse import GZIP_LEVEL
from llmpulse.sdk._exporter import EncodedBatch, ExportResult

__all__ = ["ENV_AUTH_TOKEN", "ENV_URL", "WebhookExporter"]

#: The environment variable holding the webhook's URL (`WebhookExporter.from_env`).
ENV_URL: Final = "WEBHOOK_URL"
#: The environment variable holding the bearer token sent as ``Authorization: Bearer <token>``.
ENV_AUTH_TOKEN: Final = "WEBHOOK_AUTH_TOKEN"

WebhookFormat = Literal["json", "ndjson"]

_CONTENT_TYPES: Final[Mapping[str, str]] = {"json": "application/json", "ndjson": "application/x-ndjson"}
#: Headers the exporter owns: a custom value would corrupt the framing of the request.
_RESERVED_HEADERS: Final = frozenset({"content-length", "content-encoding", "transfer-encoding", "host"})

_encoder = msgspec.json.Encoder()


def _check_header(name: str, value: str) -> None:
    """Refuse header names and values http.client would refuse later (then on every batch)."""
    if not isinstance(name, str) or not isinstance(value, str):
        raise ValueError(f"headers must map str to str, got {name!r}: {value!r}")
    if not name or any(c in name for c in " \t\r\n:"):
        raise ValueError(f"headers: invalid header name {name!r}")
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"headers: the value of {name!r} holds a line break")
    if name.lower() in _RESERVED_HEADERS:
        raise ValueError(f"headers: {name!r} is set by the exporter itself")


class WebhookExporter:
    """POSTs each batch to `url` as a JSON array (``format="json"``) or NDJSON (``"ndjson"``).

    `auth_token` is sent as ``Authorization: Bearer <auth_token>`` (it wins over an ``Authorization``
    in `headers`); `headers` are added to every request; `gzip` compresses every body
    (``Content-Encoding: gzip``); `timeout_s` bounds connecting and each socket read; `name` is the
    exporter's key in ``collector.stats()["exporters"]`` (default ``"webhook"``). `https` URLs use
    `http.client.HTTPSConnection` with the default certificate checks. `export` blocks on the network;
    calls are serialised by the pipeline. Raises `ValueError` naming the argument when one is invalid.
    """

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        auth_token: str | None = None,
        format: WebhookFormat = "json",
        gzip: bool = False,
        timeout_s: float = 10.0,
        name: str | None = None,
    ) -> None:
        parts, host, port = parse_http_url(url, "url", "https://example.com/hook")
        if parts.username is not None or parts.password is not None:
            raise ValueError("url must not hold credentials; pass auth_token or an Authorization header")
        if format not in _CONTENT_TYPES:
            raise ValueError(f"format must be 'json' or 'ndjson', got {format!r}")
        check_timeout(timeout_s)
        if auth_token is not None and (not isinstance(auth_token, str) or not auth_token):
            raise ValueError("auth_token must be a non-empty string or None")
        self.url: Final = url
        self.name: str = name or "webhook"
        self.format: Final[WebhookFormat] = format
        self.gzip: Final = bool(gzip)
        self.timeout_s: Final = float(timeout_s)
        self._scheme = parts.scheme
        self._host = host
        self._port = port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = host if port is None else f"{host}:{port}"
        self._where = f"POST {parts.scheme}://{netloc}"
        merged = {
            "Content-Type": _CONTENT_TYPES[format],
            "Accept": "application/json, */*;q=0.5",
            "User-Agent": USER_AGENT,
        }
        for key, value in (headers or {}).items():
            _check_header(key, value)
            merged[key] = value
        if auth_token is not None:
            _check_header("Authorization", auth_token)
            for key in [k for k in merged if k.lower() == "authorization"]:
                del merged[key]
            merged["Authorization"] = f"Bearer {auth_token}"
        if self.gzip:
            merged["Content-Encoding"] = "gzip"
        self._headers: Final = merged
        self._client = KeepAliveClient(parts.scheme, host, port, self.timeout_s, self._where)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> WebhookExporter | None:
        """A `WebhookExporter` for ``WEBHOOK_URL`` (and ``WEBHOOK_AUTH_TOKEN``), or None when unset.

        `environ` defaults to `os.environ`; keyword `overrides` are passed to the constructor (they win
        over the environment). Raises `ValueError` naming the variable for a bad URL. Does not block.
        """
        env = os.environ if environ is None else environ
        url = env.get(ENV_URL, "").strip()
        if not url:
            return None
        kwargs: dict[str, Any] = {"url": url}
        token = env.get(ENV_AUTH_TOKEN, "").strip()
        if token:
            kwargs["auth_token"] = token
        kwargs.update(overrides)
        try:
            return cls(**kwargs)
        except ValueError as exc:
            raise ValueError(f"{ENV_URL} / {ENV_AUTH_TOKEN}: {exc}") from exc

    # -- the exporter protocol -----------------------------------------------------------------

    def export(self, items: Sequence[dict[str, Any]]) -> ExportResult | None:
        """POST the batch's items; blocks on the network.

        Returns None when the receiver answered 2xx; raises `RetryableError` (408/429/5xx, connection
        errors, timeouts) or `ExportError` (any other answer).
        """
        if not items:
            return None
        list_items = list(items)
        body = _encoder.encode(list_items) if self.format == "json" else _encoder.encode_lines(list_items)
        self._send(body)
        return None

    def export_encoded(self, batch: EncodedBatch) -> ExportResult | None:
        """`export` for a batch the pipeline encoded once: its lines are sent as they are (NDJSON) or
        joined into the JSON array, without re-encoding. Blocks on the network; raises as `export`."""
        if not batch.items:
            return None
        self._send(batch.json_array() if self.format == "json" else batch.lines)
        return None

    def force_flush(self, timeout: float) -> bool:
        """Nothing is buffered here (each batch is sent by `export`); True."""
        return True

    def shutdown(self, timeout: float) -> None:
        """Close the kept-alive connection; does not block."""
        self._client.close()

    def __repr__(self) -> str:
        return f"<WebhookExporter {self.name!r} {self._where[5:]} format={self.format}>"

    # -- HTTP ----------------------------------------------------------------------------------

    def _send(self, body: bytes) -> None:
        """POST `body` and map the answer: return on 2xx, raise otherwise."""
        if self.gzip:
            body = gzip_module.compress(body, compresslevel=GZIP_LEVEL)
        status, data, retry_after = self._client.post(self._target, body, self._headers)
        raise_for_status(status, data, retry_after, self._where)
