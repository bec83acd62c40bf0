"""`HeliconeExporter`: LLM calls logged to Helicone's async logging API, and `helicone_headers`.

Async logging (no proxy in the application's path): each LLM call item (``type == "llm.call"``) is
POSTed on its own to Helicone's logging worker as a ``HeliconeAsyncLogRequest``::

    {"providerRequest":  {"url": ..., "json": {"model": ..., "messages"?: ...}, "meta": {Helicone-* headers}},
     "providerResponse": {"json": {"model": ..., "usage": {...}}, "status": 200, "headers": {}},
     "timing": {"startTime": {"seconds": s, "milliseconds": ms}, "endTime": {...}, "timeToFirstToken"?: ms}}

Reference followed: Helicone's "cURL Manual Logger" / "Custom Logs with cURL" pages
(https://docs.helicone.ai/getting-started/integration-method/manual-logger-curl) for the body and
``Authorization: Bearer <key>``, and the header directory (https://docs.helicone.ai/helicone-headers)
for the ``Helicone-*`` names. OpenAI calls go to ``/oai/v1/log``, Anthropic calls to
``/anthropic/v1/log`` (the routes Helicone's own async loggers use, so usage is read in that
provider's shape), anything else to ``/custom/v1/log`` with the documented ``custom-model-nopath`` url.

Usage is written in the provider's own convention, converted from llmpulse's (where `input_tokens`
is the whole prompt, cache reads and writes included):

- OpenAI: ``prompt_tokens`` (inclusive), ``completion_tokens``, ``total_tokens``,
  ``prompt_tokens_details.cached_tokens``, ``completion_tokens_details.reasoning_tokens``;
- Anthropic: ``input_tokens`` (exclusive: the prompt minus cache reads and writes),
  ``output_tokens``, ``cache_read_input_tokens``, ``cache_creation_input_tokens``.

| answer | meaning |
|---|---|
| 2xx | the call is logged |
| 408, 429, 5xx, connection errors, timeouts | `RetryableError` (honouring `Retry-After`) |
| anything else | that call is dropped, reason ``"permanent_error"``; the batch's other calls go on |

A batch retried after a transient failure does not resend the calls already logged from it (they are
remembered by body digest until the batch completes). Items of other kinds (spans, ...) are skipped:
Helicone logs model calls only; they count as exported, not as errors.

`helicone_headers` builds the proxy-mode headers (``Helicone-Auth``, user, session, properties) to
pass as ``default_headers``/``extra_headers`` to a provider client pointed at Helicone's gateway.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from llmpulse.exporters._http import (
    USER_AGENT,
    KeepAliveClient,
    check_timeout,
    parse_http_url,
    raise_for_status,
)
from llmpulse.sdk._exporter import ExportError, ExportResult, RetryableError

__all__ = [
    "DEFAULT_BASE_URL",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "HeliconeExporter",
    "build_log_request",
    "helicone_headers",
]

#: Helicone's async logging host (the documented ``https://api.worker.helicone.ai/custom/v1/log``).
DEFAULT_BASE_URL: Final = "https://api.worker.helicone.ai"
#: The environment variable holding the Helicone API key (`HeliconeExporter.from_env`).
ENV_API_KEY: Final = "HELICONE_API_KEY"
#: The environment variable overriding the logging host (self-hosted Helicone, EU/US hosts).
ENV_BASE_URL: Final = "HELICONE_BASE_URL"

CALL_TYPE: Final = "llm.call"
_PATHS: Final[Mapping[str, str]] = {
    "openai": "/oai/v1/log",
    "azure": "/oai/v1/log",
    "azure-openai": "/oai/v1/log",
    "anthropic": "/anthropic/v1/log",
}
_PROVIDER_URLS: Final[Mapping[str, str]] = {
    "openai": "https://api.openai.com/v1/chat/completions",
    "azure": "https://api.openai.com/v1/chat/completions",
    "azure-openai": "https://api.openai.com/v1/chat/completions",
    "anthropic": "https://api.anthropic.com/v1/messages",
}
_CUSTOM_PATH: Final = "/custom/v1/log"
_CUSTOM_URL: Final = "custom-model-nopath"
#: The call fields sent as ``Helicone-Property-*`` (header-safe name, item field).
_PROPERTY_FIELDS: Final = (
    ("Tenant-Id", "tenant_id"),
    ("Route", "route"),
    ("Feature", "feature"),
    ("Environment", "environment"),
)
#: How many delivered-call digests are remembered while a batch is being retried.
_MAX_REMEMBERED: Final = 100_000
_UNSAFE_NAME_CHARS: Final = re.compile(r"[^A-Za-z0-9!#$%&'*+.^_`|~-]+")

_encoder = msgspec.json.Encoder()


# -- proxy headers -------------------------------------------------------------------------------


def _check_value(header: str, value: object) -> str:
    """`value` as a header value, or `ValueError` naming `header` (non-string, CR, LF or NUL)."""
    if not isinstance(value, str):
        raise ValueError(f"{header}: the value must be a string, got {value!r}")
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{header}: the value holds a line break or NUL")
    return value


def _property_name(name: object) -> str:
    """A property name made header-safe: runs of characters outside the RFC 9110 token set become '-'."""
    if not isinstance(name, str):
        raise ValueError(f"properties: names must be strings, got {name!r}")
    safe = _UNSAFE_NAME_CHARS.sub("-", name.strip()).strip("-")
    if not safe:
        raise ValueError(f"properties: {name!r} holds no header-safe character")
    return safe


def helicone_headers(
    api_key: str | None = None,
    user_id: str | None = None,
    session_id: str | None = None,
    session_path: str | None = None,
    session_name: str | None = None,
    properties: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Helicone proxy-mode headers for the given values (those left None are omitted).

    ``Helicone-Auth: Bearer <api_key>``, ``Helicone-User-Id``, ``Helicone-Session-Id``,
    ``Helicone-Session-Path``, ``Helicone-Session-Name`` and one ``Helicone-Property-<Name>`` per
    property; property names are made header-safe (characters outside the HTTP token set become
    ``-``). Raises `ValueError` naming the header for a value that is not a string or holds CR, LF
    or NUL. Pure; does not block.
    """
    headers: dict[str, str] = {}
    if api_key is not None:
        if not _check_value("Helicone-Auth", api_key):
            raise ValueError("Helicone-Auth: api_key must not be empty")
        headers["Helicone-Auth"] = f"Bearer {api_key}"
    for header, value in (
        ("Helicone-User-Id", user_id),
        ("Helicone-Session-Id", session_id),
        ("Helicone-Session-Path", session_path),
        ("Helicone-Session-Name", session_name),
    ):
        if value is not None:
            headers[header] = _check_value(header, value)
    for name, value in (properties or {}).items():
        header = f"Helicone-Property-{_property_name(name)}"
        headers[header] = _check_value(header, value)
    return headers


# -- the async log body --------------------------------------------------------------------------


def _int(item: Mapping[str, Any], key: str) -> int:
    value = item.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _start_time(item: Mapping[str, Any]) -> datetime:
    raw = item.get("timestamp")
    if isinstance(raw, datetime):
        when = raw
    elif isinstance(raw, str):
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            when = datetime.now(UTC)
    else:
        when = datetime.now(UTC)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _unix(when: datetime) -> dict[str, int]:
    """Helicone's ``{seconds, milliseconds}`` form of an instant (milliseconds 0-999)."""
    total_ms = int((when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1))
    seconds, millis = divmod(total_ms, 1000)
    return {"seconds": seconds, "milliseconds": millis}


def _error_status(item: Mapping[str, Any]) -> int:
    """The HTTP status a failed call answered (from its error object), 500 when unknown; 200 when ok."""
    error = item.get("error")
    if error is None and item.get("status") in (None, "ok"):
        return 200
    if isinstance(error, Mapping):
        for key in ("status", "status_code", "http_status", "code"):
            value = error.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
                return value
    return 499 if item.get("status") == "cancelled" else 500


def _usage(item: Mapping[str, Any], provider: str) -> dict[str, Any]:
    """Usage in `provider`'s own shape, from llmpulse's inclusive counts."""
    input_tokens = _int(item, "input_tokens")
    output_tokens = _int(item, "output_tokens")
    cached = _int(item, "cached_input_tokens")
    cache_write = _int(item, "cache_write_tokens")
    reasoning = _int(item, "reasoning_tokens")
    if provider == "anthropic":
        return {
            "input_tokens": max(input_tokens - cached - cache_write, 0),
            "output_tokens": output_tokens,
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": cache_write,
        }
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def _meta(item: Mapping[str, Any]) -> dict[str, str]:
    """The Helicone headers describing the call (user, session, properties), values header-safe."""
    meta: dict[str, str] = {}
    for header, key in (("Helicone-User-Id", "user_id"), ("Helicone-Session-Id", "session_id")):
        value = item.get(key)
        if isinstance(value, str) and value:
            meta[header] = value
    for name, key in _PROPERTY_FIELDS:
        value = item.get(key)
        if isinstance(value, str) and value:
            meta[f"Helicone-Property-{name}"] = value
    request_id = item.get("request_id")
    if isinstance(request_id, str) and request_id:
        meta["Helicone-Property-Request-Id"] = request_id
    # values come from the application: strip what would break a header downstream
    return {k: v.replace("\r", " ").replace("\n", " ").replace("\0", "") for k, v in meta.items()}


def build_log_request(item: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(path, body) of Helicone's async log request for one LLM call item (its dict form). Pure.

    The request carries the model and, only when the item holds ``metadata.input`` (the SDK strips
    it when inputs are not recorded), the messages; the response the response model, usage in the
    provider's shape, the call's status (200, or its error status) and, for failed calls, the error.
    """
    provider = str(item.get("provider") or "").lower()
    model = str(item.get("model") or "")
    response_model = item.get("response_model") or model
    request_json: dict[str, Any] = {"model": model}
    metadata = item.get("metadata")
    if isinstance(metadata, Mapping) and "input" in metadata:
        messages = metadata["input"]
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        request_json["messages"] = messages
    if provider == "anthropic":
        response_json: dict[str, Any] = {"type": "message", "role": "assistant", "model": response_model}
        if item.get("finish_reason") is not None:
            response_json["stop_reason"] = item["finish_reason"]
    else:
        response_json = {"object": "chat.completion", "model": response_model}
        if item.get("finish_reason") is not None:
            response_json["choices"] = [{"index": 0, "finish_reason": item["finish_reason"]}]
    if isinstance(item.get("request_id"), str):
        response_json["id"] = item["request_id"]
    response_json["usage"] = _usage(item, provider)
    status = _error_status(item)
    if status != 200:
        error = item.get("error")
        response_json["error"] = error if isinstance(error, Mapping) else {"message": str(error)}
    start = _start_time(item)
    latency = item.get("latency_ms")
    latency_ms = float(latency) if isinstance(latency, int | float) and latency >= 0 else 0.0
    timing: dict[str, Any] = {
        "startTime": _unix(start),
        "endTime": _unix(start + timedelta(milliseconds=latency_ms)),
    }
    ttft = item.get("ttft_ms")
    if isinstance(ttft, int | float) and not isinstance(ttft, bool) and ttft >= 0:
        timing["timeToFirstToken"] = round(float(ttft))
    body = {
        "providerRequest": {
            "url": _PROVIDER_URLS.get(provider, _CUSTOM_URL),
            "json": request_json,
            "meta": _meta(item),
        },
        "providerResponse": {"json": response_json, "status": status, "headers": {}},
        "timing": timing,
    }
    return _PATHS.get(provider, _CUSTOM_PATH), body


# -- the exporter --------------------------------------------------------------------------------


class HeliconeExporter:
    """Logs each LLM call to Helicone's async logging API (one POST per call, kept-alive connection).

    `api_key` is sent as ``Authorization: Bearer <api_key>``; `base_url` is the logging host
    (default `DEFAULT_BASE_URL`; a path prefix is kept); `timeout_s` bounds connecting and each
    socket read; `name` is the exporter's key in ``collector.stats()["exporters"]``. `export` blocks
    on the network and is serialised by the pipeline. Raises `ValueError` naming the argument when
    one is invalid.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        timeout_s: float = 10.0,
        name: str = "helicone",
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError("api_key must be a non-empty string")
        _check_value("api_key", api_key)
        url = base_url or DEFAULT_BASE_URL
        parts, host, port = parse_http_url(url, "base_url", DEFAULT_BASE_URL)
        if parts.username is not None or parts.password is not None or parts.query:
            raise ValueError("base_url must hold no credentials and no query")
        check_timeout(timeout_s)
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string")
        self.name: str = name
        self.base_url: Final = url
        self.timeout_s: Final = float(timeout_s)
        self._prefix = parts.path.rstrip("/")
        netloc = host if port is None else f"{host}:{port}"
        self._where = f"POST {parts.scheme}://{netloc}"
        self._headers: Final = {
            "Content-Type": "application/json",
            "Accept": "application/json, */*;q=0.5",
            "User-Agent": USER_AGENT,
            "Authorization": f"Bearer {api_key}",
        }
        self._client = KeepAliveClient(parts.scheme, host, port, self.timeout_s, self._where)
        #: digests of calls logged from a batch that then failed transiently (skipped on its retry)
        self._delivered: set[bytes] = set()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> HeliconeExporter | None:
        """A `HeliconeExporter` for ``HELICONE_API_KEY`` (and ``HELICONE_BASE_URL``), None without a key.

        `environ` defaults to `os.environ`; keyword `overrides` win over the environment. Raises
        `ValueError` naming the variables for a bad value. Does not block.
        """
        env = os.environ if environ is None else environ
        key = env.get(ENV_API_KEY, "").strip()
        if not key:
            return None
        kwargs: dict[str, Any] = {"api_key": key}
        base_url = env.get(ENV_BASE_URL, "").strip()
        if base_url:
            kwargs["base_url"] = base_url
        kwargs.update(overrides)
        try:
            return cls(**kwargs)
        except ValueError as exc:
            raise ValueError(f"{ENV_API_KEY} / {ENV_BASE_URL}: {exc}") from exc

    # -- the exporter protocol -----------------------------------------------------------------

    def export(self, items: Sequence[dict[str, Any]]) -> ExportResult | None:
        """Log the batch's LLM calls, one POST each; blocks on the network.

        Returns None when every call was logged (other kinds are skipped), an `ExportResult` counting
        the calls refused permanently; raises `RetryableError` on a transient failure (the calls
        already logged from this batch are not resent on its retry).
        """
        dropped = 0
        errors: list[str] = []
        for item in items:
            if item.get("type") != CALL_TYPE:
                continue
            path, body = build_log_request(item)
            data = _encoder.encode(body)
            digest = hashlib.blake2b(path.encode() + b"\0" + data, digest_size=16).digest()
            if digest in self._delivered:
                continue
            try:
                self._send(self._prefix + path, data)
            except RetryableError:
                raise
            except ExportError as exc:
                dropped += 1
                if len(errors) < 3:
                    errors.append(str(exc))
                continue
            if len(self._delivered) < _MAX_REMEMBERED:
                self._delivered.add(digest)
        self._delivered.clear()  # the batch is done: nothing of it will be retried
        if dropped:
            return ExportResult({"permanent_error": dropped}, tuple(errors))
        return None

    def force_flush(self, timeout: float) -> bool:
        """Nothing is buffered here (each call is sent by `export`); True."""
        return True

    def shutdown(self, timeout: float) -> None:
        """Close the kept-alive connection; does not block."""
        self._client.close()

    def __repr__(self) -> str:
        return f"<HeliconeExporter {self.name!r} {self._where[5:]}>"

    def _send(self, target: str, body: bytes) -> None:
        """POST `body` and map the answer: return on 2xx, raise otherwise."""
        status, data, retry_after = self._client.post(target, body, self._headers)
        raise_for_status(status, data, retry_after, self._where)
