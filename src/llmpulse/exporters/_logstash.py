"""`LogstashExporter`: telemetry items as JSON lines over TCP (or TLS), for Logstash's `json_lines` codec.

Each item becomes one JSON object on one line (``\\n``-terminated), as Logstash's ``tcp`` input with
``codec => json_lines`` reads it::

    {"@timestamp": "<the item's timestamp>", "@version": "1", "tags": [...],
     "@metadata": {"index": "<index>"}, <extra_fields>, <the item's fields>}

- ``@timestamp``: the item's ``timestamp`` (a span's ``start_time``), ISO 8601 in UTC; Logstash uses
  it as the event time instead of the time of arrival.
- ``@version``: always ``"1"``.
- ``tags``: the configured `tags`, as a list (``[]`` when none).
- ``@metadata``: ``{"index": index}``, only when `index` is set. Logstash's event constructor moves a
  top-level ``@metadata`` object into the event's metadata, which outputs can reference
  (``index => "%{[@metadata][index]}"`` in the elasticsearch output) but which is never written into
  the indexed document.
- `extra_fields`: merged into every line; they win over an item field of the same name.
- the item's own fields (LLM calls as the call event JSON: token-copilot fields plus llmpulse's).

Delivery (`_socket.StreamConnection`, shared with the syslog exporter): one persistent connection,
opened lazily on the first batch, and each batch written with
one `sendall`. Any socket error closes the connection and raises `RetryableError`, so the pipeline's
retry helper (the only one: backoff and jitter live there) retries the whole batch on a new
connection. Before writing, a connection that the receiver closed while idle (a Logstash restart) is
detected by a non-blocking peek that reads end-of-file, and replaced first, so a restart between
batches loses nothing. TCP cannot promise more: `sendall` returning means the bytes reached the
kernel's send buffer, not the receiver; a receiver dying mid-batch may have read part of it, and the
retried batch then delivers those lines twice (at-least-once). A receiver that dies after reading a
batch but before processing it loses that batch without the sender knowing.

A forked child never writes on its parent's connection: it opens its own.

Errors: `RetryableError` from `llmpulse.sdk._exporter` (raised by `export` to the pipeline, never
into the application); `ValueError` naming the argument for a bad configuration.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from llmpulse.exporters._http import check_timeout
from llmpulse.exporters._socket import StreamConnection
from llmpulse.sdk._exporter import EncodedBatch

__all__ = ["ENV_HOST", "ENV_PORT", "LogstashExporter"]

#: The environment variable holding the Logstash host (`LogstashExporter.from_env`).
ENV_HOST: Final = "LOGSTASH_HOST"
#: The environment variable holding the Logstash TCP port.
ENV_PORT: Final = "LOGSTASH_PORT"

#: Fields the exporter itself sets on every line; `extra_fields` may not name them.
_RESERVED: Final = frozenset({"@timestamp", "@version", "tags", "@metadata"})

_encoder = msgspec.json.Encoder()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class LogstashExporter:
    """Writes each batch as JSON lines to Logstash at `host`:`port` over TCP, or TLS when `tls` is set.

    `index` is sent as ``[@metadata][index]`` (see the module docs); `tags` become each line's
    ``tags`` list; `extra_fields` are merged into every line. `ssl_context` (implies `tls`) defaults to
    `ssl.create_default_context()` (certificate and host name checked). `timeout_s` bounds connecting
    and each write; `name` is the exporter's key in ``collector.stats()["exporters"]``. `export`
    blocks on the network; calls are serialised by the pipeline. Raises `ValueError` naming the
    argument when one is invalid.
    """

    def __init__(
        self,
        host: str,
        port: int,
        index: str | None = None,
        tags: Iterable[str] = (),
        extra_fields: Mapping[str, Any] | None = None,
        tls: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = 10.0,
        name: str = "logstash",
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty string, got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
        if index is not None and (not isinstance(index, str) or not index):
            raise ValueError(f"index must be a non-empty string or None, got {index!r}")
        if isinstance(tags, str):
            raise ValueError(f"tags must be an iterable of strings, not a string: {tags!r}")
        tag_list = list(tags)
        if not all(isinstance(t, str) for t in tag_list):
            raise ValueError(f"tags must be strings, got {tag_list!r}")
        extra = dict(extra_fields or {})
        if not all(isinstance(k, str) for k in extra):
            raise ValueError("extra_fields keys must be strings")
        clash = sorted(_RESERVED.intersection(extra))
        if clash:
            raise ValueError(f"extra_fields must not set {', '.join(clash)}: the exporter sets them")
        try:
            _encoder.encode(extra)
        except (TypeError, msgspec.EncodeError) as exc:
            raise ValueError(f"extra_fields must be JSON-encodable: {exc}") from exc
        check_timeout(timeout_s)
        if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
            raise ValueError(f"ssl_context must be an ssl.SSLContext or None, got {ssl_context!r}")
        self.host: Final = host
        self.port: Final = port
        self.index: Final = index
        self.tags: Final = tuple(tag_list)
        self.extra_fields: Final[Mapping[str, Any]] = extra
        self.tls: Final = bool(tls) or ssl_context is not None
        self.timeout_s: Final = float(timeout_s)
        self.name: str = name or "logstash"
        self._where = f"{'tls' if self.tls else 'tcp'}://{host}:{port}"
        self._conn = StreamConnection(
            host,
            port,
            timeout_s=self.timeout_s,
            label=f"logstash {self._where}",
            tls=self.tls,
            ssl_context=ssl_context,
        )
        # The constant fields, in the order written: @version, tags, @metadata, then extra_fields.
        head: dict[str, Any] = {"@version": "1", "tags": list(self.tags)}
        if index is not None:
            head["@metadata"] = {"index": index}
        head.update(extra)
        self._head: Final = head
        self._head_bytes: Final = _encoder.encode(head)[1:-1]  # without the braces
        self._extra_keys: Final = tuple(_encoder.encode(k) + b":" for k in extra)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> LogstashExporter | None:
        """A `LogstashExporter` for ``LOGSTASH_HOST`` and ``LOGSTASH_PORT``, or None when either is unset.

        `environ` defaults to `os.environ`; keyword `overrides` are passed to the constructor (they win
        over the environment). Raises `ValueError` naming the variable for a bad port. Does not block.
        """
        env = os.environ if environ is None else environ
        host = env.get(ENV_HOST, "").strip()
        port_text = env.get(ENV_PORT, "").strip()
        if not host or not port_text:
            return None
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError(f"{ENV_PORT} must be an integer port, got {port_text!r}") from None
        kwargs: dict[str, Any] = {"host": host, "port": port}
        kwargs.update(overrides)
        try:
            return cls(**kwargs)
        except ValueError as exc:
            raise ValueError(f"{ENV_HOST} / {ENV_PORT}: {exc}") from exc

    # -- encoding ------------------------------------------------------------------------------

    def encode(self, items: Sequence[dict[str, Any]]) -> bytes:
        """The JSON lines `export` writes for `items` (dict forms); does not block."""
        lines: list[dict[str, Any]] = []
        for item in items:
            stamp = item.get("timestamp") or item.get("start_time")
            line: dict[str, Any] = {"@timestamp": stamp if isinstance(stamp, str) else _now_iso()}
            line.update(item)
            line.update(self._head)
            lines.append(line)
        return _encoder.encode_lines(lines)

    def _encode_batch(self, batch: EncodedBatch) -> bytes:
        """Splice the constant fields into the pipeline's pre-encoded lines (no re-encoding).

        Falls back to `encode` when an extra field might repeat one of the items' keys (JSON with a
        duplicate key is read differently by different parsers).
        """
        if any(key in batch.lines for key in self._extra_keys):
            return self.encode(batch.dicts())
        out: list[bytes] = []
        head = self._head_bytes
        for item, line in zip(batch.items, batch.split_lines(), strict=True):
            stamp = getattr(item, "timestamp", None) or getattr(item, "start_time", None)
            stamp_bytes = (
                _encoder.encode(stamp) if isinstance(stamp, datetime) else _encoder.encode(_now_iso())
            )
            rest = line[1:]
            sep = b"," if not rest.startswith(b"}") else b""
            out.append(b'{"@timestamp":' + stamp_bytes + b"," + head + sep + rest)
        return b"".join(out)

    # -- the exporter protocol -----------------------------------------------------------------

    def export(self, items: Sequence[dict[str, Any]]) -> None:
        """Write the batch as JSON lines; blocks on the network. Raises `RetryableError` on socket errors."""
        if items:
            self._conn.sendall(self.encode(items))

    def export_encoded(self, batch: EncodedBatch) -> None:
        """`export` for a batch the pipeline encoded once; raises as `export`."""
        if batch.items:
            self._conn.sendall(self._encode_batch(batch))

    def force_flush(self, timeout: float) -> bool:
        """Nothing is buffered here (each batch is written by `export`); True."""
        return True

    def shutdown(self, timeout: float) -> None:
        """Close the connection (a TLS one says goodbye first); blocks at most `timeout` seconds."""
        self._conn.close(timeout=timeout)

    def __repr__(self) -> str:
        return f"<LogstashExporter {self.name!r} {self._where}>"
