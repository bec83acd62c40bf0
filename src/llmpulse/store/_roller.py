"""Rolling finished hours of minute windows up into the hourly and daily rollups.

A commit writes its deltas to the minute windows only, unless their hour is already rolled up (a late
event), when it adds them to the hourly and daily rollups as well. Once an hour has been over for
`ROLL_SETTLE_S` (by the wall clock), `roll_up` sums each tenant's minute windows of that hour into
the rollups and moves the tenant's ``rollup_progress.rolled_through`` past it, many tenants to a
short write transaction (`Store.roll_hours`: about 20,000 minute windows at most). Queries read
rollups only before ``rolled_through`` and minutes from it on (`llmpulse.store._ranges.plan`), so
every answer stays exact whatever the roller has done so far.

Why: adding every commit's deltas to the rollups meant reading, merging and rewriting an hourly and a
daily row (histograms of an hour's or a day's buckets) for each minute window a commit touched: about
a third of embedded ingest's time in `make bench` (benchmark 2). Rolling an hour reads each of its
minute windows once.

The retention pruner's thread runs `roll_up` before each prune (`RetentionPruner`), and the prune
keeps every minute window of an hour not rolled up yet. Several processes may roll at once: each
(tenant, hour) is rolled by whichever takes the tenant's progress row first, and the others find it
done. A roll of many tenants (after a pause, or the first hour of a busy store) takes one
transaction per ~20,000 minute windows, not one per tenant: on SQLite each transaction
waits its turn behind the processor's commits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from llmpulse.store._ranges import HOUR
from llmpulse.store._store import Store

#: Seconds after an hour ends before it is rolled up: events that arrive later than this for it cost a
#: little more (their commit adds them to the rollups too); the answers are exact either way.
ROLL_SETTLE_S: Final = 600.0


def roll_bound(now: float, settle_s: float = ROLL_SETTLE_S) -> int:
    """The hour (epoch seconds) before which every hour has been over for `settle_s` at `now`. Pure."""
    return math.floor((now - settle_s) / HOUR) * HOUR


@dataclass(frozen=True, slots=True)
class RollResult:
    """What one `roll_up` did.

    Attributes:
        bound: the hour every tenant was to be rolled up to (epoch seconds).
        hours: tenant-hours summed into the rollups.
        windows: minute windows read for them.
        transactions: write transactions it took (`Store.roll_hours`).
        elapsed_s: wall time of the run.
        complete: False when `between` asked to stop before every tenant reached `bound`.
    """

    bound: int
    hours: int
    windows: int
    transactions: int
    elapsed_s: float
    complete: bool

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values (for ``/health``)."""
        return {
            "bound": self.bound,
            "hours": self.hours,
            "windows": self.windows,
            "transactions": self.transactions,
            "elapsed_s": round(self.elapsed_s, 3),
            "complete": self.complete,
        }


def roll_up(
    store: Store,
    now: float,
    *,
    settle_s: float = ROLL_SETTLE_S,
    between: Callable[[float], bool] | None = None,
) -> RollResult:
    """Roll every tenant's hours that ended `settle_s` before `now` up into the rollups, in short
    write transactions (`Store.roll_hours`). `between`, when given, is called with each transaction's duration
    after it and returns False to stop (the result is then not `complete`; rolling again goes on
    where it stopped). Blocks.

    Raises:
        ValueError: `settle_s` < 0.
        StoreError: the database failed (hours rolled before stay rolled).
    """
    if not settle_s >= 0:
        raise ValueError(f"settle_s must be >= 0, got {settle_s!r}")
    started = time.perf_counter()
    bound = roll_bound(now, settle_s)
    hours = rows = transactions = 0
    while True:
        at = time.perf_counter()
        rolled, read, done = store.roll_hours(bound, now)
        hours += rolled
        rows += read
        transactions += 1
        if done:
            return RollResult(bound, hours, rows, transactions, time.perf_counter() - started, True)
        if between is not None and not between(time.perf_counter() - at):
            return RollResult(bound, hours, rows, transactions, time.perf_counter() - started, False)
