"""The ingest endpoints: read, validate, append to the log, and answer once the log has it durably.

* ``POST /v1/llm/request`` and ``POST /v1/llm/response``: one StreamLens event each → 200
  ``{"accepted": 1}``.
* ``POST /v1/events``: a batch (JSON array, one JSON object, token-copilot's ``{"events": [...]}``
  envelope, or NDJSON) → 200 ``{"accepted": N}``;
  207 ``{"accepted": N, "rejected": [{"index": i, "error": "..."}]}`` when some items were rejected
  (the accepted ones are appended); 422 with the same fields and an ``error`` when none was accepted.

Handlers only decode with msgspec (`llmpulse.events.decode_one` / `decode_batch`) and append: no
pydantic models on the hot path. Status codes: 400 unusable body (malformed JSON, invalid UTF-8,
corrupt gzip, empty), 413 too large (bytes or items), 415 content type or encoding, 422 schema or limit
violation, 503 with ``Retry-After`` when the log pushes back or is closing.

Tenancy: when the request carries an API key (`llmpulse.server._auth`), `_append` — which every
ingest path goes through, the OTLP receiver's too — rewrites each event's ``tenant_id`` to the key's
tenant, whatever the body said (counted in ``llmpulse_events_tenant_rewritten_total``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final

import msgspec
from anyio import to_thread
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from llmpulse.events import (
    DecodedBatch,
    EnvelopeError,
    Event,
    EventValidationError,
    LLMRequest,
    LLMResponse,
    decode_batch,
    decode_one,
)
from llmpulse.pipeline import LogBackpressure, LogClosed
from llmpulse.server._auth import Principal, principal
from llmpulse.server._body import read_body
from llmpulse.server._errors import JSON, ApiError, error_response, json_response, retry_after_header
from llmpulse.server._state import ServerState, server_state

#: Bodies at least this large are decoded on a worker thread so the event loop keeps serving.
DECODE_IN_THREAD_BYTES: Final = 512 * 1024

_ACCEPTED_ONE: Final = b'{"accepted":1}'
_BATCH_TOO_LARGE_PREFIX: Final = "batch has "

router = APIRouter(tags=["ingest"])


def _body_doc(ref: str, *, batch: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"$ref": f"#/components/schemas/{ref}"}
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if batch:
        item = {
            "oneOf": [
                {"$ref": "#/components/schemas/LLMRequest"},
                {"$ref": "#/components/schemas/LLMResponse"},
                {"$ref": "#/components/schemas/LLMCall"},
            ]
        }
        content = {
            "application/json": {"schema": {"oneOf": [{"type": "array", "items": item}, item]}},
            "application/x-ndjson": {"schema": {"type": "string", "description": "one event a line"}},
        }
    return {"requestBody": {"required": True, "content": content}}


_ERROR_SCHEMA: Final = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
_COMMON_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    status: {"description": text, "content": {JSON: {"schema": _ERROR_SCHEMA}}}
    for status, text in (
        (400, "Unusable body: malformed JSON, invalid UTF-8, corrupt gzip, empty"),
        (413, "Body (or its decompressed form, or the batch) over the limit"),
        (415, "Content-Type not JSON/NDJSON, or Content-Encoding not gzip/identity"),
        (422, "Schema or limit violation; the message names the field"),
        (503, "The event log cannot keep up (see Retry-After) or is shutting down"),
    )
}


def _accepted_doc(batch: bool) -> dict[int | str, dict[str, Any]]:
    docs: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "Every event is durably in the log",
            "content": {JSON: {"example": {"accepted": 1}}},
        }
    }
    if batch:
        docs[207] = {
            "description": "Some items were rejected; the accepted ones are durably in the log",
            "content": {
                JSON: {
                    "example": {
                        "accepted": 2,
                        "rejected": [{"index": 1, "error": "Object missing required field `model`"}],
                    }
                }
            },
        }
    return docs | _COMMON_ERRORS


async def _admit(state: ServerState) -> None:
    """Hold a batch back while the processing lags too far behind; 503 after the wait.

    The wait is what slows a client down to the speed the processor aggregates at (back-pressure by
    latency), instead of letting acknowledged-but-not-queryable events pile up. The lag is the
    in-process processor's (`ProcessorRunner.lag_events`: embedded, or ``serve --broker``) or, in
    Kafka mode without it, the ``llmpulse process`` workers' (`llmpulse.server._lag.GroupLag`); the
    same `ServerSettings.max_processor_lag_events` and `admission_wait_s` apply to both.
    """
    runner = state.runner if state.runner is not None else state.group_lag
    limit = state.settings.max_processor_lag_events
    if runner is None or limit <= 0:
        return
    lag = runner.lag_events()
    if lag is None or lag <= limit:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.settings.admission_wait_s
    while lag is not None and lag > limit:
        if loop.time() >= deadline:
            raise LogBackpressure(f"the processor is {lag} events behind", 1.0)
        await asyncio.sleep(0.002)
        lag = runner.lag_events()


def claim_tenant(events: Sequence[Event], tenant_id: str) -> tuple[int, bool]:
    """Set every event's ``tenant_id`` to `tenant_id`: (how many named another tenant, whether any
    event changed at all).

    A response that named no tenant gets the key's too (not counted as rewritten), so it joins only
    its own tenant's request (`llmpulse.pipeline`).
    """
    rewritten = 0
    changed = False
    for event in events:
        if event.tenant_id != tenant_id:
            if event.tenant_id is not None:
                rewritten += 1
            event.tenant_id = tenant_id
            changed = True
    return rewritten, changed


def _rejected_events(request: Request, reason: str, n: int = 1) -> None:
    metrics = server_state(request).metrics
    if metrics is not None:
        metrics.rejected(reason, n)


async def _append(request: Request, events: Sequence[Event], payload: bytes | None = None) -> None:
    """`append_events` for an HTTP request: its app's state and its caller's key."""
    await append_events(server_state(request), principal(request), events, payload)


async def append_events(
    state: ServerState, caller: Principal | None, events: Sequence[Event], payload: bytes | None = None
) -> None:
    """Append `events` to the log once durable, as `caller`'s tenant when it has a key.

    The one ingest path of every transport (the HTTP endpoints, OTLP/HTTP and OTLP/gRPC): tenant
    rewrite, admission (`_admit`), the durable append and the accepted/rewritten counts. `payload`,
    an encoding of exactly `events`, is dropped when a tenant is rewritten. Raises `ApiError` 503
    (with ``Retry-After``) when the log pushes back or is closing.
    """
    log = state.require_log()
    rewritten, changed = claim_tenant(events, caller.tenant_id) if caller is not None else (0, False)
    if changed:
        payload = None  # the body no longer says what is kept
    try:
        await _admit(state)
        await log.append(events, payload)
    except LogBackpressure as exc:
        raise ApiError(
            503, f"the event log is busy: {exc}", headers=retry_after_header(exc.retry_after_s)
        ) from None
    except LogClosed:
        raise ApiError(
            503, "the event log is closed: the server is shutting down", headers=retry_after_header(1)
        ) from None
    if state.metrics is not None:
        state.metrics.accepted(len(events))
        state.metrics.rewritten(rewritten)


def _single_error(exc: EventValidationError, body: bytes) -> ApiError:
    """400 for a body that is not JSON at all, else 422 (schema or limit)."""
    cause = exc.__cause__
    if isinstance(cause, msgspec.DecodeError) and not isinstance(cause, msgspec.ValidationError):
        return ApiError(400, f"request body is not valid JSON: {exc}")
    if isinstance(cause, msgspec.ValidationError):
        # the typed decoder may stop at a type error before it sees that the JSON is broken
        try:
            msgspec.json.decode(body)
        except msgspec.ValidationError:
            pass  # well-formed JSON with a number out of range: a schema error
        except msgspec.DecodeError as malformed:
            return ApiError(400, f"request body is not valid JSON: {malformed}")
    return ApiError(422, str(exc))


async def _ingest_one(request: Request, kind: type[LLMRequest] | type[LLMResponse]) -> Response:
    limits = server_state(request).settings.limits
    body = await read_body(request, limits.max_body_bytes, allow_ndjson=False)
    try:
        event = decode_one(body.data, kind, limits)
    except EventValidationError as exc:
        error = _single_error(exc, body.data)
        _rejected_events(request, "malformed" if error.status == 400 else "invalid")
        raise error from None
    await _append(request, [event])
    return Response(_ACCEPTED_ONE, media_type=JSON)


@router.post(
    "/v1/llm/request",
    summary="Ingest one LLM request (StreamLens body)",
    openapi_extra=_body_doc("LLMRequest"),
    responses=_accepted_doc(batch=False),
)
async def post_request(request: Request) -> Response:
    """Validate one `LLMRequest` and append it; answers 200 ``{"accepted": 1}`` once durable."""
    return await _ingest_one(request, LLMRequest)


@router.post(
    "/v1/llm/response",
    summary="Ingest one LLM response (StreamLens body)",
    openapi_extra=_body_doc("LLMResponse"),
    responses=_accepted_doc(batch=False),
)
async def post_response(request: Request) -> Response:
    """Validate one `LLMResponse` and append it; answers 200 ``{"accepted": 1}`` once durable."""
    return await _ingest_one(request, LLMResponse)


def _all_malformed(body: bytes, batch: DecodedBatch) -> bool:
    """True when no item of a fully rejected body was even JSON (then the body is a 400, not a 422)."""
    if batch.events:
        return False
    for part in (body, *body.split(b"\n")):
        if not part.strip():
            continue
        try:
            msgspec.json.decode(part)
        except msgspec.ValidationError:
            return False  # well-formed JSON (a number out of range)
        except msgspec.DecodeError:
            continue
        return False
    return True


def _rejected(batch: DecodedBatch) -> list[dict[str, Any]]:
    return [{"index": r.index, "error": r.error} for r in batch.rejected]


@router.post(
    "/v1/events",
    summary="Ingest a batch of events (JSON array, JSON object or NDJSON; gzip accepted)",
    openapi_extra=_body_doc("LLMCall", batch=True),
    responses=_accepted_doc(batch=True),
)
async def post_events(request: Request) -> Response:
    """Validate a batch and append its good items; one bad item never rejects the batch.

    Answers 200 (all accepted), 207 (some rejected, with their indices) or 422 (none accepted), and
    only once the accepted events are durably in the log.
    """
    limits = server_state(request).settings.limits
    body = await read_body(request, limits.max_body_bytes, allow_ndjson=True)
    try:
        if len(body.data) >= DECODE_IN_THREAD_BYTES:
            batch = await to_thread.run_sync(lambda: decode_batch(body.data, limits, ndjson=body.ndjson))
        else:
            batch = decode_batch(body.data, limits, ndjson=body.ndjson)
    except EventValidationError as exc:
        message = str(exc)
        status = 413 if message.startswith(_BATCH_TOO_LARGE_PREFIX) else 400
        if isinstance(exc, EnvelopeError):
            status = 422
        raise ApiError(status, message) from None
    if batch.events:
        await _append(request, batch.events, batch.raw)
        server_state(request).ingest.naive_timestamps += batch.naive_timestamps
    accepted = len(batch.events)
    if not batch.rejected:
        return json_response({"accepted": accepted})
    malformed = not accepted and _all_malformed(body.data, batch)
    _rejected_events(request, "malformed" if malformed else "invalid", len(batch.rejected))
    if accepted:
        return json_response({"accepted": accepted, "rejected": _rejected(batch)}, 207)
    extra = {"accepted": 0, "rejected": _rejected(batch)}
    if malformed:
        return error_response(400, f"request body is not valid JSON: {batch.rejected[0].error}", extra=extra)
    return error_response(
        422, f"no event accepted: {len(batch.rejected)} rejected (see `rejected`)", extra=extra
    )
