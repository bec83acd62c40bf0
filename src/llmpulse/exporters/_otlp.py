"""`OTLPExporter`: telemetry items as OpenTelemetry spans over OTLP/HTTP (protobuf or JSON) or gRPC.

LLM calls (``type == "llm.call"``) become GenAI client spans following the current OpenTelemetry
GenAI semantic conventions (``gen_ai.operation.name``, ``gen_ai.provider.name``,
``gen_ai.request.model``, ``gen_ai.usage.*`` including cache and reasoning tokens,
``gen_ai.response.time_to_first_chunk``, the proposed ``gen_ai.usage.cost.*``, ``error.type``, and,
when the SDK kept the content, ``gen_ai.input.messages`` / ``gen_ai.output.messages`` as JSON span
attributes, never span events), plus llmpulse's own attributes (``llmpulse.tenant_id``,
``llmpulse.route``, ``llmpulse.cost_usd``, ``llmpulse.cost_source``, ...). `GENAI_ATTRIBUTES` is the one
table of those names, each with the previous name that ``semconv="dup"``
(``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental/dup``) sends as well for older backends.
SDK spans (``type == "span"``) become plain internal spans with their attributes and parent/child
ids. Every other kind is skipped (not an error, not a drop).

The ``ExportTraceServiceRequest`` is built with `opentelemetry-proto` (imported by the constructor,
so importing `llmpulse.exporters` stays light) and POSTed over one kept-alive stdlib connection
(`KeepAliveClient`) to ``{endpoint}/v1/traces``, or sent with ``protocol="grpc"`` to the
``TraceService/Export`` method over one grpcio channel (`llmpulse.exporters._otlp_grpc`, which has
the gRPC endpoint rules and status mapping).

| HTTP answer | meaning for the batch |
|---|---|
| 2xx | exported (a ``partial_success`` with rejected spans becomes an `ExportResult`) |
| 429, 502, 503, 504, connection errors, timeouts | `RetryableError`, honouring `Retry-After` |
| anything else | permanent: `ExportError` naming the status and the body's start |

Errors: `RetryableError` / `ExportError` from `llmpulse.sdk._exporter` (raised by `export` to the
pipeline, never into the application); `ValueError` naming the argument for a bad configuration.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from llmpulse._version import __version__
from llmpulse.events._sdk_schema import new_span_id, new_trace_id
from llmpulse.exporters._genai_messages import genai_input_messages, genai_output_messages
from llmpulse.exporters._http import (
    USER_AGENT,
    KeepAliveClient,
    check_timeout,
    parse_http_url,
    raise_for_status,
)
from llmpulse.exporters._pulse import GZIP_LEVEL
from llmpulse.exporters._webhook import _check_header
from llmpulse.sdk import INPUT_KEYS, OUTPUT_KEYS
from llmpulse.sdk._exporter import ExportResult

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

    from llmpulse.exporters._otlp_grpc import GrpcTransport

__all__ = ["GENAI_ATTRIBUTES", "GenAISemconv", "OTLPCompression", "OTLPExporter", "OTLPProtocol"]

OTLPProtocol = Literal["http/protobuf", "http/json", "grpc"]
OTLPCompression = Literal["gzip", "none"]
#: Which GenAI attribute names spans carry: ``"latest"`` the current names only, ``"dup"`` the current
#: names and, where there was one, the previous name too (`GENAI_ATTRIBUTES`).
GenAISemconv = Literal["latest", "dup"]

#: The GenAI attributes of an LLM call span: llmpulse's concept -> (current name, previous name).
#: The previous name (None where the conventions had none, or only span events) is what backends
#: built on semantic conventions v1.36.0 and earlier, or on pre-2026 instrumentations (OpenLLMetry's
#: cache names, OpenLIT's time to first token), read; it is sent only with ``semconv="dup"``.
#: The cost set is the ``gen_ai.usage.cost.*`` proposal (semantic-conventions-genai pull request 443:
#: ``amount`` a double, ``currency`` ISO 4217, ``source`` ``provider`` or ``local``).
GENAI_ATTRIBUTES: Final[Mapping[str, tuple[str, str | None]]] = {
    "operation": ("gen_ai.operation.name", None),
    "provider": ("gen_ai.provider.name", "gen_ai.system"),
    "request_model": ("gen_ai.request.model", None),
    "response_model": ("gen_ai.response.model", None),
    "input_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
    "output_tokens": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
    "cached_input_tokens": ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens"),
    "cache_write_tokens": (
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
    ),
    "reasoning_tokens": ("gen_ai.usage.reasoning.output_tokens", None),
    "finish_reasons": ("gen_ai.response.finish_reasons", None),
    "ttft_s": ("gen_ai.response.time_to_first_chunk", "gen_ai.server.time_to_first_token"),
    "cost_amount": ("gen_ai.usage.cost.amount", None),
    "cost_currency": ("gen_ai.usage.cost.currency", None),
    "cost_source": ("gen_ai.usage.cost.source", None),
    "input_messages": ("gen_ai.input.messages", None),
    "output_messages": ("gen_ai.output.messages", None),
}
#: llmpulse's `cost_source` -> the proposal's ``gen_ai.usage.cost.source`` (a figure the provider
#: reported, or one the sender computed); a cost without a source is the sender's estimate.
_COST_SOURCES: Final[Mapping[str, str]] = {
    "provider": "provider",
    "estimate": "local",
    "genai-prices": "local",
}
#: `metadata` keys holding the prompt / the completion (the SDK's, removed there unless recorded), in
#: a fixed order: the first one present is the content.
_INPUT_KEYS: Final = tuple(sorted(INPUT_KEYS))
_OUTPUT_KEYS: Final = tuple(sorted(OUTPUT_KEYS))

ENV_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
ENV_TRACES_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENV_HEADERS: Final = "OTEL_EXPORTER_OTLP_HEADERS"
ENV_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_PROTOCOL"
ENV_SERVICE_NAME: Final = "OTEL_SERVICE_NAME"
ENV_RESOURCE_ATTRIBUTES: Final = "OTEL_RESOURCE_ATTRIBUTES"
ENV_COMPRESSION: Final = "OTEL_EXPORTER_OTLP_COMPRESSION"
ENV_TIMEOUT: Final = "OTEL_EXPORTER_OTLP_TIMEOUT"
ENV_INSECURE: Final = "OTEL_EXPORTER_OTLP_INSECURE"
ENV_CERTIFICATE: Final = "OTEL_EXPORTER_OTLP_CERTIFICATE"
ENV_CLIENT_KEY: Final = "OTEL_EXPORTER_OTLP_CLIENT_KEY"
ENV_CLIENT_CERTIFICATE: Final = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"
#: ``from_env`` keyword ← variable; each is also read as ``OTEL_EXPORTER_OTLP_TRACES_*``, which wins.
_ENV_SETTINGS: Final[Mapping[str, str]] = {
    "protocol": ENV_PROTOCOL,
    "headers": ENV_HEADERS,
    "compression": ENV_COMPRESSION,
    "timeout_s": ENV_TIMEOUT,
    "insecure": ENV_INSECURE,
    "certificate_file": ENV_CERTIFICATE,
    "client_key_file": ENV_CLIENT_KEY,
    "client_certificate_file": ENV_CLIENT_CERTIFICATE,
}

TRACES_PATH: Final = "/v1/traces"
_CONTENT_TYPES: Final[Mapping[str, str]] = {
    "http/protobuf": "application/x-protobuf",
    "http/json": "application/json",
}
#: The OTLP/HTTP spec's retryable answers; everything else that is not 2xx is permanent.
_RETRYABLE_STATUS: Final = frozenset({429, 502, 503, 504})
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)
#: Span fields holding ids, hex in OTLP/JSON (base64 in the generic protobuf JSON mapping).
_ID_FIELDS: Final = ("traceId", "spanId", "parentSpanId")

Scalar = str | bool | int | float


def _to_unix_nano(value: Any) -> int | None:
    """An RFC 3339 string (or datetime) as integer nanoseconds since the epoch; None if unreadable."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int((value - _EPOCH) // _MICROSECOND) * 1000


def _hex_id(value: Any, hex_len: int) -> bytes | None:
    """`value` as id bytes when it is a non-zero hex string of `hex_len` digits, else None."""
    if not isinstance(value, str) or len(value) != hex_len:
        return None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        return None
    return raw if any(raw) else None


def _derived_id(kind: str, seed: Any, size: int) -> bytes | None:
    """A stable non-zero id of `size` bytes derived from a string `seed`; None without one."""
    if not isinstance(seed, str) or not seed:
        return None
    digest = hashlib.blake2b(f"llmpulse.{kind}:{seed}".encode(), digest_size=size).digest()
    return digest if any(digest) else None


def _error_type(error: Any) -> str:
    """A low-cardinality ``error.type`` for an item's `error` (``"_OTHER"`` when none is named)."""
    if isinstance(error, Mapping):
        for key in ("type", "code", "name"):
            value = error.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                return str(value)
    return "_OTHER"


def _error_message(error: Any) -> str:
    """A short human-readable description of an item's `error` for the span status message."""
    if error is None:
        return ""
    if isinstance(error, Mapping):
        message = error.get("message")
        if isinstance(message, str):
            return message[:1024]
    text = error if isinstance(error, str) else json.dumps(error, default=str)
    return text[:1024]


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, Scalar]]:
    """(key, scalar) pairs of `value` under `prefix`, nested mappings joined by dots; others skipped."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _flatten(f"{prefix}.{key}", inner)
    elif isinstance(value, str | bool | int | float):
        yield prefix, value


def _env_value(kwarg: str, text: str, variable: str) -> Any:
    """The `from_env` keyword value of one variable's `text`; `ValueError` naming the `variable`."""
    if kwarg == "headers":
        return _parse_key_values(text, variable)
    if kwarg == "timeout_s":
        try:
            return float(text) / 1000.0  # milliseconds, as the spec defines it
        except ValueError:
            raise ValueError(f"{variable} must be a number of milliseconds, got {text!r}") from None
    if kwarg == "insecure":
        if text.lower() not in ("true", "false"):
            raise ValueError(f"{variable} must be true or false, got {text!r}")
        return text.lower() == "true"
    return text


def _parse_key_values(text: str, variable: str) -> dict[str, str]:
    """``k1=v1,k2=v2`` (values percent-decoded) as OTEL_EXPORTER_OTLP_HEADERS defines it."""
    result: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{variable}: expected key=value pairs separated by commas, got {part!r}")
        result[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
    return result


class OTLPExporter:
    """Sends LLM calls and SDK spans as OTLP spans to an OpenTelemetry collector or backend.

    `endpoint` is a base URL as ``OTEL_EXPORTER_OTLP_ENDPOINT`` defines it (``http://host:4318``:
    ``/v1/traces`` is appended) or a full URL already ending in ``/v1/traces``. `protocol` is
    ``"http/protobuf"`` (default), ``"http/json"`` or ``"grpc"`` (endpoint ``http://host:4317``,
    ``https://...`` for TLS, or ``host:port``: TLS unless `insecure`; port 4317 by default).
    `headers` are added to every request (gRPC metadata, keys lower-cased); `service_name` and
    `resource_attributes` describe the resource; `timeout_s` bounds connecting and each socket read
    (each gRPC call); `name` is the exporter's key in ``collector.stats()["exporters"]``;
    `compression` ``"gzip"`` compresses every request. gRPC only: `certificate_file` (PEM roots to
    trust), `client_key_file` and `client_certificate_file` (mutual TLS), read by the constructor.
    `semconv` ``"latest"`` (default) names GenAI attributes as the current conventions do; ``"dup"``
    also sends each one's previous name (`GENAI_ATTRIBUTES`) for backends that only know those.
    `export` blocks on the network; the pipeline serialises calls. Raises `ValueError` naming the
    argument when one is invalid, `ImportError` when `opentelemetry-proto` (or, for gRPC, `grpcio`)
    is not installed.
    """

    def __init__(
        self,
        endpoint: str,
        protocol: OTLPProtocol = "http/protobuf",
        headers: Mapping[str, str] | None = None,
        service_name: str = "llmpulse",
        resource_attributes: Mapping[str, Any] | None = None,
        timeout_s: float = 10.0,
        name: str = "otlp",
        *,
        compression: OTLPCompression | None = None,
        insecure: bool = False,
        certificate_file: str | os.PathLike[str] | None = None,
        client_key_file: str | os.PathLike[str] | None = None,
        client_certificate_file: str | os.PathLike[str] | None = None,
        semconv: GenAISemconv = "latest",
    ) -> None:
        if semconv not in ("latest", "dup"):
            raise ValueError(f"semconv must be 'latest' or 'dup', got {semconv!r}")
        if protocol not in ("http/protobuf", "http/json", "grpc"):
            raise ValueError(f"protocol must be 'http/protobuf', 'http/json' or 'grpc', got {protocol!r}")
        if compression not in (None, "gzip", "none"):
            raise ValueError(f"compression must be 'gzip' or 'none', got {compression!r}")
        check_timeout(timeout_s)
        if not isinstance(service_name, str) or not service_name:
            raise ValueError(f"service_name must be a non-empty string, got {service_name!r}")

        # Lazy: opentelemetry-proto and protobuf cost tens of milliseconds to import.
        from google.protobuf import json_format  # type: ignore[import-untyped]
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
        from opentelemetry.proto.common.v1 import common_pb2
        from opentelemetry.proto.resource.v1 import resource_pb2
        from opentelemetry.proto.trace.v1 import trace_pb2

        self._json_format = json_format
        self._trace_service_pb2 = trace_service_pb2
        self._common_pb2 = common_pb2
        self._resource_pb2 = resource_pb2
        self._trace_pb2 = trace_pb2

        self.endpoint: Final = endpoint
        self.protocol: Final[OTLPProtocol] = protocol
        self.name: str = name or "otlp"
        self.service_name: Final = service_name
        self.timeout_s: Final = float(timeout_s)
        self.gzip: Final = compression == "gzip"
        self.semconv: Final[GenAISemconv] = semconv
        self._client: KeepAliveClient | None = None
        self._grpc: GrpcTransport | None = None
        if protocol == "grpc":
            from llmpulse.exporters._otlp_grpc import GrpcTransport  # grpcio only when asked for

            self._grpc = GrpcTransport(
                endpoint,
                insecure=insecure,
                certificate_file=certificate_file,
                client_key_file=client_key_file,
                client_certificate_file=client_certificate_file,
                headers=headers,
                gzip=self.gzip,
                timeout_s=self.timeout_s,
            )
            self._where, self._target = self._grpc.where, ""
        else:
            grpc_only = {
                "insecure": insecure or None,
                "certificate_file": certificate_file,
                "client_key_file": client_key_file,
                "client_certificate_file": client_certificate_file,
            }
            for arg, given in grpc_only.items():
                if given is not None:
                    raise ValueError(f"{arg} is only supported with protocol='grpc'")
            self._http_setup(endpoint, headers)
        resource: dict[str, Any] = {
            "telemetry.sdk.name": "llmpulse",
            "telemetry.sdk.language": "python",
            "telemetry.sdk.version": __version__,
        }
        resource.update(resource_attributes or {})
        resource["service.name"] = service_name
        self._resource_attributes: Final = resource

    def _http_setup(self, endpoint: str, headers: Mapping[str, str] | None) -> None:
        """The target, headers and kept-alive client of an OTLP/HTTP exporter (constructor only)."""
        parts, host, port = parse_http_url(endpoint, "endpoint", "http://localhost:4318")
        path = parts.path.rstrip("/")
        if not path.endswith(TRACES_PATH):
            path += TRACES_PATH
        self._target = path + (f"?{parts.query}" if parts.query else "")
        netloc = host if port is None else f"{host}:{port}"
        self._where = f"POST {parts.scheme}://{netloc}"
        merged = {"Content-Type": _CONTENT_TYPES[self.protocol], "User-Agent": USER_AGENT}
        for key, value in (headers or {}).items():
            _check_header(key, value)
            merged[key] = value
        if self.gzip:
            merged["Content-Encoding"] = "gzip"
        self._headers = merged
        self._client = KeepAliveClient(parts.scheme, host, port, self.timeout_s, self._where)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> OTLPExporter | None:
        """An `OTLPExporter` configured by the standard ``OTEL_*`` variables, or None without endpoint.

        Reads ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used as is) or ``OTEL_EXPORTER_OTLP_ENDPOINT``
        (``/v1/traces`` appended for HTTP), ``OTEL_EXPORTER_OTLP_PROTOCOL``,
        ``OTEL_EXPORTER_OTLP_HEADERS`` (``k=v,k2=v2``, percent-decoded), ``..._COMPRESSION``,
        ``..._TIMEOUT`` (milliseconds), ``..._CERTIFICATE``, ``..._CLIENT_KEY``,
        ``..._CLIENT_CERTIFICATE``, ``..._INSECURE`` (gRPC only), each also as
        ``OTEL_EXPORTER_OTLP_TRACES_*`` (which wins), plus ``OTEL_SERVICE_NAME``,
        ``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SEMCONV_STABILITY_OPT_IN`` (`semconv`, read by
        `llmpulse.exporters._env.genai_semconv`). `environ` defaults to `os.environ`; keyword
        `overrides` win over the environment. Raises `ValueError` naming the variable for a bad value.
        Reads the certificate files, if any; does not connect.
        """
        env = os.environ if environ is None else environ
        traces_endpoint = env.get(ENV_TRACES_ENDPOINT, "").strip()
        endpoint = traces_endpoint or env.get(ENV_ENDPOINT, "").strip()
        if not endpoint and "endpoint" not in overrides:
            return None
        kwargs: dict[str, Any] = {"endpoint": endpoint}
        sources = {"endpoint": ENV_TRACES_ENDPOINT if traces_endpoint else ENV_ENDPOINT}
        for kwarg, variable in _ENV_SETTINGS.items():
            for name in (variable.replace("OTEL_EXPORTER_OTLP_", "OTEL_EXPORTER_OTLP_TRACES_"), variable):
                text = env.get(name, "").strip()
                if text:
                    kwargs[kwarg], sources[kwarg] = _env_value(kwarg, text, name), name
                    break
        if overrides.get("protocol", kwargs.get("protocol")) != "grpc":
            kwargs.pop("insecure", None)  # the spec applies it to gRPC endpoints only
        service_name = env.get(ENV_SERVICE_NAME, "").strip()
        if service_name:
            kwargs["service_name"] = service_name
        resource = env.get(ENV_RESOURCE_ATTRIBUTES, "").strip()
        if resource:
            kwargs["resource_attributes"] = _parse_key_values(resource, ENV_RESOURCE_ATTRIBUTES)
        # Here, not at the top: `_env` builds every exporter, this one included, at import time.
        from llmpulse.exporters._env import genai_semconv

        kwargs["semconv"] = genai_semconv(env)
        kwargs.update(overrides)
        try:
            made = cls(**kwargs)
        except ValueError as exc:
            named = [v for k, v in sources.items() if k not in overrides and str(exc).startswith(k)]
            where = named[-1] if named else f"{ENV_TRACES_ENDPOINT} / {ENV_ENDPOINT} / {ENV_PROTOCOL}"
            raise ValueError(f"{where}: {exc}") from exc
        if traces_endpoint and "endpoint" not in overrides and made._client is not None:
            # The signal-specific variable is a full URL, used as is (no /v1/traces appended).
            parts = urllib.parse.urlsplit(traces_endpoint)
            made._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return made

    # -- the exporter protocol -----------------------------------------------------------------

    def export(self, items: Sequence[dict[str, Any]]) -> ExportResult | None:
        """Convert the batch's LLM calls and spans to OTLP spans and send them; blocks on the network.

        Other kinds of items are skipped. Returns None when everything was accepted, an
        `ExportResult` when the receiver reported rejected spans; raises `RetryableError` (HTTP 429,
        502, 503, 504, the OTLP spec's retryable gRPC codes, connection errors, timeouts) or
        `ExportError` (any other refusal).
        """
        request = self.build_request(items)
        if not request.resource_spans:
            return None
        if self._grpc is not None:
            return self._partial_result(self._grpc.export(request))
        return self._send(self.encode(request))

    def force_flush(self, timeout: float) -> bool:
        """Nothing is buffered here (each batch is sent by `export`); True."""
        return True

    def shutdown(self, timeout: float) -> None:
        """Close the kept-alive connection or the gRPC channel; does not block."""
        if self._client is not None:
            self._client.close()
        if self._grpc is not None:
            self._grpc.close()

    def __repr__(self) -> str:
        where = self._where.partition(" ")[2]
        return f"<OTLPExporter {self.name!r} {where}{self._target} protocol={self.protocol}>"

    # -- conversion ----------------------------------------------------------------------------

    def build_request(self, items: Sequence[Mapping[str, Any]]) -> ExportTraceServiceRequest:
        """The ``ExportTraceServiceRequest`` for a batch (no spans when nothing converts). Pure."""
        request = self._trace_service_pb2.ExportTraceServiceRequest()
        spans: list[ProtoSpan] = []
        for item in items:
            kind = item.get("type")
            if kind == "llm.call":
                spans.append(self._llm_call_span(item))
            elif kind == "span":
                spans.append(self._sdk_span(item))
        if not spans:
            return request
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(self._key_values(self._resource_attributes.items()))
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = "llmpulse"
        scope_spans.scope.version = __version__
        scope_spans.spans.extend(spans)
        return request

    def encode(self, request: ExportTraceServiceRequest) -> bytes:
        """The request body in the exporter's protocol: binary protobuf (HTTP and gRPC), or OTLP/JSON.

        OTLP/JSON is the protobuf JSON mapping (lowerCamelCase keys, enums as integers) except that
        trace and span ids are hex strings, not base64. Not compressed.
        """
        if self.protocol != "http/json":
            data: bytes = request.SerializeToString()
            return data
        document = self._json_format.MessageToDict(request, use_integers_for_enums=True)
        for resource_spans in document.get("resourceSpans", ()):
            for scope_spans in resource_spans.get("scopeSpans", ()):
                for span in scope_spans.get("spans", ()):
                    for key in _ID_FIELDS:
                        if span.get(key):
                            span[key] = base64.b64decode(span[key]).hex()
        return json.dumps(document, separators=(",", ":")).encode()

    def _any_value(self, value: Any) -> AnyValue:
        """A Python value as an OTLP `AnyValue` (lists of scalars as arrays; anything else as JSON)."""
        result = self._common_pb2.AnyValue()
        if isinstance(value, bool):
            result.bool_value = value
        elif isinstance(value, int) and -(2**63) <= value < 2**63:
            result.int_value = value
        elif isinstance(value, float):
            result.double_value = value
        elif isinstance(value, str):
            result.string_value = value
        elif isinstance(value, list | tuple) and all(isinstance(v, str | bool | int | float) for v in value):
            result.array_value.values.extend(self._any_value(v) for v in value)
        else:
            result.string_value = json.dumps(value, default=str, separators=(",", ":"))
        return result

    def _key_values(self, pairs: Iterator[tuple[str, Any]] | Any) -> list[KeyValue]:
        """`KeyValue`s for (key, value) pairs, skipping None values."""
        result = []
        for key, value in pairs:
            if value is None:
                continue
            result.append(self._common_pb2.KeyValue(key=str(key), value=self._any_value(value)))
        return result

    def _ids(self, item: Mapping[str, Any], span: ProtoSpan) -> None:
        """Trace, span and parent ids from the item's hex ids, made up when absent or invalid.

        Made-up ids derive from the item's `request_id` when it has one, so a retried batch carries
        the same ids again (a receiver can deduplicate); otherwise they are random.
        """
        seed = item.get("request_id")
        span.trace_id = (
            _hex_id(item.get("trace_id"), 32)
            or _derived_id("trace", seed, 16)
            or bytes.fromhex(new_trace_id())
        )
        span.span_id = (
            _hex_id(item.get("span_id"), 16) or _derived_id("span", seed, 8) or bytes.fromhex(new_span_id())
        )
        parent = _hex_id(item.get("parent_span_id"), 16)
        if parent is not None:
            span.parent_span_id = parent

    def _llm_call_span(self, item: Mapping[str, Any]) -> ProtoSpan:
        """A GenAI client span (``{operation} {model}``, kind CLIENT) for one ``llm.call`` item."""
        span = self._trace_pb2.Span()
        self._ids(item, span)
        operation = "chat"
        model = str(item.get("model") or "unknown")
        span.name = f"{operation} {model}"
        span.kind = self._trace_pb2.Span.SpanKind.SPAN_KIND_CLIENT
        start = _to_unix_nano(item.get("timestamp")) or 0
        latency_ms = item.get("latency_ms")
        span.start_time_unix_nano = start
        span.end_time_unix_nano = start + (
            round(float(latency_ms) * 1_000_000) if isinstance(latency_ms, int | float) else 0
        )
        genai: dict[str, Any] = {
            "operation": operation,
            "provider": item.get("provider"),
            "request_model": model,
            "response_model": item.get("response_model"),
            "input_tokens": item.get("input_tokens"),
            "output_tokens": item.get("output_tokens"),
        }
        for field in ("cached_input_tokens", "cache_write_tokens", "reasoning_tokens"):
            if item.get(field):
                genai[field] = item[field]
        if item.get("finish_reason"):
            genai["finish_reasons"] = [str(item["finish_reason"])]
        ttft_ms = item.get("ttft_ms")
        if isinstance(ttft_ms, int | float):
            genai["ttft_s"] = float(ttft_ms) / 1000.0
        cost = float(item["cost"]) if isinstance(item.get("cost"), int | float) else None
        cost_source = str(item.get("cost_source") or "estimate") if cost is not None else None
        if cost is not None:
            genai["cost_amount"] = cost
            genai["cost_currency"] = "USD"
            genai["cost_source"] = _COST_SOURCES.get(str(cost_source), "local")
        is_error = item.get("status") == "error" or item.get("error") is not None
        metadata = item.get("metadata")
        content_keys: set[str] = set()
        if isinstance(metadata, Mapping):
            prompt_key = next((k for k in _INPUT_KEYS if metadata.get(k) is not None), None)
            if prompt_key is not None:
                genai["input_messages"] = genai_input_messages(metadata[prompt_key])
                content_keys.add(prompt_key)
            completion_key = next((k for k in _OUTPUT_KEYS if metadata.get(k) is not None), None)
            if completion_key is not None:
                reason = item.get("finish_reason") or ("error" if is_error else "unknown")
                genai["output_messages"] = genai_output_messages(metadata[completion_key], str(reason))
                content_keys.add(completion_key)
        attributes = self._genai_attributes(genai)
        if is_error:
            attributes["error.type"] = _error_type(item.get("error"))
        attributes.update(
            {
                "llmpulse.tenant_id": item.get("tenant_id"),
                "llmpulse.route": item.get("route"),
                "llmpulse.cost_usd": cost,
                "llmpulse.cost_source": cost_source,
                "llmpulse.request_id": item.get("request_id"),
                "user.id": item.get("user_id"),
                "session.id": item.get("session_id"),
                "llmpulse.org_id": item.get("org_id"),
                "llmpulse.user_id_hash": item.get("user_id_hash"),
                "llmpulse.feature": item.get("feature"),
                "llmpulse.endpoint": item.get("endpoint"),
                "llmpulse.environment": item.get("environment"),
            }
        )
        if isinstance(metadata, Mapping):
            rest = {k: v for k, v in metadata.items() if k not in content_keys}
            attributes.update(_flatten("llmpulse.metadata", rest))
        span.attributes.extend(self._key_values(iter(attributes.items())))
        if is_error:
            span.status.code = self._trace_pb2.Status.StatusCode.STATUS_CODE_ERROR
            span.status.message = _error_message(item.get("error"))
        return span

    def _genai_attributes(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Span attributes of `values` (keys of `GENAI_ATTRIBUTES`) under their current names and,
        with ``semconv="dup"``, their previous ones too; None values are left out. Message lists
        become JSON strings, as the conventions allow on spans and receivers such as Phoenix read."""
        attributes: dict[str, Any] = {}
        for key, value in values.items():
            if value is None:
                continue
            if key in ("input_messages", "output_messages"):
                value = json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
            current, previous = GENAI_ATTRIBUTES[key]
            attributes[current] = value
            if previous is not None and self.semconv == "dup":
                attributes[previous] = value
        return attributes

    def _sdk_span(self, item: Mapping[str, Any]) -> ProtoSpan:
        """A plain internal span for one SDK ``span`` item, attributes and parent id kept."""
        span = self._trace_pb2.Span()
        self._ids(item, span)
        span.name = str(item.get("name") or "span")
        span.kind = self._trace_pb2.Span.SpanKind.SPAN_KIND_INTERNAL
        start = _to_unix_nano(item.get("start_time")) or 0
        end = _to_unix_nano(item.get("end_time"))
        duration_ms = item.get("duration_ms")
        if end is None:
            end = start + (
                round(float(duration_ms) * 1_000_000) if isinstance(duration_ms, int | float) else 0
            )
        span.start_time_unix_nano = start
        span.end_time_unix_nano = max(start, end)
        attributes = dict(item.get("attributes") or {})
        if item.get("status") == "error" or item.get("error") is not None:
            attributes["error.type"] = _error_type(item.get("error"))
            span.status.code = self._trace_pb2.Status.StatusCode.STATUS_CODE_ERROR
            span.status.message = _error_message(item.get("error"))
        span.attributes.extend(self._key_values(iter(attributes.items())))
        return span

    # -- HTTP ----------------------------------------------------------------------------------

    def _send(self, body: bytes) -> ExportResult | None:
        """POST `body` and map the answer: None or a partial result on 2xx, raise otherwise."""
        assert self._client is not None
        if self.gzip:
            body = gzip.compress(body, compresslevel=GZIP_LEVEL)
        status, data, retry_after = self._client.post(self._target, body, self._headers)
        # the OTLP spec's retryable codes; a binary google.rpc.Status body is not worth quoting
        raise_for_status(
            status,
            data,
            retry_after,
            self._where,
            retryable=_RETRYABLE_STATUS.__contains__,
            printable_only=self.protocol == "http/protobuf",
        )
        return self._partial_success(data)

    def _partial_success(self, data: bytes) -> ExportResult | None:
        """An `ExportResult` when the receiver's answer names rejected spans, else None."""
        if not data:
            return None
        response = self._trace_service_pb2.ExportTraceServiceResponse()
        try:
            if self.protocol == "http/protobuf":
                response.ParseFromString(data)
            else:
                self._json_format.Parse(data, response, ignore_unknown_fields=True)
        except Exception:  # an answer we cannot read is still a 2xx: the spans were accepted
            return None
        return self._partial_result(response)

    @staticmethod
    def _partial_result(response: ExportTraceServiceResponse) -> ExportResult | None:
        """An `ExportResult` when an ``ExportTraceServiceResponse`` names rejected spans, else None."""
        rejected = int(response.partial_success.rejected_spans)
        if rejected <= 0:
            return None
        reason = response.partial_success.error_message or f"{rejected} spans rejected by the receiver"
        return ExportResult({"rejected_by_server": rejected}, (reason,))
