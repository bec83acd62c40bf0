"""`KafkaTail` and the end offsets, lag and newest events of `KafkaEventLog`, against a real tansu broker.

tansu's high watermark is the base offset of the last record batch plus one; these tests produce
batches of several records so that a figure taken from the watermark alone would be wrong.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer

from llmpulse.events import Event
from llmpulse.pipeline import KafkaEventLog, KafkaLogConfig, LogClosed
from llmpulse.pipeline._kafka_tail import KafkaTail
from llmpulse.testing.traffic import generate_events, iter_batches
from tests.kafka_broker import TansuBroker


@pytest.fixture
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as started:
        yield started


@pytest.fixture
def log(broker: TansuBroker) -> Iterator[KafkaEventLog]:
    opened = KafkaEventLog(KafkaLogConfig(f"kafka://{broker.bootstrap}", partitions=2, delivery_timeout_s=5))
    yield opened
    opened.close()


def _events(n_pairs: int, seed: int) -> list[Event]:
    start = datetime.now(UTC) - timedelta(minutes=5)
    return generate_events(n_pairs, start=start, duration_s=240, call_rate=0.2, seed=seed)


def _append(log: KafkaEventLog, events: list[Event], batch: int = 25) -> None:
    async def main() -> None:
        for chunk in iter_batches(events, batch):
            await log.append(chunk)

    asyncio.run(main())


def _produce_batches(broker: TansuBroker, topic: str, sizes: list[int]) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 50})
    for size in sizes:
        for i in range(size):
            producer.produce(topic, b"%d" % i, partition=0)
        producer.flush(5)


def test_the_tail_finds_the_true_end_and_the_newest_records_past_tansu_s_watermark(
    broker: TansuBroker,
) -> None:
    broker.create_topic("t", 1)
    _produce_batches(broker, "t", [5, 7, 3])  # 15 records; tansu's watermark says 13
    tail = KafkaTail({"bootstrap.servers": broker.bootstrap, "group.id": "tail-test"})
    try:
        read = tail.end_offsets([("t", 0)])
        assert read.complete
        assert read.ends == {("t", 0): 15}
        newest = tail.newest([("t", 0)], 4)
        offsets = [m.offset() for m in newest.messages[("t", 0)]]
        assert offsets[-4:] == [11, 12, 13, 14]
        assert newest.ends == {("t", 0): 15}
        everything = tail.newest([("t", 0)], 100)
        assert [m.offset() for m in everything.messages[("t", 0)]] == list(range(15))
    finally:
        tail.close()
    with pytest.raises(LogClosed):
        tail.end_offsets([("t", 0)])
    tail.close()  # idempotent


def test_end_offsets_and_events_after_count_every_acknowledged_event(log: KafkaEventLog) -> None:
    events = _events(150, seed=31)
    _append(log, events)
    ends = log.end_offsets()
    assert sum(ends.values()) == len(events)
    assert log.end_offset(1) == ends[1]

    def lag() -> int | None:
        total = 0
        for partition in log.partitions():
            n = log.events_after(partition, 0)
            if n is None:
                return None
            total += n
        return total

    deadline = time.monotonic() + 10
    while lag() != len(events):
        assert time.monotonic() < deadline, f"events_after says {lag()}, {len(events)} were acknowledged"
        time.sleep(0.1)
    more = _events(20, seed=32)
    _append(log, more)
    # this node's own acknowledgements count at once, before the next snapshot
    assert (lag() or 0) >= len(events) + len(more)
    deadline = time.monotonic() + 10
    while lag() != len(events) + len(more):
        assert time.monotonic() < deadline, f"events_after says {lag()}"
        time.sleep(0.1)
    partition = max(ends, key=lambda p: ends[p])
    assert log.events_after(partition, ends[partition]) == log.end_offset(partition) - ends[partition]
    assert log.events_after(partition, 10**9) == 0


def test_newest_events_are_the_last_n_of_each_partition(log: KafkaEventLog) -> None:
    events = _events(200, seed=33)
    _append(log, events, batch=40)
    got, scanned = log.newest_events(5)
    assert scanned == len(got) == 5 * len(log.partitions())
    everything, scanned_all = log.newest_events(10_000)
    assert scanned_all == len(events)
    assert sorted(map(repr, everything)) == sorted(map(repr, events))
    assert {repr(e) for e in got} <= {repr(e) for e in events}
