"""The OTLP receiver: ``POST /v1/traces`` (OTLP/HTTP, protobuf or OTLP/JSON, gzip accepted).

Spans that describe a model call become `LLMCall` events, appended through the ingest path
(`llmpulse.server._ingest.append_events`: back-pressure, durability, 503 + ``Retry-After``), so the
processor joins, deduplicates and windows them like any other call. Which spans are model calls,
and what each attribute becomes, is `llmpulse.server._otlp_calls.read_export`.

Every other span (tools, agents, workflows, HTTP) is accepted and counted as ignored. A call span that
breaks a limit (negative tokens, a duration or timestamp out of range, ...) is rejected and reported
in the answer's ``partial_success``; the other spans are kept. The event time is the span's start,
the latency its duration; the ``request_id`` is ``otlp-<trace id>-<span id>``, so a re-sent span is
dropped by the processor as a duplicate. Tenant and route come from `_tenant_of` / `_route_of`.

Answers: 200 with an ``ExportTraceServiceResponse`` in the request's encoding; errors are JSON
``{"error": ...}`` (with the ``code`` and ``message`` of a ``google.rpc.Status``): 400 undecodable
body, 413 too large (bytes, decompressed bytes, or spans), 415 content type or encoding, 501 without
`opentelemetry-proto`, 503 when the event log is behind. The attribute mapping is in
docs/otlp-receiver.md. The OTLP/gRPC receiver (`llmpulse.server._otlp_grpc`) goes through the same
`accept_export`, its errors mapped by `GRPC_CODES`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from anyio import to_thread
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from llmpulse.server._auth import Principal, principal
from llmpulse.server._body import read_bytes
from llmpulse.server._errors import JSON, ApiError
from llmpulse.server._ingest import DECODE_IN_THREAD_BYTES, append_events
from llmpulse.server._otlp_calls import Export, read_export
from llmpulse.server._otlp_decode import (
    JSON_TYPE,
    PROTOBUF,
    PROTOBUF_TYPES,
    OTLPDecodeError,
    OTLPUnavailable,
    decode_request,
    encode_response,
)
from llmpulse.server._settings import ServerSettings
from llmpulse.server._state import ServerState, server_state

#: gRPC status codes of the error answers (the ``code`` of their ``google.rpc.Status`` form, and the
#: status of the OTLP/gRPC receiver's answers; 401 and 429 come from the key gate).
GRPC_CODES: Final = {400: 3, 401: 16, 413: 3, 415: 3, 429: 8, 501: 12, 503: 14}

router = APIRouter(tags=["otlp"])


def _decode(data: bytes, as_json: bool, settings: ServerSettings) -> Export:
    return read_export(decode_request(data, json=as_json), settings, datetime.now(UTC))


def _is_json(request: Request) -> bool:
    """True for OTLP/JSON, False for protobuf; `ApiError` 415 for any other (or no) Content-Type."""
    raw = request.headers.get("content-type")
    value = (raw or "").split(";", 1)[0].strip().lower()
    if value in PROTOBUF_TYPES:
        return False
    if value == JSON_TYPE:
        return True
    got = repr(raw) if raw is not None else "none"
    raise ApiError(415, f"`Content-Type` must be {PROTOBUF} or {JSON_TYPE} (OTLP/HTTP), got {got}")


async def accept_export(state: ServerState, caller: Principal | None, data: bytes, *, as_json: bool) -> bytes:
    """Decode an export, append its model calls as `caller`'s, count it; the answer's body.

    The one receiving path of both transports (``POST /v1/traces`` and OTLP/gRPC): decoding (on a
    worker thread from `DECODE_IN_THREAD_BYTES`), `read_export`, the ingest path's
    `append_events` (tenant of the key, admission, durable append), the `OTLPCounters`, and the
    ``ExportTraceServiceResponse`` with its ``partial_success`` in the request's encoding. Raises
    `ApiError` 400 (undecodable), 413 (too many spans), 501 (no opentelemetry-proto), 503 (the log
    is behind or closing).
    """
    settings = state.settings
    try:
        if len(data) >= DECODE_IN_THREAD_BYTES:
            export = await to_thread.run_sync(_decode, data, as_json, settings)
        else:
            export = _decode(data, as_json, settings)
    except OTLPDecodeError as exc:
        raise ApiError(400, str(exc)) from None
    except OTLPUnavailable as exc:
        raise ApiError(501, str(exc)) from None
    if export.calls:
        await append_events(state, caller, export.calls)
    counters = state.otlp
    counters.exports += 1
    counters.spans_received += export.received
    counters.calls += len(export.calls)
    counters.spans_ignored += export.ignored
    counters.spans_rejected += len(export.rejections)
    rejected = len(export.rejections)
    return encode_response(rejected, export.error_message() if rejected else "", json=as_json)


async def _receive(request: Request) -> Response:
    state = server_state(request)
    as_json = _is_json(request)
    data = await read_bytes(request, state.settings.limits.max_body_bytes)
    body = await accept_export(state, principal(request), data, as_json=as_json)
    return Response(body, media_type=JSON_TYPE if as_json else PROTOBUF)


_ERROR_DOC: Final = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "code": {"type": "integer"}, "message": {"type": "string"}},
    "required": ["error"],
}
_REQUEST_DOC: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {
            PROTOBUF: {
                "schema": {"type": "string", "format": "binary", "description": "ExportTraceServiceRequest"}
            },
            JSON_TYPE: {"schema": {"type": "object", "description": "OTLP/JSON ExportTraceServiceRequest"}},
        },
    }
}
_RESPONSES_DOC: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": "Accepted; `partial_success` names the spans rejected, if any",
        "content": {
            PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
            JSON_TYPE: {
                "example": {"partialSuccess": {"rejectedSpans": "1", "errorMessage": "1 of 3 spans ..."}}
            },
        },
    },
    **{
        status: {"description": text, "content": {JSON: {"schema": _ERROR_DOC}}}
        for status, text in (
            (400, "The body is not an ExportTraceServiceRequest in its Content-Type, or corrupt gzip"),
            (413, "Body (or its decompressed form, or its span count) over the limit"),
            (
                415,
                "Content-Type not application/x-protobuf or application/json, or Content-Encoding not gzip",
            ),
            (501, "opentelemetry-proto is not installed on the server"),
            (503, "The event log cannot keep up (see Retry-After) or is shutting down"),
        )
    },
}


@router.post(
    "/v1/traces",
    summary="OTLP/HTTP trace receiver: model-call spans become LLM calls",
    openapi_extra=_REQUEST_DOC,
    responses=_RESPONSES_DOC,
)
async def post_traces(request: Request) -> Response:
    """Receive an OTLP trace export and append its model calls; answers once they are durable.

    Answers 200 with an ``ExportTraceServiceResponse`` in the request's encoding (with
    ``partial_success`` when spans were rejected); errors as JSON with a ``google.rpc.Status``'s
    ``code`` and ``message`` beside ``error``.
    """
    try:
        return await _receive(request)
    except ApiError as exc:
        exc.extra.setdefault("code", GRPC_CODES.get(exc.status, 2))
        exc.extra.setdefault("message", exc.message)
        raise
