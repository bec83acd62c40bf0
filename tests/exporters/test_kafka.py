"""`KafkaExporter` against a real Kafka-protocol broker (tansu, loopback only), read back with a Consumer.

Without the tansu binary these tests fail (`TansuNotFound` names what to install); they never skip.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from llmpulse._version import __version__
from llmpulse.events import LogEvent, Metric, Span, to_dict
from llmpulse.exporters._kafka import COMPRESSIONS, PARTITION_BY_FIELDS, KafkaExporter
from llmpulse.sdk import Collector, TelemetryConfig
from llmpulse.sdk._exporter import EncodedBatch, ExportResult, RetryableError
from tests.kafka_broker import TansuBroker, TansuNotFound, free_port, tansu_broker
from tests.sdk.test_pipeline import call


@dataclass(frozen=True)
class Msg:
    partition: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    @property
    def json(self) -> Any:
        return json.loads(self.value)


@pytest.fixture(scope="module")
def broker() -> Iterator[TansuBroker]:
    with tansu_broker() as running:
        yield running


def new_topic(broker: TansuBroker, partitions: int = 1) -> str:
    return broker.create_topic(f"llm-{uuid.uuid4().hex[:10]}", partitions)


def consume(broker: TansuBroker, topic: str, count: int, timeout: float = 10.0) -> list[Msg]:
    """Every message of every partition of `topic`: waits for `count`, then briefly for any extra."""
    partitions = broker.partitions(topic)
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 20,
            "log_level": 0,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])  # offset 0: no offset query
    got: list[Msg] = []
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            if len(got) >= count:
                end = min(end, time.monotonic() + 0.2)  # anything beyond `count` is a duplicate
            message = consumer.poll(0.05)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"consumer error: {message.error()}")
            got.append(
                Msg(message.partition(), message.key(), message.value(), list(message.headers() or []))
            )
    finally:
        consumer.close()
    return got


def exporter_for(broker: TansuBroker, topic: str, **kwargs: Any) -> KafkaExporter:
    kwargs.setdefault("timeout_s", 5.0)
    return KafkaExporter(broker.bootstrap, topic=topic, **kwargs)


def headers(kind: str) -> list[tuple[str, bytes]]:
    return [
        ("content-type", b"application/json"),
        ("type", kind.encode()),
        ("llmpulse-version", __version__.encode()),
    ]


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The Java client's default partitioner (Utils.murmur2, positive, modulo the partition count)."""
    m, r, length = 0x5BD1E995, 24, len(key)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(key[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = length % 4
    tail = key[length - rest :]
    if rest == 3:
        h ^= tail[2] << 16
    if rest >= 2:
        h ^= tail[1] << 8
    if rest >= 1:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


# -- the message format ---------------------------------------------------------------------------


def test_each_item_is_one_message_with_its_json_key_and_headers(broker: TansuBroker) -> None:
    topic = new_topic(broker)
    items = [
        to_dict(call(0, user_id="alice", org_id="acme")),
        to_dict(call(1, user_id=None)),
        to_dict(Span(name="retrieve")),
        to_dict(Metric(name="queue_depth", value=3.0)),
        to_dict(LogEvent(name="budget", message="80% spent")),
    ]
    exporter = exporter_for(broker, topic)
    assert exporter.export(items) is None
    got = consume(broker, topic, len(items))
    assert [m.json for m in got] == json.loads(json.dumps(items))
    assert [m.key for m in got] == [b"alice", None, None, None, None]
    assert [m.headers for m in got] == [headers(item["type"]) for item in items]
    exporter.shutdown(2.0)


def test_the_encoded_path_sends_the_pipelines_lines_byte_for_byte(broker: TansuBroker) -> None:
    topic = new_topic(broker)
    items = [call(i, user_id=f"u{i}") for i in range(3)] + [Span(name="s")]
    lines = msgspec.json.Encoder().encode_lines(items)
    exporter = exporter_for(broker, topic)
    assert exporter.export_encoded(EncodedBatch(items, lines)) is None
    got = consume(broker, topic, 4)
    assert [m.value + b"\n" for m in got] == lines.splitlines(keepends=True)
    assert [m.json for m in got] == [to_dict(item) for item in items]
    assert [m.key for m in got] == [b"u0", b"u1", b"u2", None]
    assert [dict(m.headers)["type"] for m in got] == [b"llm.call"] * 3 + [b"span"]
    exporter.shutdown(2.0)


def export_in_parallel(jobs: list[tuple[KafkaExporter, list[dict[str, Any]]]]) -> list[ExportResult | None]:
    """Each exporter's first export waits ~0.5 s for its idempotent producer id: overlap those waits."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(lambda job: job[0].export(job[1]), jobs))


def test_the_key_is_the_partition_by_fields_value(broker: TansuBroker) -> None:
    items = [
        to_dict(call(0, user_id="u-1", org_id="org-1", model="gpt-4o", tenant_id="t-1")),
        to_dict(call(1, user_id=None, org_id=None, model="claude-3-5-haiku", tenant_id="t-2")),
    ]
    fields: list[str | None] = [*PARTITION_BY_FIELDS, None]
    exporters = [exporter_for(broker, new_topic(broker), partition_by=field) for field in fields]
    assert export_in_parallel([(exporter, items) for exporter in exporters]) == [None] * len(fields)
    for field, exporter in zip(fields, exporters, strict=True):
        got = consume(broker, exporter.topic, 2)
        expected = [item[field].encode() if field and item[field] else None for item in items]
        assert [m.key for m in got] == expected, field
        assert [m.json for m in got] == items, field
        exporter.shutdown(2.0)
    assert expected == [None, None]  # partition_by=None: keyless
    assert [items[1][f] for f in ("model", "tenant_id")] == ["claude-3-5-haiku", "t-2"]  # always set


def test_hashed_user_ids_key_by_their_hash(broker: TansuBroker) -> None:
    topic = new_topic(broker)
    exporter = exporter_for(broker, topic)
    collector = Collector(TelemetryConfig(hash_user_ids=True, user_id_salt="s"), exporters=[exporter])
    collector.record(call(0, user_id="alice"))
    collector.record(call(1, user_id=None))
    assert collector.shutdown(timeout=10.0)
    got = consume(broker, topic, 2)
    assert got[0].json["user_id"] is None
    assert got[0].key == got[0].json["user_id_hash"].encode()
    assert len(got[0].key) == 64  # SHA-256 hex: "alice" never leaves the process
    assert got[1].key is None


def test_equal_keys_land_on_one_partition_as_the_java_client_would_place_them(broker: TansuBroker) -> None:
    partitions = 4
    topic = new_topic(broker, partitions)
    users = [f"user-{i}" for i in range(8)]
    items = [to_dict(call(i, user_id=users[i % len(users)])) for i in range(48)]
    exporter = exporter_for(broker, topic)
    assert exporter.export(items) is None
    got = consume(broker, topic, len(items))
    assert len(got) == len(items)
    placed: dict[bytes, set[int]] = {}
    for m in got:
        assert m.key is not None
        placed.setdefault(m.key, set()).add(m.partition)
    assert all(len(parts) == 1 for parts in placed.values())
    assert {key: parts.pop() for key, parts in placed.items()} == {
        user.encode(): murmur2_partition(user.encode(), partitions) for user in users
    }
    assert len({murmur2_partition(u.encode(), partitions) for u in users}) > 1  # the keys do spread
    exporter.shutdown(2.0)


def test_every_compression_round_trips(broker: TansuBroker) -> None:
    items = [to_dict(call(i, user_id="same", metadata={"pad": "x" * 300})) for i in range(20)]
    exporters = [exporter_for(broker, new_topic(broker), compression=codec) for codec in COMPRESSIONS]
    assert [e._config["compression.type"] for e in exporters] == ["none", "gzip", "snappy", "lz4", "zstd"]
    assert export_in_parallel([(exporter, items) for exporter in exporters]) == [None] * len(exporters)
    for exporter in exporters:
        got = consume(broker, exporter.topic, len(items))
        assert [m.json for m in got] == items, exporter.compression
        exporter.shutdown(2.0)


# -- delivery -------------------------------------------------------------------------------------


def test_a_collector_exports_every_call_and_accounts_for_each(broker: TansuBroker) -> None:
    topic = new_topic(broker, 3)
    exporter = exporter_for(broker, topic, name="kafka-test")
    collector = Collector(TelemetryConfig(flush_interval_ms=60_000, max_batch_size=25), exporters=[exporter])
    n = 60
    for i in range(n):
        collector.record(call(i, user_id=f"u{i % 7}"))
    assert collector.flush(timeout=10.0)
    stats = collector.stats()["exporters"]["kafka-test"]
    assert (stats["emitted"], stats["exported"], stats["queued"], stats["dropped"]) == (n, n, 0, 0)
    assert stats["emitted"] == stats["exported"] + stats["queued"] + stats["dropped"]
    assert collector.shutdown(timeout=5.0)
    got = consume(broker, topic, n)
    assert sorted(m.json["request_id"] for m in got) == sorted(f"r{i}" for i in range(n))
    assert all(m.json["cost"] is not None for m in got)  # priced by the pipeline on the way
    assert all(m.key == m.json["user_id"].encode() for m in got)


def test_a_full_local_queue_is_waited_out(broker: TansuBroker) -> None:
    topic = new_topic(broker)
    exporter = exporter_for(broker, topic, queue_buffering_max_messages=3)
    assert exporter._config["queue.buffering.max.messages"] == 3
    items = [to_dict(call(i)) for i in range(40)]
    assert exporter.export(items) is None  # BufferError after 3 messages: polled, then produced
    got = consume(broker, topic, 40)
    assert [m.json["request_id"] for m in got] == [f"r{i}" for i in range(40)]
    exporter.shutdown(2.0)


def test_a_message_too_large_is_refused_alone(broker: TansuBroker) -> None:
    topic = new_topic(broker)
    exporter = exporter_for(broker, topic, producer_config={"message.max.bytes": 2_000})
    items = [to_dict(call(0)), to_dict(call(1, metadata={"blob": "x" * 5_000})), to_dict(call(2))]
    result = exporter.export(items)
    assert isinstance(result, ExportResult)
    assert result.dropped == {"kafka_delivery_failed": 1}
    assert "MSG_SIZE_TOO_LARGE" in result.errors[0]
    got = consume(broker, topic, 2)
    assert [m.json["request_id"] for m in got] == ["r0", "r2"]
    exporter.shutdown(2.0)


def test_a_dead_broker_raises_retryable_within_the_timeout() -> None:
    exporter = KafkaExporter(f"127.0.0.1:{free_port()}", timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(RetryableError, match=r"1 of 1 messages not delivered.*Connection refused"):
        exporter.export([to_dict(call())])
    assert time.monotonic() - started < 1.5
    exporter.shutdown(1.0)


def test_a_batch_retried_after_a_broker_restart_arrives_once() -> None:
    with tansu_broker() as broker:
        topic = broker.create_topic("restart", 1)
        exporter = exporter_for(broker, topic, timeout_s=2.0)
        exporter.export([to_dict(call(0))])
        first = consume(broker, topic, 1)
        broker.kill()
        batch = [to_dict(call(i)) for i in range(1, 4)]
        started = time.monotonic()
        with pytest.raises(RetryableError, match="3 of 3 messages not delivered"):
            exporter.export(batch)
        assert time.monotonic() - started < 2.5
        broker.start()  # the same port, empty storage: a broker that forgot the producer's id
        broker.create_topic(topic, 1)
        assert exporter.export(batch) is None  # the pipeline's retry: the same batch object
        second = consume(broker, topic, 3)
        assert [m.json["request_id"] for m in first + second] == ["r0", "r1", "r2", "r3"]
        exporter.shutdown(2.0)


def test_a_collector_loses_nothing_across_a_broker_restart() -> None:
    with tansu_broker() as broker:
        topic = broker.create_topic("restart-collector", 2)
        exporter = exporter_for(broker, topic, timeout_s=2.0)
        collector = Collector(
            TelemetryConfig(flush_interval_ms=60_000, shutdown_timeout_s=15.0), exporters=[exporter]
        )
        for i in range(5):
            collector.record(call(i, user_id=f"u{i}"))
        assert collector.flush(timeout=10.0)
        before = consume(broker, topic, 5)
        broker.kill()
        for i in range(5, 12):
            collector.record(call(i, user_id=f"u{i}"))
        assert not collector.flush(timeout=2.3)  # the attempt fails after 2 s; a retry is scheduled
        stats = collector.stats()["exporters"]["kafka"]
        assert stats["failed"] >= 1
        assert "not delivered" in stats["last_error"]
        broker.start()
        broker.create_topic(topic, 2, exist_ok=True)  # unless the pipeline's retry made it first
        assert collector.shutdown(timeout=15.0)
        after = consume(broker, topic, 7)
        ids = [m.json["request_id"] for m in before + after]
        assert sorted(set(ids)) == sorted(f"r{i}" for i in range(12))  # at least once ...
        assert len(ids) == 12  # ... and here exactly once: nothing was in doubt
        stats = collector.stats()["exporters"]["kafka"]
        assert (stats["emitted"], stats["exported"], stats["dropped"], stats["queued"]) == (12, 12, 0, 0)
        assert stats["retried"] >= 1


def test_a_forked_child_produces_on_its_own_producer(broker: TansuBroker) -> None:
    topic = new_topic(broker)
    exporter = exporter_for(broker, topic)
    exporter.export([to_dict(call(0))])
    parent_producer = exporter._producer
    pid = os.fork()
    if pid == 0:  # the child: a new producer, then leave without pytest's teardown
        code = 1
        try:
            exporter.export([to_dict(call(1))])
            code = 0 if exporter._producer is not parent_producer else 2
            exporter.shutdown(2.0)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    exporter.export([to_dict(call(2))])  # the parent's producer is untouched
    assert exporter._producer is parent_producer
    got = consume(broker, topic, 3)
    assert sorted(m.json["request_id"] for m in got) == ["r0", "r1", "r2"]
    exporter.shutdown(2.0)


# -- a partial failure, retried: only the undelivered messages go again --------------------------


class _Err:
    def __init__(self, code: int, name: str) -> None:
        self._code, self._name = code, name

    def code(self) -> int:
        return self._code

    def name(self) -> str:
        return self._name

    def str(self) -> str:
        return self._name.lower()

    def fatal(self) -> bool:
        return False


class ScriptedProducer:
    """Stands in for librdkafka: values in `fail` time out once; the report of values in `late` comes
    one flush late (delivered); the rest are delivered at the next flush."""

    def __init__(self, fail: Iterable[bytes] = (), late: Iterable[bytes] = ()) -> None:
        self.fail, self.late = set(fail), set(late)
        self.produced: list[bytes] = []
        self.delivered: list[bytes] = []
        self._reports: list[tuple[Any, bytes, Any]] = []
        self._held: list[tuple[Any, bytes, Any]] = []

    def produce(self, topic: str, value: bytes, key: Any, headers: Any, on_delivery: Any) -> None:
        self.produced.append(value)
        if value in self.fail:
            self.fail.discard(value)
            self._reports.append((on_delivery, value, _Err(KafkaError._MSG_TIMED_OUT, "_MSG_TIMED_OUT")))
        elif value in self.late:
            self.late.discard(value)
            self._held.append((on_delivery, value, None))
        else:
            self._reports.append((on_delivery, value, None))

    def flush(self, timeout: float) -> int:
        reports, self._reports, self._held = self._reports, self._held, []
        for callback, value, err in reports:
            if err is None:
                self.delivered.append(value)
            callback(err, None)
        return len(self._reports)

    def poll(self, timeout: float) -> int:
        return self.flush(timeout)

    def purge(self) -> None:
        self._reports = []


def test_a_retried_batch_sends_only_what_was_not_delivered() -> None:
    exporter = KafkaExporter("127.0.0.1:9", timeout_s=1.0)
    items = [to_dict(call(i)) for i in range(5)]
    values = [msgspec.json.encode(item) for item in items]
    fake = ScriptedProducer(fail={values[1], values[3]})
    exporter._producer = fake
    with pytest.raises(RetryableError, match=r"2 of 5 messages not delivered \(3 delivered"):
        exporter.export(items)
    assert exporter.export(items) is None  # the pipeline retries the same list object
    assert fake.produced == [*values, values[1], values[3]]
    assert sorted(fake.delivered) == sorted(values)  # each exactly once
    fake.produced.clear()
    assert exporter.export(items) is None  # a new export of the same items (after success) sends all
    assert fake.produced == values


def test_a_late_report_of_delivery_spares_the_message_a_resend() -> None:
    exporter = KafkaExporter("127.0.0.1:9", timeout_s=1.0)
    items = [to_dict(call(i)) for i in range(3)]
    values = [msgspec.json.encode(item) for item in items]
    fake = ScriptedProducer(late={values[2]})
    exporter._producer = fake
    with pytest.raises(RetryableError, match=r"1 of 3 messages not delivered.*no delivery report in time"):
        exporter.export(items)
    assert exporter.export(items) is None  # the retry first collects the late report: delivered
    assert fake.produced == values
    assert sorted(fake.delivered) == sorted(values)


def test_a_different_batch_never_inherits_a_failed_batchs_progress() -> None:
    exporter = KafkaExporter("127.0.0.1:9", timeout_s=1.0)
    items = [to_dict(call(i)) for i in range(3)]
    fake = ScriptedProducer(fail={msgspec.json.encode(items[0])})
    exporter._producer = fake
    with pytest.raises(RetryableError):
        exporter.export(items)
    fresh = list(items)  # equal, but another batch
    assert exporter.export(fresh) is None
    assert len(fake.produced) == 6


# -- SASL -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[TansuBroker]:
    with tansu_broker(authentication=True) as running:
        yield running


def _sasl_export(broker: TansuBroker, **kwargs: Any) -> str:
    exporter = KafkaExporter(broker.bootstrap, timeout_s=1.0, **kwargs)
    with pytest.raises(RetryableError) as raised:
        exporter.export([to_dict(call())])
    exporter.shutdown(1.0)
    return str(raised.value)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_settings_reach_the_broker(sasl_broker: TansuBroker, mechanism: str) -> None:
    # tansu runs the SCRAM exchange but has no user: its in-memory users can only be created by an
    # authenticated client. "unknown-user" proves protocol, mechanism and user name were used.
    message = _sasl_export(
        sasl_broker,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_username="llmpulse",
        sasl_password="s3cret",
    )
    assert "SASL SCRAM authentication failed" in message
    assert "unknown-user" in message


def test_sasl_plain_reaches_the_broker(sasl_broker: TansuBroker) -> None:
    message = _sasl_export(
        sasl_broker,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="llmpulse",
        sasl_password="s3cret",
    )
    assert "SASL PLAIN mechanism handshake failed" in message  # tansu offers no PLAIN


def test_a_broker_requiring_sasl_refuses_a_plaintext_exporter(sasl_broker: TansuBroker) -> None:
    message = _sasl_export(sasl_broker)
    assert "1 of 1 messages not delivered" in message
    assert "SASL" not in message


# -- configuration --------------------------------------------------------------------------------


def test_construction_never_connects() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.3)
        port = listener.getsockname()[1]
        exporter = KafkaExporter(f"127.0.0.1:{port}", timeout_s=1.0)
        with pytest.raises(TimeoutError):
            listener.accept()
        with pytest.raises(RetryableError):
            exporter.export([to_dict(call())])  # the first export connects (nothing answers)
        conn, _ = listener.accept()
        conn.close()
        exporter.shutdown(1.0)


def test_the_producer_defaults() -> None:
    exporter = KafkaExporter(["k1:9092", " k2:9093 "], timeout_s=10.0)
    config = exporter._config
    assert exporter.bootstrap_servers == "k1:9092,k2:9093"
    assert (config["acks"], config["enable.idempotence"]) == ("all", True)
    assert config["message.timeout.ms"] == 8_500
    assert config["request.timeout.ms"] == 8_500
    assert config["partitioner"] == "murmur2_random"
    assert config["security.protocol"] == "plaintext"
    assert "bootstrap.servers" not in config  # only the producer of the first export gets it
    assert KafkaExporter("k:1", timeout_s=0.5).message_timeout_ms == 250


def test_producer_config_and_underscored_keywords_pass_through() -> None:
    exporter = KafkaExporter(
        "k:9092",
        producer_config={"linger.ms": 50, "acks": "1", "enable.idempotence": False},
        batch_num_messages=100,
        stats_cb=print,
    )
    config = exporter._config
    assert (config["linger.ms"], config["acks"], config["batch.num.messages"]) == (50, "1", 100)
    assert config["stats_cb"] is print


def test_security_settings_reach_the_config_and_the_password_stays_out_of_repr() -> None:
    exporter = KafkaExporter(
        "k:9093",
        security_protocol="sasl_ssl",
        sasl_mechanism="scram-sha-512",
        sasl_username="u",
        sasl_password="hunter2",
    )
    config = exporter._config
    assert (config["security.protocol"], config["sasl.mechanism"]) == ("sasl_ssl", "SCRAM-SHA-512")
    assert (config["sasl.username"], config["sasl.password"]) == ("u", "hunter2")
    assert "hunter2" not in repr(exporter)
    assert "SASL_SSL/SCRAM-SHA-512" in repr(exporter)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"bootstrap_servers": ""}, "bootstrap_servers"),
        ({"bootstrap_servers": "kafka"}, "bootstrap_servers"),
        ({"bootstrap_servers": "kafka:99999"}, "bootstrap_servers"),
        ({"bootstrap_servers": ["k:1", 2]}, "bootstrap_servers"),
        ({"topic": "llm costs"}, "topic"),
        ({"topic": ""}, "topic"),
        ({"partition_by": "email"}, "partition_by"),
        ({"compression": "brotli"}, "compression"),
        ({"security_protocol": "TLS"}, "security_protocol"),
        ({"security_protocol": "SASL_SSL"}, "sasl_mechanism"),
        ({"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"}, "sasl_mechanism"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}, "sasl_username"),
        ({"sasl_username": "u"}, "sasl_username"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": 0.01}, "timeout_s"),
        ({"name": ""}, "name"),
        ({"producer_config": {"bootstrap.servers": "x:1"}}, "producer_config"),
        ({"producer_config": {"message.timeout.ms": 1}}, "producer_config"),
        ({"producer_config": {"no.such.setting": 1}}, "producer_config"),
        ({"producer_config": {"linger.ms": 1}, "linger_ms": 2}, "producer_config"),
        ({"ssl_ca_location": "/nonexistent/ca.pem", "security_protocol": "SSL"}, "producer_config"),
    ],
)
def test_bad_settings_raise_value_error_naming_the_argument(kwargs: dict[str, Any], argument: str) -> None:
    kwargs.setdefault("bootstrap_servers", "k:9092")
    with pytest.raises(ValueError, match=argument):
        KafkaExporter(**kwargs)


def test_from_env() -> None:
    assert KafkaExporter.from_env({}) is None
    assert KafkaExporter.from_env({"KAFKA_BOOTSTRAP_SERVERS": "  "}) is None
    made = KafkaExporter.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092, k2:9092",
            "KAFKA_TOPIC": "costs",
            "KAFKA_PARTITION_BY": "org_id",
            "KAFKA_COMPRESSION": "ZSTD",
            "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "KAFKA_SASL_USERNAME": "svc",
            "KAFKA_SASL_PASSWORD": "pw",
        },
        timeout_s=3.0,
    )
    assert made is not None
    assert (made.bootstrap_servers, made.topic, made.partition_by) == ("k1:9092,k2:9092", "costs", "org_id")
    assert (made.compression, made.security_protocol, made.sasl_mechanism) == (
        "zstd",
        "SASL_SSL",
        "SCRAM-SHA-256",
    )
    assert (made.sasl_username, made.timeout_s) == ("svc", 3.0)
    keyless = KafkaExporter.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:1", "KAFKA_PARTITION_BY": "none"})
    assert keyless is not None
    assert keyless.partition_by is None
    defaults = KafkaExporter.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:1"}, topic="mine")
    assert defaults is not None
    assert (defaults.topic, defaults.partition_by, defaults.compression) == ("mine", "user_id", "none")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"KAFKA_BOOTSTRAP_SERVERS": "nohostport"}, "KAFKA_BOOTSTRAP_SERVERS"),
        ({"KAFKA_TOPIC": "a b"}, "KAFKA_TOPIC"),
        ({"KAFKA_PARTITION_BY": "email"}, "KAFKA_PARTITION_BY"),
        ({"KAFKA_COMPRESSION": "brotli"}, "KAFKA_COMPRESSION"),
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_MECHANISM"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN"}, "KAFKA_SASL_USERNAME"),
        ({"KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_USERNAME"),
    ],
)
def test_from_env_names_the_bad_variable(env: dict[str, str], variable: str) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", **env}
    with pytest.raises(ValueError, match=variable):
        KafkaExporter.from_env(env)


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_importing_the_module_does_not_import_confluent_kafka() -> None:
    code = "import sys, llmpulse.exporters._kafka; print('confluent_kafka' in sys.modules)"
    assert _run(code) == "False"


def test_without_confluent_kafka_the_error_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['confluent_kafka'] = None\n"
        "from llmpulse.exporters._kafka import KafkaExporter\n"
        "try:\n    KafkaExporter('k:9092')\nexcept ImportError as e:\n    print(e)"
    )
    assert "pip install 'llmpulse[kafka]'" in _run(code)


def test_a_missing_broker_binary_fails_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANSU_BIN", "/nonexistent/tansu")
    with pytest.raises(TansuNotFound, match="TANSU_BIN"):
        TansuBroker()
