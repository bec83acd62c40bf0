"""`KafkaEventLog` against a real Kafka-protocol broker (tansu on loopback, in-memory storage).

Without the tansu binary these tests fail (`TansuNotFound` names what to install); they never skip.
tansu's memory storage starts empty after a restart, so a restarted broker has lost its topics: the
log creates them again when the broker answers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from llmpulse.events import Event, LLMCall, LLMRequest, LLMResponse
from llmpulse.pipeline import (
    KafkaEventLog,
    KafkaLogConfig,
    LogBackpressure,
    LogRecord,
    LogUnavailable,
    PipelineError,
)
from llmpulse.pipeline._kafka_log import TOPICS, kafka_position, log_partition, parse_brokers
from llmpulse.testing.traffic import encode_batch_json, generate_events, iter_batches
from tests.e2e._server import ServerProcess
from tests.e2e.test_embedded_e2e import ORPHAN_TIMEOUT_S, Sender
from tests.e2e.test_embedded_e2e import _events as oracle_events
from tests.e2e.test_embedded_e2e import _wait_for_oracle as wait_for_oracle
from tests.kafka_broker import TansuBroker
from tests.oracle import expected_windows

DELIVERY_TIMEOUT_S = 3.0


@pytest.fixture
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as started:
        yield started


def _open(broker: TansuBroker, partitions: int = 6) -> KafkaEventLog:
    url = f"kafka://{broker.bootstrap}"
    return KafkaEventLog(KafkaLogConfig(url, partitions=partitions, delivery_timeout_s=DELIVERY_TIMEOUT_S))


@pytest.fixture
def log(broker: TansuBroker) -> Iterator[KafkaEventLog]:
    opened = _open(broker)
    yield opened
    opened.close()


def _events(n_pairs: int, seed: int = 1) -> list[Event]:
    return generate_events(
        n_pairs, start=datetime.now(UTC) - timedelta(minutes=5), duration_s=240, call_rate=0.2, seed=seed
    )


def _read_all(log: KafkaEventLog, n_events: int, timeout: float = 10.0) -> dict[int, list[tuple[int, Event]]]:
    """Every (offset, event) of every partition, reading as the runner does until `n_events` came."""
    offsets = dict.fromkeys(log.partitions(), 0)
    got: dict[int, list[tuple[int, Event]]] = {p: [] for p in offsets}
    deadline = time.monotonic() + timeout
    while sum(len(v) for v in got.values()) < n_events:
        assert time.monotonic() < deadline, f"read {sum(len(v) for v in got.values())} of {n_events} events"
        for partition, offset in offsets.items():
            for record in log.read(partition, offset, 100):
                assert record.partition == partition
                got[partition].extend((record.offset, event) for event in record.events)
                offsets[partition] = record.offset + 1
        time.sleep(0.005)
    return got


def _read_until(log: KafkaEventLog, partition: int, offset: int, max_records: int) -> list[LogRecord]:
    """`read` does not wait for the broker: ask until something came (a seek refetches)."""
    deadline = time.monotonic() + 10
    while not (records := log.read(partition, offset, max_records)):
        assert time.monotonic() < deadline, f"nothing to read at {partition}@{offset}"
        time.sleep(0.01)
    return records


def _append(log: KafkaEventLog, events: list[Event]) -> None:
    asyncio.run(log.append(events))


# -- configuration (no broker) -------------------------------------------------------------------


def test_broker_urls_parse_to_bootstrap_servers() -> None:
    assert parse_brokers("kafka://a:9092,b:9093") == "a:9092,b:9093"
    assert parse_brokers("localhost:19092") == "localhost:19092"
    for bad in ("http://a:1", "kafka://", "kafka://a", "a:notaport", "kafka://a:0"):
        with pytest.raises(ValueError, match="broker"):
            parse_brokers(bad)


def test_config_is_validated_naming_the_field() -> None:
    with pytest.raises(ValueError, match="partitions"):
        KafkaLogConfig("a:1", partitions=0)
    with pytest.raises(ValueError, match="session_timeout_s"):
        KafkaLogConfig("a:1", session_timeout_s=0.5)
    config = KafkaLogConfig("a:1")
    assert config.session_timeout_s <= 10
    assert config.producer_config()["acks"] == "all"
    assert config.producer_config()["enable.idempotence"] is True
    assert config.consumer_config("g")["session.timeout.ms"] == 10_000


def test_protocol_partitions_number_topic_partitions_independently_of_the_count() -> None:
    assert [kafka_position(p) for p in range(4)] == [
        ("llm.requests", 0),
        ("llm.responses", 0),
        ("llm.calls", 0),
        ("llm.requests", 1),
    ]
    for topic in TOPICS:
        for p in range(10):
            assert kafka_position(log_partition(topic, p)) == (topic, p)


# -- against the broker --------------------------------------------------------------------------


def test_appended_events_read_back_in_order_per_key(log: KafkaEventLog) -> None:
    events = _events(300)
    _append(log, events)
    got = _read_all(log, len(events))
    read = [event for records in got.values() for _, event in records]
    assert sorted(map(repr, read)) == sorted(map(repr, events))
    for partition, records in got.items():
        offsets = [offset for offset, _ in records]
        assert offsets == sorted(offsets), partition
        assert len(set(offsets)) == len(offsets), partition
        topic, _ = kafka_position(partition)
        kinds = {type(event) for _, event in records}
        assert kinds <= {
            {"llm.requests": LLMRequest, "llm.responses": LLMResponse, "llm.calls": LLMCall}[topic]
        }
    assert log.stats()["appended_events"] == len(events)


def test_a_request_and_its_response_reach_the_same_partition_number(log: KafkaEventLog) -> None:
    events = _events(500, seed=2)
    _append(log, events)
    numbers: dict[str, set[int]] = {}
    kinds: dict[str, set[type]] = {}
    for partition, records in _read_all(log, len(events)).items():
        for _, event in records:
            assert event.request_id is not None
            numbers.setdefault(event.request_id, set()).add(kafka_position(partition)[1])
            kinds.setdefault(event.request_id, set()).add(type(event))
    pairs = [rid for rid, k in kinds.items() if k == {LLMRequest, LLMResponse}]
    assert len(pairs) > 300
    assert all(len(numbers[rid]) == 1 for rid in pairs)
    assert len({next(iter(numbers[rid])) for rid in pairs}) == 6  # and keys spread over every partition


def test_reading_again_from_an_earlier_offset_returns_the_same_records(log: KafkaEventLog) -> None:
    events = _events(100, seed=3)
    _append(log, events)
    first = _read_all(log, len(events))
    partition = max(first, key=lambda p: len(first[p]))
    again = _read_until(log, partition, 0, 1000)
    assert [(r.offset, r.events[0]) for r in again] == first[partition]
    middle = first[partition][len(first[partition]) // 2][0]
    assert _read_until(log, partition, middle, 1)[0].offset == middle
    assert log.end_offset(partition) > 0  # tansu's high watermark counts record batches, not records


def test_missing_topics_are_created_with_the_configured_partitions(broker: TansuBroker) -> None:
    log = _open(broker, partitions=4)
    try:
        assert [broker.partitions(topic) for topic in TOPICS] == [4, 4, 4]
        assert log.partitions() == list(range(12))
    finally:
        log.close()
    again = _open(broker, partitions=8)  # existing topics keep their partitions
    try:
        assert again.partitions() == list(range(12))
    finally:
        again.close()


def test_topics_with_unequal_partition_counts_are_refused(broker: TansuBroker) -> None:
    broker.create_topic("llm.requests", 2)
    broker.create_topic("llm.responses", 3)
    with pytest.raises(PipelineError, match="same number of partitions"):
        _open(broker)


def test_an_undecodable_message_is_counted_and_its_offset_passed(
    log: KafkaEventLog, broker: TansuBroker
) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "partitioner": "murmur2_random"})
    producer.produce("llm.requests", b"not an event", key=b"k")
    producer.flush(5)
    got: list[tuple[int, list[Event]]] = []
    deadline = time.monotonic() + 10
    while not got:
        assert time.monotonic() < deadline
        for partition in range(0, 18, 3):
            got.extend((r.offset, r.events) for r in log.read(partition, 0, 10))
        time.sleep(0.01)
    assert got == [(0, [])]
    assert log.stats()["undecodable_messages"] == 1


def test_append_returns_only_once_the_broker_acknowledged(log: KafkaEventLog, broker: TansuBroker) -> None:
    events = _events(10, seed=5)
    _append(log, events[:2])  # connected, metadata known
    proc = broker._proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGSTOP)  # the broker holds the connection but answers nothing

    async def main() -> float:
        task = asyncio.create_task(log.append(events[2:]))
        await asyncio.sleep(1.0)
        assert not task.done(), "append returned while the broker could not have acknowledged"
        started = time.monotonic()
        with pytest.raises(LogUnavailable) as caught:
            await task
        assert caught.value.retry_after_s > 0
        return time.monotonic() - started

    try:
        waited = asyncio.run(main())
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert waited < DELIVERY_TIMEOUT_S + 2


def test_append_is_refused_while_the_broker_is_down_and_works_after_a_restart(
    log: KafkaEventLog, broker: TansuBroker
) -> None:
    events = _events(50, seed=6)
    _append(log, events[:10])
    broker.kill()

    async def refused() -> float:
        started = time.monotonic()
        with pytest.raises(LogUnavailable) as caught:
            await log.append(events[10:20])
        assert isinstance(caught.value, LogBackpressure)  # ingest's 503 + Retry-After path
        return time.monotonic() - started

    assert asyncio.run(refused()) < DELIVERY_TIMEOUT_S + 2
    assert asyncio.run(refused()) < 0.1  # known to be down: refused at once
    broker.start()

    async def until_accepted() -> None:
        deadline = time.monotonic() + 15
        while True:
            try:
                await log.append(events[20:])
                return
            except LogUnavailable:
                assert time.monotonic() < deadline, "the log did not recover after the broker restarted"
                await asyncio.sleep(0.2)

    asyncio.run(until_accepted())
    assert [broker.partitions(topic) for topic in TOPICS] == [6, 6, 6]  # recreated (memory storage)
    got = _read_all(log, len(events) - 20)
    assert sorted(repr(e) for records in got.values() for _, e in records) == sorted(map(repr, events[20:]))
    assert log.stats()["broker_unreachable"] is None


# -- llmpulse serve --broker (a subprocess) ------------------------------------------------------


@pytest.mark.slow
def test_serve_with_a_broker_answers_like_the_oracle_and_503_while_the_broker_is_down(
    tmp_path: Path, broker: TansuBroker
) -> None:
    events = oracle_events(2000, seed=21)
    expected = expected_windows(events, unanswered_are_timeouts=True)
    assert expected.duplicates > 0
    assert expected.orphan_responses > 0
    bodies = [encode_batch_json(batch) for batch in iter_batches(events, 100)]
    server = ServerProcess(
        tmp_path,
        *("--broker", f"kafka://{broker.bootstrap}", "--kafka-partitions", "3"),
        *("--db", f"sqlite:///{tmp_path / 'kafka.db'}", "--orphan-timeout", str(ORPHAN_TIMEOUT_S)),
    ).start(timeout=30)
    try:
        assert [broker.partitions(topic) for topic in TOPICS] == [3, 3, 3]
        sender = Sender(server.url, bodies)
        sender.run()
        assert sender.error is None, sender.error
        problems = wait_for_oracle(server.url, expected, timeout=20 + ORPHAN_TIMEOUT_S)
        assert not problems, "\n".join(problems[:20])

        broker.kill()
        one = encode_batch_json(events[:1])
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S + 12
        while True:  # the first batch may wait out the delivery timeout; later ones are refused at once
            response = httpx.post(f"{server.url}/v1/events", content=one, timeout=30)
            if response.status_code == 503:
                break
            assert time.monotonic() < deadline, "ingest kept accepting with the broker down"
        assert float(response.headers["retry-after"]) > 0
        assert "Kafka broker" in response.json()["error"]

        broker.start()
        deadline = time.monotonic() + 15
        while httpx.post(f"{server.url}/v1/events", content=one, timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "ingest did not accept again after the broker restarted"
            time.sleep(0.2)
    finally:
        assert server.stop() in (0, -signal.SIGTERM), server.output()[-3000:]  # uvicorn re-raises SIGTERM
