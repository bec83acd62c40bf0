"""`SyslogExporter`: telemetry items as RFC 5424 syslog messages over UDP, TCP or TLS.

Each item becomes one message ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG``:

- PRI: ``facility * 8 + severity``. Severity: ``err`` (3) for an item that failed (an ``error`` set,
  or a ``status`` other than ``"ok"``: LLM calls, spans, tools, orchestration steps); a log event's
  own severity (``debug`` 7, ``info`` 6, ``warning`` 4, ``error`` 3, ``critical`` 2); ``info`` (6)
  for everything else (successful calls and spans, metrics).
- TIMESTAMP: the item's ``timestamp`` (a span's ``start_time``) in RFC 3339 with its own offset
  (``Z`` for UTC) and at most microseconds (RFC 5424 §6.2.3); the export time when it has none.
- HOSTNAME, APP-NAME: as configured (printable US-ASCII, at most 255 and 48 characters); PROCID: the
  sending process's id; MSGID: the item's ``type`` (``llm.call``, ``span``, ``tool``,
  ``orchestration``, ``metric``, ``log``).
- SD (``format="rfc5424"``): one element ``[llmpulse@32473 ...]`` (32473 is the IANA enterprise
  number reserved for documentation) with a parameter per non-null scalar field, in the item's order,
  the value as in its JSON form (``true``/``false`` for booleans); ``"``, ``\\`` and ``]`` escaped.
  Objects are flattened with dots (``metadata.team``, ``error.type``, ``attributes.http.status``);
  lists, nulls and names that are not valid SD-NAMEs (longer than 32 characters, or holding a space,
  ``=``, ``]``, ``"`` or a non-ASCII character) are left out and counted in ``skipped_sd_params``.
- MSG (``format="rfc5424"``): a short summary (``gpt-4o ok 812ms 1234 tokens $0.0123``), preceded by
  the UTF-8 byte order mark only when it holds a non-ASCII character (an ASCII MSG is valid as
  MSG-ANY; a BOM in every message trips up receivers that do not strip it).
- ``format="json"``: MSG is the item's JSON form (non-ASCII characters ``\\u``-escaped, so it never
  needs a BOM and any JSON parser reads it as is) and SD is the NILVALUE ``-``: the JSON already holds
  every field, nested ones included, and repeating them as SD would halve what fits in a datagram.

Transports: UDP sends one message per datagram, none larger than `max_udp_message_bytes` (default
2048, the size RFC 5424 §6.1 says receivers SHOULD accept): a longer message first loses SD
parameters, largest first, until the header, the SD and the first 128 bytes of MSG fit, then its
MSG is cut at a character boundary (in JSON format null fields and then the largest ones go, keeping
the JSON valid); each such message counts in ``stats()["truncated"]``. TCP uses octet-counting
framing (RFC 6587 §3.4.1, ``LEN SP MSG``) and TLS the same framing over TLS (RFC 5425), on one
persistent connection (see `_socket.StreamConnection`); messages there are never cut.

Delivery: UDP is fire-and-forget: a datagram that the network or the receiver drops is gone without
a trace; only a refusal the receiver's host answers (ICMP port unreachable) raises, on a later send,
and the whole batch is then retried. TCP and TLS are at-least-once as for the Logstash exporter: a
receiver that closed the idle connection is detected before writing, any socket error closes the
connection and raises `RetryableError`, and the pipeline retries the whole batch.

Errors: `RetryableError` (from `export`, to the pipeline, never into the application); `ValueError`
naming the argument (or, from `from_env`, the variable) for a bad configuration.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import ssl
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import msgspec

from llmpulse.exporters._http import check_timeout
from llmpulse.exporters._socket import DatagramSocket, StreamConnection
from llmpulse.sdk._exporter import ExportResult

__all__ = [
    "DEFAULT_MAX_UDP_MESSAGE_BYTES",
    "ENV_APP_NAME",
    "ENV_FACILITY",
    "ENV_FORMAT",
    "ENV_HOST",
    "ENV_PORT",
    "ENV_PROTOCOL",
    "FACILITIES",
    "SD_ID",
    "SyslogExporter",
    "parse_facility",
    "severity",
    "summary",
]

#: The syslog receiver's host (`SyslogExporter.from_env` returns None when it is unset).
ENV_HOST: Final = "SYSLOG_HOST"
#: The receiver's port (default 514, 6514 for TLS).
ENV_PORT: Final = "SYSLOG_PORT"
#: ``udp`` (default), ``tcp`` or ``tls``.
ENV_PROTOCOL: Final = "SYSLOG_PROTOCOL"
#: A facility name (``local0`` default) or number 0..23.
ENV_FACILITY: Final = "SYSLOG_FACILITY"
#: The APP-NAME header field (default ``llmpulse``).
ENV_APP_NAME: Final = "SYSLOG_APP_NAME"
#: ``rfc5424`` (default: fields as structured data, a summary as MSG) or ``json`` (the item as MSG).
ENV_FORMAT: Final = "SYSLOG_FORMAT"
_ENV_VARS: Final = (ENV_HOST, ENV_PORT, ENV_PROTOCOL, ENV_FACILITY, ENV_APP_NAME, ENV_FORMAT)

#: The SD-ID of the structured data element (enterprise number 32473, reserved for documentation).
SD_ID: Final = "llmpulse@32473"
#: Largest UDP message by default: what RFC 5424 §6.1 says every receiver SHOULD accept.
DEFAULT_MAX_UDP_MESSAGE_BYTES: Final = 2048
#: The standard ports: RFC 5426 (UDP) and common use (TCP), RFC 5425 (TLS).
DEFAULT_PORT: Final = 514
DEFAULT_TLS_PORT: Final = 6514

#: Facility names (RFC 5424 table 1, with the names of rsyslog and glibc) and their numbers.
FACILITIES: Final[Mapping[str, int]] = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13, "console": 14,
    **{f"local{i}": 16 + i for i in range(8)},
}  # fmt: skip

Protocol = Literal["udp", "tcp", "tls"]
Format = Literal["rfc5424", "json"]

_PROTOCOLS: Final = ("udp", "tcp", "tls")
_FORMATS: Final = ("rfc5424", "json")
_ERR: Final = 3
_INFO: Final = 6
#: A log event's severity → syslog severity.
_LOG_SEVERITY: Final[Mapping[str, int]] = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
#: Item kinds whose ``status`` other than ``"ok"`` (or an ``error``) makes them ``err``.
_WITH_STATUS: Final = frozenset({"llm.call", "span", "tool", "orchestration"})
_BOM: Final = b"\xef\xbb\xbf"
#: Bytes never allowed in an SD-NAME besides those outside PRINTUSASCII.
_NOT_IN_SD_NAME: Final = frozenset('= ]"')
#: Smallest `max_udp_message_bytes`: what every IPv4 receiver MUST accept (RFC 5426 §3.2).
_MIN_UDP: Final = 480
#: How much of MSG a cut message keeps before SD params are dropped for it (when MSG is that long).
_MSG_KEPT: Final = 128
#: Largest UDP payload over IPv4.
_MAX_UDP: Final = 65507

_log: Final = logging.getLogger("llmpulse.exporters")
_encoder: Final = msgspec.json.Encoder()


# -- validation -------------------------------------------------------------------------------------


def _printusascii(text: str) -> bool:
    return all(33 <= ord(c) <= 126 for c in text)


def _check_header_field(name: str, value: object, limit: int) -> str:
    """A HOSTNAME / APP-NAME value: 1..`limit` printable US-ASCII characters (``-`` is nil)."""
    if not isinstance(value, str) or not value or len(value) > limit or not _printusascii(value):
        raise ValueError(
            f"{name} must be 1 to {limit} printable US-ASCII characters without spaces, got {value!r}"
        )
    return value


def parse_facility(value: object) -> int:
    """A facility name (``local0``, case-insensitive), number 0..23 or digit string, as its number.

    Raises `ValueError` naming `facility`. Does not block.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in FACILITIES:
            return FACILITIES[text]
        if text.isdigit():
            value = int(text)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 23:
        return value
    raise ValueError(f"facility must be a name ({', '.join(FACILITIES)}) or a number 0..23, got {value!r}")


def _default_hostname() -> str:
    """This host's name as a HOSTNAME field: printable US-ASCII only, at most 255, else nil."""
    name = socket.gethostname()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        name = "".join(c for c in name if 33 <= ord(c) <= 126)
    return name[:255] or "-"


# -- the message ------------------------------------------------------------------------------------


def _timestamp(item: Mapping[str, Any]) -> str:
    """RFC 5424 TIMESTAMP of the item: RFC 3339, at most microseconds, its own offset."""
    stamp = item.get("timestamp") or item.get("start_time")
    when: datetime | None = None
    if isinstance(stamp, datetime):
        when = stamp
    elif isinstance(stamp, str):
        try:
            when = datetime.fromisoformat(stamp)
        except ValueError:
            when = None
    if when is None:
        when = datetime.now(UTC)
    offset = when.utcoffset()
    if offset is None:  # naive: the schema's timestamps are aware, so this one is taken as UTC
        offset = timedelta(0)
    elif offset % timedelta(minutes=1):  # RFC 3339 offsets have no seconds: say it in UTC instead
        when, offset = when.astimezone(UTC), timedelta(0)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    if when.microsecond:
        text += f".{when.microsecond:06d}"
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def severity(item: Mapping[str, Any]) -> int:
    """The syslog severity of an item (see the module docs): 3 for failures, 6 by default. Does not block."""
    kind = item.get("type")
    if kind == "log":
        return _LOG_SEVERITY.get(str(item.get("severity")), _INFO)
    if kind in _WITH_STATUS:
        status = item.get("status")
        if item.get("error") is not None or (status is not None and status != "ok"):
            return _ERR
    return _INFO


def _msgid(item: Mapping[str, Any]) -> str:
    kind = str(item.get("type") or "")
    kind = "".join(c if 33 <= ord(c) <= 126 else "_" for c in kind)[:32]
    return kind or "-"


def _value_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


_NEEDS_ESCAPE: Final = re.compile(r'[\\"\]]')


def _escape(text: str) -> str:
    if _NEEDS_ESCAPE.search(text) is None:
        return text
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


#: SD-NAME validity by name: items repeat the same few dozen keys (bounded; cleared when full).
_sd_name_ok: dict[str, bool] = {}


def _valid_sd_name(name: str) -> bool:
    ok = _sd_name_ok.get(name)
    if ok is None:
        ok = 0 < len(name) <= 32 and _printusascii(name) and not _NOT_IN_SD_NAME.intersection(name)
        if len(_sd_name_ok) >= 4096:
            _sd_name_ok.clear()
        _sd_name_ok[name] = ok
    return ok


def _sd_params(item: Mapping[str, Any]) -> tuple[list[bytes], int]:
    """The item's SD-PARAMs, each as `` name="value"`` bytes, and how many values were left out."""
    params: list[bytes] = []
    skipped = 0

    def add(name: str, value: object) -> None:
        nonlocal skipped
        if value is None:
            return
        if isinstance(value, Mapping):
            for key, inner in value.items():
                add(f"{name}.{key}", inner)
        elif isinstance(value, str | int | float):
            if _valid_sd_name(name):
                text = f' {name}="{_escape(_value_text(value))}"'
                params.append(text.encode("utf-8", "replace"))
            else:
                skipped += 1
        else:  # lists (and anything a JSON form cannot hold) have no SD form
            skipped += 1

    append = params.append
    for key, value in item.items():
        kind = type(value)
        if kind is str or kind is int:  # the common case, inlined (this runs for every field)
            name = str(key)
            if _valid_sd_name(name):
                text = value if kind is str else str(value)
                append(f' {name}="{_escape(text)}"'.encode("utf-8", "replace"))
            else:
                skipped += 1
        elif value is not None:
            add(str(key), value)
    return params, skipped


def _error_text(error: object) -> str:
    if isinstance(error, Mapping):
        kind, message = error.get("type"), error.get("message")
        if kind or message:
            return ": ".join(str(part) for part in (kind, message) if part)
        return json.dumps(error, default=str)
    return str(error)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def summary(item: Mapping[str, Any]) -> str:
    """The human-readable MSG of an item, e.g. ``gpt-4o ok 812ms 1234 tokens $0.0123``. Does not block."""
    kind = item.get("type")
    status = str(item.get("status") or ("error" if item.get("error") is not None else "ok"))
    parts: list[str]
    if kind == "llm.call":
        parts = [str(item.get("model") or "?"), status]
        latency = _number(item.get("latency_ms"))
        if latency is not None:
            parts.append(f"{latency:.0f}ms")
        total = _number(item.get("total_tokens"))
        if total is None:
            total = (_number(item.get("input_tokens")) or 0) + (_number(item.get("output_tokens")) or 0)
        parts.append(f"{total:.0f} tokens")
        cost = _number(item.get("cost"))
        if cost is not None:
            parts.append("$" + (f"{cost:.6f}".rstrip("0").rstrip(".") or "0"))
    elif kind == "metric":
        value = _number(item.get("value"))
        parts = [str(item.get("name")), f"{value:g}" if value is not None else "?"]
        if item.get("unit"):
            parts.append(str(item["unit"]))
        parts.append(f"({item.get('metric_type') or 'gauge'})")
        return " ".join(parts)
    elif kind == "log":
        message = item.get("message")
        return f"{item.get('name')}: {message}" if message else str(item.get("name"))
    else:
        label = {"span": "span", "tool": "tool"}.get(str(kind), str(item.get("kind") or kind))
        parts = [label, str(item.get("name")), status]
        duration = _number(item.get("duration_ms"))
        if duration is not None:
            parts.append(f"{duration:.0f}ms")
    text = " ".join(parts)
    if item.get("error") is not None:
        text += f": {_error_text(item['error'])}"
    return text


def _json_bytes(value: object) -> bytes:
    """Compact JSON, ASCII only (non-ASCII ``\\u``-escaped, so MSG never needs a BOM)."""
    data = _encoder.encode(value)
    if data.isascii():
        return data
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=str).encode("ascii")


def _cut_utf8(data: bytes, size: int) -> bytes:
    """The longest prefix of `data` of at most `size` bytes that does not split a UTF-8 character."""
    if len(data) <= size:
        return data
    size = max(size, 0)
    while size > 0 and (data[size] & 0xC0) == 0x80:
        size -= 1
    return data[:size]


def _sd(params: Sequence[bytes]) -> bytes:
    return b"[" + SD_ID.encode() + b"".join(params) + b"]" if params else b"-"


def _fit_rfc5424(head: bytes, params: list[bytes], msg: bytes, limit: int) -> tuple[bytes, int]:
    """The message cut to `limit` bytes, and how many SD params it lost.

    SD params go first, largest first, until the header, the SD and the first `_MSG_KEPT` bytes of
    MSG fit; then MSG is cut to the room left, at a character boundary.
    """
    kept_msg = min(len(msg), _MSG_KEPT)
    budget = limit - len(head) - (1 + kept_msg if msg else 0)
    sd_len = len(_sd(params))
    kept = params
    if sd_len > budget:
        gone: set[int] = set()
        for i in sorted(range(len(params)), key=lambda i: len(params[i]), reverse=True):
            if sd_len <= budget:
                break
            gone.add(i)
            sd_len -= len(params[i])
            if len(gone) == len(params):
                sd_len = 1  # the NILVALUE "-"
        kept = [p for i, p in enumerate(params) if i not in gone]
    sd = _sd(kept)
    room = limit - len(head) - len(sd) - 1  # the space before MSG
    cut = b""
    if msg.startswith(_BOM):
        text = _cut_utf8(msg[len(_BOM) :], room - len(_BOM))
        cut = _BOM + text if text else b""
    elif room > 0:
        cut = _cut_utf8(msg, room)
    message = head + sd + (b" " + cut if cut else b"")
    return _cut_utf8(message, limit), len(params) - len(kept)


def _fit_json(head: bytes, item: Mapping[str, Any], limit: int) -> bytes:
    """A JSON-format message cut to `limit` bytes by leaving out null fields, then the largest ones
    (never ``type`` or the timestamp), so that MSG stays valid JSON; cut bytewise only if that fails."""
    room = limit - len(head) - 2  # "-" (no SD) and the space before MSG
    pairs = [(key, _json_bytes(str(key)) + b":" + _json_bytes(value)) for key, value in item.items()]
    size = 2 + sum(len(p) for _, p in pairs) + max(len(pairs) - 1, 0)
    gone: set[int] = set()
    keep = {"type", "timestamp", "start_time"}
    nulls = {i for i, value in enumerate(item.values()) if value is None}
    for i in sorted(range(len(pairs)), key=lambda i: (i not in nulls, -len(pairs[i][1]))):
        if size <= room:
            break
        if pairs[i][0] in keep:
            continue
        gone.add(i)
        size -= len(pairs[i][1]) + (1 if len(gone) < len(pairs) else 0)
    msg = b"{" + b",".join(p for i, (_, p) in enumerate(pairs) if i not in gone) + b"}"
    return _cut_utf8(head + b"- " + msg, limit)


class SyslogExporter:
    """Sends each item as one RFC 5424 syslog message to `host`:`port` over UDP, TCP or TLS.

    `port` defaults to 514 (6514 for ``protocol="tls"``, RFC 5425). `facility` is a name (``kern``,
    ``user``, ..., ``local0``..``local7``) or a number 0..23; `app_name` and `hostname` are header
    fields (`hostname` defaults to ``socket.gethostname()``; ``"-"`` sends the NILVALUE); `format`
    ``"rfc5424"`` puts the fields in structured data and a summary in MSG, ``"json"`` the item's JSON
    in MSG (see the module docs). `ssl_context` (TLS only) defaults to ``ssl.create_default_context()``.
    `timeout_s` bounds connecting, the TLS handshake and each write; `max_udp_message_bytes` (480 to
    65507) caps each UDP datagram; `name` is the exporter's key in ``collector.stats()["exporters"]``.
    Constructing it neither blocks nor connects; `export` blocks on the network (calls are serialised
    by the pipeline). Raises `ValueError` naming the argument when one is invalid.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int | None = None,
        protocol: Protocol = "udp",
        facility: str | int = "local0",
        app_name: str = "llmpulse",
        hostname: str | None = None,
        format: Format = "rfc5424",
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = 10.0,
        max_udp_message_bytes: int = DEFAULT_MAX_UDP_MESSAGE_BYTES,
        name: str = "syslog",
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty string, got {host!r}")
        if protocol not in _PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(_PROTOCOLS)}, got {protocol!r}")
        if port is None:
            port = DEFAULT_TLS_PORT if protocol == "tls" else DEFAULT_PORT
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
        if format not in _FORMATS:
            raise ValueError(f"format must be one of {', '.join(_FORMATS)}, got {format!r}")
        if ssl_context is not None:
            if not isinstance(ssl_context, ssl.SSLContext):
                raise ValueError(f"ssl_context must be an ssl.SSLContext or None, got {ssl_context!r}")
            if protocol != "tls":
                raise ValueError(f"ssl_context is only used with protocol='tls', not {protocol!r}")
        limit = max_udp_message_bytes
        if isinstance(limit, bool) or not isinstance(limit, int) or not _MIN_UDP <= limit <= _MAX_UDP:
            raise ValueError(
                f"max_udp_message_bytes must be an integer in {_MIN_UDP}..{_MAX_UDP}, got {limit!r}"
            )
        self.host: Final = host
        self.port: Final = port
        self.protocol: Final[Protocol] = protocol
        self.facility: Final = parse_facility(facility)
        self.app_name: Final = _check_header_field("app_name", app_name, 48)
        self.hostname: Final = (
            _default_hostname() if hostname is None else _check_header_field("hostname", hostname, 255)
        )
        self.format: Final[Format] = format
        self.timeout_s: Final = check_timeout(timeout_s)
        self.max_udp_message_bytes: Final = limit
        self.name: str = name or "syslog"
        self._where = f"{protocol}://{host}:{port}"
        label = f"syslog {self._where}"
        self._udp: DatagramSocket | None = None
        self._stream: StreamConnection | None = None
        if protocol == "udp":
            self._udp = DatagramSocket(host, port, timeout_s=self.timeout_s, label=label)
        else:
            self._stream = StreamConnection(
                host, port, timeout_s=self.timeout_s, label=label, tls=protocol == "tls",
                ssl_context=ssl_context,
            )  # fmt: skip
        self._middle = f" {self.hostname} {self.app_name} ".encode("ascii")
        self._truncated = 0
        self._dropped_sd_params = 0
        self._skipped_sd_params = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> SyslogExporter | None:
        """A `SyslogExporter` configured by ``SYSLOG_*`` variables, or None when ``SYSLOG_HOST`` is unset.

        Reads ``SYSLOG_HOST``, ``SYSLOG_PORT``, ``SYSLOG_PROTOCOL``, ``SYSLOG_FACILITY``,
        ``SYSLOG_APP_NAME`` and ``SYSLOG_FORMAT`` (empty ones count as unset). `environ` defaults to
        `os.environ`; keyword `overrides` are passed to the constructor and win over the environment
        (the variable they replace is not read). Raises `ValueError` naming the variable for a bad
        value. Does not block.
        """
        env = os.environ if environ is None else environ
        host = env.get(ENV_HOST, "").strip()
        if not host:
            return None
        kwargs: dict[str, Any] = {"host": host}
        readers: tuple[tuple[str, str, Any], ...] = (
            ("port", ENV_PORT, _env_port),
            ("protocol", ENV_PROTOCOL, _env_choice("protocol", _PROTOCOLS)),
            ("facility", ENV_FACILITY, parse_facility),
            ("app_name", ENV_APP_NAME, lambda text: _check_header_field("app_name", text, 48)),
            ("format", ENV_FORMAT, _env_choice("format", _FORMATS)),
        )
        for argument, variable, read in readers:
            text = env.get(variable, "").strip()
            if text and argument not in overrides:
                try:
                    kwargs[argument] = read(text)
                except ValueError as exc:
                    raise ValueError(f"{variable}: {exc}") from None
        kwargs.update(overrides)
        try:
            return cls(**kwargs)
        except ValueError as exc:  # each variable was checked: a clash with an override is left
            used = [name for name in _ENV_VARS if env.get(name, "").strip()]
            raise ValueError(f"{', '.join(used)} with {sorted(overrides)}: {exc}") from exc

    # -- encoding ------------------------------------------------------------------------------------

    def encode(self, items: Sequence[Mapping[str, Any]]) -> list[bytes]:
        """The messages `export` sends for `items` (dict forms), without framing; UDP ones already cut
        to `max_udp_message_bytes`. Does not block."""
        return [self._message(item, os.getpid())[0] for item in items]

    def _message(self, item: Mapping[str, Any], pid: int) -> tuple[bytes, bool, int, int]:
        """One message, whether it was cut, the SD params dropped to fit and those without an SD form."""
        pri = self.facility * 8 + severity(item)
        head = b"<%d>1 %b%b%d %b " % (
            pri,
            _timestamp(item).encode("ascii"),
            self._middle,
            pid,
            _msgid(item).encode("ascii"),
        )
        limit = self.max_udp_message_bytes if self.protocol == "udp" else None
        if self.format == "json":
            msg = _json_bytes(item)
            message = head + b"- " + msg
            if limit is not None and len(message) > limit:
                return _fit_json(head, item, limit), True, 0, 0
            return message, False, 0, 0
        params, skipped = _sd_params(item)
        text = summary(item)
        msg = text.encode("ascii") if text.isascii() else _BOM + text.encode("utf-8", "replace")
        message = head + _sd(params) + (b" " + msg if msg else b"")
        if limit is not None and len(message) > limit:
            fitted, dropped = _fit_rfc5424(head, params, msg, limit)
            return fitted, True, dropped, skipped
        return message, False, 0, skipped

    # -- the exporter protocol -----------------------------------------------------------------------

    def export(self, items: Sequence[dict[str, Any]]) -> ExportResult | None:
        """Send one message per item; blocks on the network. `RetryableError` on socket errors.

        An item that cannot be formatted is dropped (reason ``"invalid_item"``) without costing the
        rest of the batch.
        """
        pid = os.getpid()
        messages: list[bytes] = []
        truncated = dropped_params = skipped_params = invalid = 0
        errors: list[str] = []
        for item in items:
            try:
                message, cut, dropped, skipped = self._message(item, pid)
            except Exception as exc:  # one malformed item must not cost the rest of the batch
                invalid += 1
                if len(errors) < 3:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            messages.append(message)
            truncated += cut
            dropped_params += dropped
            skipped_params += skipped
        if messages:
            if self._udp is not None:
                self._udp.send_each(messages)
            elif self._stream is not None:
                self._stream.sendall(b"".join(b"%d %b" % (len(m), m) for m in messages))
        if truncated and not self._truncated:
            _log.warning(
                "syslog %s: a message exceeded max_udp_message_bytes=%d and was cut (counted in stats())",
                self._where,
                self.max_udp_message_bytes,
            )
        self._truncated += truncated
        self._dropped_sd_params += dropped_params
        self._skipped_sd_params += skipped_params
        if invalid:
            return ExportResult({"invalid_item": invalid}, tuple(errors))
        return None

    def stats(self) -> dict[str, int]:
        """Counters of what was sent in part: ``truncated`` (UDP messages cut to the size limit),
        ``dropped_sd_params`` (SD params left out of those to fit) and ``skipped_sd_params`` (values
        with no SD form: lists, invalid names). Counted once a batch is sent. Does not block."""
        return {
            "truncated": self._truncated,
            "dropped_sd_params": self._dropped_sd_params,
            "skipped_sd_params": self._skipped_sd_params,
        }

    def force_flush(self, timeout: float) -> bool:
        """Nothing is buffered here (each batch is sent by `export`); True."""
        return True

    def shutdown(self, timeout: float) -> None:
        """Close the socket (a TLS connection says goodbye first); blocks at most `timeout` seconds."""
        if self._udp is not None:
            self._udp.close()
        if self._stream is not None:
            self._stream.close(timeout=timeout)

    def __repr__(self) -> str:
        return f"<SyslogExporter {self.name!r} {self._where} {self.format}>"


def _env_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise ValueError(f"must be an integer port in 1..65535, got {text!r}")
    return port


def _env_choice(argument: str, choices: tuple[str, ...]) -> Any:
    def read(text: str) -> str:
        value = text.lower()
        if value not in choices:
            raise ValueError(f"{argument} must be one of {', '.join(choices)}, got {text!r}")
        return value

    return read
