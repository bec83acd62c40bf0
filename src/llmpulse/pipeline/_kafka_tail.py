"""Reading the ends of Kafka topic-partitions: their true end offsets and their newest records.

Why not the high watermark alone
    A Kafka broker's high watermark (``ListOffsets`` latest, `Consumer.get_watermark_offsets`) is the
    offset the next record will get. tansu (0.6, the broker of the tests) answers the base offset of the
    *last record batch* plus one instead: 30 records produced in three batches of 10 give 21, not 30.
    So `KafkaTail.end_offsets` takes the watermark only as a starting point: it assigns each
    partition at ``watermark - 1`` and reads to the end; librdkafka's partition-EOF event arrives at
    the offset after the last record, which is the true end on any broker (on Kafka it costs one
    record per partition, on tansu at most one batch).

The newest records
    `KafkaTail.newest` assigns each partition at ``watermark - n`` (never below the first offset: the
    consumer resets to the earliest) and reads to the end, so it returns at least the newest `n`
    records (on tansu, also the rest of the last batch).

A `KafkaTail` is one consumer, assigned (never subscribed: no group membership, nothing committed).
Its methods block up to their timeout and are serialised by a lock, so one tail may be shared by
threads; `close` closes the consumer. Errors: `LogUnavailable` when the broker does not answer the
watermark request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from llmpulse.pipeline._errors import LogClosed, LogUnavailable

#: Seconds a client is told to wait (``Retry-After``) when the broker does not answer.
_RETRY_AFTER_S: Final = 2.0
_CONSUME_BATCH: Final = 1_000

TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class TailRead:
    """What one read of partition ends found.

    Attributes:
        ends: the end offset (the next record's offset) of each partition; for a partition that did
            not reach its end in time, the highest of its watermark and the offset after the last
            record read.
        messages: the records read, per partition, oldest first (empty for `KafkaTail.end_offsets`).
        complete: every partition was read to its end within the timeout.
    """

    ends: dict[TopicPartitionKey, int]
    messages: dict[TopicPartitionKey, list[Message]]
    complete: bool


class KafkaTail:
    """One assigned consumer that reads partition ends (see the module docstring). Thread-safe.

    `consumer_config` is the librdkafka configuration of the consumer (its ``group.id`` is never
    joined nor committed to); partition-EOF events are switched on here.
    """

    def __init__(self, consumer_config: dict[str, object]) -> None:
        self._config = {**consumer_config, "enable.partition.eof": True, "enable.auto.commit": False}
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None
        self._closed = False

    def _open(self) -> Consumer:
        if self._closed:
            raise LogClosed("the Kafka tail reader is closed")
        if self._consumer is None:
            self._consumer = Consumer(self._config)
        return self._consumer

    def _watermarks(
        self, consumer: Consumer, partitions: Sequence[TopicPartitionKey], deadline: float
    ) -> dict[TopicPartitionKey, int]:
        highs: dict[TopicPartitionKey, int] = {}
        for topic, partition in partitions:
            try:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition),
                    timeout=max(0.1, deadline - time.monotonic()),
                    cached=False,
                )
            except KafkaException as exc:
                raise LogUnavailable(f"the Kafka broker did not answer: {exc}", _RETRY_AFTER_S) from exc
            highs[(topic, partition)] = max(0, int(high))
        return highs

    def _read(
        self, partitions: Sequence[TopicPartitionKey], back: int, timeout: float, keep: bool
    ) -> TailRead:
        deadline = time.monotonic() + timeout
        with self._lock:
            consumer = self._open()
            highs = self._watermarks(consumer, partitions, deadline)
            ends = dict(highs)
            messages: dict[TopicPartitionKey, list[Message]] = {tp: [] for tp in partitions}
            waiting = set(partitions)
            consumer.assign([TopicPartition(t, p, max(0, highs[(t, p)] - back)) for t, p in partitions])
            try:
                while waiting and time.monotonic() < deadline:
                    wait = min(0.2, max(0.0, deadline - time.monotonic()))
                    for message in consumer.consume(_CONSUME_BATCH, wait):
                        key = (message.topic() or "", message.partition() or 0)
                        if key not in messages:
                            continue
                        error = message.error()
                        offset = message.offset() or 0
                        if error is not None:
                            if error.code() == KafkaError._PARTITION_EOF:
                                ends[key] = offset
                                waiting.discard(key)
                            elif error.fatal():
                                raise LogUnavailable(
                                    f"the Kafka consumer failed: {error.str()}", _RETRY_AFTER_S
                                )
                            continue
                        ends[key] = max(ends[key], offset + 1)
                        if keep:
                            messages[key].append(message)
            finally:
                consumer.unassign()
        return TailRead(ends, messages, not waiting)

    def end_offsets(self, partitions: Sequence[TopicPartitionKey], timeout: float = 5.0) -> TailRead:
        """The true end offset of each partition (`TailRead.ends`). Blocks up to `timeout`.

        Raises `LogUnavailable` when the broker does not answer, `LogClosed` after `close`.
        """
        return self._read(partitions, 1, timeout, keep=False)

    def newest(self, partitions: Sequence[TopicPartitionKey], n: int, timeout: float = 5.0) -> TailRead:
        """At least the newest `n` records of each partition (fewer when it holds fewer), and the
        partitions' end offsets. Blocks up to `timeout`; what was read by then is returned
        (`TailRead.complete` False). Raises like `end_offsets`."""
        if n < 1:
            raise ValueError(f"n must be positive, got {n!r}")
        return self._read(partitions, n, timeout, keep=True)

    def close(self) -> None:
        """Close the consumer; later reads raise `LogClosed`. Blocks briefly. Idempotent."""
        with self._lock:
            self._closed = True
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
