"""`LangfuseExporter`: LLM calls and SDK spans sent to Langfuse's batch ingestion API.

Transport chosen: the public **batch ingestion API**, ``POST {host}/api/public/ingestion`` (Langfuse
also offers an OTLP endpoint; llmpulse's OTLP exporter covers that route). One POST per batch, body::

    {"batch": [{"id": <event id>, "timestamp": <ISO 8601>, "type": "trace-create", "body": {...}},
               {"id": ..., "type": "generation-create", "body": {...}},
               {"id": ..., "type": "span-create", "body": {...}}, ...],
     "metadata": {"sdk_name": "llmpulse", "sdk_version": ...}}

Reference followed: Langfuse's public API reference (OpenAPI spec at
https://cloud.langfuse.com/generated/api/openapi.yml, "Ingestion" → ``ingestion_batch``): Basic auth
with the public key as user name and the secret key as password; the event envelope ``id`` is used by
Langfuse to deduplicate events, ``body.id`` is the trace's / observation's id (a later event with the
same body id updates it); the answer is ``207`` with ``{"successes": [{id, status}], "errors": [{id,
status, message, error}]}`` per event id, input errors included (not a 4xx); batches are limited to
3.5 MB.

Mapping (see docs/exporters/langfuse.md for every field):

- an LLM call item (``type == "llm.call"``) → a ``trace-create`` (id = the item's ``trace_id``, else
  its ``request_id``; ``userId``, ``sessionId``, ``tags`` and ``metadata`` with tenant, route, feature,
  environment) and a ``generation-create`` (model, start/end from ``timestamp`` + ``latency_ms``,
  ``completionStartTime`` from ``ttft_ms``, ``usageDetails``, ``costDetails.total`` from ``cost``,
  ``level``/``statusMessage`` on error, ``parentObservationId`` from ``parent_span_id``);
- an SDK span item (``type == "span"``) → a ``span-create`` in its trace (``parentObservationId``
  from ``parent_span_id``), plus a ``trace-create`` named after it when it is a root span;
- other kinds are skipped (they count as exported).

Event ids are derived from the event's content, so a batch retried after a transient failure carries
the same ids and Langfuse ingests it once.

| answer | meaning |
|---|---|
| 2xx (207 included) | delivered; items with an event under ``errors``: ``"rejected_by_server"`` |
| 408, 429, 5xx, connection errors, timeouts | `RetryableError` (honouring ``Retry-After``) |
| anything else (400, 401, 403, ...) | the batch is dropped, reason ``"permanent_error"`` |
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from llmpulse._version import __version__
from llmpulse.exporters._http import (
    USER_AGENT,
    KeepAliveClient,
    check_timeout,
    parse_http_url,
    raise_for_status,
)
from llmpulse.sdk._exporter import ExportResult

__all__ = [
    "DEFAULT_HOST",
    "ENV_HOST",
    "ENV_PUBLIC_KEY",
    "ENV_SECRET_KEY",
    "INGESTION_PATH",
    "LangfuseExporter",
    "build_events",
]

#: Langfuse Cloud (EU); ``https://us.cloud.langfuse.com`` or a self-hosted URL via `host`.
DEFAULT_HOST: Final = "https://cloud.langfuse.com"
#: The batch ingestion endpoint, relative to the host.
INGESTION_PATH: Final = "/api/public/ingestion"
ENV_PUBLIC_KEY: Final = "LANGFUSE_PUBLIC_KEY"
ENV_SECRET_KEY: Final = "LANGFUSE_SECRET_KEY"
ENV_HOST: Final = "LANGFUSE_HOST"

CALL_TYPE: Final = "llm.call"
SPAN_TYPE: Final = "span"
_REJECTED: Final = "rejected_by_server"
#: Namespace of the deterministic (UUID v5) event ids.
_EVENT_NAMESPACE: Final = uuid.UUID("5f0e4a52-6c8e-4b7e-9a51-6c6c6d70756c")
#: The call fields copied into the trace's and generation's metadata and tags.
_CONTEXT_FIELDS: Final = ("tenant_id", "route", "feature", "environment")

_encoder = msgspec.json.Encoder()


# -- helpers -------------------------------------------------------------------------------------


def _int(item: Mapping[str, Any], key: str) -> int:
    value = item.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _number(item: Mapping[str, Any], key: str) -> float | None:
    value = item.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _str(item: Mapping[str, Any], key: str) -> str | None:
    value = item.get(key)
    return value if isinstance(value, str) and value else None


def _instant(raw: object) -> datetime | None:
    if isinstance(raw, datetime):
        when = raw
    elif isinstance(raw, str):
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            return None
    else:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _iso(when: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z`` suffix, as Langfuse's SDKs write it."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _event(kind: str, timestamp: str, body: dict[str, Any]) -> dict[str, Any]:
    """One ingestion event; its id is derived from type and body, so a resend is deduplicated."""
    event_id = uuid.uuid5(_EVENT_NAMESPACE, kind + ":" + _digest(_encoder.encode(body)))
    return {"id": str(event_id), "timestamp": timestamp, "type": kind, "body": body}


def _status_message(error: object) -> str | None:
    if error is None:
        return None
    if isinstance(error, str):
        return error
    if isinstance(error, Mapping):
        kind, message = error.get("type"), error.get("message")
        parts = [str(p) for p in (kind, message) if p is not None]
        if parts:
            return ": ".join(parts)
    return _encoder.encode(error).decode("utf-8", "replace")


def _usage_details(item: Mapping[str, Any]) -> dict[str, int]:
    """Usage under Langfuse's keys: exclusive ``input``/``output`` plus the cache and reasoning parts.

    llmpulse's ``input_tokens`` includes cache reads and writes and ``output_tokens`` includes
    reasoning; Langfuse adds up usage types, so the parts are taken out of ``input``/``output`` and
    ``total`` is given explicitly.
    """
    input_tokens = _int(item, "input_tokens")
    output_tokens = _int(item, "output_tokens")
    cached = _int(item, "cached_input_tokens")
    cache_write = _int(item, "cache_write_tokens")
    reasoning = _int(item, "reasoning_tokens")
    usage = {
        "input": max(input_tokens - cached - cache_write, 0),
        "output": max(output_tokens - reasoning, 0),
        "total": input_tokens + output_tokens,
    }
    if cached:
        usage["cache_read_input_tokens"] = cached
    if cache_write:
        usage["cache_creation_input_tokens"] = cache_write
    if reasoning:
        usage["output_reasoning_tokens"] = reasoning
    return usage


def _context(item: Mapping[str, Any]) -> dict[str, str]:
    return {key: value for key in _CONTEXT_FIELDS if (value := _str(item, key)) is not None}


def _tags(context: Mapping[str, str]) -> list[str]:
    return [f"{key.removesuffix('_id')}:{value}" for key, value in context.items()]


# -- the ingestion events ------------------------------------------------------------------------


def _call_events(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    start = _instant(item.get("timestamp")) or datetime(1970, 1, 1, tzinfo=UTC)
    timestamp = _iso(start)
    request_id = _str(item, "request_id")
    fallback = _digest(_encoder.encode(item))
    trace_id = _str(item, "trace_id") or request_id or fallback
    parent = _str(item, "parent_span_id")
    context = _context(item)

    trace: dict[str, Any] = {"id": trace_id, "timestamp": timestamp}
    if parent is None:  # a call inside an SDK span tree leaves the trace's name to the root span
        route = _str(item, "route")
        trace["name"] = _str(item, "feature") or (route if route != "default" else None) or "llm.call"
    for key, field in (("userId", "user_id"), ("sessionId", "session_id")):
        if (value := _str(item, field)) is not None:
            trace[key] = value
    trace["tags"] = _tags(context)
    trace["metadata"] = dict(context)

    generation_id = _str(item, "span_id") or (f"{request_id}-generation" if request_id else f"gen-{fallback}")
    generation: dict[str, Any] = {
        "id": generation_id,
        "traceId": trace_id,
        "name": _str(item, "endpoint") or "llm.call",
        "startTime": timestamp,
        "model": _str(item, "response_model") or _str(item, "model") or "",
        "usageDetails": _usage_details(item),
    }
    if parent is not None:
        generation["parentObservationId"] = parent
    latency = _number(item, "latency_ms")
    if latency is not None:
        generation["endTime"] = _iso(start + timedelta(milliseconds=latency))
    ttft = _number(item, "ttft_ms")
    if ttft is not None:
        generation["completionStartTime"] = _iso(start + timedelta(milliseconds=ttft))
    cost = _number(item, "cost")
    if cost is not None:
        generation["costDetails"] = {"total": cost}
    status = item.get("status")
    message = _status_message(item.get("error"))
    if status == "error" or (message is not None and status != "cancelled"):
        generation["level"] = "ERROR"
        generation["statusMessage"] = message or "error"
    elif status == "cancelled":
        generation["level"] = "WARNING"
        generation["statusMessage"] = message or "cancelled"
    metadata: dict[str, Any] = dict(context)
    for key in ("provider", "request_id", "finish_reason", "org_id"):
        if (value := _str(item, key)) is not None:
            metadata[key] = value
    if _str(item, "response_model") and _str(item, "model"):
        metadata["requested_model"] = item["model"]
    extra = item.get("metadata")
    if isinstance(extra, Mapping):
        for key in ("input", "output"):
            if key in extra:
                generation[key] = extra[key]
        rest = {k: v for k, v in extra.items() if k not in ("input", "output")}
        if rest:
            metadata["attributes"] = rest
    generation["metadata"] = metadata
    return [_event("trace-create", timestamp, trace), _event("generation-create", timestamp, generation)]


def _span_events(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    trace_id, span_id = _str(item, "trace_id"), _str(item, "span_id")
    if trace_id is None or span_id is None:
        return []
    start = _instant(item.get("start_time")) or datetime(1970, 1, 1, tzinfo=UTC)
    timestamp = _iso(start)
    name = _str(item, "name") or "span"
    parent = _str(item, "parent_span_id")
    span: dict[str, Any] = {"id": span_id, "traceId": trace_id, "name": name, "startTime": timestamp}
    if parent is not None:
        span["parentObservationId"] = parent
    end = _instant(item.get("end_time"))
    duration = _number(item, "duration_ms")
    if end is None and duration is not None:
        end = start + timedelta(milliseconds=duration)
    if end is not None:
        span["endTime"] = _iso(end)
    message = _status_message(item.get("error"))
    if item.get("status") == "error" or message is not None:
        span["level"] = "ERROR"
        span["statusMessage"] = message or "error"
    attributes = item.get("attributes")
    if isinstance(attributes, Mapping) and attributes:
        span["metadata"] = dict(attributes)
    events = []
    if parent is None:
        events.append(
            _event("trace-create", timestamp, {"id": trace_id, "name": name, "timestamp": timestamp})
        )
    events.append(_event("span-create", timestamp, span))
    return events


def build_events(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ingestion events for one item (its dict form); empty for kinds not sent. Pure, deterministic."""
    kind = item.get("type")
    if kind == CALL_TYPE:
        return _call_events(item)
    if kind == SPAN_TYPE:
        return _span_events(item)
    return []


# -- the exporter --------------------------------------------------------------------------------


class LangfuseExporter:
    """Sends each batch to Langfuse's ingestion API in one POST (kept-alive connection).

    `public_key`/`secret_key` are the project's API keys (Basic auth); `host` the Langfuse base URL
    (default `DEFAULT_HOST`; a path prefix is kept); `timeout_s` bounds connecting and each socket
    read; `name` is the exporter's key in ``collector.stats()["exporters"]``. `export` blocks on the
    network and is serialised by the pipeline. Raises `ValueError` naming the argument when one is
    invalid.
    """

    def __init__(
        self,
        public_key: str,
        secret_key: str,
        host: str | None = None,
        timeout_s: float = 10.0,
        name: str = "langfuse",
    ) -> None:
        for arg, value in (("public_key", public_key), ("secret_key", secret_key)):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{arg} must be a non-empty string")
            if any(c in value for c in "\r\n\0"):
                raise ValueError(f"{arg} holds a line break or NUL")
        url = host or DEFAULT_HOST
        parts, host, port = parse_http_url(url, "host", DEFAULT_HOST)
        if parts.username is not None or parts.password is not None or parts.query:
            raise ValueError("host must hold no credentials and no query")
        check_timeout(timeout_s)
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string")
        self.name: str = name
        self.host: Final = url
        self.timeout_s: Final = float(timeout_s)
        self._target = parts.path.rstrip("/") + INGESTION_PATH
        netloc = host if port is None else f"{host}:{port}"
        self._where = f"POST {parts.scheme}://{netloc}"
        token = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")
        self._headers: Final = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            "Authorization": f"Basic {token}",
        }
        self._metadata: Final = {"sdk_name": "llmpulse", "sdk_version": __version__}
        self._client = KeepAliveClient(parts.scheme, host, port, self.timeout_s, self._where)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> LangfuseExporter | None:
        """A `LangfuseExporter` from ``LANGFUSE_PUBLIC_KEY``/``LANGFUSE_SECRET_KEY`` (and ``LANGFUSE_HOST``).

        None unless both keys are set. `environ` defaults to `os.environ`; keyword `overrides` win.
        Raises `ValueError` naming the variables for a bad value. Does not block.
        """
        env = os.environ if environ is None else environ
        public_key = env.get(ENV_PUBLIC_KEY, "").strip()
        secret_key = env.get(ENV_SECRET_KEY, "").strip()
        if not public_key or not secret_key:
            return None
        kwargs: dict[str, Any] = {"public_key": public_key, "secret_key": secret_key}
        host = env.get(ENV_HOST, "").strip()
        if host:
            kwargs["host"] = host
        kwargs.update(overrides)
        try:
            return cls(**kwargs)
        except ValueError as exc:
            raise ValueError(f"{ENV_PUBLIC_KEY} / {ENV_SECRET_KEY} / {ENV_HOST}: {exc}") from exc

    # -- the exporter protocol -----------------------------------------------------------------

    def export(self, items: Sequence[dict[str, Any]]) -> ExportResult | None:
        """Send the batch's calls and spans in one ingestion POST; blocks on the network.

        Returns None when Langfuse accepted every event, an `ExportResult` counting the items with
        an event Langfuse rejected (reason ``"rejected_by_server"``); raises `RetryableError` on a
        transient failure and `ExportError` when the batch is refused (401, 403, 400, ...).
        """
        batch: list[dict[str, Any]] = []
        owner: dict[str, int] = {}  # event id -> index of the item it came from
        for index, item in enumerate(items):
            for event in build_events(item):
                owner[event["id"]] = index
                batch.append(event)
        if not batch:
            return None
        body = _encoder.encode({"batch": batch, "metadata": self._metadata})
        status, data, retry_after = self._client.post(self._target, body, self._headers)
        raise_for_status(status, data, retry_after, self._where)
        return self._partial(data, owner)

    def force_flush(self, timeout: float) -> bool:
        """Nothing is buffered here (each batch is sent by `export`); True."""
        return True

    def shutdown(self, timeout: float) -> None:
        """Close the kept-alive connection; does not block."""
        self._client.close()

    def __repr__(self) -> str:
        return f"<LangfuseExporter {self.name!r} {self._where[5:]}>"

    def _partial(self, data: bytes, owner: Mapping[str, int]) -> ExportResult | None:
        """The items whose events Langfuse listed under ``errors`` in its (207) answer."""
        try:
            answer = msgspec.json.decode(data) if data else None
        except msgspec.DecodeError:
            return None
        errors = answer.get("errors") if isinstance(answer, dict) else None
        if not isinstance(errors, list) or not errors:
            return None
        rejected: set[int] = set()
        unknown = 0
        reasons: list[str] = []
        for error in errors:
            if not isinstance(error, dict):
                continue
            index = owner.get(str(error.get("id")))
            if index is None:
                unknown += 1
            else:
                rejected.add(index)
            if len(reasons) < 3:
                detail = error.get("message") or error.get("error") or ""
                reasons.append(
                    f"{self._where}: event {error.get('id')} HTTP {error.get('status')} {detail}".strip()
                )
        count = min(len(rejected) + unknown, len(set(owner.values())))
        if not count:
            return None
        return ExportResult({_REJECTED: count}, tuple(reasons))
