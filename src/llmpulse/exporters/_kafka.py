"""`KafkaExporter`: one Kafka message per telemetry item, through confluent-kafka (librdkafka).

Message (details in docs/exporters/kafka.md):

- value: the item's JSON, UTF-8 (LLM calls as the call event JSON: token-copilot fields plus
  llmpulse's), byte for byte the line the pipeline encoded, without the newline.
- key: the `partition_by` field's value as UTF-8 (``user_id`` by default, or ``user_id_hash`` when
  user ids are hashed; ``org_id``, ``model``, ``tenant_id``), or no key when `partition_by` is None or
  the item has no such field (only LLM calls have them) or its value is None or empty. The default
  partitioner (``murmur2_random``, as the Java client) sends equal keys to the same partition and
  spreads keyless messages over the partitions.
- headers: ``content-type: application/json``, ``type: <the item's type>`` (``llm.call``, ``span``,
  ``tool``, ``orchestration``, ``metric``, ``log``) and ``llmpulse-version: <the SDK's version>``.

Delivery: the producer (``acks=all``, ``enable.idempotence=true``) is created on the first export,
never by the constructor, and again in a forked child or after a fatal producer error. `export`
produces the batch, then waits for every delivery report, at most `timeout_s` (each message's
``message.timeout.ms`` is 1.5 s shorter, half of `timeout_s` below 3 s, so its report arrives in time):

- every message delivered: None;
- some failed permanently (too large, unknown topic, not authorised) and the rest delivered:
  `ExportResult` ``{"kafka_delivery_failed": n}``;
- any message not delivered for a transient reason (broker down, timed out, fatal producer error):
  `RetryableError`. The exporter remembers which messages of that batch were delivered, so the
  pipeline's retry of the same batch sends only the others: no duplicate for a partial failure.

That is at-least-once: a message whose report never came (librdkafka could not tell) is sent again.
A full local queue (`BufferError`) is waited out by polling, within the same deadline. An attempt that
delivered nothing leaves the next one a new producer (fresh connections, metadata and producer id):
a broker that restarted without this producer's state otherwise refuses it for good.

Errors: `RetryableError` from `llmpulse.sdk._exporter` (raised by `export` to the pipeline, never into
the application); `ValueError` naming the argument for a bad configuration (librdkafka checks the whole
configuration in the constructor, without connecting); `ImportError` naming the ``llmpulse[kafka]``
extra when confluent-kafka is missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal

import msgspec

from llmpulse._version import __version__
from llmpulse.events import ITEM_TYPES
from llmpulse.exporters._http import check_timeout
from llmpulse.sdk._exporter import EncodedBatch, ExportResult, RetryableError

__all__ = [
    "ENV_BOOTSTRAP_SERVERS",
    "ENV_COMPRESSION",
    "ENV_PARTITION_BY",
    "ENV_SASL_MECHANISM",
    "ENV_SASL_PASSWORD",
    "ENV_SASL_USERNAME",
    "ENV_SECURITY_PROTOCOL",
    "ENV_TOPIC",
    "KafkaExporter",
]

#: Comma-separated ``host:port`` list (`KafkaExporter.from_env` returns None when it is unset).
ENV_BOOTSTRAP_SERVERS: Final = "KAFKA_BOOTSTRAP_SERVERS"
#: The topic (default ``llm-costs``).
ENV_TOPIC: Final = "KAFKA_TOPIC"
#: ``user_id``, ``org_id``, ``model``, ``tenant_id``, or ``none`` for keyless messages.
ENV_PARTITION_BY: Final = "KAFKA_PARTITION_BY"
#: ``none``, ``gzip``, ``snappy``, ``lz4`` or ``zstd``.
ENV_COMPRESSION: Final = "KAFKA_COMPRESSION"
#: ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``.
ENV_SECURITY_PROTOCOL: Final = "KAFKA_SECURITY_PROTOCOL"
#: ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``.
ENV_SASL_MECHANISM: Final = "KAFKA_SASL_MECHANISM"
ENV_SASL_USERNAME: Final = "KAFKA_SASL_USERNAME"
ENV_SASL_PASSWORD: Final = "KAFKA_SASL_PASSWORD"

PartitionBy = Literal["user_id", "org_id", "model", "tenant_id"]
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

PARTITION_BY_FIELDS: Final = ("user_id", "org_id", "model", "tenant_id")
COMPRESSIONS: Final = ("none", "gzip", "snappy", "lz4", "zstd")
SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

#: `ExportResult` reason for messages Kafka refused for good.
DELIVERY_FAILED: Final = "kafka_delivery_failed"

#: librdkafka settings the exporter starts from; `producer_config` may override any of them.
PRODUCER_DEFAULTS: Final[Mapping[str, Any]] = {
    "acks": "all",  # every in-sync replica has the message before it counts as delivered
    "enable.idempotence": True,  # librdkafka's own retries never duplicate or reorder
    "linger.ms": 5,  # each export flushes at once anyway; this only groups one batch's messages
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 100_000,
    "partitioner": "murmur2_random",  # the Java client's partitioner: same key → same partition
    "socket.keepalive.enable": True,
    "reconnect.backoff.max.ms": 2_000,  # a restarted broker is found again within 2 s
    "log.connection.close": False,
}

#: librdkafka properties set through an argument, and that argument's name.
_ARGUMENT_OF: Final[Mapping[str, str]] = {
    "bootstrap.servers": "bootstrap_servers",
    "metadata.broker.list": "bootstrap_servers",
    "compression.type": "compression",
    "compression.codec": "compression",
    "security.protocol": "security_protocol",
    "sasl.username": "sasl_username",
    "sasl.password": "sasl_password",
    "message.timeout.ms": "timeout_s",
    "delivery.timeout.ms": "timeout_s",
    "error_cb": "(the exporter's own)",
    "on_delivery": "(the exporter's own)",
    "dr_cb": "(the exporter's own)",
    "dr_msg_cb": "(the exporter's own)",
}
_MECHANISM_KEYS: Final = ("sasl.mechanism", "sasl.mechanisms")

_TOPIC_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")
_HOST_PORT_RE: Final = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^\s:,\[\]/]+):(\d{1,5})")
_EXTRA = "pip install 'llmpulse[kafka]'"

# delivery states of one message of a batch
_PENDING, _SENT, _DELIVERED, _FAILED = 0, 1, 2, 3

_encoder = msgspec.json.Encoder()
_TYPE_OF: Final[Mapping[type, str]] = {cls: tag for tag, cls in ITEM_TYPES.items()}
_log = logging.getLogger("llmpulse.exporters.kafka")
#: Producers inherited through fork: never destroyed in the child (librdkafka's threads are not there).
_fork_orphans: list[Any] = []


def _choice(value: object, what: str, choices: Sequence[str], upper: bool) -> str:
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str):
        text = text.upper() if upper else text.lower()
    if text not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}; got {value!r}")
    return str(text)


def _servers(value: object) -> str:
    parts = value.split(",") if isinstance(value, str) else value
    if isinstance(parts, str | bytes) or not isinstance(parts, Sequence):
        raise ValueError(f"bootstrap_servers must be a 'host:port' string or a list of them, got {value!r}")
    hosts = [p.strip() if isinstance(p, str) else p for p in parts]
    if not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise ValueError(f"bootstrap_servers must name at least one 'host:port', got {value!r}")
    for host in hosts:
        match = _HOST_PORT_RE.fullmatch(host)
        if match is None or not 0 < int(match.group(1)) < 65536:
            raise ValueError(f"bootstrap_servers: {host!r} is not 'host:port' (e.g. 'kafka-1:9092')")
    return ",".join(hosts)


def _sasl_config(
    protocol: str, mechanism: object, username: object, password: object, extra: Mapping[str, Any]
) -> dict[str, str]:
    """The ``sasl.*`` settings for the arguments; `ValueError` naming the argument that does not fit."""
    sasl = protocol.startswith("SASL_")
    mechanism_elsewhere = any(key in extra for key in _MECHANISM_KEYS)  # e.g. GSSAPI, OAUTHBEARER
    config: dict[str, str] = {}
    if mechanism is not None:
        config["sasl.mechanism"] = _choice(mechanism, "sasl_mechanism", SASL_MECHANISMS, upper=True)
        if mechanism_elsewhere:
            raise ValueError("sasl_mechanism: set it either as an argument or in producer_config")
        if not sasl:
            raise ValueError(
                f"sasl_mechanism needs security_protocol SASL_SSL or SASL_PLAINTEXT, not {protocol}"
            )
    elif sasl and not mechanism_elsewhere:
        raise ValueError(f"sasl_mechanism is required with security_protocol {protocol}")
    for what, value in (("sasl_username", username), ("sasl_password", password)):
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise ValueError(f"{what} must be a non-empty string or None")
        if not sasl:
            raise ValueError(f"{what} needs security_protocol SASL_SSL or SASL_PLAINTEXT, not {protocol}")
        config["sasl." + what[5:]] = value
    if mechanism is not None and (username is None or password is None):
        raise ValueError(f"sasl_username and sasl_password are required with sasl_mechanism {mechanism}")
    return config


def _option_name(kwarg: str) -> str:
    """``ssl_ca_location`` → ``ssl.ca.location``; a callback keeps its last underscore (``stats_cb``)."""
    if kwarg.endswith("_cb"):
        return kwarg[:-3].replace("_", ".") + "_cb"
    return kwarg.replace("_", ".")


def _import_kafka() -> Any:
    try:
        import confluent_kafka
    except ImportError as exc:
        raise ImportError(f"KafkaExporter needs confluent-kafka: {_EXTRA}") from exc
    return confluent_kafka


class _LibrdkafkaLog:
    """librdkafka's log lines, at DEBUG: its errors also reach `error_cb`, and from there the pipeline."""

    def log(self, level: int, fmt: str, *args: object) -> None:
        with contextlib.suppress(Exception):  # see _guarded: a pending fatal error fails any call
            _log.debug("librdkafka: " + fmt, *args)


def _guarded(call: Callable[..., Any], *args: Any) -> BaseException | None:
    """Run a librdkafka call that raises nothing by design; return what it raised instead.

    After a fatal producer error confluent-kafka still runs Python callbacks with that error pending,
    so `flush` and `poll` may raise a `SystemError`, or even the bare `KafkaError` object, which is no
    exception class (``except Exception`` misses it). Either way the producer must be replaced.
    """
    try:
        call(*args)
    except (KeyboardInterrupt, SystemExit):
        raise
    except:  # noqa: E722 -- the bare KafkaError described above is no BaseException subclass
        caught: Any = sys.exc_info()[1]
        return caught if isinstance(caught, BaseException) else RuntimeError(str(caught))
    return None


class _Batch:
    """What became of each message of one batch, across the pipeline's attempts at it."""

    __slots__ = ("attempt", "broken", "errors", "payload", "refusals", "sent_in", "state")

    def __init__(self, payload: object, size: int) -> None:
        self.payload = payload  # held, so its identity cannot be reused by another batch
        self.state = [_PENDING] * size
        self.sent_in = [0] * size
        self.attempt = 0
        self.errors: list[str] = []  # this attempt's transient errors
        self.refusals: list[str] = []  # why messages failed for good, over every attempt
        self.broken = False  # a report could not be read: the producer hit a fatal error

    def count(self, state: int) -> int:
        return self.state.count(state)

    def note(self, error: str, permanent: bool = False) -> None:
        errors = self.refusals if permanent else self.errors
        if error not in errors and len(errors) < 3:
            errors.append(error)

    def reporter(self, index: int) -> Callable[[Any, Any], None]:
        attempt = self.attempt

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is None:
                self.state[index] = _DELIVERED  # an earlier copy counts too: the item got there
            elif self.sent_in[index] == attempt and self.state[index] != _DELIVERED:
                try:
                    permanent = _is_permanent(err)
                    text = f"{err.name()}: {err.str()}"
                except Exception:  # unreadable with a fatal error pending: the message stays in doubt
                    self.broken = True
                    return
                self.state[index] = _FAILED if permanent else _PENDING
                self.note(text, permanent)

        return on_delivery


def _is_permanent(err: Any) -> bool:
    """Errors a retry cannot fix: the message or the topic is wrong, or the client may not write."""
    from confluent_kafka import KafkaError

    return err.code() in {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.POLICY_VIOLATION,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._INVALID_ARG,
    }


class KafkaExporter:
    """Produces each telemetry item as one message on `topic` of the Kafka cluster at `bootstrap_servers`.

    `bootstrap_servers` is ``"host:port,host:port"`` or a list of ``host:port``. `partition_by` names the
    field used as the message key (None: no key); `compression` sets ``compression.type``;
    `security_protocol`, `sasl_mechanism`, `sasl_username` and `sasl_password` configure TLS and SASL.
    librdkafka settings go in `producer_config` (their own names, e.g. ``{"ssl.ca.location": path}``)
    or as keyword arguments with underscores for dots (``ssl_ca_location=path``); they override the
    `PRODUCER_DEFAULTS`. `timeout_s` bounds one `export`; `name` is the exporter's key in
    ``collector.stats()["exporters"]``. The constructor checks everything with librdkafka (a handle
    with no brokers, destroyed at once: it never connects) and raises `ValueError` naming the argument;
    `export` blocks on the network; calls are serialised by the pipeline.
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        topic: str = "llm-costs",
        partition_by: PartitionBy | None = "user_id",
        compression: Compression = "none",
        security_protocol: SecurityProtocol = "PLAINTEXT",
        sasl_mechanism: SaslMechanism | None = None,
        sasl_username: str | None = None,
        sasl_password: str | None = None,
        timeout_s: float = 10.0,
        name: str = "kafka",
        producer_config: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        servers = _servers(bootstrap_servers)
        if not isinstance(topic, str) or not _TOPIC_RE.fullmatch(topic) or topic in (".", ".."):
            raise ValueError(f"topic must be 1-249 characters of [A-Za-z0-9._-], got {topic!r}")
        if partition_by is not None and partition_by not in PARTITION_BY_FIELDS:
            raise ValueError(f"partition_by must be one of {', '.join(PARTITION_BY_FIELDS)} or None")
        codec = _choice(compression, "compression", COMPRESSIONS, upper=False)
        protocol = _choice(security_protocol, "security_protocol", SECURITY_PROTOCOLS, upper=True)
        timeout = check_timeout(timeout_s)
        if timeout < 0.1:
            raise ValueError(f"timeout_s must be at least 0.1, got {timeout_s!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        extra = self._extra_config(producer_config, options)
        sasl_config = _sasl_config(protocol, sasl_mechanism, sasl_username, sasl_password, extra)
        mechanism = sasl_config.get("sasl.mechanism")

        self.bootstrap_servers: Final = servers
        self.topic: Final = topic
        self.partition_by: Final[PartitionBy | None] = partition_by
        # with TelemetryConfig(hash_user_ids=True) a call carries user_id_hash instead of user_id
        self._key_fallback: Final = "user_id_hash" if partition_by == "user_id" else ""
        self.compression: Final = codec
        self.security_protocol: Final = protocol
        self.sasl_mechanism: Final = mechanism
        self.sasl_username: Final = sasl_username
        self.timeout_s: Final = timeout
        self.name: str = name
        timeout_ms = round(timeout * 1000)
        #: each message's delivery timeout, short enough for its report to arrive before `export` stops
        #: waiting (librdkafka looks for timed-out messages once a second)
        self.message_timeout_ms: Final = timeout_ms - min(1_500, timeout_ms // 2)
        config: dict[str, Any] = {
            **PRODUCER_DEFAULTS,
            "request.timeout.ms": min(30_000, self.message_timeout_ms),
            "client.id": f"llmpulse-{__version__}",
            "logger": _LibrdkafkaLog(),
            **extra,
            "compression.type": codec,
            "security.protocol": protocol.lower(),
            "message.timeout.ms": self.message_timeout_ms,
        }
        config.update(sasl_config)
        self._kafka = _import_kafka()
        self._check(config)
        self._config: Final = config
        self._where = f"kafka {servers} topic {topic!r}"
        self._headers: dict[str, list[tuple[str, bytes]]] = {}
        self._producer: Any = None
        self._pid = os.getpid()
        self._pending: _Batch | None = None
        self._client_error: str | None = None
        self._replace = False

    @staticmethod
    def _extra_config(
        producer_config: Mapping[str, Any] | None, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        if producer_config is not None and not isinstance(producer_config, Mapping):
            raise ValueError(f"producer_config must be a mapping or None, got {producer_config!r}")
        extra: dict[str, Any] = {}
        for key, value in (producer_config or {}).items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"producer_config keys must be non-empty strings, got {key!r}")
            extra[key] = value
        for kwarg, value in options.items():
            key = _option_name(kwarg)
            if key in extra:
                raise ValueError(f"producer_config: {key!r} is given twice (as {kwarg}= and in the mapping)")
            extra[key] = value
        for key in extra:
            argument = _ARGUMENT_OF.get(key)
            if argument is not None:
                raise ValueError(f"producer_config must not set {key!r}: it is set by {argument}")
        return extra

    def _check(self, config: Mapping[str, Any]) -> None:
        """Let librdkafka check `config` on a handle with no brokers (it never connects)."""
        try:
            probe = self._kafka.Producer({**config, "log_level": 0})
        except self._kafka.KafkaException as exc:
            text = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
            arguments = [arg for key, arg in _ARGUMENT_OF.items() if key in text and "(" not in arg]
            if any(key in text for key in _MECHANISM_KEYS) or "SASL mechanism" in text:
                arguments.append("sasl_mechanism")
            raise ValueError(f"{(arguments or ['producer_config'])[0]}: librdkafka refused: {text}") from None
        del probe

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> KafkaExporter | None:
        """A `KafkaExporter` for ``KAFKA_BOOTSTRAP_SERVERS`` and the other ``KAFKA_*`` variables, or None
        when ``KAFKA_BOOTSTRAP_SERVERS`` is unset or empty.

        ``KAFKA_TOPIC``, ``KAFKA_PARTITION_BY`` (``none`` for no key), ``KAFKA_COMPRESSION``,
        ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_MECHANISM``, ``KAFKA_SASL_USERNAME`` and
        ``KAFKA_SASL_PASSWORD`` are read when set. `environ` defaults to `os.environ`; keyword
        `overrides` go to the constructor and win over the environment. Raises `ValueError` naming
        the variable for a bad value. Does not block or connect.
        """
        env = os.environ if environ is None else environ
        servers = env.get(ENV_BOOTSTRAP_SERVERS, "").strip()
        if not servers:
            return None
        variables = {
            "bootstrap_servers": ENV_BOOTSTRAP_SERVERS,
            "topic": ENV_TOPIC,
            "partition_by": ENV_PARTITION_BY,
            "compression": ENV_COMPRESSION,
            "security_protocol": ENV_SECURITY_PROTOCOL,
            "sasl_mechanism": ENV_SASL_MECHANISM,
            "sasl_username": ENV_SASL_USERNAME,
            "sasl_password": ENV_SASL_PASSWORD,
        }
        kwargs: dict[str, Any] = {}
        for argument, variable in variables.items():
            raw = env.get(variable, "")
            value: str | None = raw if argument == "sasl_password" else raw.strip()
            if value:
                if argument == "partition_by":
                    value = None if value.lower() == "none" else value.lower()
                    if value is not None and value not in PARTITION_BY_FIELDS:
                        choices = ", ".join((*PARTITION_BY_FIELDS, "none"))
                        raise ValueError(f"{variable} must be one of {choices}; got {raw!r}")
                kwargs[argument] = value
        kwargs.update(overrides)
        try:
            return cls(**kwargs)
        except ValueError as exc:
            text = str(exc)
            for argument, variable in variables.items():
                if text.startswith(argument) and argument not in overrides:
                    raise ValueError(f"{variable}: {text}") from exc
            raise

    # -- the exporter protocol -----------------------------------------------------------------

    def export(self, items: Sequence[dict[str, Any]]) -> ExportResult | None:
        """Produce one message per item and wait for their delivery reports (at most `timeout_s`).

        Returns None when every message was delivered, an `ExportResult` naming the ones Kafka
        refused for good; raises `RetryableError` while any is undelivered for a transient reason
        (the retry of the same `items` object sends only those). Blocks on the network.
        """
        if not items:
            return None
        field, fallback = self.partition_by, self._key_fallback
        values = [_encoder.encode(item) for item in items]
        keys = [(_key(item.get(field)) or _key(item.get(fallback))) if field else None for item in items]
        kinds = [str(item.get("type", "")) for item in items]
        return self._send(items, values, keys, kinds)

    def export_encoded(self, batch: EncodedBatch) -> ExportResult | None:
        """`export` for a batch the pipeline encoded once: each line is a message value as it is
        (newline removed), without re-encoding. Blocks on the network; answers and raises as `export`."""
        if not batch.items:
            return None
        field, fallback = self.partition_by, self._key_fallback
        values = [line[:-1] for line in batch.split_lines()]
        keys = [
            (_key(getattr(item, field, None)) or _key(getattr(item, fallback, None))) if field else None
            for item in batch.items
        ]
        kinds = [_TYPE_OF.get(type(item), "") for item in batch.items]
        return self._send(batch, values, keys, kinds)

    def force_flush(self, timeout: float) -> bool:
        """Wait up to `timeout` s for messages still awaiting a delivery report; True when none is left."""
        producer = self._producer if self._pid == os.getpid() else None
        if producer is None:
            return True
        left: list[int] = []
        if _guarded(lambda: left.append(producer.flush(max(0.0, timeout)))) is not None:
            self._replace = True
            return False
        return left == [0]

    def shutdown(self, timeout: float) -> None:
        """Wait up to `timeout` s for outstanding delivery reports, then drop the rest and close."""
        if self._pid != os.getpid():
            self._forget_parent()
            return
        producer, self._producer = self._producer, None
        self._pending = None
        if producer is not None:
            deadline = time.monotonic() + max(0.0, timeout)
            closing = _retire(producer, timeout)
            del producer  # the closing thread must hold the last reference
            closing.join(max(0.0, deadline - time.monotonic()))

    def __repr__(self) -> str:
        security = self.security_protocol
        if self.sasl_mechanism is not None:
            security += f"/{self.sasl_mechanism}"
        return (
            f"<KafkaExporter {self.name!r} {self.bootstrap_servers} topic={self.topic!r} "
            f"partition_by={self.partition_by} compression={self.compression} {security}>"
        )

    # -- the producer --------------------------------------------------------------------------

    def _on_error(self, err: Any) -> None:
        """librdkafka's client-level errors (connection refused, SASL failures, fatal errors)."""
        try:
            if err.fatal():
                self._replace = True
            if err.code() != self._kafka.KafkaError._ALL_BROKERS_DOWN or self._client_error is None:
                self._client_error = err.str()
        except Exception:  # never raise into librdkafka's callback
            self._replace = True

    def _forget_parent(self) -> None:
        if self._producer is not None:
            _fork_orphans.append(self._producer)  # destroying it here could wait on absent threads
        self._producer = None
        self._pending = None
        self._pid = os.getpid()

    def _producer_for_export(self) -> Any:
        if self._pid != os.getpid():
            self._forget_parent()
        if self._producer is not None and self._replace:
            old, self._producer = self._producer, None
            _retire(old, 0.0)
            del old
        if self._producer is None:
            self._replace = False
            config = {**self._config, "bootstrap.servers": self.bootstrap_servers, "error_cb": self._on_error}
            try:
                self._producer = self._kafka.Producer(config)
            except self._kafka.KafkaException as exc:
                raise RetryableError(f"{self._where}: cannot create the producer: {exc}") from exc
        return self._producer

    def _headers_for(self, kind: str) -> list[tuple[str, bytes]]:
        headers = self._headers.get(kind)
        if headers is None:
            headers = [
                ("content-type", b"application/json"),
                ("type", kind.encode()),
                ("llmpulse-version", __version__.encode()),
            ]
            self._headers[kind] = headers
        return headers

    # -- one attempt at a batch ----------------------------------------------------------------

    def _send(
        self, payload: object, values: list[bytes], keys: list[bytes | None], kinds: list[str]
    ) -> ExportResult | None:
        deadline = time.monotonic() + self.timeout_s
        batch = self._pending
        if batch is None or batch.payload is not payload or len(batch.state) != len(values):
            batch = _Batch(payload, len(values))
        self._pending = batch
        batch.attempt += 1
        batch.errors.clear()
        self._client_error = None
        producer = self._producer_for_export()
        delivered_before = batch.count(_DELIVERED)
        if _SENT in batch.state:  # reports still owed by the previous attempt come first
            self._flush(producer, batch, deadline)
        for index, state in enumerate(batch.state):
            if state == _SENT:
                batch.state[index] = _PENDING  # no report yet: send again (at-least-once)
        for index, state in enumerate(batch.state):
            if state == _PENDING and not self._produce(producer, batch, index, values, keys, kinds, deadline):
                break
        self._flush(producer, batch, deadline)
        unsettled = _PENDING in batch.state or _SENT in batch.state
        if unsettled and batch.count(_DELIVERED) == delivered_before:
            # nothing got through: start the next attempt on a new producer (new connections,
            # metadata and producer id), e.g. after a broker restart that forgot this producer's id
            self._replace = True
        return self._outcome(batch)

    def _produce(
        self,
        producer: Any,
        batch: _Batch,
        index: int,
        values: list[bytes],
        keys: list[bytes | None],
        kinds: list[str],
        deadline: float,
    ) -> bool:
        """Hand one message to librdkafka; False when the attempt should stop producing."""
        kafka = self._kafka
        batch.sent_in[index] = batch.attempt
        while True:
            try:
                producer.produce(
                    self.topic,
                    value=values[index],
                    key=keys[index],
                    headers=self._headers_for(kinds[index]),
                    on_delivery=batch.reporter(index),
                )
            except BufferError:  # librdkafka's queue is full: serve reports to make room
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    batch.note("BufferError: librdkafka's local queue stayed full")
                    return False
                if _guarded(producer.poll, min(0.1, remaining)) is not None:
                    self._replace = True
                    batch.note("fatal producer error while waiting for queue space")
                    return False
                continue
            except kafka.KafkaException as exc:
                err = exc.args[0] if exc.args else None
                text = f"{err.name()}: {err.str()}" if err is not None else str(exc)
                if err is not None and (err.fatal() or err.code() == kafka.KafkaError._FATAL):
                    self._replace = True
                    batch.note(text)
                    return False
                permanent = err is not None and _is_permanent(err)
                batch.note(text, permanent)
                if permanent:
                    batch.state[index] = _FAILED
                return True
            except (KeyboardInterrupt, SystemExit):
                raise
            except:  # noqa: E722 -- see _guarded: a fatal error pending from an earlier callback
                self._replace = True
                batch.note(f"fatal producer error: {sys.exc_info()[1]}")
                return False
            batch.state[index] = _SENT
            return True

    def _flush(self, producer: Any, batch: _Batch, deadline: float) -> None:
        error = _guarded(producer.flush, max(0.0, deadline - time.monotonic()))
        if error is not None or batch.broken:  # a fatal producer error: a new producer next time
            self._replace = True
            batch.note(f"fatal producer error: {error if error is not None else 'unreadable report'}")

    def _outcome(self, batch: _Batch) -> ExportResult | None:
        size = len(batch.state)
        delivered, failed = batch.count(_DELIVERED), batch.count(_FAILED)
        missing = size - delivered - failed
        if missing == 0:
            self._pending = None
            if failed:
                return ExportResult({DELIVERY_FAILED: failed}, tuple(batch.refusals))
            return None
        reasons = "; ".join(batch.errors) or "no delivery report in time"
        if self._client_error:
            reasons += f" (client: {self._client_error})"
        raise RetryableError(
            f"{self._where}: {missing} of {size} messages not delivered"
            f" ({delivered} delivered, {failed} refused): {reasons}"
        )


def _retire(producer: Any, timeout: float) -> threading.Thread:
    """Close `producer` on a daemon thread: wait up to `timeout` s for its reports, drop the rest, then
    destroy it (librdkafka joins its threads, which a stuck DNS lookup can hold up), off the worker."""
    box = [producer]
    del producer

    def close() -> None:
        handle = box.pop()
        for call, args in ((handle.flush, (timeout,)), (handle.purge, ()), (handle.poll, (0,))):
            error = _guarded(call, *args)
            if error is not None:
                _log.debug("kafka producer close: %s: %s", type(error).__name__, error)
                break
        del handle  # the last reference: rd_kafka_destroy runs here

    thread = threading.Thread(target=close, name="llmpulse-kafka-close", daemon=True)
    thread.start()
    return thread


def _key(value: object) -> bytes | None:
    if value is None or value == "":
        return None
    return value.encode() if isinstance(value, str) else str(value).encode()
