"""The Kafka broker restarted mid-run under ``llmpulse process`` workers: nothing acknowledged is lost.

tansu keeps its data in a local S3 server (`tests.s3_server`: moto on loopback), which outlives the
broker: the build the tests get has no ``postgres://`` storage and its memory storage forgets
everything on a restart. An ingest node (``llmpulse serve --broker … --no-processor`` on a fresh
database of the machine's Postgres) takes batches from a client while three workers aggregate; the
broker is SIGKILLed and started again on the same port and bucket twice, down for 1 s, then 8 s.

The client POSTs each batch until it is acknowledged (200), honouring ``Retry-After`` on 503 and
backing off on a connection error or a timeout. Such a failed attempt may have left part of the batch
in the log (a 503 after some events were delivered, a broker killed before it answered); the resend
repeats those events and the workers count them once (dedup by request_id and kind), exactly as they
count the duplicates the traffic itself holds. So once every batch is acknowledged the windows must be
the oracle's over the acknowledged events, with nothing lost (the restarted broker still has every
acknowledged event) and nothing counted twice. The test also checks that ingest answered 503 with
``Retry-After`` while the broker was down, and that every worker exits cleanly at the end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llmpulse.events import Event
from llmpulse.pipeline._kafka_log import TOPIC_METRICS
from llmpulse.testing.traffic import encode_batch_json, iter_batches
from tests.e2e._server import ServerProcess
from tests.kafka_broker import TansuBroker
from tests.oracle import expected_windows
from tests.pipeline.test_kafka_workers import (
    ORPHAN_TIMEOUT_S,
    Worker,
    _check_final,
    _events,
    _wait_for_oracle,
    _workers,
    new_pg_database,  # noqa: F401  (a fixture: pg_url needs it)
    pg_url,  # noqa: F401  (a fixture)
)
from tests.s3_server import S3Server

#: Few partitions, and one for llm.metrics: tansu writes several S3 objects per partition of every
#: produce request, and moto's server answers them all from one Python process (CPU-bound).
PARTITIONS = 3
#: How long the broker stays down at each restart (seconds).
OUTAGES_S = (1.0, 8.0)
BATCH = 250
#: Seconds between two acknowledged batches, so the traffic spans both outages.
PACE_S = 0.15
_JSON = {"content-type": "application/json"}


@pytest.fixture
def s3() -> Iterator[S3Server]:
    with S3Server() as started:
        yield started


@pytest.fixture
def s3_broker(s3: S3Server) -> Iterator[TansuBroker]:
    """tansu on the S3 server's bucket: its topics and records survive a restart."""
    with TansuBroker(storage=s3.storage, env=s3.env) as started:
        yield started


@dataclass
class _Answer:
    at: float
    status: int | None  # None: no answer (connection refused or reset, timeout)
    retry_after: str | None = None


class _Client(threading.Thread):
    """POSTs the batches in order, each until it is acknowledged; records every answer."""

    def __init__(self, url: str, batches: Sequence[list[Event]]) -> None:
        super().__init__(daemon=True)
        self.url, self.batches = url, batches
        self.acked: list[int] = []
        self.answers: list[_Answer] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.url, timeout=30.0) as http:
                for i, batch in enumerate(self.batches):
                    self._send(http, encode_batch_json(batch), len(batch))
                    self.acked.append(i)
                    time.sleep(PACE_S)
        except BaseException as exc:
            self.error = exc

    def _send(self, http: httpx.Client, body: bytes, n: int) -> None:
        backoff = 0.2
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, f"a batch unacknowledged for 60 s: {self.answers[-5:]}"
            try:
                response = http.post("/v1/events", content=body, headers=_JSON)
            except httpx.TransportError:  # ambiguous: part of the batch may be in the log
                self.answers.append(_Answer(time.monotonic(), None))
                time.sleep(backoff)
                backoff = min(2 * backoff, 2.0)
                continue
            retry_after = response.headers.get("retry-after")
            self.answers.append(_Answer(time.monotonic(), response.status_code, retry_after))
            if response.status_code == 200:
                assert response.json() == {"accepted": n}
                return
            assert response.status_code == 503, f"{response.status_code}: {response.text[:500]}"
            time.sleep(float(retry_after or 1.0))


def _logs(server: ServerProcess, workers: Sequence[Worker], broker: TansuBroker) -> str:
    parts = [f"server:\n{server.output()[-2000:]}", f"broker:\n{broker.log_tail(1500)}"]
    parts += [f"worker {i}:\n{w.output()[-1500:]}" for i, w in enumerate(workers)]
    return "\n".join(parts)


def _probe_while_down(url: str, body: bytes, until: float) -> list[_Answer]:
    """POST `body` until ingest answers 503 or `until` (monotonic) passes; the answers before `until`.

    `body` is a batch already acknowledged, so whatever becomes of a probe (a timeout: the node had not
    noticed yet and its request waits for the broker) it is a duplicate the workers count once.
    """
    answers: list[_Answer] = []
    with httpx.Client(base_url=url) as http:
        while time.monotonic() < until - 0.05:
            try:
                response = http.post(
                    "/v1/events", content=body, timeout=max(0.1, until - time.monotonic()), headers=_JSON
                )
            except httpx.TransportError:
                continue
            answers.append(
                _Answer(time.monotonic(), response.status_code, response.headers.get("retry-after"))
            )
            if response.status_code == 503:
                assert "Kafka broker" in response.json()["error"]
                break
            time.sleep(0.05)
    return [a for a in answers if a.at < until]


@pytest.mark.slow
def test_broker_restarted_mid_run_loses_nothing_acknowledged_and_counts_nothing_twice(
    tmp_path: Path,
    s3_broker: TansuBroker,
    pg_url: str,  # noqa: F811
) -> None:
    broker = s3_broker
    batches = list(iter_batches(_events(2500, seed=81), BATCH))
    broker.create_topic(TOPIC_METRICS, 1)
    server = ServerProcess(
        tmp_path,
        *("--broker", f"kafka://{broker.bootstrap}", "--kafka-partitions", str(PARTITIONS)),
        *("--db", pg_url, "--no-processor", "--orphan-timeout", str(ORPHAN_TIMEOUT_S)),
    )
    probes: list[list[_Answer]] = []
    try:
        server.start(timeout=60)
        with _workers(tmp_path, broker, pg_url, 3) as workers:
            for w in workers:
                w.wait_assigned(timeout=60)
            client = _Client(server.url, batches)
            client.start()
            for down_s in OUTAGES_S:
                time.sleep(2.5)
                assert client.acked, f"nothing acknowledged yet: {client.answers}"
                killed_at = time.monotonic()
                broker.kill()
                acked_body = encode_batch_json(batches[client.acked[0]])
                probes.append(_probe_while_down(server.url, acked_body, until=killed_at + down_s))
                time.sleep(max(0.0, killed_at + down_s - time.monotonic()))
                broker.start(timeout=30)
            client.join(90)
            assert not client.is_alive(), f"the client did not finish: {client.answers[-5:]}"
            assert client.error is None, f"{client.error!r}\n{_logs(server, workers, broker)}"
            assert client.acked == list(range(len(batches)))
            acknowledged = [e for i in client.acked for e in batches[i]]
            expected = expected_windows(acknowledged, unanswered_are_timeouts=True)
            assert expected.duplicates
            assert expected.orphan_responses
            assert expected.unanswered_requests
            _wait_for_oracle(pg_url, expected, workers, timeout=40)
            assert all(w.proc.poll() is None for w in workers), _logs(server, workers, broker)
            assert [w.terminate() for w in workers] == [0, 0, 0], _logs(server, workers, broker)
        assert server.health()["log"]["broker_unreachable"] is None
    finally:
        if server.proc is not None:
            server.stop()
    assert broker.starts == 1 + len(OUTAGES_S)
    for down_s, answers in zip(OUTAGES_S, probes, strict=True):
        assert 200 not in [a.status for a in answers], f"acknowledged while the broker was down: {answers}"
        assert answers, f"no answer within the {down_s:g} s the broker was down"
        assert answers[-1].status == 503, answers
    refused = [a for a in [*client.answers, *(a for p in probes for a in p)] if a.status == 503]
    assert all(a.retry_after and float(a.retry_after) > 0 for a in refused), refused
    _check_final(pg_url, expected)
