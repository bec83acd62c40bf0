"""OTLP/HTTP trace bodies in and answers out: protobuf and OTLP/JSON, per the OTLP specification.

`decode_request` turns a body into an ``ExportTraceServiceRequest``: binary protobuf as is, OTLP/JSON
through `google.protobuf.json_format` after its hex trace and span ids are turned into the base64
the generic protobuf JSON mapping expects (unknown fields are ignored, enums may be integers or
names, 64-bit integers numbers or strings, as the spec allows). `encode_response` writes the
``ExportTraceServiceResponse`` in the request's encoding. `value_of` turns an OTLP ``AnyValue`` into
a plain Python value.

The protobuf modules (`opentelemetry-proto`, the ``otlp`` extra) are imported on first use, so
importing the server does not pay for them. Errors: `OTLPDecodeError` (a 400: the body is not an
``ExportTraceServiceRequest``) and `OTLPUnavailable` (`opentelemetry-proto` is not installed).
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

import msgspec

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

#: Media type of binary protobuf OTLP bodies (``application/protobuf`` is read as the same).
PROTOBUF: Final = "application/x-protobuf"
PROTOBUF_TYPES: Final = frozenset({PROTOBUF, "application/protobuf"})
#: Media type of OTLP/JSON bodies.
JSON_TYPE: Final = "application/json"

#: Span (and span link) fields that hold ids: hex in OTLP/JSON, base64 in the protobuf JSON mapping.
_ID_KEYS: Final = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
#: Longest ``error_message`` written into a ``partial_success``.
MAX_ERROR_MESSAGE: Final = 2048


class OTLPDecodeError(ValueError):
    """The body is not a valid ``ExportTraceServiceRequest`` in its declared encoding (a 400)."""


class OTLPUnavailable(RuntimeError):
    """`opentelemetry-proto` (the ``otlp`` extra) is not installed, so OTLP cannot be decoded."""


@dataclass(frozen=True, slots=True)
class _Proto:
    json_format: Any
    message: Any
    trace_service: ModuleType


@functools.cache
def _proto() -> _Proto:
    """The protobuf modules, imported once. Raises `OTLPUnavailable` when they are missing."""
    try:
        from google.protobuf import json_format, message  # type: ignore[import-untyped]
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    except ImportError as exc:
        raise OTLPUnavailable(
            "the OTLP receiver needs opentelemetry-proto (pip install 'llmpulse[otlp]')"
        ) from exc
    return _Proto(json_format, message, trace_service_pb2)


def available() -> bool:
    """True when `opentelemetry-proto` can be imported (imports it). May block briefly, once."""
    try:
        _proto()
    except OTLPUnavailable:
        return False
    return True


def _dicts(value: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    if isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict):
                yield index, item


def _hex_to_base64(holder: dict[str, Any], where: str) -> None:
    """Rewrite the hex id fields of one span or link in place. Raises `OTLPDecodeError`."""
    for key in _ID_KEYS:
        value = holder.get(key)
        if not isinstance(value, str) or not value:
            continue  # absent, empty, or not a string (json_format names the wrong type)
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise OTLPDecodeError(
                f"`{where}.{key}` must be a hex string (OTLP/JSON ids are hex), got {value[:64]!r}"
            ) from None
        holder[key] = base64.b64encode(raw).decode("ascii")


def _convert_ids(document: dict[str, Any]) -> None:
    """Turn every hex span/link id of an OTLP/JSON document into base64, in place."""
    for r, resource_spans in _dicts(document.get("resourceSpans", document.get("resource_spans"))):
        scopes = resource_spans.get("scopeSpans", resource_spans.get("scope_spans"))
        for s, scope_spans in _dicts(scopes):
            for i, span in _dicts(scope_spans.get("spans")):
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]"
                _hex_to_base64(span, where)
                for n, link in _dicts(span.get("links")):
                    _hex_to_base64(link, f"{where}.links[{n}]")


def decode_request(data: bytes, *, json: bool) -> ExportTraceServiceRequest:
    """Decode an OTLP/HTTP trace body (protobuf, or OTLP/JSON when `json`). CPU-bound, no I/O.

    An empty body is an empty request. Raises `OTLPDecodeError` with a message naming the problem,
    `OTLPUnavailable` without `opentelemetry-proto`.
    """
    proto = _proto()
    request: ExportTraceServiceRequest = proto.trace_service.ExportTraceServiceRequest()
    if not json:
        try:
            request.ParseFromString(data)
        except proto.message.DecodeError as exc:
            raise OTLPDecodeError(
                f"request body is not a protobuf ExportTraceServiceRequest: {exc}"
            ) from None
        return request
    if not data.strip():
        return request
    try:
        document = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise OTLPDecodeError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise OTLPDecodeError(
            "request body must be a JSON object (an OTLP/JSON ExportTraceServiceRequest), "
            f"got a {type(document).__name__}"
        )
    _convert_ids(document)
    try:
        proto.json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (proto.json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise OTLPDecodeError(f"request body is not an OTLP/JSON ExportTraceServiceRequest: {exc}") from None
    return request


def encode_response(rejected: int, message: str, *, json: bool) -> bytes:
    """The ``ExportTraceServiceResponse`` body in the request's encoding. CPU-bound, no I/O.

    `partial_success` is set only when spans were rejected (`rejected` > 0), as the spec asks.
    """
    proto = _proto()
    response = proto.trace_service.ExportTraceServiceResponse()
    if rejected > 0:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message[:MAX_ERROR_MESSAGE]
    if not json:
        body: bytes = response.SerializeToString()
        return body
    return msgspec.json.encode(proto.json_format.MessageToDict(response))


def value_of(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a plain Python value (str, bool, int, float, bytes, list, dict, None)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def hex_id(raw: bytes) -> str | None:
    """A trace or span id as lower-case hex, None when it is empty or all zeros (invalid in OTLP)."""
    if not raw or not any(raw):
        return None
    return binascii.hexlify(raw).decode("ascii")
