"""`llmpulse process` workers in a consumer group: a real tansu broker and the machine's Postgres.

Each test gets a fresh Postgres database (created on `tests.postgres_server.suite_dsn`'s server:
``POSTGRES_TEST_DSN``'s, the machine's own, or one the tests start; dropped afterwards). Without
tansu or Postgres these tests fail naming what is missing; they never skip. Workers run as
subprocesses with a short session timeout, so a SIGKILLed worker's partitions move to the others
within seconds.

Tests wait until each started worker has taken part in a rebalance before stopping another one: with
tansu, a worker that left the group (SIGTERM) before the group's first assignment completed twice left
the remaining members without any assignment for over 35 s (cause not found: tansu's coordinator or
the client; not seen with members that had been assigned). Each rebalance takes about 2 s on tansu.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from llmpulse.events import Event
from llmpulse.pipeline import (
    KafkaEventLog,
    KafkaLogConfig,
    PipelineError,
    ProcessorConfig,
    ProcessorRunner,
    SQLiteEventLog,
)
from llmpulse.pipeline._kafka_log import TOPIC_METRICS, TOPICS
from llmpulse.pipeline._workers import GroupWorker, WorkerError, unit_consumer
from llmpulse.store import Checkpoint, Store, StoreUnavailable, WindowDelta, WindowKey, metrics_row
from llmpulse.store._commit import StaleCheckpoint
from llmpulse.testing.traffic import generate_events, iter_batches
from tests.kafka_broker import TansuBroker
from tests.oracle import Expected, assert_matches, expected_windows
from tests.postgres_server import fresh_databases

PARTITIONS = 6
SESSION_TIMEOUT_S = 3.0
ORPHAN_TIMEOUT_S = 2.0


# -- fixtures ------------------------------------------------------------------------------------


@contextlib.contextmanager
def pg_databases() -> Iterator[Callable[[], str]]:
    """Creates fresh, empty Postgres databases (their URLs); drops them on exit."""
    with fresh_databases("llmpulse_w") as create:
        yield create


@pytest.fixture
def new_pg_database() -> Iterator[Callable[[], str]]:
    """Creates fresh, empty Postgres databases (their URLs); drops them after the test."""
    with pg_databases() as create:
        yield create


@pytest.fixture
def pg_url(new_pg_database: Callable[[], str]) -> str:
    """A fresh, empty Postgres database's URL."""
    return new_pg_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store URL on each dialect."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as started:
        yield started


def _events(n_pairs: int, seed: int) -> list[Event]:
    """Out-of-order pairs, duplicates, orphans of both kinds, calls; then a tail of late events."""
    now = datetime.now(UTC)
    common: dict[str, Any] = {
        "tenants": 3,
        "routes": 3,
        "error_rate": 0.05,
        "duplicate_rate": 0.05,
        "orphan_request_rate": 0.02,
        "orphan_response_rate": 0.02,
        "call_rate": 0.1,
        "shuffle": 60,
    }
    main = generate_events(
        n_pairs, start=now - timedelta(minutes=40), duration_s=30 * 60, seed=seed, **common
    )
    late = generate_events(
        n_pairs // 20, start=now - timedelta(hours=3), duration_s=600, seed=seed + 1, **common
    )
    return main + late


def _produce(broker: TansuBroker, events: Sequence[Event], *, pace_s: float = 0.0) -> None:
    """Append the events to the Kafka log (batches of 500, each acknowledged), `pace_s` apart."""
    log = KafkaEventLog(KafkaLogConfig(f"kafka://{broker.bootstrap}", partitions=PARTITIONS))
    try:

        async def go() -> None:
            for batch in iter_batches(list(events), 500):
                await log.append(batch)
                if pace_s:
                    await asyncio.sleep(pace_s)

        asyncio.run(go())
    finally:
        log.close()


class Worker:
    """One ``llmpulse process`` subprocess."""

    def __init__(self, tmp_path: Path, broker: TansuBroker, db: str, name: str) -> None:
        self.log_path = tmp_path / f"worker-{name}.log"
        cmd = [
            sys.executable, "-m", "llmpulse", "process",
            "--broker", f"kafka://{broker.bootstrap}", "--db", db, "--group", "workers",
            "--orphan-timeout", str(ORPHAN_TIMEOUT_S), "--session-timeout", str(SESSION_TIMEOUT_S),
        ]  # fmt: skip
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_assigned(self, timeout: float = 30) -> None:
        """Wait until the worker took part in a rebalance (it logs its partitions, possibly none)."""
        deadline = time.monotonic() + timeout
        while "assigned partitions" not in self.output():
            assert self.proc.poll() is None, self.output()[-3000:]
            assert time.monotonic() < deadline, f"no assignment within {timeout} s: {self.output()[-3000:]}"
            time.sleep(0.1)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@contextlib.contextmanager
def _workers(tmp_path: Path, broker: TansuBroker, db: str, n: int) -> Iterator[list[Worker]]:
    started = [Worker(tmp_path, broker, db, str(i)) for i in range(n)]
    try:
        yield started
    finally:
        for w in started:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait(10)


def _stored(store: Store, tenants: set[str]) -> dict[WindowKey, WindowDelta]:
    return {w.key: w.delta for t in tenants for w in store.query_windows(t, limit=100_000)}


def _wait_for_oracle(db: str, expected: Expected, workers: Sequence[Worker], timeout: float) -> None:
    tenants = {k.tenant_id for k in expected.windows}
    deadline = time.monotonic() + timeout
    with Store.open(db) as store:
        while True:
            try:
                assert_matches(_stored(store, tenants), expected)
                return
            except AssertionError as exc:
                if time.monotonic() > deadline:
                    logs = "\n".join(w.output()[-1500:] for w in workers)
                    raise AssertionError(
                        f"windows differ from the oracle ({str(exc)[:1500]}); worker logs:\n{logs}"
                    ) from None
            time.sleep(0.5)


# -- store: fenced commits and the one-kind-of-processor rule (both dialects) ---------------------


def test_a_fenced_commit_writes_nothing_when_another_processor_committed_meanwhile(store_url: str) -> None:
    consumer = unit_consumer("g", 2)
    key = WindowKey("t", "r", "m", 600)
    delta = WindowDelta()
    delta.requests = 1
    with Store.open(store_url) as store:
        store.commit(Checkpoint(consumer, offsets={6: 10, 7: 4}, windows={key: delta}), expect_offsets={})
        store.commit(
            Checkpoint(consumer, offsets={6: 12, 7: 4}, windows={key: delta}), expect_offsets={6: 10, 7: 4}
        )
        with pytest.raises(StaleCheckpoint, match="partition 6"):  # a worker still at 10: stale
            store.commit(
                Checkpoint(consumer, offsets={6: 11, 7: 5}, windows={key: delta}),
                expect_offsets={6: 10, 7: 4},
            )
        assert store.load_state(consumer, 0.0).offsets == {6: 12, 7: 4}
        assert store.query_windows("t")[0].delta.requests == 2
        assert store.consumers() == {consumer}
        other = WindowKey("t", "r", "m2", 600)
        assert [w.key for w in store.windows([key, other])] == [key]


def test_a_single_processor_refuses_a_store_that_group_workers_commit_to(
    store_url: str, tmp_path: Path
) -> None:
    with Store.open(store_url) as store:
        store.commit(Checkpoint(unit_consumer("llmpulse-processor", 0), offsets={0: 1}))
        log = SQLiteEventLog(f"sqlite:///{tmp_path / 'log.db'}")
        try:
            runner = ProcessorRunner(log, store, consumer="kafka")
            with pytest.raises(PipelineError, match="--no-processor"):
                runner.start()
        finally:
            log.close()


def test_a_group_worker_refuses_a_store_the_single_processor_commits_to(store_url: str) -> None:
    with Store.open(store_url) as store:
        store.commit(Checkpoint("kafka", offsets={0: 1}))
        worker = GroupWorker(KafkaLogConfig("kafka://127.0.0.1:9"), store)
        with pytest.raises(WorkerError, match="--no-processor"):
            worker.run()


# -- assignment ----------------------------------------------------------------------------------


class _FakeConsumer:
    def __init__(self) -> None:
        self.assigned: list[Any] = []

    def assign(self, partitions: list[Any]) -> None:
        self.assigned = partitions


def test_only_partition_numbers_held_in_all_three_topics_are_processed(tmp_path: Path) -> None:
    from confluent_kafka import TopicPartition

    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        store.commit(Checkpoint(unit_consumer("g", 1), offsets={3: 7, 4: 0, 5: 2}))
        worker = GroupWorker(KafkaLogConfig("kafka://127.0.0.1:9"), store, group="g")
        given = [TopicPartition(t, 1) for t in TOPICS] + [TopicPartition(TOPICS[0], 2)]
        consumer = _FakeConsumer()
        worker._on_assign(consumer, given)  # type: ignore[arg-type]
        assert worker.assigned() == [1]
        assert sorted((tp.topic, tp.partition, tp.offset) for tp in consumer.assigned) == [
            ("llm.calls", 1, 2), ("llm.requests", 1, 7), ("llm.responses", 1, 0),
        ]  # fmt: skip


def test_process_needs_a_broker_and_a_store() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BROKERS", "LLMPULSE_DB", "POSTGRES_DSN")}
    done = subprocess.run(
        [sys.executable, "-m", "llmpulse", "process", "--db", "sqlite:///x.db"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--broker (or KAFKA_BROKERS) is required" in done.stderr


# -- end to end: subprocess workers, the oracle's windows ----------------------------------------


@pytest.mark.slow
def test_one_worker_and_three_workers_give_the_oracle_windows(
    tmp_path: Path, broker: TansuBroker, new_pg_database: Callable[[], str]
) -> None:
    events = _events(9000, seed=31)
    expected = expected_windows(events, unanswered_are_timeouts=True)
    assert expected.duplicates
    assert expected.orphan_responses
    assert expected.unanswered_requests
    _produce(broker, events)
    for n in (1, 3):
        db = new_pg_database()
        with _workers(tmp_path, broker, db, n) as workers:
            _wait_for_oracle(db, expected, workers, timeout=30)
            assert [w.terminate() for w in workers] == [0] * n, [w.output()[-2000:] for w in workers]


def _check_final(db: str, expected: Expected) -> None:
    """After every worker stopped: still equal (nothing was counted twice after the first match)."""
    with Store.open(db) as store:
        assert_matches(_stored(store, {k.tenant_id for k in expected.windows}), expected)


class _Producer(threading.Thread):
    """Produces the events in paced batches while the test kills and starts workers."""

    def __init__(self, broker: TansuBroker, events: Sequence[Event], pace_s: float) -> None:
        super().__init__(daemon=True)
        self.broker, self.events, self.pace_s = broker, events, pace_s
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            _produce(self.broker, self.events, pace_s=self.pace_s)
        except BaseException as exc:
            self.error = exc


@pytest.mark.slow
def test_workers_sigkilled_mid_run_end_with_the_oracle_windows(
    tmp_path: Path, broker: TansuBroker, pg_url: str
) -> None:
    events = _events(9000, seed=41)
    expected = expected_windows(events, unanswered_are_timeouts=True)
    producer = _Producer(broker, events, pace_s=0.2)  # ~8 s of traffic
    with _workers(tmp_path, broker, pg_url, 3) as workers:
        for w in workers:
            w.wait_assigned()
        producer.start()
        for victim in range(2):
            time.sleep(2.5)
            workers[victim].kill()  # uncommitted work is lost; its partitions move after the session
            workers.append(Worker(tmp_path, broker, pg_url, f"r{victim}"))
        producer.join(60)
        assert producer.error is None, producer.error
        live = [w for w in workers if w.proc.returncode is None]
        _wait_for_oracle(pg_url, expected, live, timeout=40)
        assert [w.terminate() for w in live] == [0] * len(live)
    _check_final(pg_url, expected)


@pytest.mark.slow
def test_a_worker_joining_and_another_leaving_end_with_the_oracle_windows(
    tmp_path: Path, broker: TansuBroker, pg_url: str
) -> None:
    events = _events(9000, seed=51)
    expected = expected_windows(events, unanswered_are_timeouts=True)
    producer = _Producer(broker, events, pace_s=0.2)
    with _workers(tmp_path, broker, pg_url, 2) as workers:
        for w in workers:
            w.wait_assigned()
        producer.start()
        time.sleep(2)
        workers.append(Worker(tmp_path, broker, pg_url, "joined"))  # rebalance: 2 → 3 workers
        workers[2].wait_assigned()
        time.sleep(1)
        assert workers[0].terminate() == 0, workers[0].output()[-2000:]  # commits, leaves: 3 → 2
        producer.join(60)
        assert producer.error is None, producer.error
        _wait_for_oracle(pg_url, expected, workers[1:], timeout=30)
        assert [w.terminate() for w in workers[1:]] == [0, 0]
        assert "partitions revoked" in workers[1].output()
    _check_final(pg_url, expected)
    _check_published(broker, pg_url, expected)


def _published_rows(broker: TansuBroker) -> list[dict[str, Any]]:
    """Every row in llm.metrics (read from the beginning until nothing came for 2 s)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "check", "enable.auto.commit": False}
    )
    try:
        n = len(consumer.list_topics(TOPIC_METRICS, timeout=10).topics[TOPIC_METRICS].partitions)
        consumer.assign([TopicPartition(TOPIC_METRICS, p, OFFSET_BEGINNING) for p in range(n)])
        rows: list[dict[str, Any]] = []
        quiet_until = time.monotonic() + 3
        while time.monotonic() < quiet_until:
            for message in consumer.consume(1000, 0.2):
                if message.error() is None:
                    rows.append(json.loads(message.value() or b"{}"))
                    quiet_until = time.monotonic() + 2
        return rows
    finally:
        consumer.close()


def _check_published(broker: TansuBroker, db: str, expected: Expected) -> None:
    """Every version of every window was published to llm.metrics exactly once (no worker crashed),
    shaped like a /v1/metrics row, and each window's highest version is its final stored state."""
    published: dict[tuple[str, str, str, str], dict[int, dict[str, Any]]] = {}
    for row in _published_rows(broker):
        row.pop("final")
        assert isinstance(row.pop("updated_at"), float)
        version = row.pop("version")
        key = (row["tenant_id"], row["route"], row["model"], row["window_start"])
        assert version not in published.setdefault(key, {}), f"version {version} of {key} published twice"
        published[key][version] = row
    with Store.open(db) as store:
        stored = [
            w for t in {k.tenant_id for k in expected.windows} for w in store.query_windows(t, limit=100_000)
        ]
    assert stored
    assert len(published) == len(stored)
    for w in stored:
        want = metrics_row(w, now=datetime.now(UTC), final_after_s=0)
        want.pop("final")
        key = (want["tenant_id"], want["route"], want["model"], want["window_start"])
        versions = published.get(key, {})
        assert sorted(versions) == list(range(1, w.version + 1)), key
        assert versions[w.version] == want, key


class _FlakyStore:
    """A `Store` whose every `fail_every`-th commit fails as if the database had gone away."""

    def __init__(self, store: Store, fail_every: int) -> None:
        self.store, self.fail_every, self.calls, self.failed = store, fail_every, 0, 0

    def consumers(self) -> set[str]:
        return self.store.consumers()

    def load_state(self, consumer: str, now: float, **kwargs: Any) -> Any:
        return self.store.load_state(consumer, now, **kwargs)

    def lookup_cold(self, consumer: str, request_ids: Any, since: float) -> Any:
        return self.store.lookup_cold(consumer, request_ids, since)

    def commit_many(
        self, checkpoints: Any, *, expect_offsets: Any = None, return_windows: bool = False
    ) -> list[Any]:
        self.calls += 1
        if any(cp.offsets for cp in checkpoints) and self.calls % self.fail_every == 0:
            self.failed += 1
            raise StoreUnavailable("the database went away (test)")
        return self.store.commit_many(
            checkpoints, expect_offsets=expect_offsets, return_windows=return_windows
        )


@pytest.mark.slow
def test_failed_commits_reload_the_partition_and_count_nothing_twice(
    tmp_path: Path, broker: TansuBroker
) -> None:
    events = _events(3000, seed=61)
    expected = expected_windows(events, unanswered_are_timeouts=True)
    url = f"sqlite:///{tmp_path / 'flaky.db'}"
    with Store.open(url) as store:
        flaky = _FlakyStore(store, fail_every=2)
        config = KafkaLogConfig(f"kafka://{broker.bootstrap}", session_timeout_s=SESSION_TIMEOUT_S)
        worker = GroupWorker(
            config, flaky, group="flaky", processor=ProcessorConfig(orphan_timeout_s=ORPHAN_TIMEOUT_S)
        )
        thread = threading.Thread(target=worker.run, daemon=True)
        producer = _Producer(broker, events, pace_s=0.25)  # ~3 s: several commits, every 2nd failing
        producer.start()
        thread.start()
        try:
            producer.join(60)
            assert producer.error is None, producer.error
            tenants = {k.tenant_id for k in expected.windows}
            deadline = time.monotonic() + 30
            while True:
                try:
                    assert_matches(_stored(store, tenants), expected)
                    break
                except AssertionError:
                    assert time.monotonic() < deadline, worker.stats()
                    time.sleep(0.5)
        finally:
            worker.stop()
            thread.join(30)
        assert flaky.failed >= 3
        assert worker.stats()["failures"] == flaky.failed
        assert_matches(_stored(store, tenants), expected)
