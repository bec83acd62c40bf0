"""Processor workers in a Kafka consumer group (scale-out mode): ``llmpulse process``.

Units of work
    The unit that moves between workers is one Kafka partition *number* p: partition p of
    ``llm.requests``, ``llm.responses`` and ``llm.calls`` (protocol partitions ``3p``, ``3p + 1``,
    ``3p + 2``). A request and its response share p (same key, equal partition counts), so the join is
    local to the unit. Each unit has its own `ProcessorCore` and its own identity in the store,
    ``group:<group>/<p>`` (`unit_consumer`): its offsets, pending joins, dedup keys and watermark are
    stored under that name, which is how per-partition state moves with the partition. No schema
    change was needed: every processor table is already keyed by consumer.

Assignment
    Workers subscribe to the three topics with the ``range`` assignor, which gives a member the same
    partition numbers of every topic when the counts are equal (`ensure_topics` refuses unequal
    counts). A worker still checks: it takes only the partition numbers whose three topic-partitions
    it was given, and logs (and leaves unread) any other. On assignment it loads each unit's state
    from the store and seeks the three topic-partitions to the stored offsets (the beginning when none
    are stored). On revocation it commits every unit and drops them; when the assignment is lost
    (session expired) it drops them without committing.

Commits
    Every `checkpoint_interval_s` (and at least once a second, so orphan timeouts fire on the
    processor's clock) the worker commits every changed unit's window deltas, pending joins, dedup
    keys and three offsets in ONE store transaction (`Store.commit_many`: the units' window deltas
    are added up first and each kind of row is one statement, so a worker's commit costs the same
    few round trips whatever the number of its partitions), fenced on the offsets each unit loaded
    or last committed: a worker that lost a unit without noticing cannot commit it again, and then
    nothing of the transaction is written (the stale unit is dropped, the others are reloaded).
    Windows from several workers merge additively in the store. A failed commit reloads the units
    from the store and seeks back to their stored offsets: what was not committed is read again and
    counted once. When a unit's state cannot be loaded either (the database is down for longer than
    the load retries), its partitions are paused and the worker tries to load it again every
    `_RETRY_LOAD_S` seconds until the store answers (or a rebalance takes the unit away); the same
    holds for a unit whose state cannot be loaded on assignment (it is not read meanwhile). Nothing is
    committed to Kafka: the offsets belong in the store.

Publishing
    After each successful commit the worker publishes every window the commit changed, whole and as
    that transaction wrote it (the merged totals of every worker, not a read-back), to
    ``llm.metrics`` as JSON shaped like a ``/v1/metrics`` row plus ``updated_at`` (epoch seconds)
    and ``version`` (the window's commit count, `StoredWindow.version`), keyed
    ``tenant/route/model/window_start``. A reader keeps, per key, the row with the highest version:
    a repeated row has an equal version and two rows of one window from two workers that arrive out
    of order are told apart, so the topic never counts anything twice and never goes back. The store
    is never affected: a failed publish is logged and counted (``publish_failures``), and the
    window's next update repairs it; a crash between a commit and its publish leaves the topic one
    version behind for a window that is not updated again (the store is the truth).

Order
    A unit processes its three topic-partitions' messages merged in the order of their Kafka
    timestamps (the time the ingest node appended them), as the embedded mode processes its one log
    in append order (`GroupWorker._release`). Counts never depend on the order; window ``late``
    counts do (an event is late by the unit's watermark, the highest event time processed), and
    fetched in fetch order, with a backlog one whole topic-partition after another, they did: 4.6k
    (1 worker) and 18–23k (3 workers) late events in windows the embedded mode counted none in, on
    100k events. Merged, all three modes count the same (`tests/pipeline/test_kafka_scale.py`).
    The merge is best effort where it must be: a topic-partition that was not heard from for
    `_HOLD_S` holds the others back no longer, and ingest nodes' clocks are assumed close (each
    unit's watermark still covers its own partition only; with events spread over partitions by
    request id the difference is far below the allowed lateness).

Errors: `WorkerError` (a `PipelineError`) when the store refuses a group worker (the single
in-process processor of ``serve --broker`` already aggregates into it) or a unit's state cannot be
loaded; `LogUnavailable` when the broker does not answer at start.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import msgspec
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from llmpulse.events import Event
from llmpulse.pipeline._errors import PipelineError
from llmpulse.pipeline._kafka_log import (
    TOPIC_METRICS,
    TOPICS,
    KafkaLogConfig,
    decode_event,
    ensure_topics,
    log_partition,
)
from llmpulse.pipeline._processor import ProcessorConfig, ProcessorCore
from llmpulse.pipeline._runner import (
    GROUP_CONSUMER_PREFIX,
    WorkerStateStore,
    prime_from_store,
    restore_core,
)
from llmpulse.pricing import Pricer
from llmpulse.store import (
    Checkpoint,
    StoredWindow,
    StoreError,
    metrics_row,
)
from llmpulse.store._commit import StaleCheckpoint

_log = logging.getLogger(__name__)
_client_log = logging.getLogger(f"{__name__}.librdkafka")
_json: Final = msgspec.json.Encoder()

#: The consumer group workers join unless told otherwise (``--group``, ``CONSUMER_GROUP``).
DEFAULT_GROUP: Final = "llmpulse-processor"
#: The store consumer name of ``serve --broker``'s in-process processor (it reads every partition).
SINGLE_CONSUMER: Final = "kafka"
#: A published row is ``final`` once its window ended this long plus the orphan timeout ago (as the API).
FINAL_GRACE_S: Final = 60.0
_BATCH: Final = 2_000
#: Longest a unit's messages wait for another of its topic-partitions that may bring earlier ones.
_HOLD_S: Final = 5.0
#: Held messages of one topic-partition above which it is paused (resumed at half).
_MAX_HELD: Final = 20_000
_LOAD_ATTEMPTS: Final = 8
#: Seconds between attempts to load a unit whose state could not be loaded (the store was down).
_RETRY_LOAD_S: Final = 2.0


class WorkerError(PipelineError):
    """A group worker cannot run: the store belongs to another kind of processor, or a unit's state
    cannot be loaded."""


def unit_consumer(group: str, kafka_partition: int) -> str:
    """The store identity of partition number `kafka_partition` in consumer group `group`."""
    return f"{GROUP_CONSUMER_PREFIX}{group}/{kafka_partition}"


class WorkerStore(WorkerStateStore, Protocol):
    """What a worker needs of a store (`llmpulse.store.Store` has it)."""

    def consumers(self) -> set[str]:
        """Consumer names with committed offsets. Blocks."""
        ...

    def commit_many(
        self,
        checkpoints: Sequence[Checkpoint],
        *,
        expect_offsets: Mapping[str, Mapping[int, int]] | None = None,
        return_windows: bool = False,
    ) -> list[StoredWindow]:
        """Write several consumers' checkpoints in one transaction (fenced on `expect_offsets`); the
        windows as written when `return_windows`. Blocks."""
        ...


@dataclass
class _Unit:
    """One partition number's processor and positions.

    `offsets` are the next offsets to process (what a commit stores): a message fetched but still
    held in `held` (see `GroupWorker._release`) is not processed yet, so its offset is not in them.
    """

    partition: int
    consumer: str
    core: ProcessorCore
    offsets: dict[int, int]
    committed: dict[int, int]
    dirty: bool = False
    events: int = 0
    #: Fetched, not yet processed messages per log partition: (timestamp ms, offset, event or None
    #: for an undecodable message), in offset order.
    held: dict[int, deque[tuple[int, int, Event | None]]] = field(default_factory=dict)
    #: Per log partition: the newest message timestamp fetched (ms), and when the last message or
    #: end-of-partition came (monotonic seconds).
    last_ts: dict[int, int] = field(default_factory=dict)
    heard_at: dict[int, float] = field(default_factory=dict)
    #: Log partitions whose end the consumer reached with nothing fetched since (beyond what is held).
    at_end: set[int] = field(default_factory=set)
    #: Log partitions paused because too many of their messages are held.
    paused: set[int] = field(default_factory=set)


class GroupWorker:
    """A processor worker in a Kafka consumer group; `run` blocks until its stop event is set.

    Args:
        config: the broker and topic settings (its session timeout is the group's).
        store: where units' state and windows are committed.
        group: the consumer group id.
        processor: the processor core's settings.
        pricer: cost lookups (a default `Pricer` if None).
        checkpoint_interval_s: the longest time between a unit's commits while events flow.
        publish_metrics: publish committed window updates to ``llm.metrics``.
        clock: wall clock in epoch seconds (the processor's clock: orphan timeouts use it).
    """

    def __init__(
        self,
        config: KafkaLogConfig,
        store: WorkerStore,
        *,
        group: str = DEFAULT_GROUP,
        processor: ProcessorConfig | None = None,
        pricer: Pricer | None = None,
        checkpoint_interval_s: float = 0.5,
        publish_metrics: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not group or len(group) > 200:
            raise ValueError(f"group must be 1 to 200 characters, got {group!r}")
        if checkpoint_interval_s <= 0:
            raise ValueError(f"checkpoint_interval_s must be positive, got {checkpoint_interval_s!r}")
        self._config = config
        self._store = store
        self._group = group
        self._processor = processor or ProcessorConfig()
        self._pricer = pricer or Pricer()
        self._interval = checkpoint_interval_s
        self._clock = clock
        self._units: dict[int, _Unit] = {}
        #: Assigned units whose state could not be loaded (store down): partition → next attempt.
        self._unloaded: dict[int, float] = {}
        self._consumer: Consumer | None = None
        self._stop = threading.Event()
        self._last_commit = 0.0
        self._last_forced = 0.0
        self._processed = 0
        self._commits = 0
        self._failures = 0
        self._undecodable = 0
        self._skipped = 0
        self._publish = publish_metrics
        self._producer: Producer | None = None
        self._published = 0
        self._publish_failures = 0

    @property
    def group(self) -> str:
        """The consumer group id."""
        return self._group

    def assigned(self) -> list[int]:
        """The partition numbers this worker processes now. Does not block."""
        return sorted(self._units)

    def stats(self) -> dict[str, Any]:
        """Counters: events processed, commits, failed commits, undecodable and skipped messages."""
        return {
            "group": self._group,
            "partitions": self.assigned(),
            "processed_events": self._processed,
            "commits": self._commits,
            "failures": self._failures,
            "undecodable_messages": self._undecodable,
            "skipped_messages": self._skipped,
            "published_rows": self._published,
            "publish_failures": self._publish_failures,
        }

    def check_store(self) -> None:
        """Raise `WorkerError` if ``serve --broker``'s single processor has committed to the store:
        both counting the same topics would count every event twice. Blocks."""
        if SINGLE_CONSUMER in self._store.consumers():
            raise WorkerError(
                f"the store already holds the offsets of consumer {SINGLE_CONSUMER!r} (the in-process "
                "processor of 'llmpulse serve --broker'); group workers would count its events again. "
                "Run serve with --no-processor and use a fresh store, or keep the single processor"
            )

    def stop(self) -> None:
        """Ask `run` to commit, leave the group and return. Does not block (safe in a signal handler)."""
        self._stop.set()

    def run(self, *, connect_timeout_s: float = 10.0) -> None:
        """Join the group and process until `stop`; then commit every unit and leave the group.

        Blocks. Raises `LogUnavailable` when the broker does not answer within `connect_timeout_s`,
        `WorkerError` as `check_store` does.
        """
        self.check_store()
        admin = AdminClient({"bootstrap.servers": self._config.bootstrap_servers})
        ensure_topics(admin, self._config, connect_timeout_s)
        if self._publish:
            self._producer = self._metrics_producer(admin, connect_timeout_s)
        settings = {
            **self._config.consumer_config(self._group),
            "partition.assignment.strategy": "range",
            "enable.partition.eof": True,  # a topic-partition at its end holds no other back
            "logger": _client_log,
        }
        consumer = Consumer(settings)
        self._consumer = consumer
        consumer.subscribe(
            list(TOPICS), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        _log.info("worker joined consumer group %r", self._group)
        try:
            while not self._stop.is_set():
                messages = consumer.consume(_BATCH, 0.1)
                if messages:
                    self._handle(messages)
                now = time.monotonic()
                for unit in list(self._units.values()):
                    if any(unit.held.values()):
                        self._release(unit, now=now)  # what waited long enough goes now
                if now - self._last_commit >= self._interval:
                    force = now - self._last_forced >= 1.0  # so orphan timeouts fire while idle
                    self._commit_all(force=force)
                    self._last_commit = now
                    if force:
                        self._last_forced = now
                if self._unloaded:
                    self._retry_unloaded()
            self._commit_all(force=True)
        finally:
            consumer.close()  # revokes (commits again: nothing is dirty) and leaves the group
            self._consumer = None
            if self._producer is not None:
                left = self._producer.flush(self._config.delivery_timeout_s)
                self._publish_failures += left
                self._producer = None
            _log.info("worker left consumer group %r", self._group)

    # -- assignment ----------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        topics: dict[int, set[str]] = {}
        for tp in partitions:
            topics.setdefault(tp.partition, set()).add(tp.topic)
        complete = sorted(p for p, ts in topics.items() if ts == set(TOPICS))
        for p in sorted(set(topics) - set(complete)):
            _log.error(
                "assigned only %s of partition %d: not processing it (a request and its response must "
                "be read by one worker); check that the group uses the range assignor",
                sorted(topics[p]), p,
            )  # fmt: skip
        assign: list[TopicPartition] = []
        self._unloaded.clear()
        for p in complete:
            try:
                unit = self._load(p)
            except WorkerError as exc:
                _log.error("%s; retrying every %g s", exc, _RETRY_LOAD_S)
                self._unloaded[p] = time.monotonic() + _RETRY_LOAD_S
                continue  # not assigned (not read) until its state loads
            self._units[p] = unit
            for topic in TOPICS:
                lp = log_partition(topic, p)
                offset = unit.offsets.get(lp)
                assign.append(TopicPartition(topic, p, OFFSET_BEGINNING if offset is None else offset))
                unit.offsets.setdefault(lp, 0)
            unit.committed = dict(unit.offsets)
        consumer.assign(assign)
        _log.info("assigned partitions %s", complete)

    def _load(self, p: int, attempts: int = _LOAD_ATTEMPTS) -> _Unit:
        name = unit_consumer(self._group, p)
        for attempt in range(attempts):
            try:
                state, core = restore_core(self._store, name, self._clock(), self._processor, self._pricer)
                break
            except StoreError as exc:
                if attempt == attempts - 1:
                    raise WorkerError(f"cannot load the state of partition {p}: {exc}") from exc
                _log.warning("loading the state of partition %d failed (%s); retrying", p, exc)
                time.sleep(min(2.0, 0.1 * 2**attempt))
        mine = {lp: o for lp, o in state.offsets.items() if lp // 3 == p}
        unit = _Unit(p, name, core, dict(mine), dict(mine))
        loaded = time.monotonic()  # each topic-partition may hold the others back from now on
        unit.heard_at = {log_partition(topic, p): loaded for topic in TOPICS}
        return unit

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commit_all(force=False)
        self._units.clear()
        self._unloaded.clear()
        consumer.unassign()
        _log.info("partitions revoked")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        _log.warning("assignment lost (session expired?): dropping uncommitted state")
        self._units.clear()
        self._unloaded.clear()
        consumer.unassign()

    # -- processing ----------------------------------------------------------------------------

    def _handle(self, messages: Iterable[Message]) -> None:
        """Hold each fetched message in its unit; then process what each touched unit can release."""
        touched: dict[int, _Unit] = {}
        arrived = time.monotonic()
        for message in messages:
            topic = message.topic() or ""
            p = message.partition() or 0
            unit = self._units.get(p)
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    if unit is not None and topic in TOPICS:
                        lp = log_partition(topic, p)
                        unit.at_end.add(lp)  # nothing beyond what it holds
                        unit.heard_at[lp] = arrived
                        touched[p] = unit
                else:
                    _log.debug("Kafka consumer: %s", error.str())
                continue
            lp = log_partition(topic, p)
            offset = message.offset() or 0
            held = None if unit is None else unit.held.setdefault(lp, deque())
            if unit is None or held is None or offset < (held[-1][1] + 1 if held else unit.offsets[lp]):
                self._skipped += 1  # revoked meanwhile, or fetched before a seek back
                continue
            kind, ts = message.timestamp()
            if kind == TIMESTAMP_NOT_AVAILABLE:
                ts = unit.last_ts.get(lp, 0)
            try:
                event: Event | None = decode_event(topic, message.value() or b"")
            except msgspec.MsgspecError as exc:
                event = None
                self._undecodable += 1
                _log.warning("skipping an undecodable message at %s[%d]@%d: %s", topic, p, offset, exc)
            held.append((ts, offset, event))
            unit.last_ts[lp] = max(ts, unit.last_ts.get(lp, ts))
            unit.heard_at[lp] = arrived
            unit.at_end.discard(lp)
            touched[p] = unit
        for unit in touched.values():
            self._release(unit)

    def _release(self, unit: _Unit, *, now: float | None = None) -> None:
        """Process the unit's held messages in the order of their timestamps (the time the ingest node
        appended them) across its three topic-partitions, as far as no other of them can still bring
        an earlier one.

        Fetches return a whole stretch of one topic-partition at a time (with a backlog: thousands of
        responses, then thousands of requests); processed in fetch order, the unit's watermark would
        run ahead of the topic read last, and its events would count as late where the embedded
        mode, reading one log in append order, does not. A topic-partition that has not reached its
        end and was heard from less than `_HOLD_S` ago holds the others back to the timestamp of the
        last message it fetched; messages that wait longer go anyway (the order is best effort; counts never
        depend on it, only `late`). A topic-partition with more than `_MAX_HELD` messages held is
        paused until it is under half of that.
        """
        now = time.monotonic() if now is None else now
        bound: float = float("inf")
        for topic in TOPICS:
            lp = log_partition(topic, unit.partition)
            if lp in unit.at_end:
                continue  # nothing more than what it holds
            # what it fetches next is no earlier than what it fetched last (held or not)
            if now - unit.heard_at.get(lp, 0.0) < _HOLD_S:
                bound = min(bound, unit.last_ts.get(lp, -1))
        queues = [(lp, q) for lp, q in unit.held.items() if q]
        batch: list[Event] = []
        released = 0
        while queues:
            lp, q = min(queues, key=lambda item: item[1][0][0])
            ts, offset, event = q[0]
            if ts > bound:
                break
            q.popleft()
            if event is not None:
                batch.append(event)
            unit.offsets[lp] = offset + 1
            released += 1
            if not q:
                queues = [(k, v) for k, v in queues if v]
        if released:
            unit.dirty = True
            unit.events += released
            self._processed += released
        if batch:
            now = self._clock()
            try:
                prime_from_store(unit.core, self._store, unit.consumer, batch, now, self._processor)
            except StoreError as exc:
                # the batch cannot be counted without the store's answer: start the unit again from
                # its committed state (the batch is fetched again), as after a failed commit
                self._failures += 1
                _log.error(
                    "looking up partition %d's request ids failed (%s); reloading it", unit.partition, exc
                )
                self._reload(unit)
                return
            unit.core.process(batch, now)
        self._throttle(unit)

    def _throttle(self, unit: _Unit) -> None:
        """Pause the unit's topic-partitions holding too many messages; resume those that drained."""
        consumer = self._consumer
        if consumer is None:
            return
        for topic in TOPICS:
            lp = log_partition(topic, unit.partition)
            n = len(unit.held.get(lp, ()))
            tp = [TopicPartition(topic, unit.partition)]
            with contextlib.suppress(KafkaException):
                if n > _MAX_HELD and lp not in unit.paused:
                    consumer.pause(tp)
                    unit.paused.add(lp)
                elif n <= _MAX_HELD // 2 and lp in unit.paused:
                    consumer.resume(tp)
                    unit.paused.discard(lp)

    def _commit_all(self, *, force: bool) -> None:
        """Commit every dirty unit (every unit when `force`) in one store transaction."""
        units = [u for u in self._units.values() if u.dirty or force]
        if not units:
            return
        now = self._clock()
        checkpoints = []
        for unit in units:
            unit.core.expire(now)
            checkpoints.append(unit.core.checkpoint(unit.consumer, dict(unit.offsets), now))
        fence = {unit.consumer: unit.committed for unit in units}
        publish = self._producer is not None
        try:
            written = self._store.commit_many(checkpoints, expect_offsets=fence, return_windows=publish)
        except StaleCheckpoint as exc:
            # nothing was written; the stale unit belongs to another worker now, and the others
            # handed their changes to the failed transaction: read those again from the store
            self._failures += 1
            for unit in units:
                if unit.consumer == exc.consumer:
                    _log.error(
                        "partition %d belongs to another worker now (%s); dropping it", unit.partition, exc
                    )
                    self._drop(unit)
                else:
                    self._reload(unit)
            return
        except StoreError as exc:
            self._failures += 1
            _log.error(
                "committing partitions %s failed (%s); reloading them from the store",
                [u.partition for u in units], exc,
            )  # fmt: skip
            for unit in units:
                self._reload(unit)
            return
        for unit in units:
            unit.committed = dict(unit.offsets)
            unit.dirty = False
        self._commits += 1
        if self._producer is not None and written:
            self._publish_windows(self._producer, written)

    # -- llm.metrics ---------------------------------------------------------------------------

    def _metrics_producer(self, admin: AdminClient, timeout: float) -> Producer:
        config = self._config
        try:
            if TOPIC_METRICS not in admin.list_topics(timeout=timeout).topics:
                future = admin.create_topics(
                    [NewTopic(TOPIC_METRICS, config.partitions, config.replication_factor)],
                    request_timeout=timeout,
                )[TOPIC_METRICS]
                future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                _log.warning("could not create %s (%s); publishing may fail", TOPIC_METRICS, exc)
        settings = {**config.producer_config(), "logger": _client_log}
        return Producer(settings)

    def _delivered(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self._published += 1
        else:
            self._publish_failures += 1
            _log.warning("a window update was not published to %s: %s", TOPIC_METRICS, error.str())

    def _publish_windows(self, producer: Producer, written: Iterable[StoredWindow]) -> None:
        """Publish the windows a commit wrote, as it wrote them. Never raises."""
        now = datetime.now(UTC)
        final_after_s = self._processor.orphan_timeout_s + FINAL_GRACE_S
        for w in written:
            row = metrics_row(w, now=now, final_after_s=final_after_s)
            row["updated_at"] = w.updated_at.timestamp()
            row["version"] = w.version
            k = w.key
            key = f"{k.tenant_id}/{k.route}/{k.model}/{k.window_start}".encode()
            try:
                producer.produce(TOPIC_METRICS, _json.encode(row), key=key, on_delivery=self._delivered)
            except (BufferError, KafkaException) as exc:
                self._publish_failures += 1
                _log.warning("a window update was not published to %s: %s", TOPIC_METRICS, exc)
        producer.poll(0)

    def _drop(self, unit: _Unit) -> None:
        """Stop processing a unit: its messages are skipped (and no longer fetched) until the next
        assignment hands it out again."""
        self._units.pop(unit.partition, None)
        if self._consumer is not None:
            with contextlib.suppress(KafkaException):
                self._consumer.pause([TopicPartition(t, unit.partition) for t in TOPICS])

    def _reload(self, unit: _Unit) -> None:
        """Throw away the unit's uncommitted state: load it from the store, seek back to its offsets."""
        try:
            fresh = self._load(unit.partition)
        except WorkerError as exc:
            _log.error("%s; retrying every %g s", exc, _RETRY_LOAD_S)
            self._drop(unit)
            self._unloaded[unit.partition] = time.monotonic() + _RETRY_LOAD_S
            return
        for lp in unit.offsets:
            fresh.offsets.setdefault(lp, 0)
        fresh.committed = dict(fresh.offsets)
        self._units[unit.partition] = fresh
        consumer = self._consumer
        if consumer is None:
            return
        try:
            for topic in TOPICS:  # seeking also discards what was fetched beyond the stored offsets
                consumer.seek(
                    TopicPartition(topic, unit.partition, fresh.offsets[log_partition(topic, unit.partition)])
                )
            if unit.paused:  # the fresh unit holds nothing: read them again
                consumer.resume([TopicPartition(t, unit.partition) for t in TOPICS])
        except KafkaException as exc:
            _log.warning(
                "seeking partition %d back failed (%s); re-assigning every partition", unit.partition, exc
            )
            consumer.assign(
                [
                    TopicPartition(topic, u.partition, u.offsets[log_partition(topic, u.partition)])
                    for u in self._units.values()
                    for topic in TOPICS
                ]
            )

    def _retry_unloaded(self) -> None:
        """Try once more to load each unit whose state could not be loaded (its time has come); a
        loaded unit is read again from its stored offsets (every unit is re-assigned at its own)."""
        now = time.monotonic()
        loaded: list[int] = []
        for p, due in list(self._unloaded.items()):
            if due > now:
                continue
            try:
                unit = self._load(p, attempts=1)
            except WorkerError as exc:
                _log.warning("%s; retrying in %g s", exc, _RETRY_LOAD_S)
                self._unloaded[p] = time.monotonic() + _RETRY_LOAD_S
                continue
            for topic in TOPICS:
                unit.offsets.setdefault(log_partition(topic, p), 0)
            unit.committed = dict(unit.offsets)
            self._units[p] = unit
            del self._unloaded[p]
            loaded.append(p)
        consumer = self._consumer
        if not loaded or consumer is None:
            return
        consumer.assign(
            [
                TopicPartition(topic, u.partition, u.offsets[log_partition(topic, u.partition)])
                for u in self._units.values()
                for topic in TOPICS
            ]
        )
        with contextlib.suppress(KafkaException):
            consumer.resume([TopicPartition(t, p) for p in loaded for t in TOPICS])
        _log.info("loaded the state of partitions %s again; processing them", loaded)
