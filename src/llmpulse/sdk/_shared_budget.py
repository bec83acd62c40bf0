"""Shared budgets: one ledger on the llmpulse server, enforced by the SDK in every process.

A `SharedBudget` is used wherever a local `Budget` is (`instrument(budget=...)`, the LangChain
handler's `budget=`, `with budget.reserve(...)` in `@observe`d code, the stream cut-off): `reserve`
asks the server for a reservation of the call's estimate (one round trip, the only one the call
waits for), and the reservation's `settle` / `release` are sent afterwards by a background thread
(with the SDK's retry policy), so a call pays one round trip. A streaming call grows its reservation
on the server when its running cost would pass the estimate (to twice the estimate, or more), so a
stream costs a few round trips, not one per chunk, and is cut when the server refuses to grow it.

When the server cannot be reached within `timeout_s`, or answers 5xx, the policy decides:
`fail_open` lets the call proceed without a reservation (its cost is sent to the ledger later, when
it can be), `fail_closed` refuses it with `BudgetUnavailable`. Either way it is counted in `stats()`
(and in `Collector.stats()` when the budget was given a collector). After a failure, calls apply the
policy at once for `retry_interval_s` instead of each waiting for the timeout.

Errors: `BudgetExceeded` (a `SharedBudgetExceeded`) when the server refuses a reservation or a
stream's growth; `BudgetUnavailable` (a `SharedBudgetExceeded`) under `fail_closed`; `ValueError` for
invalid arguments. Nothing else is raised into the application.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import threading
import time
import urllib.parse
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal

from llmpulse.sdk._budget import BudgetExceeded
from llmpulse.sdk._budget_http import Connections, Unreachable
from llmpulse.sdk._config import SharedBudgetConfig, UnavailablePolicy
from llmpulse.sdk._exporter import ExportError
from llmpulse.sdk._retry import RetryPolicy, call_with_retry

if TYPE_CHECKING:
    from llmpulse.sdk._collector import Collector

__all__ = [
    "BudgetUnavailable",
    "SharedBudget",
    "SharedBudgetExceeded",
    "SharedReservation",
]

logger = logging.getLogger("llmpulse.sdk.budget")

#: How settles (commits, releases, fail-open back-fills) are retried on the background thread.
SETTLE_RETRY: Final = RetryPolicy(
    max_attempts=6, initial_backoff_s=0.2, max_backoff_s=5.0, max_elapsed_s=60.0
)
#: Most threads sending one budget's settles at once (each reservation has one settle; their order
#: does not matter), so commits keep up with many concurrent calls and free budget soon.
SETTLE_THREADS: Final = 4
#: The longest the `atexit` hook waits for settles still queued.
EXIT_FLUSH_S: Final = 5.0
_COUNTERS: Final = (
    "reserved",
    "refused",
    "fail_open",
    "fail_closed",
    "extended",
    "cut",
    "committed",
    "released",
    "backfilled",
    "settle_failed",
    "unreachable",
)


def _usd(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number of USD >= 0, got {value!r}")
    return float(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


class SharedBudgetExceeded(BudgetExceeded):
    """The server refused a reservation (or a stream's growth) of a shared budget: it does not fit.

    Besides `BudgetExceeded`'s attributes (`scope` is ``"shared"``, `key` the budget id; `limit`,
    `spent` and `reserved` are what the server said, NaN when it did not say), `budget_id` and
    `remaining_usd` (what the server said is left, NaN when unknown).
    """

    def __init__(
        self,
        budget_id: str,
        *,
        limit: float,
        spent: float,
        reserved: float,
        requested: float,
        remaining_usd: float,
    ) -> None:
        super().__init__(
            scope="shared", key=budget_id, limit=limit, spent=spent, reserved=reserved, requested=requested
        )
        self.budget_id = budget_id
        self.remaining_usd = remaining_usd

    def __reduce__(self) -> tuple[object, ...]:
        fields = (self.limit, self.spent, self.reserved, self.requested, self.remaining_usd)
        return (_rebuild_shared, (type(self), self.budget_id, *fields, str(self)))


class BudgetUnavailable(SharedBudgetExceeded):
    """`fail_closed`: the budget's server could not be reached (or answered 5xx), so the call is refused."""


def _rebuild_shared(
    cls: type[SharedBudgetExceeded],
    budget_id: str,
    limit: float,
    spent: float,
    reserved: float,
    requested: float,
    remaining: float,
    message: str,
) -> SharedBudgetExceeded:
    error = cls(
        budget_id, limit=limit, spent=spent, reserved=reserved, requested=requested, remaining_usd=remaining
    )
    error.args = (message,)
    return error


class SharedReservation:
    """A reservation on the server for one call, until it is settled or released.

    The same interface as a local `Reservation`: `settle(actual_cost_usd)`, `release()` (both
    idempotent, sent in the background: they never block), `charge_progress` / `check_progress` for
    streams (a round trip only when the stream's cost would pass the reservation), and a context
    manager that releases on an exception and settles at the reserved amount otherwise. A reservation
    admitted by `fail_open` (`backed` is False) has nothing on the server: its settle sends the cost to
    the ledger afterwards, when the server answers. Thread-safe.
    """

    __slots__ = ("_amount", "_budget", "_done", "_guard", "_last_cost", "exceeded", "reservation_id")

    def __init__(self, budget: SharedBudget, reservation_id: str | None, amount: float) -> None:
        self._budget = budget
        #: The server's id of the reservation; None when admitted by `fail_open`.
        self.reservation_id = reservation_id
        self._amount = amount
        self._last_cost = 0.0
        self._done = False
        self._guard = threading.Lock()
        #: Always empty: a shared budget raises instead of warning (a local `Reservation` has it too).
        self.exceeded: tuple[BudgetExceeded, ...] = ()

    @property
    def backed(self) -> bool:
        """True when the server holds the reservation (False: admitted by `fail_open`)."""
        return self.reservation_id is not None

    @property
    def reserved_usd(self) -> float:
        """The amount reserved (USD); grows when a stream's cost would pass it."""
        return self._amount

    @property
    def done(self) -> bool:
        """True once the reservation was settled or released."""
        return self._done

    def _finish(self) -> float | None:
        with self._guard:
            if self._done:
                return None
            self._done = True
            return self._amount

    def settle(self, actual_cost_usd: float | None) -> None:
        """Commit the call's actual cost in USD (None: the reserved amount), in the background.

        Only the first settle or release counts. Does not block.
        """
        cost = None if actual_cost_usd is None else _usd(actual_cost_usd, "actual_cost_usd")
        amount = self._finish()
        if amount is not None:
            self._budget._settle(self.reservation_id, amount if cost is None else cost, amount)

    def release(self) -> None:
        """Give the reservation back (the call failed before costing anything), in the background.

        Idempotent; a no-op after `settle`. Does not block.
        """
        if self._finish() is not None and self.reservation_id is not None:
            self._budget._release(self.reservation_id)

    def charge_progress(self, cost_so_far_usd: float) -> bool:
        """A stream's cost so far; False when the stream must stop (see `check_progress`)."""
        return self.check_progress(cost_so_far_usd) is None

    def check_progress(self, cost_so_far_usd: float) -> BudgetExceeded | None:
        """A stream's cost so far; the `BudgetExceeded` to stop it with, or None to go on.

        When the cost so far plus the last step's worth would pass the reservation, the reservation
        grows on the server (one round trip) to twice its amount or more; when the server refuses even
        what the stream needs next, the answer is a `SharedBudgetExceeded` (the stream is cut). Under
        `fail_closed` an unreachable server cuts the stream too (`BudgetUnavailable`). Blocks only
        while growing; never raises what the server does.
        """
        cost = _usd(cost_so_far_usd, "cost_so_far_usd")
        with self._guard:
            if self._done:
                return None
            step = max(0.0, cost - self._last_cost)
            self._last_cost = max(self._last_cost, cost)
            need = cost + step
            amount = self._amount
            if need <= amount:
                return None
            if self.reservation_id is None:
                self._amount = need  # fail-open: nothing on the server to grow
                return None
        return self._budget._grow(self, self.reservation_id, amount, need, cost)

    def _grown(self, amount: float) -> None:
        with self._guard:
            self._amount = max(self._amount, amount)

    def __enter__(self) -> SharedReservation:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.settle(None)
        else:
            self.release()

    def __repr__(self) -> str:
        return f"SharedReservation({self.reservation_id!r}, reserved_usd={self._amount!r}, done={self._done})"


class SharedBudget:
    """A budget kept on the llmpulse server (`PUT /v1/budgets/{id}`), shared by every process using it.

    Accepted wherever a local `Budget` is: `reserve(attributes, max_cost_usd)` returns a
    `SharedReservation` or raises `SharedBudgetExceeded` (the estimate does not fit a hard budget).
    `reserve` blocks for one round trip to the server (at most `timeout_s`; in asyncio code use
    `areserve`); settles and releases go out on a background daemon thread, in order, retried with
    backoff. The server's scope (tenant, user, ...) is the budget's own, so the call's attributes are
    not sent.

    Settings come from `config`, else from the arguments, else from the environment
    (`SharedBudgetConfig.from_env`: `LLMPULSE_BUDGET_URL`, `LLMPULSE_BUDGET_API_KEY`,
    `LLMPULSE_BUDGET_ON_UNAVAILABLE`, `LLMPULSE_BUDGET_TIMEOUT_S`, `LLMPULSE_BUDGET_RETRY_INTERVAL_S`,
    `LLMPULSE_BUDGET_RESERVATION_TTL_S`). `collector` (optional) shows this budget's counters in
    `collector.stats()`. `clock` (monotonic seconds) times the retry interval. Thread-safe; a forked
    child starts with fresh counters, no connections and no queued settles (they are the parent's).
    """

    #: What `Budget.scope` is for local budgets; the LangChain handler reads it.
    scope: Final = "shared"

    def __init__(
        self,
        budget_id: str,
        *,
        url: str | None = None,
        api_key: str | None = None,
        on_unavailable: UnavailablePolicy | None = None,
        timeout_s: float | None = None,
        retry_interval_s: float | None = None,
        reservation_ttl_s: float | None = None,
        config: SharedBudgetConfig | None = None,
        collector: Collector | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(budget_id, str) or not budget_id or "/" in budget_id:
            raise ValueError(f"`budget_id` must be a non-empty string without '/', got {budget_id!r}")
        if config is None:
            config = SharedBudgetConfig.from_env(
                environ,
                url=url,
                api_key=api_key,
                on_unavailable=on_unavailable,
                timeout_s=timeout_s,
                retry_interval_s=retry_interval_s,
                reservation_ttl_s=reservation_ttl_s,
            )
        self.budget_id: Final = budget_id
        self.config: Final = config
        self._path = f"/v1/budgets/{urllib.parse.quote(budget_id, safe='')}"
        self._clock = clock
        self._init_state()
        ref = weakref.ref(self)

        def _after_fork_in_child() -> None:
            budget = ref()
            if budget is not None:
                budget._init_state()

        def _at_exit() -> None:
            budget = ref()
            if budget is not None:
                budget.close(EXIT_FLUSH_S)

        atexit.register(_at_exit)
        weakref.finalize(self, atexit.unregister, _at_exit).atexit = False
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
        if collector is not None:
            collector.watch_budget(self)

    def _init_state(self) -> None:
        """Fresh connections, counters, queue and worker (construction, and in a forked child)."""
        self._http = Connections(self.config.url, self.config.timeout_s, self.config.api_key)
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._fail_open_usd = 0.0
        self._overrun_usd = 0.0
        self._last_error: str | None = None
        self._remaining: float | None = None
        self._amount: float | None = None
        self._down_until = -math.inf
        self._queue: deque[Callable[[], None]] = deque()
        self._pending = 0
        self._cond = threading.Condition(threading.Lock())
        self._stop = threading.Event()
        self._give_up_at: float | None = None  # set by close(): retries waiting past it are given up
        self._workers: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def __repr__(self) -> str:
        config = self.config
        return (
            f"SharedBudget({self.budget_id!r}, url={config.url!r}, on_unavailable={config.on_unavailable!r})"
        )

    # -- what the instrumentation calls ---------------------------------------------------------------

    def key_for(self, attributes: Mapping[str, str | None]) -> str | None:
        """Always None: the server budget's scope decides which calls it covers."""
        return None

    def reserve(self, attributes: Mapping[str, str | None], max_cost_usd: float) -> SharedReservation:
        """Reserve `max_cost_usd` on the server for one call; blocks for one round trip (≤ `timeout_s`).

        Raises `SharedBudgetExceeded` when the server answers 409 (the estimate does not fit a hard
        budget) and, under `fail_closed`, `BudgetUnavailable` when it cannot be reached, times out,
        answers 5xx or anything unexpected (both counted). Under `fail_open` the call gets an unbacked
        reservation instead (counted). `attributes` is accepted for compatibility and not sent.
        """
        estimate = _usd(max_cost_usd, "max_cost_usd")
        body: dict[str, Any] = {"estimate_usd": estimate}
        if self.config.reservation_ttl_s is not None:
            body["ttl_s"] = self.config.reservation_ttl_s
        try:
            status, answer = self._request("POST", f"{self._path}/reservations", body, hot=True)
            if status in (200, 201) and isinstance(answer.get("reservation_id"), str):
                self._seen(answer)
                self._count("reserved")
                amount = _number(answer.get("estimate_usd"))
                return SharedReservation(
                    self, answer["reservation_id"], estimate if amount is None else amount
                )
            if status == 409:
                self._seen(answer)
                self._count("refused")
                raise self._exceeded(answer, estimate)
            raise Unreachable(f"POST {self._path}/reservations: HTTP {status} {_brief(answer)}")
        except Unreachable as exc:
            return self._unavailable(exc, estimate)

    async def areserve(self, attributes: Mapping[str, str | None], max_cost_usd: float) -> SharedReservation:
        """`reserve` on a worker thread, so the event loop is not blocked for the round trip."""
        import asyncio

        return await asyncio.to_thread(self.reserve, attributes, max_cost_usd)

    def remaining(self, scope: str | None = None, key: str | None = None) -> float:
        """USD left in the budget, as the server's latest answer said (a GET when none came yet).

        Does not block once any answer came; NaN when the server could not be asked.
        """
        if self._remaining is None:
            try:
                self.view()
            except (RuntimeError, ValueError):
                return math.nan
        return math.nan if self._remaining is None else self._remaining

    # -- the server's view ---------------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        """`GET /v1/budgets/{id}`: the budget as the server keeps it. Blocks for one round trip.

        Raises `RuntimeError` when the server cannot be reached or does not know the budget.
        """
        return self._admin("GET", None, expect=200)

    def define(
        self,
        amount_usd: float,
        *,
        period: Literal["day", "week", "month", "total"] = "total",
        timezone: str = "UTC",
        hard: bool = True,
        scope: Mapping[str, str] | None = None,
        reservation_ttl_s: float | None = None,
    ) -> dict[str, Any]:
        """`PUT /v1/budgets/{id}`: create or replace the budget on the server; answers its view.

        `scope` holds `tenant_id` (default ``"default"``) and optionally `user_id`, `org_id`,
        `feature`, `environment`. Blocks for one round trip; `RuntimeError` when the server refuses.
        """
        body: dict[str, Any] = {
            "amount_usd": _usd(amount_usd, "amount_usd"),
            "period": period,
            "timezone": timezone,
            "hard": hard,
            "scope": dict(scope) if scope is not None else {"tenant_id": "default"},
        }
        if reservation_ttl_s is not None:
            body["reservation_ttl_s"] = reservation_ttl_s
        return self._admin("PUT", body, expect=200)

    def _admin(self, method: str, body: Mapping[str, Any] | None, *, expect: int) -> dict[str, Any]:
        try:
            status, answer = self._request(method, self._path, body, hot=False)
        except Unreachable as exc:
            raise RuntimeError(f"shared budget {self.budget_id!r}: {exc}") from exc
        if status != expect:
            raise RuntimeError(
                f"shared budget {self.budget_id!r}: {method} answered {status} {_brief(answer)}"
            )
        self._seen(answer)
        return answer

    # -- counters ------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """This budget's counters in this process. Does not block.

        `reserved` (reservations the server granted), `refused` (409s), `fail_open` / `fail_closed`
        (calls and stream checks the policy decided while the server was unreachable),
        `fail_open_usd` (what those fail-open calls cost), `extended` (stream reservations grown),
        `cut` (streams stopped because the server refused to grow them), `committed`, `released`,
        `backfilled` (fail-open costs sent to the ledger afterwards), `settle_failed` (settles given
        up after retries), `settle_pending` (queued or in flight), `overrun_usd` (committed beyond the
        reservations), `unreachable` (failed round trips), `remaining_usd` (the server's latest
        figure, None before any) and `last_error`.
        """
        with self._lock:
            result: dict[str, Any] = dict(self._counts)
            result["fail_open_usd"] = self._fail_open_usd
            result["overrun_usd"] = self._overrun_usd
            result["remaining_usd"] = self._remaining
            result["last_error"] = self._last_error
        with self._cond:
            result["settle_pending"] = self._pending
        return result

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _seen(self, answer: Mapping[str, Any]) -> None:
        remaining = _number(answer.get("remaining_usd"))
        amount = _number(answer.get("amount_usd"))
        with self._lock:
            if remaining is not None:
                self._remaining = remaining
            if amount is not None:
                self._amount = amount

    # -- requests and the policy ---------------------------------------------------------------------

    def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None, *, hot: bool
    ) -> tuple[int, dict[str, Any]]:
        """One round trip. `hot` requests (reserve, grow) skip the server during the retry interval."""
        if hot and self._clock() < self._down_until:
            raise Unreachable(
                f"{self._last_error or 'unreachable'} (not retried for {self.config.retry_interval_s} s)"
            )
        try:
            answer = self._http.request(method, path, body)
        except Unreachable as exc:
            with self._lock:
                self._counts["unreachable"] += 1
                first = self._down_until == -math.inf or self._clock() >= self._down_until + 60.0
                self._last_error = str(exc)
                self._down_until = self._clock() + self.config.retry_interval_s
            if first:
                logger.warning(
                    "shared budget %r: %s (policy: %s)", self.budget_id, exc, self.config.on_unavailable
                )
            raise
        if self._down_until != -math.inf:
            self._down_until = -math.inf
        return answer

    def _unavailable(self, exc: Exception, estimate: float) -> SharedReservation:
        if self.config.on_unavailable == "fail_closed":
            self._count("fail_closed")
            raise self._refusal(
                BudgetUnavailable,
                estimate,
                f"shared budget {self.budget_id!r} unavailable (fail_closed): {exc}",
            ) from None
        self._count("fail_open")
        return SharedReservation(self, None, estimate)

    def _refusal(
        self, cls: type[SharedBudgetExceeded], requested: float, message: str
    ) -> SharedBudgetExceeded:
        with self._lock:
            limit, remaining = self._amount, self._remaining
        error = cls(
            self.budget_id,
            limit=math.nan if limit is None else limit,
            spent=math.nan,
            reserved=math.nan,
            requested=requested,
            remaining_usd=math.nan if remaining is None else remaining,
        )
        error.args = (message,)
        return error

    def _exceeded(self, answer: Mapping[str, Any], requested: float) -> SharedBudgetExceeded:
        with self._lock:
            known = self._amount
        limit = _number(answer.get("amount_usd"))
        spent = _number(answer.get("committed_usd"))
        reserved = _number(answer.get("reserved_usd"))
        remaining = _number(answer.get("remaining_usd"))
        return SharedBudgetExceeded(
            self.budget_id,
            limit=limit if limit is not None else known if known is not None else math.nan,
            spent=math.nan if spent is None else spent,
            reserved=math.nan if reserved is None else reserved,
            requested=requested,
            remaining_usd=math.nan if remaining is None else remaining,
        )

    def _grow(
        self, reservation: SharedReservation, rid: str, amount: float, need: float, cost: float
    ) -> BudgetExceeded | None:
        """Grow a stream's reservation to at least `need`: None when granted, else the error to cut with."""
        path = f"{self._path}/reservations/{urllib.parse.quote(rid, safe='')}/extend"
        target = max(2.0 * amount, need)
        try:
            for _ in range(2):
                status, answer = self._request("POST", path, {"estimate_usd": target}, hot=True)
                self._seen(answer)
                if status == 200:
                    self._count("extended")
                    granted = _number(answer.get("estimate_usd"))
                    reservation._grown(target if granted is None else granted)
                    return None
                if status != 409:
                    raise Unreachable(f"POST {path}: HTTP {status} {_brief(answer)}")
                remaining = _number(answer.get("remaining_usd"))
                # what is left may still cover the next step: take just that much, once
                if remaining is None or target <= amount + remaining or amount + remaining < need:
                    break
                target = amount + remaining
            self._count("cut")
            return self._exceeded(answer, cost)
        except Unreachable as exc:
            if self.config.on_unavailable == "fail_closed":
                self._count("fail_closed")
                return self._refusal(
                    BudgetUnavailable,
                    cost,
                    f"shared budget {self.budget_id!r} unavailable (fail_closed): {exc}",
                )
            self._count("fail_open")
            return None

    # -- settles, in the background ------------------------------------------------------------------

    def _settle(self, rid: str | None, cost: float, amount: float) -> None:
        if cost > amount:
            with self._lock:
                self._overrun_usd += cost - amount
        if rid is None:
            with self._lock:
                self._fail_open_usd += cost
            if cost > 0:
                self._enqueue(lambda: self._backfill(cost))
            return
        path = f"{self._path}/reservations/{urllib.parse.quote(rid, safe='')}/commit"
        self._enqueue(lambda: self._send("POST", path, {"cost_usd": cost}, "committed"))

    def _release(self, rid: str) -> None:
        path = f"{self._path}/reservations/{urllib.parse.quote(rid, safe='')}"
        self._enqueue(lambda: self._send("DELETE", path, None, "released"))

    def _attempt(self, method: str, path: str, body: Mapping[str, Any] | None) -> dict[str, Any]:
        status, answer = self._request(method, path, body, hot=False)
        if status not in (200, 201):
            raise ExportError(f"{method} {path}: HTTP {status} {_brief(answer)}")
        self._seen(answer)
        return answer

    def _send(self, method: str, path: str, body: Mapping[str, Any] | None, counter: str) -> None:
        outcome = call_with_retry(
            lambda: self._attempt(method, path, body), SETTLE_RETRY, stop=self._stop, deadline=self._deadline
        )
        self._settled(outcome.gave_up, outcome.error, counter)

    def _backfill(self, cost: float) -> None:
        """Send a fail-open call's cost to the ledger: a zero reservation committed at the cost."""
        reserve = f"{self._path}/reservations"
        outcome = call_with_retry(
            lambda: self._attempt("POST", reserve, {"estimate_usd": 0.0}),
            SETTLE_RETRY,
            stop=self._stop,
            deadline=self._deadline,
        )
        rid = None if outcome.value is None else outcome.value.get("reservation_id")
        if isinstance(rid, str):
            commit = f"{reserve}/{urllib.parse.quote(rid, safe='')}/commit"
            outcome2 = call_with_retry(
                lambda: self._attempt("POST", commit, {"cost_usd": cost}),
                SETTLE_RETRY,
                stop=self._stop,
                deadline=self._deadline,
            )
            self._settled(outcome2.gave_up, outcome2.error, "backfilled")
        else:
            self._settled(outcome.gave_up or "permanent_error", outcome.error, "backfilled")

    def _deadline(self) -> float | None:
        return self._give_up_at

    def _settled(self, gave_up: str | None, error: Exception | None, counter: str) -> None:
        with self._lock:
            if gave_up is None:
                self._counts[counter] += 1
                return
            self._counts["settle_failed"] += 1
            self._last_error = f"{counter[:-2] if counter.endswith('ed') else counter}: {error}"

    def _enqueue(self, op: Callable[[], None]) -> None:
        with self._cond:
            self._queue.append(op)
            self._pending += 1
            if self._idle < len(self._queue) and len(self._workers) < SETTLE_THREADS:
                worker = threading.Thread(
                    target=self._run, name=f"llmpulse-budget-{self.budget_id}", daemon=True
                )
                self._workers.append(worker)
                worker.start()
            self._cond.notify()

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._queue:
                    if self._closed:
                        self._workers.remove(threading.current_thread())
                        return
                    self._idle += 1
                    cond.wait()
                    self._idle -= 1
                op = self._queue.popleft()
            try:
                op()
            except Exception as exc:  # never let the worker die
                with self._lock:
                    self._counts["settle_failed"] += 1
                    self._last_error = f"{type(exc).__name__}: {exc}"
            finally:
                with cond:
                    self._pending -= 1
                    cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every settle and release queued so far was sent (or given up); True when done.

        Blocks up to `timeout` seconds (None: no limit).
        """
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float | None = EXIT_FLUSH_S) -> bool:
        """Flush (up to `timeout`), then stop the background thread and close connections.

        Settles still queued after the timeout are left to expire on the server. Idempotent.
        """
        self._give_up_at = time.monotonic() + (0.0 if timeout is None else timeout)
        done = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._stop.set()
        self._http.close()
        return done


def _brief(answer: Mapping[str, Any]) -> str:
    text = json.dumps(answer)
    return text if len(text) <= 200 else text[:200] + "…"
