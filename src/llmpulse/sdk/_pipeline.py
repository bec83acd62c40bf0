"""`ExportPipeline`: the one batching engine between the collector and each exporter.

Shaped like OpenTelemetry's `BatchProcessor`: a bounded deque filled by the application's threads, a
daemon worker woken by an event when a batch is full (or every `flush_interval_s`), an export lock
shared with `force_flush`, `shutdown(timeout)` handing the remaining budget on, and a restart of the
worker in forked children. On top of it: enrichment and serialisation on the worker (an `LLMCall`
without `cost` is priced with `Pricer`, its `cost_source` then ``genai-prices``; one without
`request_id` gets a random one so that retried batches are counted once; both only in the exported
dict, never on the application's object), retries through `call_with_retry`, and exact drop
accounting.

Accounting: every item given to `offer` is, at every instant `stats()` can observe, in exactly one of
`exported`, `queued` (waiting, in flight, or on its way into the queue) and `dropped` (by reason:
``"queue_full"``, ``"serialization_error"``, ``"permanent_error"``, ``"retries_exhausted"``,
``"shutdown"``, or one an exporter reports, such as ``"rejected_by_server"``), so
``offered == exported + queued + dropped``.

The hot path takes no lock while the queue has room (OpenTelemetry's shape): `offer` counts the item
on a lock-free `itertools.count` *before* appending it, and every item leaves the queue (taken by the
worker, dropped as the oldest when full, dropped at shutdown) under the lock, where it is counted as
exported or dropped. `stats()` reads the offered count under that lock and derives `queued` as
``offered - exported - dropped``: exact, with an item whose `offer` is still running counted as
queued. Only an `offer` that finds the queue full takes the lock (to drop the oldest item and count
it). The queue and the batch in flight together hold at most `max_queue` items: while the worker
exports a batch, the queue's room shrinks by its size (plus at most one item per thread racing at the
boundary).

Forked children (`os.fork`, multiprocessing's ``fork`` start method): the child's pipeline gets new
locks, events and a new worker (started by its first `offer`), an empty queue and zeroed statistics.
The items queued at the fork belong to the parent, which still delivers them; keeping them in the
child would deliver them twice. The child delivers what it records itself.

Errors: none of its own. `offer` never raises; exporter errors are counted, kept in
`stats()["last_error"]` and logged on the ``llmpulse.sdk`` logger at most once per `log_interval_s`.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, cast

import msgspec

from llmpulse.events import LLMCall, TelemetryItem, items_to_dicts, to_dict
from llmpulse.sdk._exporter import EncodedBatch, Exporter, ExportResult, as_exporter
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

#: Pricing cache entries per pipeline before the cache is cleared (bounds memory for odd model names).
_RATES_CACHE_MAX: Final = 4096
#: How long a worker that outlived `shutdown` gives the exporter's own `shutdown`.
LATE_SHUTDOWN_TIMEOUT_S: Final = 5.0
_UNCACHED: Final = object()

_encoder: Final = msgspec.json.Encoder()

_shared_pricer: Pricer | None = None


def _default_pricer() -> Pricer:
    global _shared_pricer  # one lazily built, read-mostly price cache shared by all pipelines
    if _shared_pricer is None:
        from llmpulse.pricing import Pricer  # imported late: keeps genai-prices off the import path

        _shared_pricer = Pricer()
    return _shared_pricer


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _peek(counter: itertools.count[int]) -> int:
    """The next value of an `itertools.count` (how many times it was advanced), without advancing it."""
    return int(repr(counter)[6:-1])  # "count(N)"


class ExportPipeline:
    """A bounded queue and a background worker delivering batches to one exporter.

    `offer` is the application's hot path (non-blocking); the worker, a daemon thread started by the
    first `offer` or by `start`, exports when `max_batch` items wait or every `flush_interval_s`,
    after filling in unknown call costs with `pricer` (a shared default `Pricer` when None, loaded
    on the worker when it starts) and turning items into their JSON dict form (or, for an exporter
    with `export_encoded`, encoding the batch once as JSON lines). `retry` says how failed batches
    are retried.
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
        encoded = getattr(self.exporter, "export_encoded", None)
        self._export_encoded: Callable[[EncodedBatch], object] | None = encoded if callable(encoded) else None
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
        self._worker_done = False  # the worker has left its loop (decided under the lock)
        self._late_shutdown = False  # `shutdown` left the exporter's shutdown to the worker
        self._steady = False  # the worker is started and the pipeline open: `offer`'s fast path
        self._queue.clear()
        self._offered = itertools.count()  # advanced lock-free by `offer`, before the append
        self._taken = 0  # items that left the front of the queue (lock held): taken, evicted, cleared
        self._room = self._max_queue  # queue room: `max_queue` minus the batch in flight
        self._woken = False  # the worker was woken for a full batch and has not drained yet
        self._rates: dict[tuple[str, str | None], Any] = {}
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
        self._full_drops = 0  # kept apart from `_dropped`
        self._cleared = False  # shutdown's final clear of the queue is done
        self._reported_full = 0

    # -- the application's side -------------------------------------------------------------------

    def offer(self, item: TelemetryItem) -> None:
        """Queue one item for export; never blocks, never raises, no I/O, no serialisation.

        Lock-free while the queue has room. When it is full the oldest waiting item is dropped
        (reason ``"queue_full"``; the new one when the whole buffer is in flight); after `shutdown`
        the item itself is dropped (reason ``"shutdown"``). The worker is woken only when a batch is
        full.
        """
        if not self._steady:
            if self._closed:
                self._offer_closed()
                return
            self.start()
        next(self._offered)  # first: an item on its way in counts as queued, never as lost
        queue = self._queue
        if len(queue) < self._room:
            queue.append(item)
        else:
            self._offer_full(item)
        if not self._woken and len(queue) >= self._max_batch:
            self._woken = True
            self._wake.set()
        if self._cleared:  # shut down meanwhile: what the final clear missed is dropped here
            self._clear_after_close()

    def _offer_full(self, item: TelemetryItem) -> None:
        """`offer` into a full queue: drop the oldest waiting items (counted) to make room."""
        with self._lock:
            queue, room = self._queue, self._room
            evicted = 0
            while queue and len(queue) >= room:
                queue.popleft()
                evicted += 1
            self._taken += evicted
            if len(queue) < room:
                queue.append(item)
            else:  # the whole buffer is in flight: the new item is the oldest one not yet taken
                self._taken += 1
                evicted += 1
            self._full_drops += evicted

    def _offer_closed(self) -> None:
        with self._lock:
            next(self._offered)
            self._taken += 1
            self._dropped[SHUTDOWN] = self._dropped.get(SHUTDOWN, 0) + 1

    def _clear_after_close(self) -> None:
        """Drop (reason ``"shutdown"``) items queued after the worker's final pass."""
        with self._lock:
            if not self._cleared:
                return  # the worker, or shutdown's final clear, still takes care of them
            left = len(self._queue)
            if left:
                self._queue.clear()
                self._taken += left
                self._dropped[SHUTDOWN] = self._dropped.get(SHUTDOWN, 0) + left
                self._settled.notify_all()

    def start(self) -> None:
        """Start the worker thread if it is not running; does not block, never raises."""
        with self._lock:
            if self._thread is not None or self._closed:
                return
            thread = threading.Thread(target=self._run, name=f"llmpulse-export-{self.name}", daemon=True)
            self._thread = thread
            self._steady = True
        try:
            thread.start()
        except RuntimeError as exc:  # no more threads: keep queueing, retry on the next offer
            with self._lock:
                self._thread = None
                self._steady = False
            self._report(f"cannot start the export worker: {exc}")

    def stats(self) -> dict[str, Any]:
        """A consistent snapshot of the counters; does not block (beyond a short lock).

        Keys: `offered`, `exported`, `queued` (waiting, in flight, or being offered right now),
        `in_flight`, `dropped`, `dropped_by_reason`, `failed` (failed export attempts), `retried`
        (retry attempts) and `last_error` (text or None). ``offered == exported + queued + dropped``
        always holds; `queued` never exceeds `max_queue` plus one item per thread inside `offer`.
        """
        with self._lock:
            dropped = dict(self._dropped)
            if self._full_drops:
                dropped[QUEUE_FULL] = self._full_drops
            offered = _peek(self._offered)
            total_dropped = sum(dropped.values())
            return {
                "offered": offered,
                "exported": self._exported,
                "queued": offered - self._exported - total_dropped,
                "in_flight": self._in_flight,
                "dropped": total_dropped,
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
            target = _peek(self._offered)
            self._flush_target = max(self._flush_target, target)
            pending = self._first_unsettled() <= target
        if pending:
            self.start()
            self._wake.set()
            with self._settled:
                # woken again every 50 ms: an item counted by an `offer` still running when the flush
                # began is appended a moment later and needs another pass of the worker
                while self._first_unsettled() <= target:
                    remaining = _remaining(deadline)
                    if remaining is not None and remaining <= 0:
                        return False
                    self._settled.wait(0.05 if remaining is None else min(0.05, remaining))
                    self._wake.set()
        return self._flush_exporter(deadline)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Deliver what is queued within `timeout` s, stop the worker, then shut the exporter down.

        Blocks up to `timeout` (None: until done). Retries still run while they fit before the
        deadline; waits that do not are cut short. Items still queued at the deadline are dropped
        (reason ``"shutdown"``); a batch stuck in a hanging export stays `in_flight` (the worker is a
        daemon and cannot be killed), and the exporter's own `shutdown` is then left to the worker,
        which calls it when that export returns, never under it. True when the worker finished in
        time and nothing was dropped for lack of time (reason ``"shutdown"``). Later calls return
        False at once.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            self._steady = False
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
            self._cleared = True  # first: an `offer` appending after the clear below sees it
            left = len(self._queue)
            if left:
                self._queue.clear()
                self._taken += left
                self._dropped[SHUTDOWN] = self._dropped.get(SHUTDOWN, 0) + left
            lost = self._dropped.get(SHUTDOWN, 0) - lost_before
            self._settled.notify_all()
        if left:
            self._report(f"shutdown deadline reached: dropped {left} queued items")
        if not finished:
            # the worker is still inside `export`: shutting the exporter down now would close its
            # connection under that call (which may then open another that nobody closes); the worker
            # shuts it down itself when the call returns
            with self._lock:
                late = self._late_shutdown = not self._worker_done
            if late:
                return False
        flushed = self._flush_exporter(deadline) if finished else False
        remaining = _remaining(deadline)
        return (
            self._shutdown_exporter(30.0 if remaining is None else remaining)
            and finished
            and flushed
            and not lost
        )

    def _shutdown_exporter(self, timeout: float) -> bool:
        """Call the exporter's `shutdown`; False (and the error noted) when it raises."""
        try:
            self.exporter.shutdown(timeout)
        except Exception as exc:
            self._note_error(f"exporter shutdown failed: {_describe(exc)}")
            return False
        return True

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
        return self._taken + 1

    def _run(self) -> None:
        self._warm_up()
        while True:
            woken = self._wake.wait(self._interval)
            self._wake.clear()
            self._woken = False
            closing = self._stop.is_set()
            try:
                self._drain(everything=closing or not woken)
            except Exception as exc:  # a bug here must not kill the worker silently
                self._note_error(f"export worker error: {_describe(exc)}")
            if closing:
                with self._lock:
                    self._worker_done = True
                    late = self._late_shutdown
                if late:  # `shutdown` gave up waiting for this worker: release the exporter now
                    self._shutdown_exporter(LATE_SHUTDOWN_TIMEOUT_S)
                return

    def _warm_up(self) -> None:
        """Load the price table on the worker before the first batch needs it (~0.2 s the first time),
        so a burst right after start does not wait for it; never on the application's thread."""
        try:
            pricer = self._pricer
            if pricer is None:
                pricer = self._pricer = _default_pricer()
            pricer.knows("gpt-4o-mini")  # loads genai-prices' snapshot
        except Exception as exc:  # pricing is best effort: calls are exported without a cost
            self._note_error(f"cannot load prices: {_describe(exc)}")

    def _drain(self, *, everything: bool) -> None:
        """Export full batches; with `everything`, also whatever was queued when the pass began."""
        with self._lock:
            target = max(self._flush_target, _peek(self._offered) if everything else 0)
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
                self._taken += count
                self._in_flight = count
                self._room = self._max_queue - count
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
            export_encoded = self._export_encoded
            payload: EncodedBatch | list[dict[str, Any]]
            if export_encoded is not None:
                payload = self._encode(batch, dropped)
            else:
                payload = self._serialise(batch, dropped)
            size = len(payload)
            if size:
                outcome = call_with_retry(
                    lambda: self._export(payload),
                    self._retry,
                    stop=self._stop,
                    deadline=lambda: self._deadline,
                    on_failure=self._on_failure,
                )
                retried = outcome.retries
                if outcome.gave_up is not None:
                    dropped[outcome.gave_up] = dropped.get(outcome.gave_up, 0) + size
                else:
                    exported = size - self._partial(outcome.value, size, dropped)
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
            self._room = self._max_queue
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
        calls = [item for item in batch if type(item) is LLMCall and item.cost is None]
        costs = iter(self._costs(calls) if calls else ())
        for item, data in zip(batch, dicts, strict=True):
            if type(item) is LLMCall:
                if item.cost is None:
                    cost = next(costs)
                    if cost is not None and data:
                        data["cost"] = cost
                        data["cost_source"] = "genai-prices"
                if data and data["request_id"] is None:
                    # an id makes retries idempotent: the server counts a request_id once
                    data["request_id"] = f"{_random_bits(128):032x}"  # uuid4 costs 6x more
            if data:
                kept.append(data)
        return kept

    def _encode(self, batch: list[TelemetryItem], dropped: dict[str, int]) -> EncodedBatch:
        """The batch encoded once as JSON lines, costs and call ids filled in on copies of the calls
        (never on the application's objects); unencodable items are dropped. The same bytes as
        encoding `_serialise`'s dicts."""
        calls = [item for item in batch if type(item) is LLMCall and item.cost is None]
        costs = iter(self._costs(calls) if calls else ())
        items: list[TelemetryItem] = []
        for item in batch:
            if type(item) is LLMCall and (item.cost is None or item.request_id is None):
                copy: LLMCall = cast(Any, item).__copy__()  # msgspec's shallow copy, no __post_init__
                if item.cost is None:
                    copy.cost = next(costs)
                    if copy.cost is not None:
                        copy.cost_source = "genai-prices"
                if copy.request_id is None:
                    copy.request_id = f"{_random_bits(128):032x}"
                item = copy
            items.append(item)
        try:
            return EncodedBatch(items, _encoder.encode_lines(items))
        except Exception:  # find the culprit(s) one by one
            kept: list[TelemetryItem] = []
            lines: list[bytes] = []
            for item in items:
                try:
                    line = _encoder.encode(item)
                except Exception as exc:
                    dropped[SERIALIZATION_ERROR] = dropped.get(SERIALIZATION_ERROR, 0) + 1
                    self._note_error(f"cannot serialise a {type(item).__name__}: {_describe(exc)}")
                    continue
                kept.append(item)
                lines.append(line + b"\n")
            return EncodedBatch(kept, b"".join(lines))

    def _costs(self, calls: list[LLMCall]) -> list[float | None]:
        """Each call's cost in USD, None when unknown. Linear prices are cached per (model, provider),
        so most calls cost a few multiplications: the same figure as `Pricer.cost` to the last bit
        (its expression); tiered, dated and unknown prices and inconsistent usage go through it."""
        cache = self._rates
        costs: list[float | None] = []
        append = costs.append
        model: str | None = None
        provider: str | None = None
        rates: Any = None
        for call in calls:
            if call.model != model or call.provider != provider:  # batches are mostly one model
                model, provider = call.model, call.provider
                rates = cache.get((model, provider), _UNCACHED)
                if rates is _UNCACHED:
                    rates = self._linear_rates((model, provider))
            if rates is not None:
                inp, out = call.input_tokens, call.output_tokens
                cached, written = call.cached_input_tokens, call.cache_write_tokens
                reasoning = call.reasoning_tokens
                if not (cached | written | reasoning):
                    if inp >= 0 and out >= 0:
                        # `Pricer.cost` with the zero terms left out: adding 0.0 changes no float
                        append(rates[0] + rates[1] * inp + rates[4] * out)
                        continue
                elif (
                    (inp | out | cached | written | reasoning) >= 0
                    and cached + written <= inp
                    and reasoning <= out
                ):
                    append(
                        rates[0]
                        + rates[1] * (inp - cached - written)
                        + rates[2] * cached
                        + rates[3] * written
                        + rates[4] * (out - reasoning)
                        + rates[5] * reasoning
                    )
                    continue
            append(self._price(call))
        return costs

    def _linear_rates(self, key: tuple[str, str | None]) -> Any:
        """Fill the rates cache for a (model, provider): its `Rates`, or None (priced call by call)."""
        pricer = self._pricer
        if pricer is None:
            pricer = self._pricer = _default_pricer()
        try:
            rates = pricer.linear_rates(key[0], provider=key[1])
        except Exception:
            rates = None
        if len(self._rates) >= _RATES_CACHE_MAX:
            self._rates.clear()
        self._rates[key] = rates
        return rates

    def _price(self, call: LLMCall) -> float | None:
        """The cost of a call through `Pricer.cost` (tiers, dated prices, unknown models); None
        when unknown or when the usage is inconsistent (the call is still sent)."""
        pricer = self._pricer
        if pricer is None:
            pricer = self._pricer = _default_pricer()
        try:
            return pricer.cost(
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
            return None

    def _export(self, payload: EncodedBatch | list[dict[str, Any]]) -> ExportResult | None:
        with self._export_lock:
            if isinstance(payload, EncodedBatch):
                assert self._export_encoded is not None
                result = self._export_encoded(payload)
            else:
                result = self.exporter.export(payload)
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
