"""The scale-out event log: Kafka topics (any Kafka-protocol broker) behind the `EventLog` protocol.

Topics and keys
    Each validated event is one message, its value the event's JSON (`encode_json`, the StreamLens
    body plus its ``type`` tag), its key the event's ``request_id``. Requests go to ``llm.requests``,
    responses to ``llm.responses``, whole calls to ``llm.calls``. The three topics have the same
    number of partitions and the producer uses the ``murmur2_random`` partitioner (the Java client's),
    so a request and its response, having equal keys, land on the same partition *number* of their
    two topics; a consumer that owns partition number p of every topic sees both halves.

Appending
    The producer is idempotent with ``acks=all``. `append` produces every event of the batch and
    awaits one asyncio future that a poll thread resolves when the broker's delivery report for the
    last of them has arrived: the ingest endpoint answers 2xx only after the broker holds every event.
    A delivery that fails or is not acknowledged within `KafkaLogConfig.delivery_timeout_s` raises
    `LogUnavailable`; so does every append while the broker is known to be unreachable (the poll
    thread probes it every second and, once it answers, creates topics that went missing). A batch
    refused half-way may be partly in the log: the client's resend is deduplicated by the processor.

Partitions and offsets of the protocol
    A protocol partition is one Kafka topic-partition, numbered ``3 * p + t`` where p is the Kafka
    partition and t the topic's index in `TOPICS` (0 requests, 1 responses, 2 calls); its offsets are
    that topic-partition's own Kafka offsets, one message (one event) per `LogRecord`. The numbering
    does not depend on the partition count, so positions stored by the processor (``partition →
    next offset`` in the store's ``processor_offsets``) stay valid when topics grow, and a worker that
    is assigned Kafka partition p of the three topics seeks each to the stored offset of
    ``3p``, ``3p + 1``, ``3p + 2`` (`log_partition`, `kafka_position`).

Reading
    `read` is served by one consumer (created on first use, no group membership, nothing committed to
    Kafka: offsets belong in the store) that has every requested topic-partition assigned; messages it
    fetched are buffered per partition and handed out in order. A read at an offset other than where
    the previous read of that partition stopped re-assigns the partition at that offset (the runner
    restoring from its last checkpoint). A message that is not a valid event is counted, logged and
    handed out as a record with no events, so offsets still advance past it.

End offsets and lag
    `end_offset` and `end_offsets` are the true ends of the topic-partitions, read by a
    `llmpulse.pipeline._kafka_tail.KafkaTail` (a broker's high watermark alone is not enough: tansu's
    counts record batches). `events_after`, what ingest's admission asks on every batch, does not
    block: it answers from a snapshot of the end offsets that a background thread refreshes every
    `END_OFFSETS_REFRESH_S` while someone asks, plus the events this process has had acknowledged
    since the snapshot (counted per partition from the delivery reports), so the figure is exact for
    this node's own appends and at most a second behind for other nodes'. Until the first snapshot,
    or when the last one is older than `_SNAPSHOT_STALE_S`, it answers None (unknown).

Recent events
    `newest_events` reads the newest records of every event topic-partition for the dashboard's
    recent calls, with a second `KafkaTail` (kept for reuse, closed with the log), so it never
    disturbs the processor's reader.

Errors: `LogUnavailable` (a `LogBackpressure`, so ingest answers 503 with ``Retry-After``) when the
broker is unreachable or does not acknowledge in time; `LogBackpressure` when too many events await
delivery; `LogClosed` after `close`; `PipelineError` when the topics exist with unequal partition
counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from llmpulse.events import Event, LLMCall, LLMRequest, LLMResponse, encode_json
from llmpulse.pipeline._errors import LogBackpressure, LogClosed, LogUnavailable, PipelineError
from llmpulse.pipeline._kafka_tail import KafkaTail
from llmpulse.pipeline._log import LogRecord

_log = logging.getLogger(__name__)
#: librdkafka's own log lines (connection failures while a broker is down, ...).
_client_log = logging.getLogger(f"{__name__}.librdkafka")

TOPIC_REQUESTS: Final = "llm.requests"
TOPIC_RESPONSES: Final = "llm.responses"
TOPIC_CALLS: Final = "llm.calls"
#: Window updates published by processor workers (`llmpulse.pipeline._workers`), not an event topic.
TOPIC_METRICS: Final = "llm.metrics"
#: The event topics, in the order that numbers protocol partitions (``3 * p + index``).
TOPICS: Final = (TOPIC_REQUESTS, TOPIC_RESPONSES, TOPIC_CALLS)
DEFAULT_PARTITIONS: Final = 6
DEFAULT_DELIVERY_TIMEOUT_S: Final = 10.0
DEFAULT_SESSION_TIMEOUT_S: Final = 10.0
#: Seconds a client is told to wait (``Retry-After``) while the broker is unreachable.
RETRY_AFTER_S: Final = 2.0
_PROBE_EVERY_S: Final = 1.0
#: Seconds between refreshes of the end offsets behind `KafkaEventLog.events_after`.
END_OFFSETS_REFRESH_S: Final = 1.0
#: A snapshot of end offsets older than this is not used (`events_after` answers None).
_SNAPSHOT_STALE_S: Final = 5.0
#: The refresher stops when nobody asked `events_after` for this long (and starts again on demand).
_REFRESH_IDLE_S: Final = 30.0
_FETCH_MAX: Final = 5_000
_BUFFER_HIGH: Final = 20_000

_TOPIC_INDEX: Final = {TOPIC_REQUESTS: 0, TOPIC_RESPONSES: 1, TOPIC_CALLS: 2}
_TOPIC_OF: Final[dict[type, str]] = {
    LLMRequest: TOPIC_REQUESTS,
    LLMResponse: TOPIC_RESPONSES,
    LLMCall: TOPIC_CALLS,
}
_DECODERS: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    TOPIC_REQUESTS: msgspec.json.Decoder(LLMRequest),
    TOPIC_RESPONSES: msgspec.json.Decoder(LLMResponse),
    TOPIC_CALLS: msgspec.json.Decoder(LLMCall),
}
_DOWN_CODES: Final = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._MSG_TIMED_OUT})


def log_partition(topic: str, kafka_partition: int) -> int:
    """The protocol partition of `kafka_partition` of `topic`: ``3 * kafka_partition + index``."""
    return 3 * kafka_partition + _TOPIC_INDEX[topic]


def kafka_position(partition: int) -> tuple[str, int]:
    """The (topic, Kafka partition) of a protocol partition (the inverse of `log_partition`)."""
    if partition < 0:
        raise ValueError(f"partition must be >= 0, got {partition!r}")
    return TOPICS[partition % 3], partition // 3


def decode_event(topic: str, value: bytes) -> Event:
    """The event a message of one of `TOPICS` holds. Raises `msgspec.MsgspecError` (not an event) or
    `KeyError` (not an event topic)."""
    event: Event = _DECODERS[topic].decode(value)
    return event


def parse_brokers(url: str) -> str:
    """``kafka://host:port[,host:port…]`` (or the bare list, as ``KAFKA_BROKERS`` holds it) → the
    ``bootstrap.servers`` string. Raises `ValueError` naming what is wrong."""
    text = url.strip()
    if "://" in text:
        scheme, text = text.split("://", 1)
        if scheme != "kafka":
            raise ValueError(f"the broker URL must be kafka://host:port[,host:port...], got {url!r}")
    hosts = [h.strip() for h in text.rstrip("/").split(",") if h.strip()]
    if not hosts:
        raise ValueError(f"the broker URL names no host, got {url!r}")
    for host in hosts:
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(f"each broker must be host:port, got {host!r} in {url!r}")
    return ",".join(hosts)


@dataclass(frozen=True, slots=True)
class KafkaLogConfig:
    """How to reach the broker and shape the topics; validated in the constructor.

    Attributes:
        brokers: ``kafka://host:port[,host:port…]`` or ``host:port[,…]``.
        partitions: partitions of each topic created by `ensure_topics` (existing topics keep theirs).
        replication_factor: replicas of each created topic (-1: the broker's default).
        delivery_timeout_s: how long a produced event may wait for the broker's acknowledgement.
        session_timeout_s: the consumer group session timeout (how soon a dead worker's partitions
            move to the others).
        max_pending_events: events awaiting delivery beyond which `append` raises `LogBackpressure`.
        create_topics: create missing topics on open and when the broker comes back.
        client_id: the Kafka client id.
    """

    brokers: str
    partitions: int = DEFAULT_PARTITIONS
    replication_factor: int = -1
    delivery_timeout_s: float = DEFAULT_DELIVERY_TIMEOUT_S
    session_timeout_s: float = DEFAULT_SESSION_TIMEOUT_S
    max_pending_events: int = 100_000
    create_topics: bool = True
    client_id: str = "llmpulse"

    def __post_init__(self) -> None:
        parse_brokers(self.brokers)
        if self.partitions < 1:
            raise ValueError(f"partitions must be positive, got {self.partitions!r}")
        if self.replication_factor == 0 or self.replication_factor < -1:
            raise ValueError(f"replication_factor must be -1 or positive, got {self.replication_factor!r}")
        if not 0.1 <= self.delivery_timeout_s <= 300:
            raise ValueError(f"delivery_timeout_s must be within [0.1, 300], got {self.delivery_timeout_s!r}")
        if not 1 <= self.session_timeout_s <= 300:
            raise ValueError(f"session_timeout_s must be within [1, 300], got {self.session_timeout_s!r}")
        if self.max_pending_events < 1:
            raise ValueError(f"max_pending_events must be positive, got {self.max_pending_events!r}")

    @property
    def bootstrap_servers(self) -> str:
        """The ``bootstrap.servers`` string."""
        return parse_brokers(self.brokers)

    def producer_config(self) -> dict[str, Any]:
        """librdkafka settings of the event producer: idempotent, ``acks=all``, murmur2 keys."""
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "acks": "all",
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
            "allow.auto.create.topics": False,
            "message.timeout.ms": int(self.delivery_timeout_s * 1000),
            "linger.ms": 2,
            "queue.buffering.max.messages": max(100_000, 2 * self.max_pending_events),
            "reconnect.backoff.max.ms": 1000,
        }

    def consumer_config(self, group_id: str) -> dict[str, Any]:
        """librdkafka settings of a consumer in `group_id`: no auto-commit (offsets live in the
        store), committed reads only, the configured session timeout."""
        session_ms = int(self.session_timeout_s * 1000)
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(100, session_ms // 3),
            "fetch.wait.max.ms": 50,
            "allow.auto.create.topics": False,
            "reconnect.backoff.max.ms": 1000,
        }


def ensure_topics(admin: AdminClient, config: KafkaLogConfig, timeout: float = 10.0) -> int:
    """Create the missing event topics; return their (common) partition count. Blocks up to `timeout`.

    Existing topics keep their partition count. Raises `LogUnavailable` when the broker does not
    answer, `PipelineError` when the topics' partition counts differ (requests and responses would
    no longer meet on one partition number).
    """
    try:
        existing = admin.list_topics(timeout=timeout).topics
        missing = [t for t in TOPICS if t not in existing or existing[t].error is not None]
        if missing and config.create_topics:
            futures = admin.create_topics(
                [NewTopic(t, config.partitions, config.replication_factor) for t in missing],
                request_timeout=timeout,
            )
            for topic, future in futures.items():
                try:
                    future.result(timeout)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
                else:
                    _log.info("created topic %s with %d partitions", topic, config.partitions)
        counts = {
            t: len(m.partitions) for t, m in admin.list_topics(timeout=timeout).topics.items() if t in TOPICS
        }
    except KafkaException as exc:
        raise LogUnavailable(
            f"the Kafka broker at {config.bootstrap_servers} did not answer: {exc}", RETRY_AFTER_S
        ) from exc
    if set(counts) != set(TOPICS):
        raise LogUnavailable(f"the topics {sorted(set(TOPICS) - set(counts))} do not exist", RETRY_AFTER_S)
    if len(set(counts.values())) != 1:
        raise PipelineError(f"the event topics must have the same number of partitions, got {counts}")
    return counts[TOPIC_REQUESTS]


class _Batch:
    """One `append`: counts delivery reports down (on the poll thread), then resolves the future."""

    __slots__ = ("error", "future", "loop", "on_delivered", "remaining")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, n: int, on_delivered: Callable[[Message], None] | None = None
    ) -> None:
        self.loop = loop
        self.on_delivered = on_delivered
        self.future: asyncio.Future[None] = loop.create_future()
        self.remaining = n
        self.error: KafkaError | None = None

    def delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None and self.error is None:
            self.error = error
        elif error is None and self.on_delivered is not None:
            self.on_delivered(message)
        self.remaining -= 1
        if self.remaining == 0:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if self.future.done():
            return
        if self.error is None:
            self.future.set_result(None)
        else:
            self.future.set_exception(
                LogUnavailable(f"the Kafka broker did not take the events: {self.error.str()}", RETRY_AFTER_S)
            )


class KafkaEventLog:
    """An `EventLog` on Kafka topics (see the module docstring for topics, keys and offsets).

    The constructor connects, creates missing topics and starts the producer's poll thread; it
    blocks up to `connect_timeout_s` and raises `LogUnavailable` when the broker does not answer.
    """

    def __init__(self, config: KafkaLogConfig, *, connect_timeout_s: float = 10.0) -> None:
        self._config = config
        self._admin = AdminClient(
            {"bootstrap.servers": config.bootstrap_servers, "client.id": config.client_id}
        )
        self._n_partitions = ensure_topics(self._admin, config, connect_timeout_s)
        self._producer = self._new_producer()
        self._closed = False
        self._down: str | None = None
        self._next_probe = 0.0
        self._replace = False
        self._appended = 0
        self._failed = 0
        self._refused = 0
        self._undecodable = 0
        self._stop = threading.Event()
        self._read_lock = threading.RLock()
        self._consumer: Consumer | None = None
        self._buffers: dict[int, deque[LogRecord]] = {}
        self._positions: dict[int, int] = {}
        self._paused: set[int] = set()
        self._tails_lock = threading.Lock()
        self._ends_tail: KafkaTail | None = None
        self._recent_tail: KafkaTail | None = None
        # events_after: a snapshot of end offsets, events acknowledged since, and its refresher
        self._ends_snapshot: dict[int, int] = {}
        self._snapshot_at = 0.0
        self._acked_since: dict[int, int] = {}
        self._acked_lock = threading.Lock()
        self._asked_at = 0.0
        self._refresher: threading.Thread | None = None
        self._poller = threading.Thread(target=self._poll_loop, name="llmpulse-kafka-poll", daemon=True)
        self._poller.start()

    @property
    def config(self) -> KafkaLogConfig:
        """The configuration this log was opened with."""
        return self._config

    # -- appending -----------------------------------------------------------------------------

    def _new_producer(self) -> Producer:
        return Producer({**self._config.producer_config(), "error_cb": self._on_error, "logger": _client_log})

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            _log.error("the Kafka producer failed fatally (%s); replacing it", error.str())
            self._replace = True
        elif error.code() in _DOWN_CODES:
            self._mark_down(error.str())
        else:
            _log.debug("Kafka client error: %s", error.str())

    def _mark_down(self, reason: str) -> None:
        if self._down is None:
            _log.warning("the Kafka broker is unreachable (%s); ingest answers 503 until it is back", reason)
        self._down = reason

    async def append(self, events: Sequence[Event], payload: bytes | None = None) -> None:
        """Produce each event (keyed by request_id) and return once the broker acknowledged all.

        Never blocks the event loop. `payload` is ignored (each event is its own message). Raises
        `LogUnavailable` when the broker is unreachable or does not acknowledge within the delivery
        timeout, `LogBackpressure` when too many events await delivery, `LogClosed` after `close`.
        """
        if not events:
            return
        if self._closed:
            raise LogClosed("the event log is closed")
        if self._down is not None:
            self._refused += len(events)
            raise LogUnavailable(f"the Kafka broker is unreachable: {self._down}", RETRY_AFTER_S)
        producer = self._producer
        if len(producer) + len(events) > self._config.max_pending_events:
            raise LogBackpressure(f"{len(producer)} events are waiting for the Kafka broker", 1.0)
        batch = _Batch(asyncio.get_running_loop(), len(events), self._acknowledged)
        produced = 0
        try:
            for event in events:
                producer.produce(
                    _TOPIC_OF[type(event)],
                    encode_json(event),
                    key=(event.request_id or "").encode(),
                    on_delivery=batch.delivered,
                )
                produced += 1
        except BufferError as exc:
            batch.remaining -= len(events) - produced
            self._abandon(batch)
            raise LogBackpressure(f"the Kafka producer's queue is full: {exc}", 1.0) from exc
        except KafkaException as exc:
            batch.remaining -= len(events) - produced
            self._abandon(batch)
            raise LogUnavailable(f"the Kafka producer refused the events: {exc}", RETRY_AFTER_S) from exc
        try:
            await batch.future
        except LogUnavailable:
            self._failed += len(events)
            raise
        self._appended += len(events)

    @staticmethod
    def _abandon(batch: _Batch) -> None:
        # nobody awaits this batch's future: resolve it quietly so no "exception never retrieved"
        batch.future.cancel()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)
            if self._replace:
                self._replace_producer()
            if self._down is not None and time.monotonic() >= self._next_probe:
                self._next_probe = time.monotonic() + _PROBE_EVERY_S
                self._probe()

    def _probe(self) -> None:
        try:
            self._n_partitions = ensure_topics(self._admin, self._config, timeout=_PROBE_EVERY_S)
        except PipelineError as exc:
            _log.debug("the Kafka broker is still unreachable: %s", exc)
            return
        # a producer that lived through the outage may never recover on its own (a broker that lost
        # its state, as tansu's memory storage does, no longer knows its producer id): start afresh
        self._replace_producer()
        _log.warning("the Kafka broker answers again; ingest resumes")
        self._down = None

    def _replace_producer(self) -> None:
        self._replace = False
        old, self._producer = self._producer, self._new_producer()
        old.purge()
        old.flush(1.0)  # serves the purged messages' delivery reports: their batches fail

    # -- reading -------------------------------------------------------------------------------

    def partitions(self) -> list[int]:
        """Every protocol partition: ``3 * p + t`` for each Kafka partition p of the three topics."""
        return [log_partition(topic, p) for p in range(self._n_partitions) for topic in TOPICS]

    def _reader(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(
                {**self._config.consumer_config(f"{self._config.client_id}-reader"), "logger": _client_log}
            )
        return self._consumer

    def _seek(self, consumer: Consumer, partition: int, offset: int) -> None:
        topic, kafka_partition = kafka_position(partition)
        if partition in self._positions:
            consumer.incremental_unassign([TopicPartition(topic, kafka_partition)])
        consumer.incremental_assign([TopicPartition(topic, kafka_partition, offset)])
        self._buffers[partition] = deque()
        self._positions[partition] = offset
        self._paused.discard(partition)

    def _fetch(self, consumer: Consumer) -> None:
        for message in consumer.consume(_FETCH_MAX, 0):
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise LogUnavailable(f"the Kafka consumer failed: {error.str()}", RETRY_AFTER_S)
                _log.debug("Kafka consumer: %s", error.str())
                continue
            topic = message.topic() or ""
            partition = log_partition(topic, message.partition() or 0)
            buffer = self._buffers.get(partition)
            if buffer is None:
                continue
            buffer.append(LogRecord(partition, message.offset() or 0, self._decode(topic, message)))
        full = [p for p, b in self._buffers.items() if len(b) > _BUFFER_HIGH and p not in self._paused]
        if full:
            consumer.pause([TopicPartition(*kafka_position(p)) for p in full])
            self._paused.update(full)

    def _decode(self, topic: str, message: Message) -> list[Event]:
        try:
            return [decode_event(topic, message.value() or b"")]
        except msgspec.MsgspecError as exc:
            self._undecodable += 1
            _log.warning(
                "skipping an undecodable message at %s[%s]@%s: %s",
                topic, message.partition(), message.offset(), exc,
            )  # fmt: skip
            return []

    def read(self, partition: int, offset: int, max_records: int) -> list[LogRecord]:
        """Records of `partition` from `offset`, oldest first, at most `max_records`. Does not wait
        for the broker: returns what has been fetched (possibly nothing)."""
        if partition not in self.partitions():
            raise ValueError(f"no partition {partition} in this log (partitions: {self.partitions()})")
        with self._read_lock:
            if self._closed:
                raise LogClosed("the event log is closed")
            consumer = self._reader()
            if self._positions.get(partition) != offset:
                self._seek(consumer, partition, offset)
            buffer = self._buffers[partition]
            if not buffer:
                self._fetch(consumer)
            records = [buffer.popleft() for _ in range(min(max_records, len(buffer)))]
            if records:
                if records[0].offset < offset:
                    _log.warning(
                        "%s[%d] restarted at offset %d, before %d: the broker lost records",
                        *kafka_position(partition), records[0].offset, offset,
                    )  # fmt: skip
                self._positions[partition] = records[-1].offset + 1
            if partition in self._paused and len(buffer) < _BUFFER_HIGH // 2:
                consumer.resume([TopicPartition(*kafka_position(partition))])
                self._paused.discard(partition)
            return records

    # -- end offsets, lag and the newest records ----------------------------------------------

    def _tail(self, which: str) -> KafkaTail:
        with self._tails_lock:
            if self._closed:
                raise LogClosed("the event log is closed")
            tail: KafkaTail | None = getattr(self, which)
            if tail is None:
                name = f"{self._config.client_id}-{which.strip('_')}"
                tail = KafkaTail({**self._config.consumer_config(name), "logger": _client_log})
                setattr(self, which, tail)
            return tail

    def _timeout(self) -> float:
        return min(5.0, self._config.delivery_timeout_s)

    def end_offsets(self, partitions: Sequence[int] | None = None) -> dict[int, int]:
        """The true end offset (the next record's offset) of each protocol partition (all by default).

        Blocks up to the delivery timeout (at most 5 s); raises `LogUnavailable` when the broker does
        not answer or not every partition could be read to its end in time.
        """
        wanted = list(self.partitions() if partitions is None else partitions)
        read = self._tail("_ends_tail").end_offsets([kafka_position(p) for p in wanted], self._timeout())
        if not read.complete:
            raise LogUnavailable(
                "the Kafka broker did not serve every partition's end in time", RETRY_AFTER_S
            )
        return {p: read.ends[kafka_position(p)] for p in wanted}

    def end_offset(self, partition: int) -> int:
        """The true end offset of `partition` (see `end_offsets`, which blocks and raises the same)."""
        return self.end_offsets([partition])[partition]

    def _acknowledged(self, message: Message) -> None:
        """A delivery report (poll thread): one more event on its partition since the snapshot."""
        partition = log_partition(message.topic() or "", message.partition() or 0)
        with self._acked_lock:
            self._acked_since[partition] = self._acked_since.get(partition, 0) + 1

    def events_after(self, partition: int, offset: int) -> int | None:
        """Events of `partition` at or after `offset`; None while unknown. Does not block.

        Answers from the last end-offset snapshot plus this process's acknowledged appends since; the
        first call starts the background refresher, so it (and any call while the broker does not
        answer) returns None.
        """
        now = time.monotonic()
        self._asked_at = now
        if self._refresher is None or not self._refresher.is_alive():
            self._start_refresher()
        if now - self._snapshot_at > _SNAPSHOT_STALE_S or partition not in self._ends_snapshot:
            return None
        end = self._ends_snapshot[partition] + self._acked_since.get(partition, 0)
        return max(0, end - offset)

    def _start_refresher(self) -> None:
        with self._tails_lock:
            if self._closed or (self._refresher is not None and self._refresher.is_alive()):
                return
            self._refresher = threading.Thread(
                target=self._refresh_loop, name="llmpulse-kafka-ends", daemon=True
            )
            self._refresher.start()

    def _refresh_loop(self) -> None:
        while not self._stop.is_set() and time.monotonic() - self._asked_at < _REFRESH_IDLE_S:
            started = time.monotonic()
            with self._acked_lock:
                acked, self._acked_since = self._acked_since, {}
            try:
                ends = self.end_offsets()
            except (PipelineError, KafkaException) as exc:
                _log.debug("could not refresh the Kafka end offsets: %s", exc)
                with self._acked_lock:  # still unaccounted for: keep them for the next snapshot
                    for partition, n in acked.items():
                        self._acked_since[partition] = self._acked_since.get(partition, 0) + n
            else:
                # acknowledgements that arrived while reading may be in `ends` too: a brief overcount
                self._ends_snapshot = ends
                self._snapshot_at = started
            self._stop.wait(END_OFFSETS_REFRESH_S)

    def newest_events(self, per_partition: int, topics: Sequence[str] = TOPICS) -> tuple[list[Event], int]:
        """The newest `per_partition` events of every partition of `topics` (fewer where a partition
        holds fewer), in no particular order, and how many messages were looked at. Blocks up to
        the delivery timeout (at most 5 s), then returns what it read. Raises `LogUnavailable` when
        the broker does not answer."""
        wanted = [(topic, p) for topic in topics for p in range(self._n_partitions)]
        read = self._tail("_recent_tail").newest(wanted, per_partition, self._timeout())
        events: list[Event] = []
        scanned = 0
        for (topic, _), messages in read.messages.items():
            newest = messages[-per_partition:]  # tansu hands out the rest of the last batch too
            scanned += len(newest)
            for message in newest:
                events.extend(self._decode(topic, message))
        return events, scanned

    def stats(self) -> dict[str, Any]:
        """Figures for /health: events acknowledged, failed (not acknowledged in time) and refused
        (broker known to be down), events awaiting delivery, broker state. Does not block."""
        return {
            "kind": "kafka",
            "brokers": self._config.bootstrap_servers,
            "topic_partitions": self._n_partitions,
            "appended_events": self._appended,
            "failed_events": self._failed,
            "refused_events": self._refused,
            "in_flight_events": len(self._producer),
            "broker_unreachable": self._down,
            "undecodable_messages": self._undecodable,
        }

    def close(self) -> None:
        """Refuse new appends, wait (up to the delivery timeout) for those in flight, and close."""
        if self._closed:
            return
        self._closed = True
        left = self._producer.flush(self._config.delivery_timeout_s)
        if left:
            _log.error("%d events were not acknowledged by the Kafka broker before close", left)
        self._stop.set()
        self._poller.join()
        with self._tails_lock:
            tails, self._ends_tail, self._recent_tail = (self._ends_tail, self._recent_tail), None, None
            refresher = self._refresher
        if refresher is not None:
            refresher.join(self._timeout() + 1)
        for tail in tails:
            if tail is not None:
                tail.close()
        with self._read_lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
