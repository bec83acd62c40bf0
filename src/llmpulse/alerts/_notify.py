"""`Dispatcher`: alert notifications delivered to webhooks, Slack and Alertmanager off the caller's thread.

`Dispatcher.submit` only appends to a bounded queue per notifier (a full queue drops its oldest
notification and counts it); one daemon worker per notifier builds the request body once and POSTs
it through `KeepAliveClient`, retried by the SDK's one retry helper (`call_with_retry`: backoff
with jitter, ``Retry-After``) on connection errors, timeouts, 408, 429 and 5xx, until the policy's
deadline (5 minutes by default); any other answer is a permanent failure. A worker per notifier
means a receiver that is down delays only its own notifications.

Payloads (the request bodies, built by the pure functions `webhook_body`, `slack_body` and
`alertmanager_body`):

- ``webhook``: one JSON object per notification (`rule`, `tenant_id`, `status`, `labels`,
  `annotations`, `value`, `starts_at`, `ends_at` (null while firing), `summary`, `details`,
  `version`); times are RFC 3339 UTC.
- ``slack``: an incoming-webhook message: `text` plus one attachment coloured by status with the
  rule, status, value, times, labels and annotations as fields (also understood by Mattermost and
  Rocket.Chat).
- ``alertmanager``: ``POST {url}/api/v2/alerts`` with a JSON array of alerts (`labels` exactly the
  notification's, `annotations` with `summary`, `startsAt`, `endsAt` once resolved, and
  `generatorURL` when the notification's details hold a ``generator_url``); queued notifications are
  sent together, up to `max_batch` an array, as Prometheus does.

Signature: when a notifier has a `secret`, every request to it carries
``X-Llmpulse-Signature: sha256=<hex HMAC-SHA256 of the raw request body, keyed with the secret>``
(`signature`). Only the body is signed; a retry sends the same bytes, so the same signature.

Errors: `Dispatcher` raises `ValueError` naming the notifier for an unusable notifier (URL, timeout);
nothing else here raises into the caller: delivery failures are counted in `stats()` and logged on
the ``llmpulse.alerts`` logger.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import random
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final, TypedDict

import msgspec

from llmpulse.alerts._model import Notification, Notifier
from llmpulse.exporters._http import (
    USER_AGENT,
    KeepAliveClient,
    check_timeout,
    parse_http_url,
    raise_for_status,
)
from llmpulse.sdk._retry import SHUTDOWN, RetryPolicy, call_with_retry

__all__ = [
    "DEFAULT_RETRY",
    "SIGNATURE_HEADER",
    "Dispatcher",
    "NotifierStats",
    "alertmanager_body",
    "rfc3339",
    "signature",
    "slack_body",
    "webhook_body",
]

_log: Final = logging.getLogger("llmpulse.alerts")

#: The header carrying a signed request's ``sha256=<hex>``.
SIGNATURE_HEADER: Final = "X-Llmpulse-Signature"
#: How notifications are retried unless the `Dispatcher` is told otherwise: for up to 5 minutes.
DEFAULT_RETRY: Final = RetryPolicy(
    max_attempts=1000,
    initial_backoff_s=1.0,
    max_backoff_s=60.0,
    multiplier=2.0,
    jitter=0.2,
    max_elapsed_s=300.0,
)
#: The version of the webhook body's shape (its `version` field).
WEBHOOK_VERSION: Final = 1
#: Attachment colours by status.
SLACK_COLOURS: Final[Mapping[str, str]] = {"firing": "#d93f3c", "resolved": "#2eb67d"}
#: How often a notifier's failures and drops are logged at most.
LOG_INTERVAL_S: Final = 60.0


def _fallback(obj: object) -> object:
    """Details of a type JSON cannot hold are sent as their text."""
    return str(obj)


_encoder: Final = msgspec.json.Encoder(enc_hook=_fallback)


# -- payloads ---------------------------------------------------------------------------------------


def rfc3339(ts: float) -> str:
    """Epoch seconds as RFC 3339 UTC with milliseconds (``2026-11-22T10:00:00.000Z``)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def signature(body: bytes, secret: str) -> str:
    """The ``X-Llmpulse-Signature`` value of `body`: ``sha256=`` and the hex HMAC-SHA256 of the raw
    bytes keyed with `secret` (UTF-8). Pure."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def webhook_body(n: Notification) -> bytes:
    """The generic webhook's JSON object for one notification. Pure."""
    return _encoder.encode(
        {
            "version": WEBHOOK_VERSION,
            "rule": n.rule,
            "tenant_id": n.tenant_id,
            "status": n.status,
            "labels": dict(n.labels),
            "annotations": dict(n.annotations),
            "value": n.value,
            "starts_at": rfc3339(n.starts_at),
            "ends_at": None if n.ends_at is None else rfc3339(n.ends_at),
            "summary": n.summary,
            "details": dict(n.details),
        }
    )


def _value_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def _escape(text: str) -> str:
    """Slack's three control characters in message text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(n: Notification) -> bytes:
    """A Slack incoming-webhook message for one notification: `text` and one attachment coloured by
    status (red firing, green resolved) holding the rule, status, value, times, labels and
    annotations. Pure."""
    head = f"[{n.status.upper()}] {n.rule}"
    text = f"{head}: {n.summary}" if n.summary else head
    fields: list[dict[str, object]] = [
        {"title": "Status", "value": n.status, "short": True},
        {"title": "Value", "value": _value_text(n.value), "short": True},
        {"title": "Tenant", "value": _escape(n.tenant_id), "short": True},
        {"title": "Started", "value": rfc3339(n.starts_at), "short": True},
    ]
    if n.ends_at is not None:
        fields.append({"title": "Ended", "value": rfc3339(n.ends_at), "short": True})
    labels = ", ".join(f"`{_escape(k)}={_escape(v)}`" for k, v in sorted(n.labels.items()))
    fields.append({"title": "Labels", "value": labels, "short": False})
    for key, value in sorted(n.annotations.items()):
        fields.append({"title": _escape(key), "value": _escape(value), "short": False})
    attachment = {
        "color": SLACK_COLOURS[n.status],
        "fallback": _escape(text),
        "title": _escape(head),
        "text": _escape(n.summary),
        "fields": fields,
        "footer": "llmpulse",
        "ts": int(n.starts_at if n.ends_at is None else n.ends_at),
        "mrkdwn_in": ["fields"],
    }
    return _encoder.encode({"text": _escape(text), "attachments": [attachment]})


def _alert(n: Notification) -> dict[str, object]:
    alert: dict[str, object] = {
        "labels": dict(n.labels),
        "annotations": {"summary": n.summary, "value": _value_text(n.value), **n.annotations},
        "startsAt": rfc3339(n.starts_at),
    }
    if n.ends_at is not None:
        alert["endsAt"] = rfc3339(n.ends_at)
    url = n.details.get("generator_url")
    if isinstance(url, str) and url:
        alert["generatorURL"] = url
    return alert


def alertmanager_body(notifications: Iterable[Notification]) -> bytes:
    """The Alertmanager v2 ``POST /api/v2/alerts`` array for these notifications. Pure."""
    return _encoder.encode([_alert(n) for n in notifications])


# -- delivery ---------------------------------------------------------------------------------------


class NotifierStats(TypedDict):
    """One notifier's counters: notifications `sent`, `failed` (given up: a permanent answer or the
    retry deadline), `dropped` (queue full, or unsent at `close`), `queued` (waiting or in flight);
    `retried` counts failed attempts followed by a retry; `last_error` is the last failure's text."""

    sent: int
    failed: int
    retried: int
    dropped: int
    queued: int
    last_error: str | None


def _counters() -> NotifierStats:
    return {"sent": 0, "failed": 0, "retried": 0, "dropped": 0, "queued": 0, "last_error": None}


class _Channel:
    """One notifier's queue, worker and connection. Its counters are guarded by `cond`."""

    def __init__(self, notifier: Notifier) -> None:
        where = f"notifier {notifier.name!r}"
        try:
            parts, host, port = parse_http_url(notifier.url, "url", "https://example.com/hook")
            timeout_s = check_timeout(notifier.timeout_s)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc
        if notifier.kind not in ("webhook", "slack", "alertmanager"):
            raise ValueError(f"{where}: kind must be webhook, slack or alertmanager, got {notifier.kind!r}")
        self.notifier = notifier
        path = parts.path or "/"
        if notifier.kind == "alertmanager":
            path = path.rstrip("/") + "/api/v2/alerts"
        self.target = path + (f"?{parts.query}" if parts.query else "")
        netloc = host if port is None else f"{host}:{port}"
        # the origin only: a Slack or webhook URL often holds its secret in the path
        self.where = f"{where} (POST {parts.scheme}://{netloc})"
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **notifier.headers}
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        self.headers: Final = headers
        self.client = KeepAliveClient(parts.scheme, host, port, timeout_s, self.where)
        self.queue: deque[Notification] = deque()
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.stats = _counters()
        self.in_flight = 0
        self.last_log = -float("inf")
        self.unlogged = 0

    def take(self, max_batch: int) -> list[Notification]:
        """The next notifications to send in one request (lock held): one, or for Alertmanager up
        to `max_batch` with no label set twice (a later state of an alert goes in a later request)."""
        if self.notifier.kind != "alertmanager":
            return [self.queue.popleft()]
        batch: list[Notification] = []
        seen: set[tuple[tuple[str, str], ...]] = set()
        while self.queue and len(batch) < max_batch:
            key = tuple(sorted(self.queue[0].labels.items()))
            if key in seen:
                break
            seen.add(key)
            batch.append(self.queue.popleft())
        return batch

    def encode(self, batch: Sequence[Notification]) -> tuple[bytes, dict[str, str]]:
        """The request body and headers for `batch`."""
        kind = self.notifier.kind
        if kind == "alertmanager":
            body = alertmanager_body(batch)
        elif kind == "slack":
            body = slack_body(batch[0])
        else:
            body = webhook_body(batch[0])
        headers = self.headers
        if self.notifier.secret:
            headers = {**headers, SIGNATURE_HEADER: signature(body, self.notifier.secret)}
        return body, headers

    def post(self, body: bytes, headers: dict[str, str]) -> None:
        """One attempt; raises `RetryableError` or `ExportError` (and whatever `http.client` refuses)."""
        status, data, retry_after = self.client.post(self.target, body, headers)
        raise_for_status(status, data, retry_after, self.where)


class Dispatcher:
    """Delivers `Notification`s to the notifiers they name, on one background worker per notifier.

    `notifiers` maps names (those of `Notification.notify`) to `Notifier`s; `clock` is the monotonic
    clock retry deadlines are measured on (`close`'s too); `retry` the policy (default
    `DEFAULT_RETRY`: backoff from 1 s to 60 s with 20 % jitter, for up to 5 minutes); `max_queue`
    bounds each notifier's queue; `max_batch` how many alerts one Alertmanager request carries;
    `rand` feeds the jitter. Raises `ValueError` naming the notifier when one is unusable; does not
    block (workers start with the first notification for their notifier).
    """

    def __init__(
        self,
        notifiers: Mapping[str, Notifier],
        *,
        clock: Callable[[], float] = time.monotonic,
        retry: RetryPolicy | None = None,
        max_queue: int = 1000,
        max_batch: int = 64,
        rand: Callable[[], float] = random.random,
    ) -> None:
        for arg, number in (("max_queue", max_queue), ("max_batch", max_batch)):
            if not isinstance(number, int) or isinstance(number, bool) or number < 1:
                raise ValueError(f"{arg} must be a positive integer, got {number!r}")
        self._channels: Final = {name: _Channel(notifier) for name, notifier in notifiers.items()}
        self._clock = clock
        self._retry = retry if retry is not None else DEFAULT_RETRY
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._rand = rand
        self._lock = threading.Lock()  # `_closed` and `_unknown`
        self._closed = False
        self._deadline: float | None = None
        self._stop = threading.Event()
        self._unknown: dict[str, NotifierStats] = {}

    def submit(self, notification: Notification) -> None:
        """Queue `notification` for each notifier of its `notify`; never blocks, never raises.

        A full queue drops its oldest notification (counted as `dropped`); after `close` the
        notification is dropped; a name no notifier has is counted as `failed` under that name.
        """
        try:
            for name in dict.fromkeys(notification.notify):
                channel = self._channels.get(name)
                if channel is None:
                    self._count_unknown(name)
                else:
                    self._offer(channel, notification)
        except Exception as exc:  # a bug here must not reach the evaluator
            _log.exception("alert notification %r not queued: %s", getattr(notification, "rule", "?"), exc)

    def _offer(self, channel: _Channel, notification: Notification) -> None:
        with channel.cond:
            if self._closed:
                channel.stats["dropped"] += 1
                return
            dropped = 0
            while len(channel.queue) >= self._max_queue:
                channel.queue.popleft()
                dropped += 1
            channel.queue.append(notification)
            channel.stats["dropped"] += dropped
            if channel.thread is None:
                thread = threading.Thread(
                    target=self._run,
                    args=(channel,),
                    name=f"llmpulse-notify-{channel.notifier.name}",
                    daemon=True,
                )
                try:
                    thread.start()
                except RuntimeError as exc:  # no more threads: keep it queued, try on the next submit
                    channel.stats["last_error"] = f"cannot start the notification worker: {exc}"
                else:
                    channel.thread = thread
            channel.cond.notify()
        if dropped:
            self._report(channel, f"queue full (max_queue={self._max_queue}): dropped the oldest")

    def _count_unknown(self, name: str) -> None:
        with self._lock:
            stats = self._unknown.setdefault(name, _counters())
            stats["failed"] += 1
            stats["last_error"] = f"no notifier named {name!r}"
        _log.warning("alert notification for unknown notifier %r not sent", name)

    def stats(self) -> dict[str, NotifierStats]:
        """Each notifier's counters (a copy; see `NotifierStats`); does not block beyond short locks."""
        result: dict[str, NotifierStats] = {}
        for name, channel in self._channels.items():
            with channel.cond:
                snapshot = NotifierStats(**channel.stats)
                snapshot["queued"] = len(channel.queue) + channel.in_flight
            result[name] = snapshot
        with self._lock:
            for name, stats in self._unknown.items():
                result[name] = NotifierStats(**stats)
        return result

    def close(self, timeout: float | None = 10.0) -> bool:
        """Deliver what is queued within `timeout` s (None: until done), then stop; blocks that long.

        Retries still run while they can start before the deadline; those that cannot give up at
        once. Notifications left at the deadline, and those submitted later, are dropped (counted).
        True when everything queued was settled in time (sent, or failed for good) and nothing was
        dropped for lack of time. Later calls return False at once. Never raises.
        """
        try:
            with self._lock:
                if self._closed:
                    return False
                self._closed = True
                if timeout is not None:
                    self._deadline = self._clock() + max(0.0, timeout)
            dropped_before = {}
            for name, channel in self._channels.items():
                with channel.cond:
                    dropped_before[name] = channel.stats["dropped"]
                    channel.cond.notify_all()
            self._stop.set()
            until = None if timeout is None else time.monotonic() + max(0.0, timeout)
            done = True
            for name, channel in self._channels.items():
                with channel.cond:
                    thread = channel.thread
                if thread is not None:
                    thread.join(None if until is None else max(0.0, until - time.monotonic()))
                    done = done and not thread.is_alive()
                with channel.cond:
                    left = len(channel.queue)
                    channel.queue.clear()
                    channel.stats["dropped"] += left
                    lost = channel.stats["dropped"] > dropped_before[name]
                    done = done and not lost and not channel.in_flight
                if channel.thread is None or not channel.thread.is_alive():
                    channel.client.close()
            return done
        except Exception as exc:  # never into the caller
            _log.exception("closing the alert notifications failed: %s", exc)
            return False

    # -- the workers --------------------------------------------------------------------------------

    def _run(self, channel: _Channel) -> None:
        while True:
            with channel.cond:
                while not channel.queue and not self._closed:
                    channel.cond.wait()
                if not channel.queue:
                    break
                if self._deadline is not None and self._clock() >= self._deadline:
                    break
                batch = channel.take(self._max_batch)
                channel.in_flight = len(batch)
            try:
                self._deliver(channel, batch)
            except Exception as exc:  # a bug here must not kill the worker silently
                with channel.cond:
                    channel.stats["failed"] += len(batch)
                self._note(channel, f"notification worker error: {type(exc).__name__}: {exc}")
            finally:
                with channel.cond:
                    channel.in_flight = 0
        if self._closed:
            channel.client.close()

    def _deliver(self, channel: _Channel, batch: list[Notification]) -> None:
        """Encode `batch` once and POST it with retries; count the outcome."""
        body, headers = channel.encode(batch)

        def on_failure(exc: Exception, will_retry: bool) -> None:
            if will_retry:  # counted now, not when the batch settles: a long retry shows at once
                with channel.cond:
                    channel.stats["retried"] += 1
            self._note(channel, f"{exc}" + ("; retrying" if will_retry else "; giving up"))

        outcome = call_with_retry(
            lambda: channel.post(body, headers),
            self._retry,
            stop=self._stop,
            deadline=lambda: self._deadline,
            on_failure=on_failure,
            clock=self._clock,
            rand=self._rand,
        )
        with channel.cond:
            stats = channel.stats
            if outcome.gave_up is None:
                stats["sent"] += len(batch)
            elif outcome.gave_up == SHUTDOWN:
                stats["dropped"] += len(batch)
            else:
                stats["failed"] += len(batch)

    def _note(self, channel: _Channel, message: str) -> None:
        with channel.cond:
            channel.stats["last_error"] = message
        self._report(channel, message)

    def _report(self, channel: _Channel, message: str) -> None:
        """Log a warning, at most once per `LOG_INTERVAL_S` per notifier (the rest counted)."""
        now = time.monotonic()
        if now - channel.last_log < LOG_INTERVAL_S:
            channel.unlogged += 1
            return
        unlogged, channel.unlogged, channel.last_log = channel.unlogged, 0, now
        extra = f" ({unlogged} more messages suppressed)" if unlogged else ""
        _log.warning("alert notifier %r: %s%s", channel.notifier.name, message, extra)

    def __repr__(self) -> str:
        return f"<Dispatcher notifiers={sorted(self._channels)}>"
