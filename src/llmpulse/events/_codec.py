"""Decoding and validation of event bodies, and the compact encoding used inside the event log.

Decoding is strict (no coercion) and reports each problem with the JSON path of the offending field.
A batch never fails as a whole for one bad item: `decode_batch` returns the accepted events and the
index and reason of each rejected one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from llmpulse.events._limits import Limits
from llmpulse.events._schema import Event, LLMCall, LLMRequest, LLMResponse


class EventError(ValueError):
    """Base of the `events` package's errors."""


class EventValidationError(EventError):
    """An event (or a whole body) is malformed or breaks a limit; the message names the field."""


class EnvelopeError(EventValidationError):
    """A ``{"events": ...}`` body whose ``events`` is not an array: well-formed JSON, wrong shape."""


class BodyTooLarge(EventError):
    """A body (or one of its parts) is larger than the configured limit."""


@dataclass(slots=True)
class Rejection:
    """One rejected item of a batch: its zero-based `index` and the `error` that names the field."""

    index: int
    error: str


@dataclass(slots=True)
class DecodedBatch:
    """The result of decoding a batch: accepted events (in order) and rejected items.

    `raw` is the body itself when it is a JSON array that decodes to exactly `events` (every item
    accepted, nothing normalised), so the event log can store it as it came instead of re-encoding.
    `naive_timestamps` counts the accepted call events whose timestamp had no UTC offset (read in
    `Limits.naive_timestamp_tz`).
    """

    events: list[Event] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    raw: bytes | None = None
    naive_timestamps: int = 0


class _Probe(msgspec.Struct):
    type: str | None = None
    event_type: str | None = None


class _Envelope(msgspec.Struct):
    """A JSON object body that may be token-copilot's batch envelope, ``{"events": [...]}``."""

    events: Any = None
    type: Any = None
    event_type: Any = None


_batch_decoder: Final = msgspec.json.Decoder(list[Event])
_item_decoder: Final = msgspec.json.Decoder(Event)
_call_decoder: Final = msgspec.json.Decoder(LLMCall)
_probe_decoder: Final = msgspec.json.Decoder(_Probe)
_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)
_raw_list_decoder: Final = msgspec.json.Decoder(list[msgspec.Raw])
_json_encoder: Final = msgspec.json.Encoder()
_JSON_STARTS: Final = (b"[", b" ", b"\t", b"\r", b"\n")
_log_encoder: Final = msgspec.msgpack.Encoder()
_log_decoder: Final = msgspec.msgpack.Decoder(list[Event])
_single_decoders: Final[dict[type[Any], msgspec.json.Decoder[Any]]] = {
    LLMRequest: msgspec.json.Decoder(LLMRequest),
    LLMResponse: msgspec.json.Decoder(LLMResponse),
    LLMCall: _call_decoder,
}


def _now() -> datetime:
    return datetime.now(UTC)


def _check_utf8(body: bytes) -> None:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventValidationError(f"body is not valid UTF-8 (byte {exc.start})") from exc


def _depth(value: Any, limit: int, level: int = 1) -> int:
    if level > limit:
        return level
    deepest = level
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return level - 1
    for child in children:
        if isinstance(child, dict | list):
            deepest = max(deepest, _depth(child, limit, level + 1))
            if deepest > limit:
                break
    return deepest


def _check_metadata(metadata: dict[str, Any] | None, limits: Limits) -> None:
    if not metadata:
        return
    size = len(_json_encoder.encode(metadata))
    if size > limits.max_metadata_bytes:
        raise EventValidationError(
            f"`metadata` is {size} bytes as JSON; the limit is {limits.max_metadata_bytes}"
        )
    depth = _depth(metadata, limits.max_metadata_depth)
    if depth > limits.max_metadata_depth:
        raise EventValidationError(f"`metadata` nests deeper than {limits.max_metadata_depth} levels")
    _check_storable(metadata, "metadata")


def _check_storable(value: dict[str, Any], name: str) -> None:
    """Refuse a free-form object the event log's MessagePack cannot hold (an integer beyond 64 bits),
    which JSON allows: it would fail later, when the log or the processor encodes the event."""
    try:
        _log_encoder.encode(value)
    except OverflowError:
        raise EventValidationError(f"`{name}` holds an integer outside the 64-bit range") from None


class _Window:
    """The accepted timestamp range for one batch, computed once; counts naive call timestamps."""

    __slots__ = ("hi", "limits", "lo", "naive")

    def __init__(self, limits: Limits, now: datetime) -> None:
        self.limits = limits
        self.lo = now - timedelta(seconds=limits.max_past_s)
        self.hi = now + timedelta(seconds=limits.max_future_s)
        self.naive = 0


def _check(event: Event, window: _Window) -> Event:
    ts = event.timestamp
    if ts.tzinfo is not UTC:
        if ts.tzinfo is None:  # only a call event's type lets a timestamp without an offset through
            zone = window.limits.naive_timestamp_tz
            if zone is None:
                raise EventValidationError(
                    f"`timestamp` {ts.isoformat()} has no UTC offset (add one, e.g. `Z` or `+02:00`)"
                )
            ts = ts.replace(tzinfo=zone)
            window.naive += 1
        try:
            ts = ts.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00:00+01:00 has no UTC datetime
            raise EventValidationError(f"`timestamp` {ts.isoformat()} is out of range") from None
        event.timestamp = ts
    if ts > window.hi:
        raise EventValidationError(
            f"`timestamp` {ts.isoformat()} is more than {window.limits.max_future_s:g} s in the future"
        )
    if ts < window.lo:
        raise EventValidationError(
            f"`timestamp` {ts.isoformat()} is more than {window.limits.max_past_s:g} s in the past "
            "(raise the server's max event age to backfill)"
        )
    if type(event) is LLMResponse:
        if isinstance(event.error, dict):
            _check_storable(event.error, "error")
        return event
    if type(event) is LLMCall and isinstance(event.error, dict):
        _check_storable(event.error, "error")
    if event.metadata:  # type: ignore[union-attr]
        _check_metadata(event.metadata, window.limits)  # type: ignore[union-attr]
    if type(event) is LLMCall and event.request_id is None:
        event.request_id = uuid.uuid4().hex
    return event


def check_event(event: Event, limits: Limits, now: datetime) -> Event:
    """Apply the dynamic limits to a decoded event and normalise it (UTC timestamp, call request_id).

    Raises `EventValidationError` naming the field. Does not block.
    """
    return _check(event, _Window(limits, now))


def _message(exc: msgspec.MsgspecError) -> str:
    return str(exc)


def decode_one(body: bytes, kind: type[Event], limits: Limits, now: datetime | None = None) -> Event:
    """Decode and validate a single event of the given class from a JSON body.

    Raises `EventValidationError` (malformed JSON, wrong type, broken limit) naming the field.
    """
    _check_utf8(body)
    try:
        event: Event = _single_decoders[kind].decode(body)
    except msgspec.MsgspecError as exc:
        raise EventValidationError(_message(exc)) from exc
    return _check(event, _Window(limits, now or _now()))


def _decode_item(raw: bytes) -> Event:
    try:
        event: Event = _item_decoder.decode(raw)
    except msgspec.ValidationError:
        probe = _probe_decoder.decode(raw)
        if probe.type is None and probe.event_type == "llm_cost":
            return _call_decoder.decode(raw)
        if probe.type is None:
            raise EventValidationError(
                'item has no `type` (one of "llm.request", "llm.response", "llm.call"; or '
                '`event_type: "llm_cost"` for a cost event)'
            ) from None
        raise
    return event


def _split_items(body: bytes, ndjson: bool) -> list[bytes]:
    if not ndjson:
        stripped = body.lstrip()
        if stripped[:1] == b"[":
            try:
                return [bytes(r) for r in _raw_list_decoder.decode(body)]
            except msgspec.MsgspecError as exc:
                raise EventValidationError(f"body is not a JSON array of objects: {exc}") from exc
        if stripped[:1] != b"{":
            raise EventValidationError("body must be a JSON array, a JSON object or NDJSON")
        try:
            envelope = _envelope_decoder.decode(body)
        except msgspec.ValidationError:
            return [body]  # one object whose `type` or `event_type` is not a string: rejected as an item
        except msgspec.DecodeError:
            pass  # more than one document: NDJSON
        else:
            if envelope.events is not None and envelope.type is None and envelope.event_type is None:
                return _envelope_items(body)
            return [body]
    return [line for line in body.split(b"\n") if line.strip()]


class _EnvelopeItems(msgspec.Struct):
    events: list[msgspec.Raw]


_envelope_items_decoder: Final = msgspec.json.Decoder(_EnvelopeItems)


def _envelope_items(body: bytes) -> list[bytes]:
    """The items of a ``{"events": [...]}`` body (token-copilot's batched webhook)."""
    try:
        return [bytes(r) for r in _envelope_items_decoder.decode(body).events]
    except msgspec.ValidationError as exc:
        raise EnvelopeError(f"`events` must be an array of events: {exc}") from None


def decode_batch(
    body: bytes, limits: Limits, *, ndjson: bool = False, now: datetime | None = None
) -> DecodedBatch:
    """Decode a batch body: a JSON array, a single JSON object, or NDJSON (one event a line).

    Items name their kind in `type`; an item with `event_type: "llm_cost"` and no `type` is a call.
    A JSON object with an ``events`` member and no ``type`` or ``event_type`` is an envelope whose
    ``events`` are the items (token-copilot's batched webhook); indices are positions in it.
    Returns accepted events and per-item rejections; raises `EventValidationError` only when the body
    as a whole is unusable (not UTF-8, not JSON, too many items; `EnvelopeError` when ``events`` is
    not an array).
    """
    _check_utf8(body)
    window = _Window(limits, now or _now())
    result = DecodedBatch()
    if not ndjson and body.lstrip()[:1] == b"[":
        try:
            events = _batch_decoder.decode(body)
        except msgspec.MsgspecError:
            pass  # fall back to item-by-item decoding to report every bad item
        else:
            if len(events) > limits.max_batch_items:
                raise EventValidationError(
                    f"batch has {len(events)} items; the limit is {limits.max_batch_items}"
                )
            unchanged = True
            for index, event in enumerate(events):
                if event.timestamp.tzinfo is not UTC or (type(event) is LLMCall and event.request_id is None):
                    unchanged = False  # `_check` normalises it: the body no longer says what we keep
                try:
                    result.events.append(_check(event, window))
                except EventValidationError as exc:
                    result.rejected.append(Rejection(index, str(exc)))
            if unchanged and not result.rejected:
                result.raw = body
            result.naive_timestamps = window.naive
            return result
    items = _split_items(body, ndjson)
    if len(items) > limits.max_batch_items:
        raise EventValidationError(f"batch has {len(items)} items; the limit is {limits.max_batch_items}")
    for index, raw in enumerate(items):
        try:
            result.events.append(_check(_decode_item(raw), window))
        except (msgspec.MsgspecError, EventValidationError) as exc:
            result.rejected.append(Rejection(index, str(exc)))
    result.naive_timestamps = window.naive
    return result


def encode_json(event: Event) -> bytes:
    """The event's JSON form (with its `type` tag), as sent by exporters and accepted by ingest."""
    return _json_encoder.encode(event)


def encode_log(events: Sequence[Event]) -> bytes:
    """Encode validated events for the event log (MessagePack, tagged).

    `decode_log` also reads a JSON array of events (a `DecodedBatch.raw` body stored as it came):
    a MessagePack array never starts with ``[`` (0x5b, a positive fixint in MessagePack).
    """
    return _log_encoder.encode(events)


def decode_log(payload: bytes) -> list[Event]:
    """Decode a log payload: `encode_log`'s MessagePack, or a JSON array of validated events."""
    if payload[:1] in _JSON_STARTS:
        return _batch_decoder.decode(payload)
    return _log_decoder.decode(payload)
