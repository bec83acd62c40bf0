"""The server in Kafka mode against a real tansu broker and a fresh database on the machine's Postgres.

The app runs in-process (`TestClient`, lifespan included) with ``broker_url`` set, as ``llmpulse
serve --broker`` builds it. Without tansu or Postgres these tests fail naming what is missing; they
never skip.
"""

from __future__ import annotations

import threading
import time
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
from tests.postgres_server import fresh_databases
from tests.server.keyed import create_keys

PARTITIONS = 3


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty Postgres database's URL (`tests.postgres_server.suite_dsn`'s server), dropped
    after the test."""
    with fresh_databases("llmpulse_s") as create:
        yield create()


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


# -- /v1/calls/recent ------------------------------------------------------------------------------


def _body(kind: str, **fields: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    if kind == "llm.request":
        base: dict[str, Any] = {
            "tenant_id": "acme",
            "route": "chat",
            "model": "gpt-4o-mini",
            "prompt_tokens": 321,
        }
        base["timestamp"] = (now - timedelta(seconds=5)).isoformat()
    elif kind == "llm.response":
        base = {
            "latency_ms": 1123.5,
            "completion_tokens": 512,
            "timestamp": (now - timedelta(seconds=4)).isoformat(),
        }
    else:
        base = {"model": "gpt-4o-mini", "input_tokens": 100, "output_tokens": 20, "tenant_id": "acme"}
        base |= {"route": "chat", "latency_ms": 250.0, "timestamp": (now - timedelta(seconds=3)).isoformat()}
    return {"type": kind, **base, **fields}


def _recent_when(client: TestClient, done: Callable[[list[dict[str, Any]]], bool], **params: Any) -> Any:
    """Poll /v1/calls/recent until `done(calls)` holds (records appear as the processor counts)."""
    found: dict[str, Any] = {}

    def check() -> bool:
        answer = client.get("/v1/calls/recent", params=params)
        assert answer.status_code == 200, answer.text
        found.update(answer.json())
        return done(found["calls"])

    _until("the recent calls are counted", check)
    return found


def _processed(client: TestClient, n: int) -> None:
    _until(
        "the processor has read every event",
        lambda: client.get("/health").json()["processor"]["processed_events"] == n,
    )
    _until(
        "the processor has committed", lambda: client.get("/health").json()["processor"]["lag_records"] == 0
    )


def test_recent_calls_in_kafka_mode_are_the_call_records_like_the_embedded_mode(
    broker: TansuBroker, pg_url: str
) -> None:
    old = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    batch = [
        _body("llm.request", request_id="ok-1", route="search"),
        _body("llm.response", request_id="ok-1", latency_ms=800.0, ttft_ms=120.0),
        _body("llm.request", request_id="err-1"),
        _body("llm.response", request_id="err-1", error={"type": "server_error", "message": "boom"}),
        _body("llm.request", request_id="wait-1"),
        _body("llm.request", request_id="late-1", timestamp=old),
        _body("llm.call", request_id="call-1", cost=0.25, cost_source="provider", status="cancelled"),
        _body("llm.call", request_id="call-2", error="rate_limit_exceeded", tenant_id="other"),
        _body(
            "llm.call", request_id="call-1", cost=0.25, cost_source="provider", status="cancelled"
        ),  # a resend
    ]
    with TestClient(create_app(_settings(broker, pg_url, orphan_timeout_s=1.0))) as client:
        assert client.post("/v1/events", json=batch[:4]).status_code == 200
        assert client.post("/v1/events", json=batch[4:]).status_code == 200
        # the two requests without a response show once counted as timeouts
        body = _recent_when(client, lambda calls: len(calls) == 6)
        rows = body["calls"]
        by_id = {row["request_id"]: row for row in rows}
        assert len(rows) == len(by_id) == 6
        assert "scanned_events" not in body
        assert by_id["ok-1"]["status"] == "ok"
        assert by_id["ok-1"]["route"] == "search"
        assert by_id["ok-1"]["latency_ms"] == 800.0
        assert by_id["ok-1"]["ttft_ms"] == 120.0
        assert by_id["ok-1"]["output_tokens"] == 512
        assert by_id["err-1"]["status"] == "error"
        assert by_id["err-1"]["error"] == "boom"
        assert by_id["wait-1"]["status"] == "timeout"
        assert by_id["late-1"]["status"] == "timeout"
        assert by_id["call-1"]["status"] == "cancelled"
        assert by_id["call-1"]["cost_usd"] == 0.25
        assert by_id["call-2"]["status"] == "error"
        assert rows[-1]["request_id"] == "late-1"  # newest first
        only = client.get("/v1/calls/recent", params={"tenant_id": "other"}).json()
        assert [row["request_id"] for row in only["calls"]] == ["call-2"]
        routed = client.get("/v1/calls/recent", params={"route": "search"}).json()
        assert [row["request_id"] for row in routed["calls"]] == ["ok-1"]
        recent = client.get("/v1/calls/recent", params={"minutes": 5, "limit": 2}).json()
        assert recent["count"] == 2
        assert "late-1" not in {row["request_id"] for row in recent["calls"]}


def test_recent_calls_in_kafka_mode_over_traffic_are_the_newest_of_the_tenant(
    broker: TansuBroker, pg_url: str
) -> None:
    events = _events(600, seed=12)
    with TestClient(create_app(_settings(broker, pg_url))) as client:
        _post(client, events, batch=100)
        _processed(client, len(events))
        answer = client.get("/v1/calls/recent", params={"tenant_id": "tenant-1", "limit": 40}).json()
    assert answer["count"] == len(answer["calls"]) == 40
    stamps = [datetime.fromisoformat(c["timestamp"]) for c in answer["calls"]]
    assert stamps == sorted(stamps, reverse=True)
    responses = {e.request_id: e for e in events if type(e).__name__ == "LLMResponse"}
    candidates = sorted(
        (e for e in events if type(e).__name__ != "LLMResponse" and e.tenant_id == "tenant-1"),
        key=lambda e: (-e.timestamp.timestamp(), e.request_id),
    )
    unique = list(dict.fromkeys(e.request_id for e in candidates))
    assert [c["request_id"] for c in answer["calls"]] == unique[:40]
    for call in answer["calls"]:
        assert call["tenant_id"] == "tenant-1"
        if call["request_id"] in responses:
            assert call["latency_ms"] == responses[call["request_id"]].latency_ms


def test_recent_calls_in_kafka_mode_are_scoped_to_the_key_s_tenant(broker: TansuBroker, pg_url: str) -> None:
    keys, _ = create_keys(pg_url, ["alpha", "beta"])
    with TestClient(create_app(_settings(broker, pg_url))) as client:
        for tenant, rid in (("alpha", "a-1"), ("beta", "b-1"), ("beta", "b-2")):
            # the body names another tenant: the key's tenant wins
            sent = client.post(
                "/v1/events",
                json=[_body("llm.call", request_id=rid, tenant_id="someone-else")],
                headers={"Authorization": f"Bearer {keys[tenant]}"},
            )
            assert sent.status_code == 200, sent.text
        alpha = {"Authorization": f"Bearer {keys['alpha']}"}
        _until(
            "the processor has counted the three calls",
            lambda: client.get("/health").json()["processor"]["processed_events"] == 3,
        )
        _until(
            "the processor has committed",
            lambda: client.get("/health").json()["processor"]["lag_records"] == 0,
        )
        assert client.get("/v1/calls/recent").status_code == 401
        mine = client.get("/v1/calls/recent", headers=alpha).json()
        assert [(c["request_id"], c["tenant_id"]) for c in mine["calls"]] == [("a-1", "alpha")]
        assert client.get("/v1/calls/recent", params={"tenant_id": "beta"}, headers=alpha).status_code == 403
        beta = client.get("/v1/calls/recent", headers={"Authorization": f"Bearer {keys['beta']}"}).json()
        assert sorted(c["request_id"] for c in beta["calls"]) == ["b-1", "b-2"]


# -- admission by processing lag -------------------------------------------------------------------


def _post_until_refused(client: TestClient, events: list[Event], timeout: float = 15.0) -> tuple[int, Any]:
    """POST 50-event batches until one is refused; (events acknowledged before, the refusal)."""
    acked = 0
    deadline = time.monotonic() + timeout
    for i, chunk in enumerate(iter_batches(events * 100, 50)):
        assert time.monotonic() < deadline, f"ingest never pushed back ({acked} events acknowledged)"
        response = client.post("/v1/events", content=encode_batch_json(chunk))
        if response.status_code == 503:
            return acked, response
        assert response.status_code == 200, response.text
        acked += len(chunk)
        if i % 4 == 3:
            time.sleep(0.3)  # let the lag snapshots catch up
    raise AssertionError("unreachable")


def _health(client: TestClient) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/health").json()
    return body


def test_ingest_pushes_back_while_group_workers_lag_and_admits_once_they_caught_up(
    broker: TansuBroker, pg_url: str
) -> None:
    from llmpulse.pipeline import KafkaLogConfig, ProcessorConfig
    from llmpulse.pipeline._workers import GroupWorker
    from llmpulse.store import Store

    settings = _settings(
        broker,
        pg_url,
        run_processor=False,
        max_processor_lag_events=100,
        admission_wait_s=0.3,
        consumer_group="lag-g",
    )
    events = _events(100, seed=13)
    with TestClient(create_app(settings)) as client:
        acked, refused = _post_until_refused(client, events)
        assert acked > 100
        assert float(refused.headers["retry-after"]) >= 1
        assert "events behind" in refused.json()["error"]
        # once the snapshots are fresh, the figure is exact: nothing is committed yet
        _until(
            "the lag equals what was acknowledged", lambda: _health(client)["workers"]["lag_events"] == acked
        )
        assert _health(client)["workers"]["group"] == "lag-g"

        store = Store.open(pg_url)
        worker = GroupWorker(
            KafkaLogConfig(f"kafka://{broker.bootstrap}", partitions=PARTITIONS, session_timeout_s=3.0),
            store,
            group="lag-g",
            processor=ProcessorConfig(orphan_timeout_s=300),
            checkpoint_interval_s=0.1,
            publish_metrics=False,
        )
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            _until("the workers caught up", lambda: _health(client)["workers"]["lag_events"] == 0, timeout=40)
            started = time.monotonic()
            response = client.post("/v1/events", content=encode_batch_json(events[:50]))
            assert response.status_code == 200, response.text
            assert time.monotonic() - started < 0.3  # admitted without waiting
        finally:
            worker.stop()
            thread.join(30)
            store.close()
        assert not thread.is_alive()


def test_ingest_pushes_back_while_the_in_process_processor_lags_in_kafka_mode(
    broker: TansuBroker, pg_url: str
) -> None:
    settings = _settings(broker, pg_url, max_processor_lag_events=60, admission_wait_s=0.3)
    events = _events(100, seed=14)
    with TestClient(create_app(settings)) as client:
        runner = client.app.state.llmpulse.runner  # type: ignore[attr-defined]
        assert _post(client, events[:120]) == 120
        _until("the processor's lag is known and zero", lambda: runner.lag_events() == 0)
        runner.stop()  # the processor falls behind from now on
        acked, refused = _post_until_refused(client, events)
        assert acked > 60
        assert "events behind" in refused.json()["error"]
        _until("the lag equals what was acknowledged since", lambda: runner.lag_events() == acked)
