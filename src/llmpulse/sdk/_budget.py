"""Budgets: USD spending limits per global / org / user / session scope, enforced with reservations.

A call is admitted by `Budget.reserve(attributes, max_cost_usd)`, which checks and reserves its
estimated maximum cost atomically; when the call ends, `Reservation.settle(actual_cost_usd)` replaces
the reservation by the real cost, or `Reservation.release()` gives it back (error, cancel).

The guarantee: a reservation is admitted only while `spent + reserved + requested <= limit` holds for
its scope key, so with `on_exceed="raise"` `spent` can pass `limit` only by what settled calls cost
beyond their reservations: by at most the sum of `actual - reserved` over the calls that were still
in flight when the last call was admitted (one call when calls run one at a time), and never when
every reservation is an upper bound of its call's cost. Amounts are kept as integer picodollars, so
the accounting is exact (no float drift); the public API speaks float USD.

Every operation holds a `threading.Lock` for a few dictionary operations (microseconds, no I/O, no
awaits), so budgets are safe to share between threads and asyncio tasks. User callbacks and log
messages run after the lock is released.

Errors: `BudgetExceeded` (an `Exception`) is raised by `reserve` when a limit with
`on_exceed="raise"` would be passed. `ValueError` means an invalid argument.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Final, Literal, TypeAlias, get_args

__all__ = [
    "SCOPE_ATTRIBUTES",
    "Budget",
    "BudgetExceeded",
    "BudgetState",
    "Budgets",
    "OnExceed",
    "Reservation",
    "Scope",
]

logger = logging.getLogger("llmpulse.sdk.budget")

Scope: TypeAlias = Literal["global", "org", "user", "session"]

#: The call attribute that keys each scope (a "global" budget has a single key, None).
SCOPE_ATTRIBUTES: Final[Mapping[str, str]] = {"org": "org_id", "user": "user_id", "session": "session_id"}

_PICO: Final = 10**12
_order = itertools.count()


def _to_pico(usd: float, name: str) -> int:
    if not isinstance(usd, int | float) or math.isnan(usd) or math.isinf(usd) or usd < 0:
        raise ValueError(f"`{name}` must be a finite number of USD >= 0, got {usd!r}")
    return round(usd * _PICO)


def _usd(pico: int) -> float:
    return pico / _PICO


class BudgetExceeded(Exception):
    """A call would pass a budget's limit. All amounts are USD.

    Attributes:
        scope: the budget's scope (`"global"`, `"org"`, `"user"`, `"session"`).
        key: the scope key (`org_id`, `user_id` or `session_id` of the call; None for global).
        limit: the limit of that key.
        spent: settled cost so far in the current window.
        reserved: reservations of calls still in flight.
        requested: the amount this call asked for (for a stream cut-off: its cost so far).
    """

    def __init__(
        self, *, scope: str, key: str | None, limit: float, spent: float, reserved: float, requested: float
    ) -> None:
        self.scope = scope
        self.key = key
        self.limit = limit
        self.spent = spent
        self.reserved = reserved
        self.requested = requested
        where = scope if key is None else f"{scope} {key!r}"
        super().__init__(
            f"budget exceeded for {where}: limit ${limit:.6f}, spent ${spent:.6f}, "
            f"reserved ${reserved:.6f}, requested ${requested:.6f}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self.scope, self.key, self.limit, self.spent, self.reserved, self.requested))


def _rebuild(
    scope: str, key: str | None, limit: float, spent: float, reserved: float, requested: float
) -> BudgetExceeded:
    return BudgetExceeded(
        scope=scope, key=key, limit=limit, spent=spent, reserved=reserved, requested=requested
    )


#: What to do when a reservation would pass a limit: raise `BudgetExceeded`, log a warning and
#: proceed, or call a function with the (unraised) `BudgetExceeded` and proceed.
OnExceed: TypeAlias = Literal["raise", "warn"] | Callable[[BudgetExceeded], object]


@dataclass(frozen=True, slots=True)
class BudgetState:
    """One scope key of one budget at one moment (USD); an item of `snapshot()`.

    `remaining_usd` is what a new reservation could still take: `limit - spent - reserved`, at least 0.
    `window_start` is the start of the current window in the budget's clock (seconds), None when the
    budget has no window.
    """

    scope: str
    key: str | None
    limit_usd: float
    spent_usd: float
    reserved_usd: float
    remaining_usd: float
    window_start: float | None


class _Account:
    """Spend of one scope key in one window, in picodollars; guarded by its budget's lock."""

    __slots__ = ("reserved", "spent", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.spent = 0
        self.reserved = 0


class Budget:
    """A USD limit for one scope: the whole process ("global"), or each org, user or session.

    `scope="user"` gives every `user_id` its own `limit_usd` (likewise `org_id`, `session_id`); calls
    without that attribute share one key, None, so they cannot escape the limit. `window` (seconds or
    a `timedelta`) makes the limit apply per tumbling window aligned to multiples of `window` in
    `clock()` (default `time.time`); a call counts in the window where it was admitted. None: one
    limit for the budget's lifetime. `on_exceed` is `"raise"` (`reserve` raises `BudgetExceeded` and
    reserves nothing), `"warn"` (log a warning on the `llmpulse.sdk.budget` logger and proceed) or a
    callable given the `BudgetExceeded` (proceed; if it raises, nothing is reserved and its exception
    propagates). Thread- and asyncio-safe; no method blocks beyond a microsecond lock.
    """

    __slots__ = ("_accounts", "_clock", "_limit", "_lock", "_order", "on_exceed", "scope", "window")

    def __init__(
        self,
        limit_usd: float,
        *,
        scope: Scope = "global",
        on_exceed: OnExceed = "raise",
        window: float | timedelta | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._limit = _to_pico(limit_usd, "limit_usd")
        if scope not in get_args(Scope):
            raise ValueError(f"`scope` must be one of {get_args(Scope)}, got {scope!r}")
        if not callable(on_exceed) and on_exceed not in ("raise", "warn"):
            raise ValueError(f"`on_exceed` must be 'raise', 'warn' or a callable, got {on_exceed!r}")
        seconds = window.total_seconds() if isinstance(window, timedelta) else window
        if seconds is not None and not (isinstance(seconds, int | float) and 0 < seconds < math.inf):
            raise ValueError(f"`window` must be a positive number of seconds or None, got {window!r}")
        self.scope: Scope = scope
        self.on_exceed: OnExceed = on_exceed
        self.window: float | None = None if seconds is None else float(seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._order = next(_order)
        self._accounts: dict[str | None, _Account] = {}

    @property
    def limit_usd(self) -> float:
        """The limit in USD (per key and window)."""
        return _usd(self._limit)

    def __repr__(self) -> str:
        return f"Budget({self.limit_usd!r}, scope={self.scope!r}, on_exceed={self.on_exceed!r})"

    def key_for(self, attributes: Mapping[str, str | None]) -> str | None:
        """The scope key a call with these attributes counts against (None for a global budget)."""
        attribute = SCOPE_ATTRIBUTES.get(self.scope)
        return None if attribute is None else attributes.get(attribute)

    def _window_index(self) -> int:
        return 0 if self.window is None else math.floor(self._clock() / self.window)

    def _account(self, key: str | None, window: int) -> _Account:
        """The key's account for `window`, replacing a stale one (caller holds the lock).

        A stale account stays alive only through the reservations that still point at it, so a call
        admitted in one window settles into that window and never into the next.
        """
        account = self._accounts.get(key)
        if account is None or account.window != window:
            account = self._accounts[key] = _Account(window)
        return account

    def _exceeded(self, key: str | None, account: _Account, requested: int) -> BudgetExceeded:
        return BudgetExceeded(
            scope=self.scope,
            key=key,
            limit=self.limit_usd,
            spent=_usd(account.spent),
            reserved=_usd(account.reserved),
            requested=_usd(requested),
        )

    def reserve(self, attributes: Mapping[str, str | None], max_cost_usd: float) -> Reservation:
        """Admit a call and reserve `max_cost_usd` for it, atomically; see `Budgets.reserve`."""
        return _reserve((self,), attributes, max_cost_usd)

    def _check_scope(self, scope: str | None) -> None:
        if scope is not None and scope != self.scope:
            raise ValueError(f"this budget's scope is {self.scope!r}, not {scope!r}")

    def spent(self, scope: str | None = None, key: str | None = None) -> float:
        """Settled cost in USD of `key` in the current window (`key` is ignored for a global budget).

        `scope`, when given, must be this budget's scope (ValueError otherwise). Does not block.
        """
        return self.state(scope, key).spent_usd

    def reserved(self, scope: str | None = None, key: str | None = None) -> float:
        """USD reserved by calls of `key` still in flight in the current window. Does not block."""
        return self.state(scope, key).reserved_usd

    def remaining(self, scope: str | None = None, key: str | None = None) -> float:
        """USD a new reservation for `key` could still take: `limit - spent - reserved`, at least 0."""
        return self.state(scope, key).remaining_usd

    def state(self, scope: str | None = None, key: str | None = None) -> BudgetState:
        """The `BudgetState` of one key in the current window. Does not block."""
        self._check_scope(scope)
        if self.scope == "global":
            key = None
        window = self._window_index()
        with self._lock:
            account = self._accounts.get(key)
            spent, reserved = (
                (0, 0)
                if account is None or account.window != window
                else (
                    account.spent,
                    account.reserved,
                )
            )
        return self._state(key, window, spent, reserved)

    def _state(self, key: str | None, window: int, spent: int, reserved: int) -> BudgetState:
        limit = self._limit
        return BudgetState(
            scope=self.scope,
            key=key,
            limit_usd=self.limit_usd,
            spent_usd=_usd(spent),
            reserved_usd=_usd(reserved),
            remaining_usd=_usd(max(0, limit - spent - reserved)),
            window_start=None if self.window is None else window * self.window,
        )

    def snapshot(self) -> list[BudgetState]:
        """Every key seen in the current window, as `BudgetState`s (a global budget always has one)."""
        window = self._window_index()
        with self._lock:
            rows = [(k, a.spent, a.reserved) for k, a in self._accounts.items() if a.window == window]
        if self.scope == "global" and not rows:
            rows = [(None, 0, 0)]
        return [self._state(key, window, spent, reserved) for key, spent, reserved in rows]


class Budgets:
    """Several budgets enforced together, e.g. a global limit plus one per user and one per org.

    A reservation is checked and taken in every member budget atomically (the members' locks are
    taken in one global order, so sets sharing budgets cannot deadlock). Thread- and asyncio-safe.
    """

    __slots__ = ("_budgets",)

    def __init__(self, budgets: Iterable[Budget]) -> None:
        members: list[Budget] = []
        for budget in budgets:
            if not isinstance(budget, Budget):
                raise ValueError(f"`budgets` must hold Budget objects, got {budget!r}")
            if budget not in members:
                members.append(budget)
        self._budgets: tuple[Budget, ...] = tuple(members)

    def __iter__(self) -> Iterator[Budget]:
        return iter(self._budgets)

    def __len__(self) -> int:
        return len(self._budgets)

    def __repr__(self) -> str:
        return f"Budgets({list(self._budgets)!r})"

    def reserve(self, attributes: Mapping[str, str | None], max_cost_usd: float) -> Reservation:
        """Admit a call and reserve `max_cost_usd` (USD, its estimated maximum cost) for it.

        Checks every member budget at the call's scope key (from `attributes`: `org_id`, `user_id`,
        `session_id`) and reserves in all of them, atomically. A budget is exceeded when
        `spent + reserved + max_cost_usd > limit`, or when it is already used up (`spent + reserved
        >= limit`, which stops even a zero estimate). If a `"raise"` budget is exceeded, raises
        `BudgetExceeded` and reserves nothing; exceeded `"warn"` / callback budgets are reported after
        the reservation is taken (in `Reservation.exceeded`). Does not block beyond the locks.
        """
        return _reserve(self._budgets, attributes, max_cost_usd)

    def _find(self, scope: str | None) -> Budget:
        for budget in self._budgets:
            if scope is None or budget.scope == scope:
                return budget
        raise ValueError(f"no budget with scope {scope!r} in this set")

    def spent(self, scope: str | None = None, key: str | None = None) -> float:
        """Settled USD of `key` in the first member budget with `scope` (None: the first member)."""
        return self._find(scope).spent(None, key)

    def reserved(self, scope: str | None = None, key: str | None = None) -> float:
        """USD reserved by in-flight calls of `key` in the first member budget with `scope`."""
        return self._find(scope).reserved(None, key)

    def remaining(self, scope: str | None = None, key: str | None = None) -> float:
        """What a new reservation for `key` could take in the first member budget with `scope`."""
        return self._find(scope).remaining(None, key)

    def snapshot(self) -> list[BudgetState]:
        """The `snapshot()` of every member, concatenated in member order. Does not block."""
        return [state for budget in self._budgets for state in budget.snapshot()]


_Hold = tuple[Budget, str | None, _Account]


class Reservation:
    """Money set aside for one call in one or more budgets, until it is settled or released.

    Use `settle(actual_cost_usd)` when the call ends and `release()` when it failed before costing
    anything; both are idempotent and only the first of them counts. As a context manager, leaving the
    block with an exception releases the reservation, and leaving it normally without a settle settles
    it at the reserved amount (the conservative choice). Thread-safe; no method blocks.
    """

    __slots__ = ("_amount", "_done", "_guard", "_holds", "_reported", "exceeded")

    def __init__(self, holds: Sequence[_Hold], amount: int, exceeded: Sequence[BudgetExceeded]) -> None:
        self._holds: tuple[_Hold, ...] = tuple(holds)
        self._amount = amount
        self._done = False
        self._guard = threading.Lock()
        self._reported: set[int] = set()
        #: Limits passed at admission by "warn" / callback budgets (empty when all were within limits).
        self.exceeded: tuple[BudgetExceeded, ...] = tuple(exceeded)

    @property
    def reserved_usd(self) -> float:
        """The amount currently reserved (USD); grows when `charge_progress` passes the estimate."""
        return _usd(self._amount)

    @property
    def done(self) -> bool:
        """True once the reservation was settled or released."""
        return self._done

    def _finish(self, actual: int | None, *, release: bool) -> bool:
        """Replace the reservation by `actual` (None: the reserved amount), or release it.

        False when it was already settled or released.
        """
        with self._guard:
            if self._done:
                return False
            self._done = True
            amount = self._amount
        charge = None if release else (amount if actual is None else actual)
        for budget, _key, account in _locked_order(self._holds):
            with budget._lock:
                account.reserved -= amount
                if charge is not None:
                    account.spent += charge
        return True

    def settle(self, actual_cost_usd: float | None) -> None:
        """Replace the reservation by the call's actual cost in USD.

        None (the cost is unknown, e.g. a model without a price) charges the reserved amount, so an
        unknown cost never frees budget. Only the first settle or release counts. Does not block.
        """
        actual = None if actual_cost_usd is None else _to_pico(actual_cost_usd, "actual_cost_usd")
        self._finish(actual, release=False)

    def release(self) -> None:
        """Give the whole reservation back (the call failed or was cancelled before costing anything).

        Idempotent; a no-op after `settle`. Does not block.
        """
        self._finish(None, release=True)

    def charge_progress(self, cost_so_far_usd: float) -> bool:
        """Report a streaming call's cost so far; False when a `"raise"` budget is now exhausted.

        When `cost_so_far_usd` passes the reservation, the reservation grows to it, so concurrent calls
        see the real spend. The answer is False when, for some `"raise"` budget, `spent + reserved`
        (this call included) passes the limit: the instrumentation can then stop the stream. Passing a
        `"warn"` / callback budget is reported once per reservation and returns True. After settle or
        release it only answers. Does not block.
        """
        return self.check_progress(cost_so_far_usd) is None

    def check_progress(self, cost_so_far_usd: float) -> BudgetExceeded | None:
        """`charge_progress`, answering with the exhausted `"raise"` limit (None while within limits).

        The instrumentation raises the returned `BudgetExceeded` to stop a stream. Does not block.
        """
        cost = _to_pico(cost_so_far_usd, "cost_so_far_usd")
        exhausted: BudgetExceeded | None = None
        to_report: list[tuple[Budget, BudgetExceeded]] = []
        with self._guard:
            delta = cost - self._amount if not self._done and cost > self._amount else 0
            self._amount += delta
            for budget, key, account in _locked_order(self._holds):
                with budget._lock:
                    account.reserved += delta
                    if account.spent + account.reserved <= budget._limit:
                        continue
                    error = budget._exceeded(key, account, cost)
                if budget.on_exceed == "raise":
                    exhausted = exhausted or error
                elif budget._order not in self._reported:
                    self._reported.add(budget._order)
                    to_report.append((budget, error))
        for budget, error in to_report:
            _report(budget, error)
        return exhausted

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.settle(None)
        else:
            self.release()


def _locked_order(holds: Iterable[_Hold]) -> list[_Hold]:
    return sorted(holds, key=lambda hold: hold[0]._order)


def _report(budget: Budget, error: BudgetExceeded) -> None:
    """Run a non-raising budget's exceed action (outside every lock)."""
    if budget.on_exceed == "warn":
        logger.warning("%s (on_exceed='warn': the call proceeds)", error)
    elif callable(budget.on_exceed):
        budget.on_exceed(error)


def _reserve(
    budgets: Sequence[Budget], attributes: Mapping[str, str | None], max_cost_usd: float
) -> Reservation:
    amount = _to_pico(max_cost_usd, "max_cost_usd")
    ordered = sorted(budgets, key=lambda budget: budget._order)
    holds: list[_Hold] = []
    exceeded: list[tuple[Budget, BudgetExceeded]] = []
    raised: BudgetExceeded | None = None
    acquired: list[Budget] = []
    try:
        for budget in ordered:
            budget._lock.acquire()
            acquired.append(budget)
            key = budget.key_for(attributes)
            account = budget._account(key, budget._window_index())
            limit = budget._limit
            # max(amount, 1): a used-up budget admits nothing, not even a zero estimate
            if account.spent + account.reserved + max(amount, 1) > limit:
                error = budget._exceeded(key, account, amount)
                if budget.on_exceed == "raise":
                    raised = error
                    break
                exceeded.append((budget, error))
            holds.append((budget, key, account))
        if raised is None:
            for _budget, _key, account in holds:
                account.reserved += amount
    finally:
        for budget in reversed(acquired):
            budget._lock.release()
    if raised is not None:
        raise raised
    reservation = Reservation(holds, amount, [error for _, error in exceeded])
    try:
        for budget, error in exceeded:
            reservation._reported.add(budget._order)
            _report(budget, error)
    except BaseException:
        reservation.release()
        raise
    return reservation
