"""`ExportPipeline`: the one batching engine between the collector and each exporter.

Shaped like OpenTelemetry's `BatchProcessor`: a bounded deque filled by the application's threads, a
daemon worker woken by an event when a batch is full (or every `flush_interval_s`), an export lock
shared with `force_flush`, `shutdown(timeout)` handing the remaining budget on, and a restart of the
worker in forked children. On top of it: enrichment and serialisation on the worker (an `LLMCall`
without `cost` is priced with `Pricer`, one without `request_id` gets a random one so that retried
batches are counted once; both only in the exported dict, never on the application's object), retries
through `call_with_retry`, and exact drop accounting.

Accounting: every item given to `offer` is, at every instant `stats()` can observe, in exactly one of
`exported`, `queued` (waiting or in flight) and `dropped` (by reason: ``"queue_full"``,
``"serialization_error"``, ``"permanent_error"``, ``"retries_exhausted"``, ``"shutdown"``, or one
an exporter reports, such as ``"rejected_by_server"``), so ``offered == exported + queued + dropped``.

Forked children (`os.fork`, multiprocessing's ``fork`` start method): the child's pipeline gets new
locks, events and a new worker (started by its first `offer`), an empty queue and zeroed statistics.
The items queued at the fork belong to the parent, which still delivers them; keeping them in the
child would deliver them twice. The child delivers what it records itself.

Errors: none of its own. `offer` never raises; exporter errors are counted, kept in
`stats()["last_error"]` and logged on the ``llmpulse.sdk`` logger at most once per `log_interval_s`.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from llmpulse.events import LLMCall, TelemetryItem, items_to_dicts, to_dict
from llmpulse.sdk._exporter import Exporter, ExportResult, as_exporter
from llmpulse.sdk._retry import SHUTDOWN, RetryPolicy, call_with_retry

if TYPE_CHECKING:
    from llmpulse.pricing import Pricer

__all__ = ["ExportPipeline"]

_log: Final = logging.getLogger("llmpulse.sdk")
# `random` reseeds itself in forked children, so ids stay unique across processes.
_random_bits: Final = random.getrandbits

QUEUE_FULL: Final = "queue_full"
SERIALIZATION_ERROR: Final = "serialization_error"
INTERNAL_ERROR: Final = "internal_error"

_shared_pricer: Pricer | None = None


def _default_pricer() -> Pricer:
    global _shared_pricer  # one lazily built, read-mostly price cache shared by all pipelines
    if _shared_pricer is None:
        from llmpulse.pricing import Pricer  # imported late: keeps genai-prices off the import path

        _shared_pricer = Pricer()
    return _shared_pricer


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class ExportPipeline:
    """A bounded queue and a background worker delivering batches to one exporter.

    `offer` is the application's hot path (non-blocking); the worker, a daemon thread started by the
    first `offer` or by `start`, exports when `max_batch` items wait or every `flush_interval_s`,
    after filling in unknown call costs with `pricer` (a shared default `Pricer` when None) and
    turning items into their JSON dict form. `retry` says how failed batches are retried.
    `log_interval_s` bounds how often exporter failures and drops are logged. Raises `ValueError`
    naming the argument for bad settings; `exporter` goes through `as_exporter`.
    """

    def __init__(
        self,
        exporter: Exporter | Callable[[str, dict[str, Any]], object],
        *,
        max_queue: int = 2048,
        max_batch: int = 512,
        flush_interval_s: float = 1.0,
        pricer: Pricer | None = None,
        retry: RetryPolicy | None = None,
        log_interval_s: float = 10.0,
    ) -> None:
        for name, value in (("max_queue", max_queue), ("max_batch", max_batch)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, number in (("flush_interval_s", flush_interval_s), ("log_interval_s", log_interval_s)):
            if not isinstance(number, int | float) or not number > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {number!r}")
        self.exporter: Exporter = as_exporter(exporter)
        self.name: str = self.exporter.name
        self._max_queue = max_queue
        self._max_batch = min(max_batch, max_queue)
        self._interval = float(flush_interval_s)
        self._pricer = pricer
        self._retry = retry if retry is not None else RetryPolicy()
        self._log_interval = float(log_interval_s)
        self._queue: deque[TelemetryItem] = deque()
        self._closed = False
        self._deadline: float | None = None
        self._init_runtime()
        if hasattr(os, "register_at_fork"):
            ref = weakref.WeakMethod(self.restart_after_fork)

            def _after_fork_in_child() -> None:
                method = ref()
                if method is not None:
                    method()

            os.register_at_fork(after_in_child=_after_fork_in_child)

    def _init_runtime(self) -> None:
        """Fresh synchronisation objects, an empty queue and zeroed counters (construction, fork)."""
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._export_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._queue.clear()
        self._offered = 0
        self._enqueued = 0  # sequence number of the newest item that entered the queue
        self._exported = 0
        self._dropped: dict[str, int] = {}
        self._in_flight = 0
        self._in_flight_first = 0
        self._flush_target = 0
        self._failed = 0
        self._retried = 0
        self._last_error: str | None = None
        self._last_log = -float("inf")
        self._suppressed = 0
        self._full_drops = 0  # kept apart from `_dropped` to keep `offer` cheap
        self._reported_full = 0

    # -- the application's side -------------------------------------------------------------------

    def offer(self, item: TelemetryItem) -> None:
        """Queue one item for export; never blocks, never raises, no I/O, no serialisation.

        When the queue is full the oldest item is dropped (reason ``"queue_full"``); after `shutdown`
        the item itself is dropped (reason ``"shutdown"``). The worker is woken only when a batch is full.
        """
        with self._lock:
            self._offered += 1
            if self._closed:
                self._dropped[SHUTDOWN] = self._dropped.get(SHUTDOWN, 0) + 1
                return
            queue = self._queue
            if len(queue) >= self._max_queue:
                queue.popleft()
                self._full_drops += 1
            queue.append(item)
            self._enqueued += 1
            waiting = len(queue)
        if waiting >= self._max_batch and not self._wake.is_set():
            self._wake.set()
        if self._thread is None:
            self.start()

    def start(self) -> None:
        """Start the worker thread if it is not running; does not block, never raises."""
        with self._lock:
            if self._thread is not None or self._closed:
                return
            thread = threading.Thread(target=self._run, name=f"llmpulse-export-{self.name}", daemon=True)
            self._thread = thread
        try:
            thread.start()
        except RuntimeError as exc:  # no more threads: keep queueing, retry on the next offer
            with self._lock:
                self._thread = None
            self._report(f"cannot start the export worker: {exc}")

    def stats(self) -> dict[str, Any]:
        """A consistent snapshot of the counters; does not block (beyond a short lock).

        Keys: `offered`, `exported`, `queued` (waiting or in flight), `in_flight`, `dropped`,
        `dropped_by_reason`, `failed` (failed export attempts), `retried` (retry attempts) and
        `last_error` (text or None). ``offered == exported + queued + dropped`` always holds.
        """
        with self._lock:
            dropped = dict(self._dropped)
            if self._full_drops:
                dropped[QUEUE_FULL] = self._full_drops
            return {
                "offered": self._offered,
                "exported": self._exported,
                "queued": len(self._queue) + self._in_flight,
                "in_flight": self._in_flight,
                "dropped": sum(dropped.values()),
                "dropped_by_reason": dropped,
                "failed": self._failed,
                "retried": self._retried,
                "last_error": self._last_error,
            }

    def force_flush(self, timeout: float | None = None) -> bool:
        """Export everything queued before the call, then flush the exporter; blocks up to `timeout` s.

        True when all of it was settled (exported, or dropped after failing) and the exporter's own
        `force_flush` succeeded in time; False at the deadline or after `shutdown`. The export runs on
        the worker, so an exporter that hangs cannot hold the caller beyond `timeout`.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._lock:
            if self._closed:
                return False
            target = self._enqueued
            self._flush_target = max(self._flush_target, target)
            pending = self._first_unsettled() <= target
        if pending:
            self.start()
            self._wake.set()
            with self._settled:
                if not self._settled.wait_for(
                    lambda: self._first_unsettled() > target, timeout=_remaining(deadline)
                ):
                    return False
        return self._flush_exporter(deadline)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Deliver what is queued within `timeout` s, stop the worker, then shut the exporter down.

        Blocks up to `timeout` (None: until done). Retries still run while they fit before the
        deadline; waits that do not are cut short. Items still queued at the deadline are dropped
        (reason ``"shutdown"``); a batch stuck in a hanging export stays `in_flight` (the worker is a
        daemon and cannot be killed). True when the worker finished in time and nothing was dropped
        for lack of time (reason ``"shutdown"``). Later calls return False at once.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            self._deadline = deadline
            lost_before = self._dropped.get(SHUTDOWN, 0)
            thread = self._thread
            if thread is None and self._queue:
                thread = self._thread = threading.Thread(
                    target=self._run, name=f"llmpulse-export-{self.name}", daemon=True
                )
                thread.start()
        self._stop.set()
        self._wake.set()
        finished = True
        if thread is not None:
            thread.join(_remaining(deadline))
            finished = not thread.is_alive()
        with self._lock:
            left = len(self._queue)
            if left:
                self._queue.clear()
                self._dropped[SHUTDOWN] = self._dropped.get(SHUTDOWN, 0) + left
            lost = self._dropped.get(SHUTDOWN, 0) - lost_before
            self._settled.notify_all()
        if left:
            self._report(f"shutdown deadline reached: dropped {left} queued items")
        flushed = self._flush_exporter(deadline) if finished else False
        remaining = _remaining(deadline)
        try:
            self.exporter.shutdown(30.0 if remaining is None else remaining)
        except Exception as exc:
            self._note_error(f"exporter shutdown failed: {_describe(exc)}")
            return False
        return finished and flushed and not lost

    def restart_after_fork(self) -> None:
        """Reset the pipeline in a forked child: new locks and worker, empty queue, zeroed counters.

        Called automatically through `os.register_at_fork`; the items the parent had queued stay the
        parent's to deliver. Safe to call again; does not block.
        """
        self._init_runtime()

    # -- the worker -------------------------------------------------------------------------------

    def _first_unsettled(self) -> int:
        """Sequence number of the oldest item neither exported nor dropped (lock held)."""
        if self._in_flight:
            return self._in_flight_first
        return self._enqueued - len(self._queue) + 1

    def _run(self) -> None:
        while True:
            woken = self._wake.wait(self._interval)
            self._wake.clear()
            closing = self._stop.is_set()
            try:
                self._drain(everything=closing or not woken)
            except Exception as exc:  # a bug here must not kill the worker silently
                self._note_error(f"export worker error: {_describe(exc)}")
            if closing:
                return

    def _drain(self, *, everything: bool) -> None:
        """Export full batches; with `everything`, also whatever was queued when the pass began."""
        with self._lock:
            target = max(self._flush_target, self._enqueued if everything else 0)
        while True:
            if self._deadline is not None and time.monotonic() >= self._deadline:
                break
            with self._lock:
                queue = self._queue
                if not queue or (len(queue) < self._max_batch and self._first_unsettled() > target):
                    break
                count = min(len(queue), self._max_batch)
                self._in_flight_first = self._first_unsettled()
                batch = [queue.popleft() for _ in range(count)]
                self._in_flight = count
            self._deliver(batch)
        with self._lock:
            self._settled.notify_all()
            full = self._full_drops
            newly_full, self._reported_full = full - self._reported_full, full
        if newly_full:
            self._report(f"queue full: dropped {newly_full} oldest items (max_queue={self._max_queue})")

    def _deliver(self, batch: list[TelemetryItem]) -> None:
        """Serialise, export with retries and settle one batch taken from the queue."""
        exported = 0
        dropped: dict[str, int] = {}
        retried = 0
        try:
            dicts = self._serialise(batch, dropped)
            if dicts:
                outcome = call_with_retry(
                    lambda: self._export(dicts),
                    self._retry,
                    stop=self._stop,
                    deadline=lambda: self._deadline,
                    on_failure=self._on_failure,
                )
                retried = outcome.retries
                if outcome.gave_up is not None:
                    dropped[outcome.gave_up] = dropped.get(outcome.gave_up, 0) + len(dicts)
                else:
                    exported = len(dicts) - self._partial(outcome.value, len(dicts), dropped)
        except Exception as exc:
            self._note_error(f"export worker error: {_describe(exc)}")
            exported = 0
            dropped = {INTERNAL_ERROR: len(batch)}
        with self._lock:
            self._exported += exported
            for reason, count in dropped.items():
                self._dropped[reason] = self._dropped.get(reason, 0) + count
            self._retried += retried
            self._in_flight = 0
            self._settled.notify_all()

    def _serialise(self, batch: list[TelemetryItem], dropped: dict[str, int]) -> list[dict[str, Any]]:
        """The batch's dict forms with costs and call ids filled in; unencodable items are dropped."""
        try:
            dicts: list[dict[str, Any]] = items_to_dicts(batch)
        except Exception:  # find the culprit(s) one by one
            dicts = []
            for item in batch:
                try:
                    dicts.append(to_dict(item))
                except Exception as exc:
                    dropped[SERIALIZATION_ERROR] = dropped.get(SERIALIZATION_ERROR, 0) + 1
                    self._note_error(f"cannot serialise a {type(item).__name__}: {_describe(exc)}")
                    dicts.append({})
        kept: list[dict[str, Any]] = []
        for item, data in zip(batch, dicts, strict=True):
            if not data:
                continue
            if type(item) is LLMCall:
                if data.get("cost") is None:
                    self._price(item, data)
                if data.get("request_id") is None:
                    # an id makes retries idempotent: the server counts a request_id once
                    data["request_id"] = f"{_random_bits(128):032x}"  # uuid4 costs 6x more
            kept.append(data)
        return kept

    def _price(self, call: LLMCall, data: dict[str, Any]) -> None:
        """Fill in the cost of a call in its dict form (never on the shared item); None stays unknown."""
        pricer = self._pricer
        if pricer is None:
            pricer = self._pricer = _default_pricer()
        try:
            cost = pricer.cost(
                call.model,
                provider=call.provider,
                input_tokens=call.input_tokens,
                output_tokens=call.output_tokens,
                cached_input_tokens=call.cached_input_tokens,
                cache_write_tokens=call.cache_write_tokens,
                reasoning_tokens=call.reasoning_tokens,
                at=call.timestamp,
            )
        except Exception as exc:  # an inconsistent usage leaves the cost unknown, the call is still sent
            self._note_error(f"cannot price {call.model!r}: {_describe(exc)}")
            return
        if cost is not None:
            data["cost"] = cost

    def _export(self, dicts: list[dict[str, Any]]) -> ExportResult | None:
        with self._export_lock:
            result = self.exporter.export(dicts)
        return result if isinstance(result, ExportResult) else None

    def _partial(self, result: ExportResult | None, size: int, dropped: dict[str, int]) -> int:
        """Count an exporter's partial failure into `dropped`; returns how many items it names."""
        if result is None or not result.dropped:
            return 0
        total = 0
        for reason, count in result.dropped.items():
            count = max(0, min(int(count), size - total))
            if count:
                dropped[reason] = dropped.get(reason, 0) + count
                total += count
        if result.errors:
            self._note_error(f"{total} of {size} items not delivered: " + "; ".join(result.errors[:3]))
        return total

    def _on_failure(self, exc: Exception, will_retry: bool) -> None:
        with self._lock:
            self._failed += 1
        suffix = "; retrying" if will_retry else "; giving up on the batch"
        self._note_error(_describe(exc) + suffix)

    def _flush_exporter(self, deadline: float | None) -> bool:
        remaining = _remaining(deadline)
        if not self._export_lock.acquire(timeout=-1 if remaining is None else remaining):
            return False
        try:
            return bool(self.exporter.force_flush(remaining if remaining is not None else 30.0))
        except Exception as exc:
            self._note_error(f"exporter force_flush failed: {_describe(exc)}")
            return False
        finally:
            self._export_lock.release()

    # -- reporting --------------------------------------------------------------------------------

    def _note_error(self, message: str) -> None:
        with self._lock:
            self._last_error = message
        self._report(message)

    def _report(self, message: str) -> None:
        """Log a warning, at most once per `log_interval_s`; later ones are counted and summarised."""
        now = time.monotonic()
        if now - self._last_log < self._log_interval:
            self._suppressed += 1
            return
        suppressed, self._suppressed, self._last_log = self._suppressed, 0, now
        extra = f" ({suppressed} more messages suppressed)" if suppressed else ""
        _log.warning("llmpulse exporter %r: %s%s", self.name, message, extra)

    def __repr__(self) -> str:
        return f"<ExportPipeline {self.name!r} queued={len(self._queue)}>"


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())
