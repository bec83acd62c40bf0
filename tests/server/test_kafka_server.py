"""The server in Kafka mode against a real tansu broker and a fresh database on the machine's Postgres.

The app runs in-process (`TestClient`, lifespan included) with ``broker_url`` set, as ``llmpulse
serve --broker`` builds it. Without tansu or Postgres these tests fail naming what is missing; they
never skip.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llmpulse.cli import build_parser
from llmpulse.cli._serve import settings_from_args
from llmpulse.events import Event
from llmpulse.pipeline._kafka_log import TOPICS
from llmpulse.server import ServerSettings, create_app
from llmpulse.server._run import banner
from llmpulse.testing.traffic import encode_batch_json, generate_events, iter_batches
from tests.kafka_broker import TansuBroker

LOCAL_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PARTITIONS = 3


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty Postgres database's URL, dropped after the test. Fails when no Postgres answers."""
    import psycopg

    admin_dsn = os.environ.get("POSTGRES_TEST_DSN") or LOCAL_POSTGRES_DSN
    name = f"llmpulse_s_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"these tests need Postgres at {admin_dsn} (set POSTGRES_TEST_DSN): {exc}")
    yield f"{admin_dsn.rpartition('/')[0]}/{name}"
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as started:
        yield started


def _settings(broker: TansuBroker, db_url: str, **overrides: Any) -> ServerSettings:
    values: dict[str, Any] = {
        "broker_url": f"kafka://{broker.bootstrap}",
        "db_url": db_url,
        "kafka_partitions": PARTITIONS,
        "kafka_delivery_timeout_s": 5.0,
        "checkpoint_interval_s": 0.1,
        **overrides,
    }
    return ServerSettings(**values)


def _events(n_pairs: int, seed: int, **kw: Any) -> list[Event]:
    start = datetime.now(UTC) - timedelta(minutes=10)
    return generate_events(n_pairs, start=start, duration_s=300, call_rate=0.2, seed=seed, **kw)


def _post(client: TestClient, events: list[Event], batch: int = 50) -> int:
    """POST `events` in batches; the number acknowledged (every batch must be 200)."""
    acked = 0
    for chunk in iter_batches(events, batch):
        response = client.post("/v1/events", content=encode_batch_json(chunk))
        assert response.status_code == 200, response.text
        acked += response.json()["accepted"]
    return acked


def _until(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


# -- /health ---------------------------------------------------------------------------------------


def test_health_end_offsets_add_up_to_the_acknowledged_events(broker: TansuBroker, pg_url: str) -> None:
    events = _events(400, seed=11)
    with TestClient(create_app(_settings(broker, pg_url))) as client:
        # many batches of several events per partition: tansu's watermark would count batches
        acked = _post(client, events, batch=37)
        assert acked == len(events)

        def processed() -> bool:
            return bool(client.get("/health").json()["processor"]["processed_events"] == acked)

        _until("the processor has read every event", processed)
        _until(
            "the processor has committed everything",
            lambda: client.get("/health").json()["processor"]["lag_records"] == 0,
        )
        body = client.get("/health").json()
    assert body["status"] == "ok"
    log = body["log"]
    assert log["kind"] == "kafka"
    assert log["appended_events"] == acked
    assert len(log["end_offsets"]) == 3 * PARTITIONS
    assert sum(log["end_offsets"].values()) == acked
    committed = body["processor"]["committed_offsets"]
    assert committed == log["end_offsets"]
    by_topic = dict.fromkeys(TOPICS, 0)
    for partition, end in log["end_offsets"].items():
        by_topic[TOPICS[int(partition) % 3]] += end
    kinds = {"llm.requests": "LLMRequest", "llm.responses": "LLMResponse", "llm.calls": "LLMCall"}
    assert by_topic == {t: sum(type(e).__name__ == kinds[t] for e in events) for t in TOPICS}


# -- the serve banner (no broker needed) -------------------------------------------------------------


def test_the_banner_names_the_broker_and_topics_in_kafka_mode_not_a_sqlite_log() -> None:
    settings = ServerSettings(broker_url="kafka://127.0.0.1:19092,127.0.0.1:19093", db_url="sqlite:///s.db")
    text = banner(settings)
    assert "event log: Kafka at 127.0.0.1:19092,127.0.0.1:19093" in text
    assert "topics llm.requests, llm.responses, llm.calls" in text
    assert "processing: in this process" in text
    assert "log.db" not in text
    workers = banner(ServerSettings(broker_url="127.0.0.1:1", run_processor=False, consumer_group="g7"))
    assert "'llmpulse process' workers (consumer group g7)" in workers
    embedded = banner(ServerSettings(db_url="sqlite:///x.db"))
    assert "event log: sqlite:///x.log.db" in embedded
    assert "Kafka" not in embedded


def test_serve_takes_the_workers_group_from_the_flag_or_consumer_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = ["serve", "--broker", "kafka://127.0.0.1:1", "--no-processor"]
    monkeypatch.setenv("CONSUMER_GROUP", "from-env")
    assert settings_from_args(build_parser().parse_args(argv)).consumer_group == "from-env"
    args = build_parser().parse_args([*argv, "--group", "from-flag"])
    assert settings_from_args(args).consumer_group == "from-flag"
    monkeypatch.delenv("CONSUMER_GROUP")
    assert settings_from_args(build_parser().parse_args(argv)).consumer_group == "llmpulse-processor"
    with pytest.raises(ValueError, match="consumer_group"):
        ServerSettings(consumer_group=" ")
