"""Alert notifications: a real Alertmanager, real HTTP receivers on loopback for the webhook and Slack,
signatures, retries, permanent failures, dead receivers and a full queue."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import pytest

from llmpulse.alerts import Notification, Notifier, NotifierKind
from llmpulse.alerts._notify import (
    SIGNATURE_HEADER,
    Dispatcher,
    NotifierStats,
    alertmanager_body,
    rfc3339,
    signature,
)
from llmpulse.sdk._retry import RetryPolicy
from tests.alerts.alertmanager import Alertmanager
from tests.exporters.rsyslog import free_port

#: Retries as the default policy shapes them (5 minutes), with waits short enough for a test.
FAST = RetryPolicy(max_attempts=1000, initial_backoff_s=0.01, max_backoff_s=0.05, max_elapsed_s=300.0)
SECRET = "s3cret-for-tests"


def notification(
    status: Literal["firing", "resolved"] = "firing",
    *,
    rule: str = "cost-spike",
    notify: tuple[str, ...] = ("hook",),
    starts_at: float = 1_790_000_000.0,
    ends_at: float | None = None,
    summary: str = "cost_usd 23.5 > 20 over 5m",
    value: float | None = 23.5,
    route: str = "chat",
) -> Notification:
    if status == "resolved" and ends_at is None:
        ends_at = starts_at + 600.0
    return Notification(
        rule=rule,
        tenant_id="acme",
        status=status,
        labels={"severity": "page", "alertname": rule, "tenant_id": "acme", "route": route},
        annotations={"runbook": "https://ops.example/runbooks/cost"},
        value=value,
        starts_at=starts_at,
        ends_at=ends_at,
        summary=summary,
        details={"threshold": 20.0, "window_s": 300.0},
        notify=notify,
    )


# -- a real receiver --------------------------------------------------------------------------------


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class Receiver(ThreadingHTTPServer):
    """An HTTP receiver on 127.0.0.1: records every POST, answers from `script` then 200. While
    `release` is clear it holds its answers; `on_request` runs as each request arrives."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[Answer] = []
        self.requests: list[Request] = []
        self.arrived = threading.Condition()
        self.release = threading.Event()
        self.release.set()
        self.on_request: Callable[[], None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Request]:
        """The requests once there are `count` (what came by the deadline otherwise)."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Receiver

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.arrived:
            self.server.requests.append(
                Request(self.path, dict(self.headers.items()), body, time.monotonic())
            )
            answer = self.server.script.pop(0) if self.server.script else Answer()
            self.server.arrived.notify_all()
        if self.server.on_request is not None:
            self.server.on_request()
        self.server.release.wait(10.0)
        self.send_response(answer.status)
        for key, value in answer.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    am = Alertmanager(Path(tmp_path_factory.mktemp("alertmanager")))
    am.start()
    yield am
    am.stop()


def dispatcher(kind: NotifierKind, url: str, *, secret: str | None = None, **kwargs: Any) -> Dispatcher:
    timeout_s = kwargs.pop("timeout_s", 5.0)
    notifier = Notifier(name="hook", kind=kind, url=url, secret=secret, timeout_s=timeout_s)
    return Dispatcher({"hook": notifier}, retry=kwargs.pop("retry", FAST), **kwargs)


def settled(d: Dispatcher, name: str, count: int, timeout: float = 5.0) -> NotifierStats:
    """The notifier's stats once `count` notifications were sent or failed."""
    deadline = time.monotonic() + timeout
    while True:
        stats = d.stats()[name]
        if stats["sent"] + stats["failed"] >= count or time.monotonic() > deadline:
            return stats
        time.sleep(0.01)


# -- Alertmanager ---------------------------------------------------------------------------------


def test_alertmanager_receives_the_alert_then_its_resolution(alertmanager: Alertmanager) -> None:
    now = time.time()
    firing = notification(rule="am-cost-spike", notify=("am",), starts_at=now - 60.0)
    other = notification(rule="am-cost-spike", notify=("am",), starts_at=now - 30.0, route="embeddings")
    d = Dispatcher({"am": Notifier(name="am", kind="alertmanager", url=alertmanager.url)}, retry=FAST)
    only_ours = {"filter": urllib.parse.quote('alertname="am-cost-spike"')}
    try:
        d.submit(firing)
        d.submit(other)
        assert settled(d, "am", 2)["sent"] == 2

        alerts = {a["labels"]["route"]: a for a in alertmanager.alerts(**only_ours)}
        assert set(alerts) == {"chat", "embeddings"}
        alert = alerts["chat"]
        assert alert["labels"] == dict(firing.labels)
        assert alert["status"]["state"] == "active"
        assert alert["startsAt"] == rfc3339(firing.starts_at)
        assert alert["annotations"] == {
            "summary": firing.summary,
            "value": "23.5",
            "runbook": "https://ops.example/runbooks/cost",
        }

        d.submit(
            notification("resolved", rule="am-cost-spike", notify=("am",), starts_at=now - 60.0, ends_at=now)
        )
        assert settled(d, "am", 3)["sent"] == 3
        left = alertmanager.alerts(**only_ours)
        assert [a["labels"]["route"] for a in left] == ["embeddings"]  # chat's is resolved, no longer listed
    finally:
        assert d.close(5.0)
    assert d.stats()["am"] == {
        "sent": 3,
        "failed": 0,
        "retried": 0,
        "dropped": 0,
        "queued": 0,
        "last_error": None,
    }


def test_alertmanager_body_has_endsat_only_once_resolved() -> None:
    [firing, resolved] = json.loads(alertmanager_body([notification(), notification("resolved")]))
    assert "endsAt" not in firing
    assert resolved["endsAt"] == rfc3339(1_790_000_600.0) == "2026-09-21T14:23:20.000Z"
    assert firing["labels"] == resolved["labels"] == dict(notification().labels)
    assert "generatorURL" not in firing


def test_queued_alerts_share_a_request_but_never_two_states_of_one_alert(receiver: Receiver) -> None:
    d = dispatcher("alertmanager", receiver.url + "/am/")
    receiver.release.clear()
    d.submit(notification(route="a"))
    receiver.wait_for(1)
    d.submit(notification(route="b"))
    d.submit(notification("resolved", route="b"))
    d.submit(notification(route="c"))
    receiver.release.set()
    assert d.close(5.0)
    requests = receiver.wait_for(3)
    assert {r.path for r in requests} == {"/am/api/v2/alerts"}
    batches = [[(a["labels"]["route"], "endsAt" in a) for a in r.json()] for r in requests]
    assert batches == [[("a", False)], [("b", False)], [("b", True), ("c", False)]]
    assert d.stats()["hook"]["sent"] == 4


# -- webhook and Slack ----------------------------------------------------------------------------


def test_webhook_body_carries_the_contract_and_its_signature_verifies(receiver: Receiver) -> None:
    d = dispatcher("webhook", receiver.url + "/hooks/llm?team=ops", secret=SECRET)
    d.submit(notification())
    d.submit(notification("resolved"))
    assert d.close(5.0)
    firing, resolved = receiver.wait_for(2)

    assert firing.path == "/hooks/llm?team=ops"
    assert firing.headers["Content-Type"] == "application/json"
    assert firing.json() == {
        "version": 1,
        "rule": "cost-spike",
        "tenant_id": "acme",
        "status": "firing",
        "labels": {"severity": "page", "alertname": "cost-spike", "tenant_id": "acme", "route": "chat"},
        "annotations": {"runbook": "https://ops.example/runbooks/cost"},
        "value": 23.5,
        "starts_at": "2026-09-21T14:13:20.000Z",
        "ends_at": None,
        "summary": "cost_usd 23.5 > 20 over 5m",
        "details": {"threshold": 20.0, "window_s": 300.0},
    }
    assert resolved.json()["status"] == "resolved"
    assert resolved.json()["ends_at"] == "2026-09-21T14:23:20.000Z"

    for request in (firing, resolved):
        sent = request.headers[SIGNATURE_HEADER]
        expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
        wrong = "sha256=" + hmac.new(b"not-the-secret", request.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(sent, expected)
        assert not hmac.compare_digest(sent, wrong)
        assert signature(request.body, SECRET) == expected


def test_webhook_without_a_secret_is_not_signed(receiver: Receiver) -> None:
    d = dispatcher("webhook", receiver.url)
    d.submit(notification())
    assert d.close(5.0)
    [request] = receiver.wait_for(1)
    assert SIGNATURE_HEADER not in request.headers


def test_slack_receives_an_incoming_webhook_message_coloured_by_status(receiver: Receiver) -> None:
    d = dispatcher("slack", receiver.url + "/services/T000/B000/XXXX")
    d.submit(notification(summary="p95 > 2000 ms & rising"))
    d.submit(notification("resolved", summary="p95 > 2000 ms & rising"))
    assert d.close(5.0)
    firing, resolved = (r.json() for r in receiver.wait_for(2))

    assert firing["text"] == "[FIRING] cost-spike: p95 &gt; 2000 ms &amp; rising"
    assert resolved["text"].startswith("[RESOLVED] cost-spike")
    [att] = firing["attachments"]
    assert att["color"] == "#d93f3c"
    assert resolved["attachments"][0]["color"] == "#2eb67d"
    assert att["title"] == "[FIRING] cost-spike"
    assert att["ts"] == 1_790_000_000
    for f in att["fields"]:
        assert {type(f["title"]), type(f["value"]), type(f["short"])} == {str, bool}
    fields = {f["title"]: f["value"] for f in att["fields"]}
    assert fields["Status"] == "firing"
    assert fields["Value"] == "23.5"
    assert fields["Labels"] == "`alertname=cost-spike`, `route=chat`, `severity=page`, `tenant_id=acme`"
    assert "Ended" not in fields
    assert {f["title"]: f["value"] for f in resolved["attachments"][0]["fields"]}["Ended"] == (
        "2026-09-21T14:23:20.000Z"
    )


# -- retries --------------------------------------------------------------------------------------


def test_a_503_then_200_is_delivered_once_after_a_retry(receiver: Receiver) -> None:
    receiver.script = [Answer(503)]
    d = dispatcher("webhook", receiver.url, secret=SECRET)
    d.submit(notification())
    assert d.close(5.0)
    first, second = receiver.wait_for(2)
    assert len(receiver.wait_for(3, timeout=0.1)) == 2
    assert first.body == second.body
    assert first.headers[SIGNATURE_HEADER] == second.headers[SIGNATURE_HEADER]
    stats = d.stats()["hook"]
    assert (stats["sent"], stats["retried"], stats["failed"]) == (1, 1, 0)
    assert "HTTP 503" in str(stats["last_error"])


def test_retry_after_is_honoured(receiver: Receiver) -> None:
    receiver.script = [Answer(429, {"Retry-After": "0.3"})]
    d = dispatcher("webhook", receiver.url)
    d.submit(notification())
    assert d.close(5.0)
    first, second = receiver.wait_for(2)
    assert second.at - first.at >= 0.3
    assert d.stats()["hook"]["sent"] == 1


@pytest.mark.parametrize(
    ("status", "retried"), [(400, False), (404, False), (408, True), (429, True), (500, True)]
)
def test_only_408_429_and_5xx_are_retried(receiver: Receiver, status: int, retried: bool) -> None:
    receiver.script = [Answer(status)]
    d = dispatcher("webhook", receiver.url)
    d.submit(notification())
    assert d.close(5.0)
    requests = receiver.wait_for(2, timeout=0.3 if not retried else 5.0)
    stats = d.stats()["hook"]
    if retried:
        assert len(requests) == 2
        assert (stats["sent"], stats["failed"], stats["retried"]) == (1, 0, 1)
    else:
        assert len(requests) == 1
        assert (stats["sent"], stats["failed"], stats["retried"]) == (0, 1, 0)
        assert f"HTTP {status}" in str(stats["last_error"])


def test_retries_stop_at_the_deadline_on_the_injected_clock(receiver: Receiver) -> None:
    now = [0.0]

    def advance() -> None:
        now[0] += 120.0  # each attempt "takes" two minutes

    receiver.script = [Answer(503) for _ in range(10)]
    receiver.on_request = advance
    d = dispatcher("webhook", receiver.url, clock=lambda: now[0])
    d.submit(notification())
    stats = settled(d, "hook", 1)
    # attempts at 0, 120 and 240 s; the next would start past the 300 s deadline
    assert len(receiver.requests) == 3
    assert (stats["sent"], stats["failed"], stats["retried"]) == (0, 1, 2)
    assert d.close(1.0)


# -- never in the caller's way --------------------------------------------------------------------


def test_a_receiver_that_hangs_does_not_block_submit() -> None:
    with socket.socket() as listener:  # accepts connections (the kernel's backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        d = dispatcher("webhook", f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_s=2.0)
        started = time.monotonic()
        for _ in range(50):
            d.submit(notification())
        assert time.monotonic() - started < 0.2
        assert d.stats()["hook"]["queued"] == 50
        started = time.monotonic()
        assert not d.close(0.2)  # one still in flight
        assert time.monotonic() - started < 1.0
        stats = d.stats()["hook"]
        assert (stats["dropped"], stats["queued"], stats["sent"]) == (49, 1, 0)


def test_a_receiver_that_is_down_is_retried_then_dropped_at_close() -> None:
    d = dispatcher("webhook", f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    for _ in range(5):
        d.submit(notification())
    assert time.monotonic() - started < 0.1
    deadline = time.monotonic() + 5.0
    while d.stats()["hook"]["retried"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not d.close(0.1)
    stats = d.stats()["hook"]
    assert stats["retried"] >= 2
    assert (stats["sent"], stats["failed"], stats["dropped"], stats["queued"]) == (0, 0, 5, 0)
    assert "ConnectionRefusedError" in str(stats["last_error"])


def test_a_full_queue_drops_the_oldest_and_counts_it(receiver: Receiver) -> None:
    d = dispatcher("webhook", receiver.url, max_queue=3)
    receiver.release.clear()
    d.submit(notification(value=0.0))
    receiver.wait_for(1)  # in flight, held by the receiver
    for value in range(1, 6):
        d.submit(notification(value=float(value)))
    stats = d.stats()["hook"]
    assert (stats["dropped"], stats["queued"]) == (2, 4)
    receiver.release.set()
    assert d.close(5.0)
    assert [r.json()["value"] for r in receiver.wait_for(4)] == [0.0, 3.0, 4.0, 5.0]
    assert d.stats()["hook"]["sent"] == 4


def test_unknown_notifiers_and_late_submits_are_counted_never_raised(receiver: Receiver) -> None:
    d = dispatcher("webhook", receiver.url)
    d.submit(notification(notify=("hook", "nowhere")))
    assert d.close(5.0)
    d.submit(notification())
    stats = d.stats()
    assert (stats["hook"]["sent"], stats["hook"]["dropped"]) == (1, 1)
    assert stats["nowhere"]["failed"] == 1
    assert "nowhere" in str(stats["nowhere"]["last_error"])
    assert not d.close(1.0)


def test_an_unusable_notifier_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"notifier 'hook'.*http"):
        dispatcher("webhook", "ftp://example.com/x")
