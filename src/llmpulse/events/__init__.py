"""The llmpulse wire schema: event types, validation and limits, JSON and log encodings.

Errors: `EventError` is the base; `EventValidationError` (a malformed event or body, message naming
the field) and `BodyTooLarge` (a body over its limit) derive from it.
"""

from __future__ import annotations

from llmpulse.events._codec import (
    BodyTooLarge,
    DecodedBatch,
    EventError,
    EventValidationError,
    Rejection,
    check_event,
    decode_batch,
    decode_log,
    decode_one,
    encode_json,
    encode_log,
)
from llmpulse.events._limits import Limits
from llmpulse.events._schema import (
    CALL_TYPE,
    DEFAULT_ROUTE,
    DEFAULT_TENANT,
    EVENT_TYPES,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    Event,
    LLMCall,
    LLMRequest,
    LLMResponse,
    Status,
)

__all__ = [
    "CALL_TYPE",
    "DEFAULT_ROUTE",
    "DEFAULT_TENANT",
    "EVENT_TYPES",
    "REQUEST_TYPE",
    "RESPONSE_TYPE",
    "BodyTooLarge",
    "DecodedBatch",
    "Event",
    "EventError",
    "EventValidationError",
    "LLMCall",
    "LLMRequest",
    "LLMResponse",
    "Limits",
    "Rejection",
    "Status",
    "check_event",
    "decode_batch",
    "decode_log",
    "decode_one",
    "encode_json",
    "encode_log",
]
