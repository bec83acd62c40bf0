"""Budgets shared by every process: definitions, one ledger row per period, reservations.

A budget (`BudgetSpec`) caps a tenant's spend, or that of one user, organisation, feature or
environment of it, per day, ISO week or month in a time zone, or in total. Callers **reserve** an
estimate before a model call, then **commit** the actual cost or **release** the reservation.

**The guarantee.** For a hard budget, ``committed + reserved <= amount + overrun`` holds at every
commit of the store, under any concurrency and across any number of processes. ``overrun`` is the
sum of what commits exceeded their reservations' estimates: a call may cost more than its estimate,
and that spend happened, so it is recorded, never refused. A reservation is admitted by one
conditional ``UPDATE … WHERE committed + reserved + estimate <= amount`` of the period's ledger row
inside a write transaction that first locks that row (``SELECT … FOR UPDATE`` on Postgres; SQLite
has one writer at a time), so two reservations can never both take the last dollars.

**Expiry.** A reservation neither committed nor released within its TTL (the budget's
``reservation_ttl_s``, 600 s by default, or the reservation's own) expires: the next operation on
the budget gives its estimate back and counts it (``reservations_expired``). A commit that arrives
after its reservation expired still records the cost (the call happened) and says ``expired``.

**Periods.** A reservation belongs to the period it was made in, and its commit goes there too,
even when the period has ended meanwhile.

**Bounded tables.** Settled reservations are kept `SETTLED_KEEP_S` (so that a repeated commit or
release gets the first one's answer) and deleted by later reservations of the same budget, up to
`DELETE_PER_RESERVE` a time: the table holds at most about a day of reservations per budget. Ledger
rows are one per budget and period.

Amounts are stored as integer nano-dollars (`to_nano`), so sums are exact. Every function blocks on
the database.
"""

from __future__ import annotations

import contextlib
import math
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from llmpulse.store._engine import translate_errors, write_transaction
from llmpulse.store._tables import MAX_NAME_LEN, calls, metadata

BudgetPeriod = Literal["day", "week", "month", "total"]
ReservationState = Literal["open", "committed", "released", "expired"]

PERIODS: Final[tuple[BudgetPeriod, ...]] = ("day", "week", "month", "total")
#: The attributes a budget's scope may name besides its tenant (a call record's fields).
SCOPE_ATTRIBUTES: Final = ("user_id", "org_id", "feature", "environment")
#: Longest budget id; ids are letters, digits and ``._:-``.
MAX_BUDGET_ID_LEN: Final = 128
BUDGET_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
#: A reservation's time to live when the budget names none, and the longest one allowed.
DEFAULT_RESERVATION_TTL_S: Final = 600.0
MAX_RESERVATION_TTL_S: Final = 86_400.0
#: Largest amount or estimate accepted (USD): well inside a 64-bit count of nano-dollars.
MAX_USD: Final = 1e9
#: How long a settled reservation is kept for repeated commits and releases, and how many old ones
#: each reservation deletes (more than one, so the table shrinks back after a burst).
SETTLED_KEEP_S: Final = 86_400.0
DELETE_PER_RESERVE: Final = 4

_NANO: Final = 1_000_000_000

budgets = sa.Table(
    "budgets",
    metadata,
    sa.Column("budget_id", sa.String(MAX_BUDGET_ID_LEN), nullable=False),
    sa.Column("tenant_id", sa.String(MAX_NAME_LEN), nullable=False),
    *(sa.Column(name, sa.String(MAX_NAME_LEN), nullable=True) for name in SCOPE_ATTRIBUTES),
    sa.Column("period", sa.String(8), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("amount_nano", sa.BigInteger, nullable=False),
    sa.Column("hard", sa.Boolean, nullable=False),
    sa.Column("reservation_ttl_s", sa.Double, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.PrimaryKeyConstraint("budget_id", name="pk_budgets"),
)
sa.Index("ix_budgets_tenant", budgets.c.tenant_id)

budget_periods = sa.Table(
    "budget_periods",
    metadata,
    sa.Column("budget_id", sa.String(MAX_BUDGET_ID_LEN), nullable=False),
    sa.Column("period_start", sa.Double, nullable=False),
    sa.Column("committed_nano", sa.BigInteger, nullable=False),
    sa.Column("reserved_nano", sa.BigInteger, nullable=False),
    sa.Column("overrun_nano", sa.BigInteger, nullable=False),
    sa.Column("open_count", sa.BigInteger, nullable=False),
    sa.Column("expired_count", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("budget_id", "period_start", name="pk_budget_periods"),
)

budget_reservations = sa.Table(
    "budget_reservations",
    metadata,
    sa.Column("reservation_id", sa.String(32), nullable=False),
    sa.Column("budget_id", sa.String(MAX_BUDGET_ID_LEN), nullable=False),
    sa.Column("period_start", sa.Double, nullable=False),
    sa.Column("estimate_nano", sa.BigInteger, nullable=False),
    sa.Column("cost_nano", sa.BigInteger, nullable=True),
    sa.Column("state", sa.String(12), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("settled_at", sa.Double, nullable=True),
    sa.PrimaryKeyConstraint("reservation_id", name="pk_budget_reservations"),
)
sa.Index(
    "ix_budget_reservations_expiry",
    budget_reservations.c.budget_id,
    budget_reservations.c.state,
    budget_reservations.c.expires_at,
)
sa.Index("ix_budget_reservations_settled", budget_reservations.c.budget_id, budget_reservations.c.settled_at)


def to_nano(usd: float) -> int:
    """`usd` as a whole number of nano-dollars (rounded to the nearest). Does not block."""
    return round(usd * _NANO)


def _usd(nano: int) -> float:
    return nano / _NANO


class BudgetNotFound(LookupError):
    """No budget has this id (or it belongs to another tenant than the caller's)."""


class ReservationNotFound(LookupError):
    """No reservation of this budget has this id (it never existed, or was settled long ago)."""


class ReservationSettled(Exception):
    """The reservation was settled the other way already (a release of a committed one, a commit of
    a released one, an extension of one no longer open)."""


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    """A budget's definition; validated on construction (`ValueError` naming the field).

    Attributes:
        budget_id: letters, digits and ``._:-``, at most 128 characters.
        tenant_id: the tenant whose spend it caps.
        scope: optional further attributes of the calls it caps (`SCOPE_ATTRIBUTES`: ``user_id``,
            ``org_id``, ``feature``, ``environment``), each an exact value.
        amount_usd: the cap per period, > 0.
        period: ``day``, ``week`` (ISO, from Monday), ``month`` (calendar) in `timezone`, or ``total``.
        timezone: an IANA zone name (``UTC``, ``Europe/Paris``).
        hard: a hard budget refuses reservations that do not fit; a soft one admits and records them.
        reservation_ttl_s: how long a reservation may stay open before it expires.
    """

    budget_id: str
    tenant_id: str
    amount_usd: float
    period: BudgetPeriod = "month"
    timezone: str = "UTC"
    hard: bool = True
    scope: Mapping[str, str] = field(default_factory=dict)
    reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S

    def __post_init__(self) -> None:
        check_budget_id(self.budget_id)
        if not isinstance(self.tenant_id, str) or not 1 <= len(self.tenant_id) <= MAX_NAME_LEN:
            raise ValueError(
                f"scope.tenant_id must be 1 to {MAX_NAME_LEN} characters, got {self.tenant_id!r}"
            )
        for name, value in self.scope.items():
            if name not in SCOPE_ATTRIBUTES:
                raise ValueError(
                    f"scope.{name} is not a budget scope (one of tenant_id, {', '.join(SCOPE_ATTRIBUTES)})"
                )
            if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_LEN:
                raise ValueError(f"scope.{name} must be 1 to {MAX_NAME_LEN} characters, got {value!r}")
        if isinstance(self.amount_usd, bool) or not isinstance(self.amount_usd, int | float):
            raise ValueError(f"amount_usd must be a number, got {self.amount_usd!r}")
        if not (math.isfinite(self.amount_usd) and 0 < self.amount_usd <= MAX_USD):
            raise ValueError(f"amount_usd must be > 0 and at most {MAX_USD:g}, got {self.amount_usd!r}")
        if self.period not in PERIODS:
            raise ValueError(f"period must be one of {', '.join(PERIODS)}, got {self.period!r}")
        zone(self.timezone)
        if not isinstance(self.hard, bool):
            raise ValueError(f"hard must be true or false, got {self.hard!r}")
        check_ttl("reservation_ttl_s", self.reservation_ttl_s)

    @property
    def scope_dict(self) -> dict[str, str]:
        """The scope as the API shows it: ``tenant_id`` and the attributes set."""
        return {
            "tenant_id": self.tenant_id,
            **{k: self.scope[k] for k in SCOPE_ATTRIBUTES if k in self.scope},
        }


def check_budget_id(budget_id: object) -> str:
    """`budget_id` when it is a valid id, else `ValueError` naming ``id``. Does not block."""
    if not isinstance(budget_id, str) or not 1 <= len(budget_id) <= MAX_BUDGET_ID_LEN:
        raise ValueError(f"id must be 1 to {MAX_BUDGET_ID_LEN} characters, got {budget_id!r}")
    if not BUDGET_ID_PATTERN.match(budget_id):
        raise ValueError(
            f"id may hold only letters, digits and ._:- (and start with a letter or digit), got {budget_id!r}"
        )
    return budget_id


def check_ttl(name: str, value: object) -> float:
    """`value` as a TTL in seconds (0 < ttl <= `MAX_RESERVATION_TTL_S`), else `ValueError` naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and 0 < value <= MAX_RESERVATION_TTL_S):
        raise ValueError(f"{name} must be > 0 and at most {MAX_RESERVATION_TTL_S:g} s, got {value!r}")
    return float(value)


def check_usd(name: str, value: object) -> float:
    """`value` as an amount of USD (0 <= usd <= `MAX_USD`), else `ValueError` naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and 0 <= value <= MAX_USD):
        raise ValueError(f"{name} must be >= 0 and at most {MAX_USD:g}, got {value!r}")
    return float(value)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`, else `ValueError` naming ``timezone``. Does not block."""
    if not isinstance(name, str) or not name or len(name) > 64:
        raise ValueError(f"timezone must be an IANA zone name such as 'UTC', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone {name!r} is not a known IANA zone name") from None


def period_bounds(period: BudgetPeriod, timezone: str, now: float) -> tuple[float, float | None]:
    """The ``[start, end)`` (epoch seconds) of the period holding `now`; ``total`` is ``[0, None)``.

    Days start at local midnight, weeks on Monday, months on the 1st, in `timezone` (so a day may
    last 23 or 25 hours across a daylight-saving change). Does not block.
    """
    if period == "total":
        return 0.0, None
    tz = zone(timezone)
    local = datetime.fromtimestamp(now, tz).date()
    if period == "day":
        first, after = local, local + timedelta(days=1)
    elif period == "week":
        first = local - timedelta(days=local.weekday())
        after = first + timedelta(days=7)
    else:
        first = local.replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
    start = datetime(first.year, first.month, first.day, tzinfo=tz)
    end = datetime(after.year, after.month, after.day, tzinfo=tz)
    return start.timestamp(), end.timestamp()


@dataclass(frozen=True, slots=True)
class BudgetView:
    """A budget and its current period's ledger (what ``GET /v1/budgets/{id}`` answers)."""

    spec: BudgetSpec
    period_start: float
    period_end: float | None
    committed_nano: int
    reserved_nano: int
    overrun_nano: int
    reservations_open: int
    reservations_expired: int
    observed_usd: float | None
    observed_requests: int
    updated_at: float
    created_at: float
    as_of: float

    @property
    def remaining_usd(self) -> float:
        """What is left to reserve: ``max(0, amount − committed − reserved)``."""
        return _usd(max(0, to_nano(self.spec.amount_usd) - self.committed_nano - self.reserved_nano))

    @property
    def burn_usd_per_hour(self) -> float:
        """The period's committed spend per hour so far (since the budget was created, when later
        than the period's start)."""
        elapsed = self.as_of - max(self.period_start, self.created_at)
        return 0.0 if elapsed <= 0 else _usd(self.committed_nano) * 3600.0 / elapsed

    @property
    def projected_exhaustion(self) -> float | None:
        """When the budget runs out at `burn_usd_per_hour` (epoch seconds; `as_of` when it has), or
        None when it will not before the period ends (or nothing was spent yet)."""
        left = to_nano(self.spec.amount_usd) - self.committed_nano - self.reserved_nano
        if left <= 0:
            return self.as_of
        rate = self.burn_usd_per_hour
        if rate <= 0:
            return None
        at = self.as_of + _usd(left) / rate * 3600.0
        return None if self.period_end is not None and at >= self.period_end else at

    def as_json(self) -> dict[str, Any]:
        """The API's shape of the view."""
        s = self.spec
        exhausted = self.projected_exhaustion
        return {
            "id": s.budget_id,
            "amount_usd": s.amount_usd,
            "committed_usd": _usd(self.committed_nano),
            "reserved_usd": _usd(self.reserved_nano),
            "remaining_usd": self.remaining_usd,
            "observed_usd": self.observed_usd,
            "observed_requests": self.observed_requests,
            "overrun_usd": _usd(self.overrun_nano),
            "period": s.period,
            "timezone": s.timezone,
            "period_start": _rfc3339(self.period_start) if s.period != "total" else None,
            "period_end": None if self.period_end is None else _rfc3339(self.period_end),
            "hard": s.hard,
            "scope": s.scope_dict,
            "reservation_ttl_s": s.reservation_ttl_s,
            "reservations_open": self.reservations_open,
            "reservations_expired": self.reservations_expired,
            "updated_at": _rfc3339(self.updated_at),
            "burn_usd_per_hour": self.burn_usd_per_hour,
            "projected_exhaustion_at": None if exhausted is None else _rfc3339(exhausted),
        }


@dataclass(frozen=True, slots=True)
class ReserveResult:
    """The answer to a reservation or an extension: admitted or not, and what is left after it."""

    admitted: bool
    remaining_usd: float
    reservation_id: str | None = None
    estimate_usd: float = 0.0
    expires_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        """The API's shape: the reservation, or (refused) only what is left."""
        if not self.admitted:
            return {"remaining_usd": self.remaining_usd}
        assert self.expires_at is not None
        return {
            "reservation_id": self.reservation_id,
            "remaining_usd": self.remaining_usd,
            "estimate_usd": self.estimate_usd,
            "expires_at": _rfc3339(self.expires_at),
        }


@dataclass(frozen=True, slots=True)
class SettleResult:
    """The answer to a commit or a release (also when repeated: the first one's result)."""

    reservation_id: str
    state: ReservationState
    cost_usd: float | None
    remaining_usd: float
    expired: bool

    def as_json(self) -> dict[str, Any]:
        """The API's shape."""
        out: dict[str, Any] = {
            "reservation_id": self.reservation_id,
            "state": self.state,
            "remaining_usd": self.remaining_usd,
            "expired": self.expired,
        }
        if self.state == "committed":
            out["cost_usd"] = self.cost_usd
        return out


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _spec(row: Mapping[Any, Any]) -> BudgetSpec:
    return BudgetSpec(
        budget_id=str(row["budget_id"]),
        tenant_id=str(row["tenant_id"]),
        amount_usd=_usd(int(row["amount_nano"])),
        period=row["period"],
        timezone=str(row["timezone"]),
        hard=bool(row["hard"]),
        scope={k: str(row[k]) for k in SCOPE_ATTRIBUTES if row[k] is not None},
        reservation_ttl_s=float(row["reservation_ttl_s"]),
    )


class BudgetLedger:
    """The budgets of a store (``store.budgets``): definitions, reservations, views. Thread-safe;
    every method blocks on the database and raises `StoreError` when it cannot be reached."""

    def __init__(
        self,
        engine: sa.Engine,
        serial: contextlib.AbstractContextManager[Any],
        write_lock: contextlib.AbstractContextManager[Any],
    ) -> None:
        """Wrap the store's engine and locks (see `Store`). Does not block."""
        self._engine = engine
        self._serial = serial
        self._write_lock = write_lock
        self._postgres = engine.dialect.name == "postgresql"

    @contextlib.contextmanager
    def _reading(self, action: str) -> Iterator[sa.Connection]:
        with self._serial, translate_errors(action), self._engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def _writing(self, action: str) -> Iterator[sa.Connection]:
        with (
            self._serial,
            self._write_lock,
            translate_errors(action),
            write_transaction(self._engine) as conn,
        ):
            yield conn

    # -- definitions ------------------------------------------------------------------------------

    def put(self, spec: BudgetSpec, now: float) -> None:
        """Create `spec`, or replace the budget of that id (its ledger and reservations stay)."""
        values = {
            "tenant_id": spec.tenant_id,
            **{k: spec.scope.get(k) for k in SCOPE_ATTRIBUTES},
            "period": spec.period,
            "timezone": spec.timezone,
            "amount_nano": to_nano(spec.amount_usd),
            "hard": spec.hard,
            "reservation_ttl_s": spec.reservation_ttl_s,
            "updated_at": now,
        }
        with self._writing("saving a budget") as conn:
            found = conn.execute(
                sa.update(budgets).where(budgets.c.budget_id == spec.budget_id).values(**values)
            ).rowcount
            if not found:
                conn.execute(sa.insert(budgets).values(budget_id=spec.budget_id, created_at=now, **values))

    def delete(self, budget_id: str, tenant_id: str | None = None) -> bool:
        """Delete a budget, its ledger and its reservations; False when there is none (of `tenant_id`)."""
        with self._writing("deleting a budget") as conn:
            query = sa.delete(budgets).where(budgets.c.budget_id == budget_id)
            if tenant_id is not None:
                query = query.where(budgets.c.tenant_id == tenant_id)
            if not conn.execute(query).rowcount:
                return False
            conn.execute(sa.delete(budget_periods).where(budget_periods.c.budget_id == budget_id))
            conn.execute(sa.delete(budget_reservations).where(budget_reservations.c.budget_id == budget_id))
            return True

    def get(self, budget_id: str, now: float, tenant_id: str | None = None) -> BudgetView:
        """The budget and its current period (`BudgetNotFound` when none, or not of `tenant_id`)."""
        with self._reading("reading a budget") as conn:
            row = conn.execute(sa.select(budgets).where(budgets.c.budget_id == budget_id)).mappings().first()
            if row is None or (tenant_id is not None and row["tenant_id"] != tenant_id):
                raise BudgetNotFound(budget_id)
            return self._view(conn, row, now)

    def all(self, now: float, tenant_id: str | None = None) -> list[BudgetView]:
        """Every budget (only `tenant_id`'s when given), by id, with its current period."""
        with self._reading("listing budgets") as conn:
            query = sa.select(budgets).order_by(budgets.c.budget_id)
            if tenant_id is not None:
                query = query.where(budgets.c.tenant_id == tenant_id)
            rows = list(conn.execute(query).mappings())
            return [self._view(conn, row, now) for row in rows]

    def _view(self, conn: sa.Connection, row: Mapping[Any, Any], now: float) -> BudgetView:
        spec = _spec(row)
        start, end = period_bounds(spec.period, spec.timezone, now)
        ledger = (
            conn.execute(
                sa.select(budget_periods).where(
                    budget_periods.c.budget_id == spec.budget_id, budget_periods.c.period_start == start
                )
            )
            .mappings()
            .first()
        )
        # open reservations past their TTL count as expired in the view before anyone sweeps them
        stale = conn.execute(
            sa.select(
                sa.func.count(), sa.func.coalesce(sa.func.sum(budget_reservations.c.estimate_nano), 0)
            ).where(
                budget_reservations.c.budget_id == spec.budget_id,
                budget_reservations.c.state == "open",
                budget_reservations.c.expires_at <= now,
                budget_reservations.c.period_start == start,
            )
        ).one()
        observed, requests = observed_spend(conn, spec, start, min(now, end) if end is not None else now)

        def get(name: str) -> int:
            return 0 if ledger is None else int(ledger[name])

        return BudgetView(
            spec=spec,
            period_start=start,
            period_end=end,
            committed_nano=get("committed_nano"),
            reserved_nano=get("reserved_nano") - int(stale[1]),
            overrun_nano=get("overrun_nano"),
            reservations_open=get("open_count") - int(stale[0]),
            reservations_expired=get("expired_count") + int(stale[0]),
            observed_usd=observed,
            observed_requests=requests,
            updated_at=float(row["updated_at"]),
            created_at=float(row["created_at"]),
            as_of=now,
        )

    # -- reservations -----------------------------------------------------------------------------
    #
    # Every operation on a budget first locks the budget's row (``FOR UPDATE`` on Postgres; SQLite
    # has one writer at a time), so operations on one budget run one after another, whichever
    # periods and reservations they touch, and never deadlock each other.

    def _lock_budget(self, conn: sa.Connection, budget_id: str, tenant_id: str | None) -> BudgetSpec:
        query = sa.select(budgets).where(budgets.c.budget_id == budget_id)
        if self._postgres:
            query = query.with_for_update()
        row = conn.execute(query).mappings().first()
        if row is None or (tenant_id is not None and row["tenant_id"] != tenant_id):
            raise BudgetNotFound(budget_id)
        return _spec(row)

    @staticmethod
    def _period(conn: sa.Connection, budget_id: str, start: float) -> Mapping[Any, Any]:
        """The period's ledger row, created when missing (the budget's row is locked)."""
        query = sa.select(budget_periods).where(
            budget_periods.c.budget_id == budget_id, budget_periods.c.period_start == start
        )
        row = conn.execute(query).mappings().first()
        if row is None:
            zero = {
                "committed_nano": 0,
                "reserved_nano": 0,
                "overrun_nano": 0,
                "open_count": 0,
                "expired_count": 0,
            }
            conn.execute(sa.insert(budget_periods).values(budget_id=budget_id, period_start=start, **zero))
            row = conn.execute(query).mappings().one()
        return row

    def _expire(self, conn: sa.Connection, budget_id: str, now: float) -> None:
        """Give back the estimates of the budget's open reservations past their TTL (any period's)."""
        r = budget_reservations
        stale = conn.execute(
            sa.update(r)
            .where(r.c.budget_id == budget_id, r.c.state == "open", r.c.expires_at <= now)
            .values(state="expired", settled_at=now)
            .returning(r.c.period_start, r.c.estimate_nano)
        ).all()
        per: dict[float, list[int]] = {}
        for start, estimate in stale:
            per.setdefault(float(start), []).append(int(estimate))
        for start, estimates in per.items():
            self._add(
                conn,
                budget_id,
                start,
                reserved=-sum(estimates),
                opened=-len(estimates),
                expired=len(estimates),
            )

    @staticmethod
    def _add(
        conn: sa.Connection,
        budget_id: str,
        start: float,
        *,
        committed: int = 0,
        reserved: int = 0,
        overrun: int = 0,
        opened: int = 0,
        expired: int = 0,
    ) -> None:
        p = budget_periods.c
        conn.execute(
            sa.update(budget_periods)
            .where(p.budget_id == budget_id, p.period_start == start)
            .values(
                committed_nano=p.committed_nano + committed,
                reserved_nano=p.reserved_nano + reserved,
                overrun_nano=p.overrun_nano + overrun,
                open_count=p.open_count + opened,
                expired_count=p.expired_count + expired,
            )
        )

    def reserve(
        self,
        budget_id: str,
        estimate_usd: float,
        now: float,
        *,
        ttl_s: float | None = None,
        tenant_id: str | None = None,
    ) -> ReserveResult:
        """Reserve `estimate_usd` of the budget's current period: admitted unless a hard budget has
        less than that left, or nothing left at all (then nothing is reserved). The reservation
        expires after `ttl_s` (default: the budget's ``reservation_ttl_s``). `BudgetNotFound` when
        there is no such budget (of `tenant_id`); `ValueError` naming a bad argument."""
        estimate = to_nano(check_usd("estimate_usd", estimate_usd))
        if ttl_s is not None:
            check_ttl("ttl_s", ttl_s)
        with self._writing("reserving budget") as conn:
            spec = self._lock_budget(conn, budget_id, tenant_id)
            start, _ = period_bounds(spec.period, spec.timezone, now)
            self._expire(conn, budget_id, now)
            ledger = self._period(conn, budget_id, start)
            amount = to_nano(spec.amount_usd)
            used = int(ledger["committed_nano"]) + int(ledger["reserved_nano"])
            if spec.hard and (used + estimate > amount or used >= amount):
                return ReserveResult(admitted=False, remaining_usd=_usd(max(0, amount - used)))
            rid = secrets.token_hex(12)
            expires = now + (spec.reservation_ttl_s if ttl_s is None else ttl_s)
            conn.execute(
                sa.insert(budget_reservations).values(
                    reservation_id=rid,
                    budget_id=budget_id,
                    period_start=start,
                    estimate_nano=estimate,
                    cost_nano=None,
                    state="open",
                    created_at=now,
                    expires_at=expires,
                    settled_at=None,
                )
            )
            self._add(conn, budget_id, start, reserved=estimate, opened=1)
            self._forget_settled(conn, budget_id, now)
            return ReserveResult(
                admitted=True,
                remaining_usd=_usd(max(0, amount - used - estimate)),
                reservation_id=rid,
                estimate_usd=_usd(estimate),
                expires_at=expires,
            )

    @staticmethod
    def _forget_settled(conn: sa.Connection, budget_id: str, now: float) -> None:
        r = budget_reservations
        old = (
            sa.select(r.c.reservation_id)
            .where(
                r.c.budget_id == budget_id, r.c.settled_at.is_not(None), r.c.settled_at < now - SETTLED_KEEP_S
            )
            .order_by(r.c.settled_at)
            .limit(DELETE_PER_RESERVE)
        )
        ids = [str(i) for i in conn.execute(old).scalars()]
        if ids:
            conn.execute(sa.delete(r).where(r.c.reservation_id.in_(ids)))

    def _reservation(
        self, conn: sa.Connection, budget_id: str, reservation_id: str, tenant_id: str | None, now: float
    ) -> tuple[BudgetSpec, Mapping[Any, Any]]:
        """The budget (locked) and the reservation, after expiring what is past its TTL."""
        spec = self._lock_budget(conn, budget_id, tenant_id)
        self._expire(conn, budget_id, now)
        r = budget_reservations
        row = (
            conn.execute(sa.select(r).where(r.c.reservation_id == reservation_id, r.c.budget_id == budget_id))
            .mappings()
            .first()
        )
        if row is None:
            raise ReservationNotFound(reservation_id)
        return spec, row

    def extend(
        self,
        budget_id: str,
        reservation_id: str,
        estimate_usd: float,
        now: float,
        *,
        tenant_id: str | None = None,
    ) -> ReserveResult:
        """Grow an open reservation to `estimate_usd` in all (never shrink it) and renew its TTL:
        admitted unless a hard budget has less than the growth left, then the reservation keeps its
        estimate. `ReservationNotFound` when it is unknown, `ReservationSettled` when no longer open."""
        estimate = to_nano(check_usd("estimate_usd", estimate_usd))
        with self._writing("extending a reservation") as conn:
            spec, row = self._reservation(conn, budget_id, reservation_id, tenant_id, now)
            if row["state"] != "open":
                raise ReservationSettled(f"reservation {reservation_id} is {row['state']}, not open")
            start = float(row["period_start"])
            ledger = self._period(conn, budget_id, start)
            amount = to_nano(spec.amount_usd)
            used = int(ledger["committed_nano"]) + int(ledger["reserved_nano"])
            have = int(row["estimate_nano"])
            more = max(0, estimate - have)
            if spec.hard and more and used + more > amount:
                return ReserveResult(admitted=False, remaining_usd=_usd(max(0, amount - used)))
            expires = now + spec.reservation_ttl_s
            r = budget_reservations
            conn.execute(
                sa.update(r)
                .where(r.c.reservation_id == reservation_id)
                .values(estimate_nano=have + more, expires_at=expires)
            )
            if more:
                self._add(conn, budget_id, start, reserved=more)
            return ReserveResult(
                admitted=True,
                remaining_usd=_usd(max(0, amount - used - more)),
                reservation_id=reservation_id,
                estimate_usd=_usd(have + more),
                expires_at=expires,
            )

    def commit(
        self,
        budget_id: str,
        reservation_id: str,
        cost_usd: float,
        now: float,
        *,
        tenant_id: str | None = None,
    ) -> SettleResult:
        """Settle a reservation with its actual cost: committed += cost, reserved −= estimate, and
        what the cost exceeds the estimate by is added to the overrun. Repeated: the first commit's
        answer. After expiry: the cost is committed all the same, and all of it is overrun
        (``expired``). A released reservation cannot be committed (`ReservationSettled`)."""
        cost = to_nano(check_usd("cost_usd", cost_usd))
        with self._writing("committing a reservation") as conn:
            spec, row = self._reservation(conn, budget_id, reservation_id, tenant_id, now)
            start = float(row["period_start"])
            state = row["state"]
            if state == "released":
                raise ReservationSettled(f"reservation {reservation_id} was released, it cannot be committed")
            expired = state == "expired" or (
                state == "committed" and float(row["settled_at"]) >= float(row["expires_at"])
            )
            if state == "committed":
                ledger = self._period(conn, budget_id, start)
                return SettleResult(
                    reservation_id, "committed", _usd(int(row["cost_nano"])), _left(spec, ledger), expired
                )
            r = budget_reservations
            conn.execute(
                sa.update(r)
                .where(r.c.reservation_id == reservation_id)
                .values(
                    state="committed",
                    cost_nano=cost,
                    settled_at=max(now, float(row["expires_at"])) if expired else now,
                )
            )
            if expired:  # its estimate went back when it expired: the whole cost is new spend
                self._add(conn, budget_id, start, committed=cost, overrun=cost)
            else:
                estimate = int(row["estimate_nano"])
                self._add(
                    conn,
                    budget_id,
                    start,
                    committed=cost,
                    reserved=-estimate,
                    overrun=max(0, cost - estimate),
                    opened=-1,
                )
            ledger = self._period(conn, budget_id, start)
            return SettleResult(reservation_id, "committed", _usd(cost), _left(spec, ledger), expired)

    def release(
        self, budget_id: str, reservation_id: str, now: float, *, tenant_id: str | None = None
    ) -> SettleResult:
        """Give a reservation's estimate back. Repeated, or after expiry: nothing more happens. A
        committed reservation cannot be released (`ReservationSettled`)."""
        with self._writing("releasing a reservation") as conn:
            spec, row = self._reservation(conn, budget_id, reservation_id, tenant_id, now)
            state = row["state"]
            start = float(row["period_start"])
            if state == "committed":
                raise ReservationSettled(f"reservation {reservation_id} was committed, it cannot be released")
            if state == "open":
                r = budget_reservations
                conn.execute(
                    sa.update(r)
                    .where(r.c.reservation_id == reservation_id)
                    .values(state="released", settled_at=now)
                )
                self._add(conn, budget_id, start, reserved=-int(row["estimate_nano"]), opened=-1)
                state = "released"
            ledger = self._period(conn, budget_id, start)
            return SettleResult(reservation_id, state, None, _left(spec, ledger), state == "expired")


def _left(spec: BudgetSpec, ledger: Mapping[Any, Any]) -> float:
    used = int(ledger["committed_nano"]) + int(ledger["reserved_nano"])
    return _usd(max(0, to_nano(spec.amount_usd) - used))


def observed_spend(
    conn: sa.Connection, spec: BudgetSpec, start: float, end: float
) -> tuple[float | None, int]:
    """The cost and number of the call records in the budget's scope that started in ``[start,
    end)``: what the telemetry saw, beside what the ledger was told. The cost is None when no call
    has a known price (and 0.0 when there is no call)."""
    from llmpulse.store._calls import CallFilter, _conditions  # _calls imports the Store, which imports this

    flt = CallFilter(
        spec.tenant_id,
        start=datetime.fromtimestamp(start, UTC),
        end=datetime.fromtimestamp(max(start, end), UTC),
        user_id=spec.scope.get("user_id"),
        org_id=spec.scope.get("org_id"),
        feature=spec.scope.get("feature"),
        environment=spec.scope.get("environment"),
    )
    cost, known, n = conn.execute(
        sa.select(sa.func.sum(calls.c.cost_usd), sa.func.count(calls.c.cost_usd), sa.func.count()).where(
            *_conditions(flt)
        )
    ).one()
    if not n:
        return 0.0, 0
    return (None if not known else float(cost)), int(n)
