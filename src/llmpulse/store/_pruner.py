"""`RetentionPruner`: runs `roll_up` and `prune` every ``policy.interval_s`` on a background thread.

Rolling finished hours up into the hourly and daily rollups (`llmpulse.store._roller`) comes first,
so the minute windows a prune may delete are already in the rollups (the prune keeps those of hours
not rolled up yet). With ``interval_s`` 0 this process does neither: another process sharing the
store should (queries stay exact meanwhile, reading minutes where hours are not rolled up).

On SQLite, where every writer waits for the one transaction under way, batches take about
`max_batch_s` at most (20 ms: fewer rows than ``policy.batch_rows`` when rows are slow to delete on
a slow disk). Between two
batches the pruner waits `pause_s` on its stop event, so other writers (the processor's commits) get
the database between short delete transactions, and `stop` ends a prune in progress after the batch
under way. The clock is injected (tests pass a fake one); the interval and the pauses are real time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from llmpulse.store._retention import PruneResult, RetentionPolicy, prune
from llmpulse.store._roller import RollResult, roll_up
from llmpulse.store._store import Store

_log = logging.getLogger(__name__)

#: Seconds the pruner waits between two delete batches (the database is free for other writers; this
#: process's writers, queued on `Store.write_lock`, get it at once).
DEFAULT_PAUSE_S: Final = 0.002
#: The longest a delete batch should take: the longest the processor's commit waits for one on SQLite.
DEFAULT_MAX_BATCH_S: Final = 0.02


class RetentionPruner:
    """Deletes what `policy` no longer keeps from `store`, every ``policy.interval_s`` seconds.

    Args:
        store: the store to prune (not closed by the pruner).
        policy: retention and batch size; ``interval_s`` must be positive to `start`.
        clock: wall clock in epoch seconds, what retention is measured against.
        pause_s: seconds to wait between two delete batches, at least (half the last batch's
            duration when that is longer: a writer that waited for it gets in before the next).
        max_batch_s: on SQLite, batches shrink below ``policy.batch_rows`` while their delete
            takes longer than this (Postgres batches are always ``batch_rows``).
    """

    def __init__(
        self,
        store: Store,
        policy: RetentionPolicy,
        *,
        clock: Callable[[], float] = time.time,
        pause_s: float = DEFAULT_PAUSE_S,
        max_batch_s: float = DEFAULT_MAX_BATCH_S,
    ) -> None:
        if pause_s < 0:
            raise ValueError(f"pause_s must be >= 0, got {pause_s!r}")
        if not max_batch_s > 0:
            raise ValueError(f"max_batch_s must be positive, got {max_batch_s!r}")
        self._store = store
        self._policy = policy
        self._clock = clock
        self._pause_s = pause_s
        self._max_batch_s = max_batch_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._runs = 0
        self._failures = 0
        self._deleted: dict[str, int] = {}
        self._last: PruneResult | None = None
        self._last_roll: RollResult | None = None
        self._last_error: str | None = None

    @property
    def policy(self) -> RetentionPolicy:
        """The policy this pruner applies."""
        return self._policy

    @property
    def alive(self) -> bool:
        """True while the pruning thread runs."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def last(self) -> PruneResult | None:
        """The last completed or stopped prune, None before the first. Does not block."""
        return self._last

    def start(self, delay_s: float | None = None) -> None:
        """Start the thread; its first prune runs after `delay_s` (default: one interval). Does not block.

        Raises:
            ValueError: ``policy.interval_s`` is 0 (no pruning wanted) or `delay_s` < 0.
            RuntimeError: already started.
        """
        if self._policy.interval_s <= 0:
            raise ValueError("the retention policy's interval_s is 0: no pruner is wanted")
        if delay_s is not None and delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s!r}")
        if self._thread is not None:
            raise RuntimeError("the pruner is already started")
        delay = self._policy.interval_s if delay_s is None else delay_s
        self._thread = threading.Thread(target=self._run, args=(delay,), name="llmpulse-pruner", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop pruning: a prune under way ends after its current batch. Blocks up to `timeout`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, delay: float) -> None:
        wait = delay
        while not self._stop.wait(wait):
            try:
                self.run_once()
            except Exception as exc:  # recorded by run_once; the next interval tries again
                _log.warning("pruning expired records failed: %s", exc)
            wait = self._policy.interval_s

    def _between_batches(self, took_s: float) -> bool:
        # the processor's commits queue on the store's write lock and get it as soon as a batch
        # ends; a pause of half the batch leaves the database to other writers a third of the time
        return not self._stop.wait(max(self._pause_s, took_s / 2))

    def run_once(self) -> PruneResult:
        """Roll finished hours up (`roll_up`), then prune, now (against the clock), pausing between
        transactions; stops early once `stop` is called. Blocks while working.

        Raises:
            StoreError: the database failed (counted in `stats` as a failure).
        """
        try:
            rolled = roll_up(self._store, self._clock(), between=self._between_batches)
            with self._lock:
                self._last_roll = rolled
            result = prune(
                self._store,
                self._policy,
                self._clock(),
                between_batches=self._between_batches,
                # Postgres deletes lock only their rows: nobody waits for a batch of any size
                max_batch_s=self._max_batch_s if self._store.dialect == "sqlite" else None,
            )
        except Exception as exc:
            with self._lock:
                self._failures += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
            raise
        with self._lock:
            self._runs += 1
            self._last = result
            self._last_error = None
            for table, n in result.deleted.items():
                self._deleted[table] = self._deleted.get(table, 0) + n
        if result.total_deleted:
            _log.info(
                "pruned %d expired rows in %d batches (%s)",
                result.total_deleted,
                result.batches,
                ", ".join(f"{t} {n}" for t, n in result.deleted.items() if n),
            )
        return result

    def stats(self) -> dict[str, Any]:
        """Figures for ``/health``: runs, failures, rows deleted per table since start, the last
        prune and the last error. Does not block."""
        with self._lock:
            return {
                "alive": self.alive,
                "interval_s": self._policy.interval_s,
                "batch_rows": self._policy.batch_rows,
                "runs": self._runs,
                "failures": self._failures,
                "deleted_total": dict(self._deleted),
                "last": None if self._last is None else self._last.as_dict(),
                "last_rollup": None if self._last_roll is None else self._last_roll.as_dict(),
                "last_error": self._last_error,
            }
