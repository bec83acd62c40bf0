"""Errors of the `server` package and their JSON form.

Every error the API answers has the body ``{"error": "<message naming the field>"}`` (batch errors add
``accepted`` and ``rejected``). Handlers raise `ApiError`; the exception handlers installed by
`install_error_handlers` turn it, Starlette's HTTP errors, FastAPI's parameter validation errors and
any unexpected exception into that shape. An unexpected exception is logged with its traceback and
answered with a bare 500: no traceback ever reaches a client.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Final

import msgspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

_log = logging.getLogger("llmpulse.server")
_encoder: Final = msgspec.json.Encoder()

#: The media type of every JSON answer.
JSON: Final = "application/json"


class ApiError(Exception):
    """An error answer: HTTP `status`, a message naming the offending field, optional headers.

    `extra` adds fields to the JSON body beside ``error`` (a batch's ``accepted`` and ``rejected``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def json_response(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response encoded with msgspec (fast, and exact for floats). Does not block."""
    return Response(_encoder.encode(content), status_code=status, headers=headers, media_type=JSON)


def error_response(
    status: int,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    """The JSON error answer ``{"error": message, **extra}``. Does not block."""
    body: dict[str, Any] = {"error": message}
    if extra:
        body.update(extra)
    return json_response(body, status, headers)


def retry_after_header(seconds: float) -> dict[str, str]:
    """A ``Retry-After`` header: whole seconds, at least 1."""
    value = 1 if not math.isfinite(seconds) else max(1, math.ceil(seconds))
    return {"Retry-After": str(value)}


_SOURCES: Final = {"query": "query parameter", "path": "path parameter", "header": "header", "body": "field"}


def _describe_validation(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ())]
    kind = _SOURCES.get(loc[0], "field") if loc else "field"
    name = ".".join(loc[1:] if loc and loc[0] in _SOURCES else loc) or "request"
    return f"{kind} `{name}`: {first.get('msg', 'is invalid')}"


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, headers=exc.headers, extra=exc.extra)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    return error_response(exc.status_code, message, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, _describe_validation(exc))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    _log.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error (logged on the server)")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error answer of `app` a JSON ``{"error": ...}`` body. Does not block."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
