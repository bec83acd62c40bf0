"""Faults under `llmpulse process` workers that the worker tests do not cover: the database restarted.

Postgres restarted mid-run: the workers' store is a PRIVATE Postgres (`tests.postgres_server`, never
the machine's shared service, which other tests use) that is crashed (``pg_ctl stop -m immediate``)
and started again while a producer keeps appending and three workers process, once for 1 s and once
for 10 s (longer than the workers' retries of a load: before the fix in `GroupWorker._retry_unloaded`
such a unit stayed unprocessed until the next rebalance); at the end the windows equal the oracle's
(nothing lost, nothing counted twice) and every worker exits cleanly.

The broker restarted mid-run is tested in `tests.pipeline.test_kafka_broker_restart` (tansu on a
local S3 server, since its memory storage forgets everything on a restart).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from llmpulse.pipeline import KafkaLogConfig
from llmpulse.pipeline import _workers as workers_module
from llmpulse.pipeline._kafka_log import TOPICS
from llmpulse.pipeline._workers import GroupWorker, unit_consumer
from llmpulse.store import Checkpoint, ProcessorState, Store, StoreUnavailable
from tests.kafka_broker import TansuBroker
from tests.oracle import expected_windows
from tests.pipeline.test_kafka_workers import (
    Worker,
    _check_final,
    _events,
    _Producer,
    _wait_for_oracle,
    _workers,
)
from tests.postgres_server import PostgresServer

#: How long Postgres stays down at each restart: briefly, then longer than a worker's load retries
#: (about 7 s), after which a unit whose state cannot be loaded waits for the store (paused).
OUTAGES_S = (1.0, 10.0)


@pytest.fixture
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as started:
        yield started


@pytest.fixture
def private_pg() -> Iterator[PostgresServer]:
    """A Postgres of this test's own, which it may crash and restart."""
    with PostgresServer() as server:
        yield server


def _logs(workers: list[Worker]) -> str:
    return "\n".join(w.output()[-2000:] for w in workers)


@pytest.mark.slow
def test_postgres_restarted_mid_run_ends_with_the_oracle_windows(
    tmp_path: Path, broker: TansuBroker, private_pg: PostgresServer
) -> None:
    db = private_pg.create_database(f"llmpulse_f_{uuid.uuid4().hex[:8]}")
    events = _events(9000, seed=71)
    expected = expected_windows(events, unanswered_are_timeouts=True)
    producer = _Producer(broker, events, pace_s=0.2)  # ~8 s of traffic
    with _workers(tmp_path, broker, db, 3) as workers:
        for w in workers:
            w.wait_assigned()
        producer.start()
        for down_s in OUTAGES_S:
            time.sleep(2.0)
            private_pg.restart(mode="immediate", down_s=down_s)  # a crash: open transactions roll back
        producer.join(60)
        assert producer.error is None, producer.error
        assert all(w.proc.poll() is None for w in workers), _logs(workers)
        _wait_for_oracle(db, expected, workers, timeout=40)
        assert [w.terminate() for w in workers] == [0, 0, 0], _logs(workers)
    assert private_pg.starts == 1 + len(OUTAGES_S)
    failed = sum("committing partition" in w.output() for w in workers)
    assert failed, f"no worker saw the database go away:\n{_logs(workers)}"
    reloaded = sum("loaded the state of partitions" in w.output() for w in workers)
    assert reloaded, f"no unit waited for the store (the long outage):\n{_logs(workers)}"
    _check_final(db, expected)


class _DownStore:
    """A `Store` whose `load_state` fails as if the database were down while `down` is set."""

    def __init__(self, store: Store) -> None:
        self.store, self.down = store, True

    def consumers(self) -> set[str]:
        return self.store.consumers()

    def load_state(self, consumer: str, now: float, **kwargs: Any) -> ProcessorState:
        if self.down:
            raise StoreUnavailable("the database is down (test)")
        return self.store.load_state(consumer, now, **kwargs)

    def lookup_cold(self, consumer: str, request_ids: Any, since: float) -> Any:
        return self.store.lookup_cold(consumer, request_ids, since)


class _FakeConsumer:
    def __init__(self) -> None:
        self.assigned: list[TopicPartition] = []
        self.resumed: list[TopicPartition] = []

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.resumed = partitions


def test_a_unit_whose_state_cannot_be_loaded_is_loaded_once_the_store_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "sleep", lambda _s: None)  # the load retries' backoff
    monkeypatch.setattr(workers_module, "_RETRY_LOAD_S", 0.0)
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        store.commit(Checkpoint(unit_consumer("g", 1), offsets={3: 7, 4: 0, 5: 2}))
        down = _DownStore(store)
        worker = GroupWorker(KafkaLogConfig("kafka://127.0.0.1:9"), down, group="g")  # type: ignore[arg-type]
        consumer = _FakeConsumer()
        worker._consumer = consumer  # type: ignore[assignment]
        worker._on_assign(consumer, [TopicPartition(t, 1) for t in TOPICS])  # type: ignore[arg-type]
        assert worker.assigned() == []  # not read while its offsets are unknown
        assert consumer.assigned == []
        worker._retry_unloaded()
        assert worker.assigned() == []
        down.down = False
        worker._retry_unloaded()
        assert worker.assigned() == [1]
        assert sorted((tp.topic, tp.partition, tp.offset) for tp in consumer.assigned) == [
            ("llm.calls", 1, 2), ("llm.requests", 1, 7), ("llm.responses", 1, 0),
        ]  # fmt: skip
        assert sorted((tp.topic, tp.partition) for tp in consumer.resumed) == [(t, 1) for t in sorted(TOPICS)]
