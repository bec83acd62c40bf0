"""OTLP/gRPC for `OTLPExporter`: one lazily created grpcio channel and the spec's status mapping.

Imported only when an `OTLPExporter` is built with ``protocol="grpc"`` (grpcio takes tens of
milliseconds to import). Each batch is one unary call to
``/opentelemetry.proto.collector.trace.v1.TraceService/Export`` made with grpcio's generic
``unary_unary`` and the opentelemetry-proto serializers, so no generated stub module is needed.

Endpoint, as the OpenTelemetry exporter specification defines it for gRPC: ``http://host:port`` is
plaintext and ``https://host:port`` TLS, whatever `insecure` says; ``host:port`` without a scheme is
TLS unless `insecure`; a path is ignored; the port defaults to 4317.

Answers, as the OTLP specification's gRPC section classifies them:

| status | meaning for the batch |
|---|---|
| OK | exported (a ``partial_success`` with rejected spans becomes an `ExportResult`) |
| CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS | `RetryableError` |
| RESOURCE_EXHAUSTED with a ``google.rpc.RetryInfo`` | `RetryableError` |
| anything else | permanent: `ExportError` naming the code and the details |

A ``RetryInfo`` in the ``grpc-status-details-bin`` trailer sets `RetryableError.retry_after_s`.
grpcio's own retries are disabled: the pipeline retries.

Fork: a grpc channel must not be used across ``fork()``. The channel is made on the first export,
with its own subchannel pool (grpc otherwise shares connections between channels to the same target,
and a child's new channel would get the parent's socket); a child drops its copy without closing it
and makes a new one. A fork waits for an export in flight (at most about `timeout_s`), since forking
in the middle of a grpc call can crash the child. ``GRPC_ENABLE_FORK_SUPPORT`` is not needed.

Errors: `RetryableError` / `ExportError` from `llmpulse.sdk._exporter` (raised by `export`);
`ValueError` naming the argument for a bad configuration.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.parse
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import grpc

from llmpulse.exporters._http import SNIPPET_CHARS, USER_AGENT
from llmpulse.sdk._exporter import ExportError, RetryableError

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

__all__ = [
    "DEFAULT_PORT",
    "EXPORT_METHOD",
    "GrpcTransport",
    "map_rpc_error",
    "metadata_from_headers",
    "parse_grpc_endpoint",
    "retry_delay_s",
]

#: The OTLP/gRPC port; the spec's default endpoint is ``http://localhost:4317``.
DEFAULT_PORT: Final = 4317
EXPORT_METHOD: Final = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
STATUS_DETAILS_KEY: Final = "grpc-status-details-bin"

_RETRYABLE_CODES: Final = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
#: gRPC metadata keys (lower case), and those grpc sets itself or drops silently.
_METADATA_KEY: Final = re.compile(r"[0-9a-z_.-]+")
_RESERVED_KEYS: Final = frozenset({"content-type", "te", "user-agent", "host"})
_CHANNEL_OPTIONS: Final = (
    ("grpc.primary_user_agent", USER_AGENT),
    ("grpc.enable_retries", 0),  # the pipeline retries, not grpcio
    ("grpc.use_local_subchannel_pool", 1),  # a forked child's new channel must not get the parent's socket
    # short reconnect backoff, so a retry the pipeline schedules reaches a receiver that came back
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


def parse_grpc_endpoint(endpoint: object, insecure: bool) -> tuple[str, bool, str]:
    """``(target, tls, display)`` for an OTLP/gRPC `endpoint`; `ValueError` naming `endpoint`.

    `target` is ``host:port`` for grpcio, `display` the endpoint without path or credentials.
    """
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise ValueError(f"endpoint must be a URL such as http://localhost:{DEFAULT_PORT}, got {endpoint!r}")
    text = endpoint.strip()
    parts = urllib.parse.urlsplit(text if "://" in text else f"//{text}")
    if parts.scheme not in ("", "http", "https") or not parts.hostname:
        raise ValueError(
            f"endpoint must be http://host:port, https://host:port or host:port for grpc, got {endpoint!r}"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError("endpoint: credentials in the URL are not sent over gRPC; use headers")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ValueError(f"endpoint has an invalid port: {exc}") from exc
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    tls = parts.scheme == "https" or (parts.scheme == "" and not insecure)
    return f"{host}:{port}", tls, f"{'https' if tls else 'http'}://{host}:{port}"


def metadata_from_headers(headers: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """`headers` as gRPC metadata (keys lower-cased); `ValueError` naming `headers` for a bad one."""
    result: dict[str, str] = {}
    for key, value in (headers or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"headers must map str to str, got {key!r}: {value!r}")
        name = key.strip().lower()
        if not _METADATA_KEY.fullmatch(name):
            raise ValueError(f"headers: {key!r} is not a valid gRPC metadata key (0-9 a-z _ . -)")
        if name.startswith("grpc-") or name in _RESERVED_KEYS:
            raise ValueError(f"headers: {key!r} is reserved by gRPC")
        if name.endswith("-bin"):
            raise ValueError(f"headers: {key!r} names binary metadata; headers carry text")
        if not all(" " <= c <= "~" for c in value):
            raise ValueError(f"headers: the value of {key!r} must be printable ASCII for gRPC")
        result[name] = value
    return tuple(result.items())


def _read_pem(path: str | os.PathLike[str] | None, arg: str) -> bytes | None:
    """The bytes of the PEM file at `path` (None without one); `ValueError` naming `arg`. Reads a file."""
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except (OSError, TypeError) as exc:
        raise ValueError(f"{arg}: cannot read {path!r}: {exc}") from exc


def retry_delay_s(trailing_metadata: Sequence[Any] | None) -> float | None:
    """The ``google.rpc.RetryInfo`` delay in the ``grpc-status-details-bin`` trailer, in seconds.

    None when the trailer is absent, unreadable or holds no ``RetryInfo`` (or when
    googleapis-common-protos is not installed); 0.0 for a ``RetryInfo`` without a delay.
    """
    details = next(
        (value for key, value in trailing_metadata or () if key == STATUS_DETAILS_KEY),
        None,
    )
    if not isinstance(details, bytes):
        return None
    try:
        from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - googleapis-common-protos comes with the otlp extra
        return None
    try:
        status = status_pb2.Status.FromString(details)
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                delay = info.retry_delay
                return max(0.0, float(delay.seconds) + float(delay.nanos) / 1e9)
    except Exception:  # a malformed trailer: retry with the pipeline's own backoff
        return None
    return None


def map_rpc_error(exc: grpc.RpcError, where: str) -> ExportError:
    """The `RetryableError` or permanent `ExportError` the OTLP spec gives a failed Export call."""
    code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
    details = exc.details() if callable(getattr(exc, "details", None)) else None
    trailing = exc.trailing_metadata() if callable(getattr(exc, "trailing_metadata", None)) else None
    delay = retry_delay_s(trailing)
    name = getattr(code, "name", str(code))
    message = f"{where}: gRPC {name}" + (f" {str(details)[:SNIPPET_CHARS]}" if details else "")
    if code in _RETRYABLE_CODES or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None):
        return RetryableError(message, retry_after_s=delay or None)
    return ExportError(message)


class GrpcTransport:
    """Sends ``ExportTraceServiceRequest``s over one grpcio channel, made on the first export.

    `endpoint` and `insecure` follow `parse_grpc_endpoint`; `certificate_file` (PEM trust roots,
    else grpcio's default roots), `client_key_file` and `client_certificate_file` (mutual TLS, both
    or neither) need a TLS endpoint and are read here. `headers` become metadata on every call,
    `gzip` compresses each message, `timeout_s` is each call's deadline. Raises `ValueError` naming the
    argument. `export` blocks; the pipeline serialises calls.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        insecure: bool = False,
        certificate_file: str | os.PathLike[str] | None = None,
        client_key_file: str | os.PathLike[str] | None = None,
        client_certificate_file: str | os.PathLike[str] | None = None,
        headers: Mapping[str, str] | None = None,
        gzip: bool = False,
        timeout_s: float = 10.0,
    ) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        if not isinstance(insecure, bool):
            raise ValueError(f"insecure must be a bool, got {insecure!r}")
        self._target, self.tls, self.display = parse_grpc_endpoint(endpoint, insecure)
        self.where: Final = f"Export {self.display}"  # names the receiver in error messages
        if (client_key_file is None) != (client_certificate_file is None):
            raise ValueError("client_key_file and client_certificate_file go together: give both or neither")
        files = {
            "certificate_file": certificate_file,
            "client_key_file": client_key_file,
            "client_certificate_file": client_certificate_file,
        }
        for arg, path in files.items():
            if path is not None and not self.tls:
                raise ValueError(f"{arg} needs a TLS endpoint (https://), got {self.where}")
        self._credentials = (
            grpc.ssl_channel_credentials(
                root_certificates=_read_pem(certificate_file, "certificate_file"),
                private_key=_read_pem(client_key_file, "client_key_file"),
                certificate_chain=_read_pem(client_certificate_file, "client_certificate_file"),
            )
            if self.tls
            else None
        )
        self._metadata = metadata_from_headers(headers)
        self._compression = grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression
        self._timeout_s = timeout_s
        self._serialize = trace_service_pb2.ExportTraceServiceRequest.SerializeToString
        self._deserialize = trace_service_pb2.ExportTraceServiceResponse.FromString
        self._channel: Any = None
        self._call: Any = None
        self._pid = os.getpid()
        self._lock = threading.Lock()  # held during each call: a fork waits for the one in flight
        self._held_for_fork = False
        _register_fork_handlers(self)

    def _callable(self) -> Any:
        """The Export callable on the current channel, made now if there is none (lock held)."""
        if self._pid != os.getpid():
            self._drop_inherited()
        if self._call is None:
            if self._credentials is None:
                channel = grpc.insecure_channel(self._target, options=_CHANNEL_OPTIONS)
            else:
                channel = grpc.secure_channel(self._target, self._credentials, options=_CHANNEL_OPTIONS)
            self._channel = channel
            self._call = channel.unary_unary(
                EXPORT_METHOD,
                request_serializer=self._serialize,
                response_deserializer=self._deserialize,
            )
        return self._call

    def _drop_inherited(self) -> None:
        """Forget the parent's channel in a forked child; closing it there would break the parent's."""
        self._pid = os.getpid()
        self._channel = None
        self._call = None

    def export(self, request: ExportTraceServiceRequest) -> ExportTraceServiceResponse:
        """Make one Export call; blocks for at most `timeout_s`. Raises as `map_rpc_error` says."""
        with self._lock:
            call = self._callable()
            try:
                response: ExportTraceServiceResponse = call(
                    request,
                    timeout=self._timeout_s,
                    metadata=self._metadata,
                    compression=self._compression,
                    wait_for_ready=False,
                )
            except grpc.RpcError as exc:
                raise map_rpc_error(exc, self.where) from exc
        return response

    def close(self) -> None:
        """Close the channel (a call in flight ends CANCELLED; the next export opens a new one).

        Does not block. In a forked child the parent's channel is only forgotten.
        """
        channel, self._channel, self._call = self._channel, None, None
        if channel is not None and self._pid == os.getpid():
            channel.close()

    # -- fork ------------------------------------------------------------------------------------

    def _before_fork(self) -> None:
        self._held_for_fork = self._lock.acquire(timeout=self._timeout_s + 1.0)

    def _after_fork_in_parent(self) -> None:
        if self._held_for_fork:
            self._held_for_fork = False
            self._lock.release()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._held_for_fork = False
        self._drop_inherited()


def _register_fork_handlers(transport: GrpcTransport) -> None:
    """Hook `transport` into ``os.fork`` through a weak reference (the exporter may be collected)."""
    if not hasattr(os, "register_at_fork"):  # pragma: no cover - Windows
        return
    ref = weakref.ref(transport)

    def before() -> None:
        if (t := ref()) is not None:
            t._before_fork()

    def after_in_parent() -> None:
        if (t := ref()) is not None:
            t._after_fork_in_parent()

    def after_in_child() -> None:
        if (t := ref()) is not None:
            t._after_fork_in_child()

    os.register_at_fork(before=before, after_in_parent=after_in_parent, after_in_child=after_in_child)
