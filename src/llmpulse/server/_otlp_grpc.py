"""The OTLP/gRPC receiver: ``TraceService/Export`` on `ServerSettings.otlp_grpc_port` (off unless set).

Everything an export means is shared with ``POST /v1/traces``: both call
`llmpulse.server._otlp.accept_export` (the span → call mapping, the key's tenant, admission and the
durable append, the OTLP counters, ``partial_success``), and the key and rate-limit check is the key
gate's `Gate.authorize`. What is gRPC's own is only the transport:

* **Server**: grpcio's asyncio server (`grpc.aio`), on the event loop uvicorn serves HTTP from, started
  and stopped by the app's lifespan (`llmpulse.server._app`). One loop means the gate's cache and rate
  limiter (event-loop-only state) and the event log's append path are used exactly as HTTP uses them,
  with no lock and no thread hand-off; the CPU-heavy decode of large exports goes to a worker thread
  in `accept_export`, as for HTTP. Shutdown stops accepting calls and lets those in flight finish
  (up to `STOP_GRACE_S`) before the processor and the log close, so every acknowledged call is in
  the log.
* **Auth**: the ``authorization`` metadata, ``Bearer <key>``, checked like the HTTP header.
* **gzip**: ``grpc-encoding: gzip`` is decompressed by grpcio.
* **Limits**: `Limits.max_body_bytes` applies to the (decompressed) message and
  `Limits.max_batch_items` to its spans (``INVALID_ARGUMENT`` naming the limit); grpcio itself
  refuses a message over `TRANSPORT_LIMIT_FACTOR` times `max_body_bytes`, compressed or not, with
  ``RESOURCE_EXHAUSTED`` before it reaches the receiver, which bounds the memory a call can take.

Answers: ``OK`` with an ``ExportTraceServiceResponse`` (its ``partial_success`` names the rejected
spans); otherwise the status `GRPC_CODES` gives the HTTP receiver's error: ``INVALID_ARGUMENT``
(undecodable message, too large, too many spans; the message names the field or limit),
``UNAUTHENTICATED`` (keys are configured and the call has no valid one), ``RESOURCE_EXHAUSTED``
(over the key's rate limit), ``UNAVAILABLE`` (the event log or the processor is behind, the server
is starting or shutting down), ``UNIMPLEMENTED`` (no `opentelemetry-proto`). The last three that a
client should retry carry a ``google.rpc.RetryInfo`` twice: inside a ``google.rpc.Status`` in the
``grpc-status-details-bin`` trailer (the OTLP specification's form, read by llmpulse's exporter and
the Collector) and alone in ``google.rpc.retryinfo-bin`` (read by OpenTelemetry's Python exporter).

Imported only when the port is set (grpcio takes tens of milliseconds to import).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Final

import grpc
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc import aio

from llmpulse.server._auth import Principal
from llmpulse.server._errors import ApiError
from llmpulse.server._otlp import GRPC_CODES, accept_export
from llmpulse.server._state import ServerState

_log = logging.getLogger("llmpulse.server.otlp_grpc")

#: The OTLP trace service and its one method, as opentelemetry-proto names them.
SERVICE: Final = "opentelemetry.proto.collector.trace.v1.TraceService"
METHOD: Final = "Export"
#: grpcio refuses messages over this many times `Limits.max_body_bytes` before the handler sees them.
TRANSPORT_LIMIT_FACTOR: Final = 2
#: The longest shutdown waits for calls in flight (as uvicorn waits for HTTP requests).
STOP_GRACE_S: Final = 30.0
#: Trailers carrying the retry delay of a retryable refusal.
STATUS_DETAILS_KEY: Final = "grpc-status-details-bin"
RETRY_INFO_KEY: Final = "google.rpc.retryinfo-bin"

_STATUS_BY_CODE: Final = {code.value[0]: code for code in grpc.StatusCode}


def grpc_status(http_status: int) -> grpc.StatusCode:
    """The gRPC status of an error the HTTP receiver answers with `http_status` (UNKNOWN if none)."""
    return _STATUS_BY_CODE.get(GRPC_CODES.get(http_status, 2), grpc.StatusCode.UNKNOWN)


def retry_trailers(status: grpc.StatusCode, message: str, delay_s: float) -> tuple[tuple[str, bytes], ...]:
    """The trailers that tell a client to retry after `delay_s` seconds: a ``google.rpc.Status`` with a
    ``RetryInfo`` (``grpc-status-details-bin``) and the ``RetryInfo`` alone (``google.rpc.retryinfo-bin``).
    """
    delay_s = max(0.0, delay_s) if math.isfinite(delay_s) else 1.0
    info = error_details_pb2.RetryInfo()
    info.retry_delay.seconds = int(delay_s)
    info.retry_delay.nanos = round((delay_s - int(delay_s)) * 1e9) % 1_000_000_000
    details = status_pb2.Status(code=status.value[0], message=message)
    details.details.add().Pack(info)
    return (
        (STATUS_DETAILS_KEY, details.SerializeToString()),
        (RETRY_INFO_KEY, info.SerializeToString()),
    )


def peer_host(peer: str) -> str:
    """The client address of a grpc peer string (``ipv4:127.0.0.1:5000`` → ``127.0.0.1``)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0] or rest
        return host.strip("[]")
    return peer or "unknown"


def _authorization(metadata: Sequence[Any] | None) -> bytes | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value.encode("latin-1") if isinstance(value, str) else bytes(value)
    return None


def listen_address(host: str, port: int) -> str:
    """``host:port`` for grpcio (IPv6 in brackets; an empty host is every IPv4 interface)."""
    host = host.strip().strip("[]") or "0.0.0.0"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class OTLPGrpcReceiver:
    """The OTLP/gRPC trace service of one running server. `start` and `stop` run on its event loop."""

    def __init__(self, state: ServerState) -> None:
        """A receiver for the server whose dependencies are `state`; listens once started."""
        self._state = state
        self._server: Any = None
        self.port: int | None = None

    async def start(self) -> int:
        """Listen on ``settings.host`` and ``settings.otlp_grpc_port``; the port bound (0: any free one).

        Raises `RuntimeError` when the port cannot be bound (taken, or no such interface).
        """
        settings = self._state.settings
        port = settings.otlp_grpc_port
        if port is None:
            raise RuntimeError("otlp_grpc_port is not set")
        limit = settings.limits.max_body_bytes * TRANSPORT_LIMIT_FACTOR
        server = aio.server(
            options=(
                ("grpc.max_receive_message_length", limit),
                ("grpc.so_reuseport", 0),  # a port taken by another process is an error, not shared
            )
        )
        handler = grpc.unary_unary_rpc_method_handler(self._export)  # bytes in, bytes out
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),))
        address = listen_address(settings.host, port)
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise RuntimeError(f"cannot listen for OTLP/gRPC on {address}: {exc}") from exc
        if not bound:  # older grpcio answers 0 instead of raising
            raise RuntimeError(f"cannot listen for OTLP/gRPC on {address}")
        await server.start()
        self._server, self.port = server, bound
        _log.info("OTLP/gRPC receiver listening on %s", listen_address(settings.host, bound))
        return int(bound)

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Refuse new calls, let those in flight finish for up to `grace_s`, then close. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace_s)

    async def _export(self, data: bytes, context: aio.ServicerContext) -> bytes:
        """``TraceService/Export``: the serialized ``ExportTraceServiceResponse`` or an abort."""
        state = self._state
        try:
            caller = await self._authorize(context)
            limit = state.settings.limits.max_body_bytes
            if len(data) > limit:
                raise ApiError(
                    413,
                    f"request message is {len(data)} bytes (decompressed); the limit is {limit} "
                    "(max_body_bytes): send smaller batches",
                )
            return await accept_export(state, caller, data, as_json=False)
        except ApiError as exc:
            error = exc
        except Exception:
            _log.exception("unexpected error in OTLP/gRPC Export")
            error = ApiError(500, "internal server error (logged on the server)")
        if state.metrics is not None:
            state.metrics.refused(error.status)
        status = grpc.StatusCode.INTERNAL if error.status == 500 else grpc_status(error.status)
        retry_after = error.headers.get("Retry-After")
        trailers = retry_trailers(status, error.message, float(retry_after)) if retry_after else ()
        await context.abort(status, error.message, trailing_metadata=trailers)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def _authorize(self, context: aio.ServicerContext) -> Principal | None:
        gate = self._state.gate
        if gate is None:
            return None
        return await gate.authorize(
            _authorization(context.invocation_metadata()), peer_host(context.peer() or "")
        )
