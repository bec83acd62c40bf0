"""The processor runner: read a batch from the log → process → commit windows and offsets together.

It owns one thread. On start it restores the processor's state (offsets, pending joins, dedup keys)
from the store's last checkpoint, so a restart resumes exactly where the last commit left off: events
after the committed offsets are read again and counted once. A failed commit throws the in-memory
state away and restores it from the store, for the same reason.

A runner reads every partition of its log, so it refuses to start (`PipelineError`) on a store that
consumer-group workers (``llmpulse process``, consumers named ``group:…``) commit to: both would count
the same events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from llmpulse.events import Event
from llmpulse.pipeline._errors import PipelineError
from llmpulse.pipeline._log import EventLog, end_offsets
from llmpulse.pipeline._processor import ProcessorConfig, ProcessorCore, new_key_filter
from llmpulse.pricing import Pricer
from llmpulse.store import Checkpoint, ColdProbe, ColdState, KeyFilter, ProcessorState

_log = logging.getLogger(__name__)

#: Store consumer names of consumer-group units (``group:<group>/<partition>``, `llmpulse.pipeline._workers`).
GROUP_CONSUMER_PREFIX = "group:"


class ColdLookup(Protocol):
    """A store that says what it knows of request ids the processor let go of."""

    def lookup_cold(self, consumer: str, probes: Sequence[ColdProbe], since: float) -> ColdState:
        """What the store knows of the probed request ids (counted since `since`, expired halves).
        Blocks."""
        ...


class WorkerStateStore(ColdLookup, Protocol):
    """A store a processor restores its state from (`llmpulse.store.Store` is one)."""

    def load_state(
        self, consumer: str, now: float, *, key_filter: KeyFilter | None = None, ttl_s: float = 0.0
    ) -> ProcessorState:
        """The last committed state of `consumer`; with `key_filter`, the request ids the store
        holds go there instead of into memory. Blocks."""
        ...


class CheckpointStore(WorkerStateStore, Protocol):
    """What the runner needs of a store (`llmpulse.store.Store` has it)."""

    def commit(self, checkpoint: Checkpoint) -> object:
        """Write a checkpoint in one transaction (whatever it returns is ignored). Blocks."""
        ...


def restore_core(
    store: WorkerStateStore,
    consumer: str,
    now: float,
    config: ProcessorConfig,
    pricer: Pricer,
) -> tuple[ProcessorState, ProcessorCore]:
    """Load `consumer`'s committed state and a core resumed from it, the request ids the store holds
    streamed into the core's `KeyFilter` rather than into memory. Blocks on the store."""
    key_filter = new_key_filter(config)
    state = store.load_state(consumer, now, key_filter=key_filter, ttl_s=config.dedup_ttl_s)
    return state, ProcessorCore(config, pricer, state, key_filter=key_filter)


def prime_from_store(
    core: ProcessorCore,
    store: ColdLookup,
    consumer: str,
    events: Sequence[Event],
    now: float,
    config: ProcessorConfig,
) -> None:
    """Before `core.process(events, now)`: ask the store about the request ids the core may have
    let go of (`ProcessorCore.probe`) and hand the answer over (`prime`). One lookup at most;
    nothing when no id needs it (the common case). Blocks on the store when it asks."""
    probes = core.probe(events, now)
    if probes:
        core.prime(probes, store.lookup_cold(consumer, probes, now - config.dedup_ttl_s), now)


class ProcessorRunner:
    """Runs a `ProcessorCore` over an `EventLog` on a background thread, committing checkpoints.

    Args:
        log: where events come from.
        store: where checkpoints go (and state is restored from).
        config: the processor's settings.
        pricer: cost lookups (a default `Pricer` if None).
        consumer: this processor's identity in the store.
        checkpoint_interval_s: the longest time between commits while events flow.
        max_records: records read from the log per partition per step.
        clock: wall clock in epoch seconds (tests pass a fake one).
        on_commit: called after each commit with the tenants whose windows or call records it wrote
            (the alert evaluator's wake-up); it must not block, and its errors are logged, not raised.
    """

    def __init__(
        self,
        log: EventLog,
        store: CheckpointStore,
        config: ProcessorConfig | None = None,
        *,
        pricer: Pricer | None = None,
        consumer: str = "embedded",
        checkpoint_interval_s: float = 0.25,
        max_records: int = 100,
        clock: Callable[[], float] = time.time,
        on_commit: Callable[[frozenset[str]], None] | None = None,
    ) -> None:
        if checkpoint_interval_s <= 0:
            raise ValueError(f"checkpoint_interval_s must be positive, got {checkpoint_interval_s!r}")
        if max_records < 1:
            raise ValueError(f"max_records must be positive, got {max_records!r}")
        self._log = log
        self._store = store
        self._config = config or ProcessorConfig()
        self._pricer = pricer or Pricer()
        self._consumer = consumer
        self._interval = checkpoint_interval_s
        self._max_records = max_records
        self._clock = clock
        self._on_commit = on_commit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._core: ProcessorCore | None = None
        self._offsets: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        self._processed = 0
        self._checkpoints = 0
        self._commit_failures = 0
        self._failures_in_a_row = 0
        self._last_commit_at = 0.0
        self._last_error: str | None = None
        self._caught_up = threading.Condition()

    def _restore(self) -> None:
        state, self._core = restore_core(
            self._store, self._consumer, self._clock(), self._config, self._pricer
        )
        self._offsets = {p: state.offsets.get(p, 0) for p in self._log.partitions()}
        self._committed = dict(self._offsets)

    def _check_exclusive(self) -> None:
        consumers = getattr(self._store, "consumers", None)
        if consumers is None or self._consumer.startswith(GROUP_CONSUMER_PREFIX):
            return
        groups = sorted(c for c in consumers() if c.startswith(GROUP_CONSUMER_PREFIX))
        if groups:
            raise PipelineError(
                f"the store already holds the state of consumer-group workers ({', '.join(groups[:3])}"
                f"{', ...' if len(groups) > 3 else ''}: 'llmpulse process'); a processor reading every "
                "partition would count their events again. Run 'llmpulse serve' with --no-processor"
            )

    def start(self) -> None:
        """Restore state from the store and start the processing thread. Blocks while restoring.

        Raises `PipelineError` when consumer-group workers commit to the same store.
        """
        if self._thread is not None:
            raise RuntimeError("the runner is already started")
        self._check_exclusive()
        self._restore()
        self._thread = threading.Thread(target=self._run, name="llmpulse-processor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Process what is readable, commit a final checkpoint, and stop. Blocks up to `timeout`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """True while the processing thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _step(self) -> int:
        core = self._core
        assert core is not None
        n = 0
        for partition, offset in self._offsets.items():
            records = self._log.read(partition, offset, self._max_records)
            if not records:
                continue
            now = self._clock()
            # one lookup for everything read (the common case: none at all)
            events = [e for record in records for e in record.events]
            prime_from_store(core, self._store, self._consumer, events, now, self._config)
            for record in records:
                core.process(record.events, now)
                n += len(record.events)
            self._offsets[partition] = records[-1].offset + 1
        self._processed += n
        return n

    def _commit(self) -> None:
        core = self._core
        assert core is not None
        now = self._clock()
        core.expire(now)
        checkpoint = core.checkpoint(self._consumer, dict(self._offsets), now)
        self._store.commit(checkpoint)
        if self._on_commit is not None and (checkpoint.windows or checkpoint.calls):
            tenants = frozenset(k.tenant_id for k in checkpoint.windows) | {t for t, _ in checkpoint.calls}
            try:
                self._on_commit(tenants)
            except Exception:  # a listener's bug must not stop the processor
                _log.exception("processor: the commit listener failed")
        self._committed = dict(self._offsets)
        self._checkpoints += 1
        self._last_commit_at = now
        self._failures_in_a_row = 0
        release = getattr(self._log, "release", None)
        if release is not None:
            for partition, offset in self._committed.items():
                release(partition, offset)
        with self._caught_up:
            self._caught_up.notify_all()

    def _recover(self, exc: Exception) -> None:
        """After a failed read, process or commit: wait (backing off), then restore from the store.

        The in-memory state may hold changes the store never got; throwing it away and re-reading the
        log from the committed offsets is what keeps every event counted once.
        """
        self._commit_failures += 1
        self._failures_in_a_row += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        _log.error("processor step failed (%s); restoring from the last checkpoint", self._last_error)
        self._stop.wait(min(5.0, 0.05 * 2 ** min(self._failures_in_a_row, 7)))
        try:
            self._restore()
        except Exception as again:
            self._last_error = f"{type(again).__name__}: {again}"
            _log.error("restoring the processor failed: %s", self._last_error)
            self._core = None

    def _run(self) -> None:
        last_commit = time.monotonic()
        dirty = False
        while not self._stop.is_set():
            try:
                if self._core is None:
                    self._restore()
                n = self._step()
                dirty = dirty or n > 0
                elapsed = time.monotonic() - last_commit
                if elapsed >= self._interval and (dirty or elapsed >= 1.0):
                    self._commit()
                    last_commit = time.monotonic()
                    dirty = False
            except Exception as exc:
                self._recover(exc)
                dirty = False
                continue
            if n == 0:
                self._stop.wait(0.005)
        try:
            if self._core is None:
                self._restore()
            while self._step():
                pass
            self._commit()
        except Exception as exc:
            self._last_error = f"{type(exc).__name__}: {exc}"
            _log.error("the processor's final checkpoint failed: %s (the log still holds every event)", exc)

    def lag_events(self) -> int | None:
        """Events appended to the log that this runner has not read yet; None if the log cannot say.

        Cheap (no I/O) with a log that keeps an in-memory tail, so ingest can ask on every request.
        """
        events_after = getattr(self._log, "events_after", None)
        if events_after is None:
            return None
        total = 0
        for partition, offset in list(self._offsets.items()):
            lag = events_after(partition, offset)
            if lag is None:
                return None
            total += lag
        return total

    def wait_committed(self, partition: int, offset: int, timeout: float) -> bool:
        """Wait until the committed offset of `partition` reaches `offset`. Blocks up to `timeout`."""
        deadline = time.monotonic() + timeout
        with self._caught_up:
            while self._committed.get(partition, 0) < offset:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.alive:
                    return False
                self._caught_up.wait(remaining)
        return True

    def stats(self) -> dict[str, Any]:
        """Counters for /health: events processed, lag, checkpoints, failures, processor state sizes."""
        lag = 0
        committed = dict(self._committed)
        try:
            ends = end_offsets(self._log, list(committed))
            lag = sum(max(0, ends[p] - offset) for p, offset in committed.items())
        except Exception:
            lag = -1
        core_stats = self._core.stats() if self._core is not None else {}
        return {
            "alive": self.alive,
            "processed_events": self._processed,
            "checkpoints": self._checkpoints,
            "failures": self._commit_failures,
            "failing": self._failures_in_a_row > 0,
            "lag_records": lag,
            "committed_offsets": {str(p): o for p, o in self._committed.items()},
            "last_commit_at": self._last_commit_at,
            "last_error": self._last_error,
            **core_stats,
        }
