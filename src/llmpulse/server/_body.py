"""Reading request bodies under a size limit, with bounded gzip decompression.

The limit (`Limits.max_body_bytes`) holds while the body streams in, for chunked bodies too: a
``Content-Length`` over the limit is refused before anything is read, and a body that grows past it
is refused as soon as it does (413). A gzip body is decompressed incrementally with a bounded output,
so a zip bomb costs at most the limit in memory and CPU before it is refused (413); a corrupt gzip
stream is a 400. `read_body` accepts only JSON and NDJSON bodies (415 otherwise), in UTF-8;
`read_bytes` applies the same limits to a body of any type (the OTLP receiver's protobuf).

Two limits of `RequestLimits` (the app's ``settings.request_limits``) hold too: the whole body must
arrive within `body_read_timeout_s` of the first read (408 otherwise: a slow client cannot hold a
connection and its buffer open indefinitely), and a JSON body may nest arrays and objects at most
`max_json_depth` deep (400; checked at C speed before any decoder recurses into it). Refusals that
leave the body unread (408, 413) close the connection. A JSON event body may not contain a NUL
character (``\u0000``; 422): Postgres cannot store one.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass
from typing import Final

from starlette.requests import ClientDisconnect, Request

from llmpulse.server._errors import ApiError
from llmpulse.server._limits import RequestLimits, check_json_depth

#: Content types read as one JSON document (an object, or an array for `/v1/events`).
JSON_TYPES: Final = frozenset({"application/json"})
#: Content types read as NDJSON (one JSON object a line).
NDJSON_TYPES: Final = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)
_GZIP: Final = frozenset({"gzip", "x-gzip"})
_IDENTITY: Final = frozenset({"", "identity"})
#: Headers of a refusal sent before the whole body was read: the connection cannot be reused.
_CLOSE: Final = {"Connection": "close"}
#: A NUL character as JSON writes it. Postgres cannot store one in a text column, so a tenant, route,
#: model or request id holding one would fail every processor commit: refused at the door instead.
_NUL_ESCAPE: Final = b"\\u0000"


@dataclass(frozen=True, slots=True)
class Body:
    """A request body as read: the (decompressed) bytes and whether it is NDJSON."""

    data: bytes
    ndjson: bool


def media_type(request: Request, *, allow_ndjson: bool) -> bool:
    """Check the Content-Type; return True for NDJSON. Raises `ApiError` 415 for anything else.

    A missing Content-Type is read as JSON.
    """
    raw = request.headers.get("content-type")
    if raw is None:
        return False
    value = raw.split(";", 1)[0].strip().lower()
    if value in JSON_TYPES or (value.startswith("application/") and value.endswith("+json")):
        return False
    if allow_ndjson and value in NDJSON_TYPES:
        return True
    accepted = "application/json or application/x-ndjson" if allow_ndjson else "application/json"
    raise ApiError(415, f"`Content-Type` must be {accepted}, got {raw!r}")


def _gzipped(request: Request) -> bool:
    raw = request.headers.get("content-encoding", "")
    codings = [c.strip().lower() for c in raw.split(",") if c.strip()]
    codings = [c for c in codings if c not in _IDENTITY]
    if not codings:
        return False
    if len(codings) == 1 and codings[0] in _GZIP:
        return True
    raise ApiError(415, f"`Content-Encoding` must be gzip or identity, got {raw!r}")


def _too_large(limit: int, what: str = "request body") -> ApiError:
    return ApiError(413, f"{what} is larger than the limit of {limit} bytes (max_body_bytes)", headers=_CLOSE)


class _Gunzip:
    """Incremental gzip decompression whose output may never exceed `limit` bytes."""

    __slots__ = ("_d", "_fed", "_limit", "_parts", "_size")

    def __init__(self, limit: int) -> None:
        self._d = zlib.decompressobj(wbits=31)
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self._fed = False

    def feed(self, data: bytes) -> None:
        """Decompress one chunk. Raises `ApiError` 413 past the limit, 400 on corrupt data."""
        self._fed = self._fed or bool(data)
        while data:
            if self._d.eof:  # a further gzip member follows (concatenated gzip is valid)
                self._d = zlib.decompressobj(wbits=31)
            room = self._limit - self._size
            try:
                out = self._d.decompress(data, room + 1)
            except zlib.error as exc:
                raise ApiError(400, f"request body is not valid gzip: {exc}") from None
            self._size += len(out)
            if self._size > self._limit:
                raise _too_large(self._limit, "decompressed request body")
            self._parts.append(out)
            data = self._d.unused_data if self._d.eof else self._d.unconsumed_tail

    def finish(self) -> bytes:
        """The whole decompressed body. Raises `ApiError` 400 when the stream is truncated."""
        if self._fed and not self._d.eof:
            raise ApiError(400, "request body is not valid gzip: the stream is truncated")
        return b"".join(self._parts)


async def read_body(request: Request, max_bytes: int, *, allow_ndjson: bool) -> Body:
    """Read the whole body of `request` under `max_bytes`, decompressing gzip. Awaits the client.

    Raises `ApiError`: 413 (too large, also after decompression), 415 (content type or encoding),
    400 (corrupt gzip, bad Content-Length, empty body, invalid UTF-8, nested too deep, client gone),
    408 (the body took longer than `body_read_timeout_s`).
    """
    ndjson = media_type(request, allow_ndjson=allow_ndjson)
    data = await read_bytes(request, max_bytes, json_depth=False)
    if not data or data.isspace():
        raise ApiError(400, "request body is empty")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"request body is not valid UTF-8 (byte {exc.start})") from None
    if _NUL_ESCAPE in data:
        raise ApiError(
            422, "request body contains a NUL character (\\u0000): names, ids and texts may not hold one"
        )
    check_json_depth(data, _request_limits(request).max_json_depth)
    return Body(data, ndjson)


def _request_limits(request: Request) -> RequestLimits:
    """The serving app's `RequestLimits`, or the defaults for a request outside an llmpulse app."""
    state = getattr(getattr(request.scope.get("app"), "state", None), "llmpulse", None)
    limits = getattr(getattr(state, "settings", None), "request_limits", None)
    return limits if isinstance(limits, RequestLimits) else RequestLimits()


def _declares_json(request: Request) -> bool:
    value = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return value in JSON_TYPES or value in NDJSON_TYPES or value.endswith("+json")


async def read_bytes(request: Request, max_bytes: int, *, json_depth: bool = True) -> bytes:
    """The whole body of `request` under `max_bytes`, gzip decompressed; its type is not checked.

    For bodies that are not JSON (OTLP protobuf): the caller checks the Content-Type. May be empty.
    Awaits the client. Raises `ApiError`: 413 (too large, also after decompression), 415
    (Content-Encoding), 400 (corrupt gzip, bad Content-Length, client gone; with `json_depth`, a body
    whose Content-Type is JSON nested deeper than `max_json_depth`), 408 (the body took longer than
    `body_read_timeout_s`).
    """
    limits = _request_limits(request)
    gzipped = _gzipped(request)
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise ApiError(400, f"`Content-Length` is not an integer: {declared!r}") from None
        if length > max_bytes:
            raise _too_large(max_bytes)
    gunzip = _Gunzip(max_bytes) if gzipped else None
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.body_read_timeout_s):
            async for chunk in request.stream():
                if not chunk:
                    continue
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(max_bytes)
                if gunzip is not None:
                    gunzip.feed(chunk)
                else:
                    parts.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "the client disconnected before sending the whole body") from None
    except TimeoutError:
        raise ApiError(
            408,
            f"the request body did not arrive within {limits.body_read_timeout_s:g} s (body_read_timeout_s)",
            headers=_CLOSE,
        ) from None
    data = gunzip.finish() if gunzip is not None else b"".join(parts)
    if json_depth and _declares_json(request):
        check_json_depth(data, limits.max_json_depth)
    return data
