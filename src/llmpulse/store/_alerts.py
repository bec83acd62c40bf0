"""Alert state kept in the store, so a restart neither re-notifies nor forgets, and the lease that
lets exactly one server evaluate rules at a time.

- ``alert_states``: one row per rule (its name is the key): status (``pending``, ``firing``,
  ``resolved``, ``inactive``), since when, when it last fired and was last notified, the last value,
  and the runway level reached.
- ``alert_history``: every transition (and repeat) notified, newest kept; `AlertStore.save` deletes
  what is older than `HISTORY_KEEP_S`, a few rows at a time.
- ``leases``: named leases with a holder and an expiry (`AlertStore.try_lease`): the evaluator of
  each server renews its lease every pass; another server takes over once it has expired.

Every method blocks on the database and raises `StoreError` when it cannot be reached.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa

from llmpulse.store._engine import translate_errors, write_transaction
from llmpulse.store._tables import MAX_NAME_LEN, metadata

#: How long notified transitions stay in ``alert_history``, and how many old rows a save deletes.
HISTORY_KEEP_S: Final = 30 * 86400.0
HISTORY_DELETE_PER_SAVE: Final = 50
MAX_RULE_NAME_LEN: Final = 128
MAX_SUMMARY_LEN: Final = 1024

alert_states = sa.Table(
    "alert_states",
    metadata,
    sa.Column("rule", sa.String(MAX_RULE_NAME_LEN), nullable=False),
    sa.Column("tenant_id", sa.String(MAX_NAME_LEN), nullable=False),
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("since", sa.Double, nullable=False),
    sa.Column("fired_at", sa.Double, nullable=True),
    sa.Column("notified_at", sa.Double, nullable=True),
    sa.Column("value", sa.Double, nullable=True),
    sa.Column("level", sa.Double, nullable=True),
    sa.Column("summary", sa.String(MAX_SUMMARY_LEN), nullable=True),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.PrimaryKeyConstraint("rule", name="pk_alert_states"),
)

alert_history = sa.Table(
    "alert_history",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("rule", sa.String(MAX_RULE_NAME_LEN), nullable=False),
    sa.Column("tenant_id", sa.String(MAX_NAME_LEN), nullable=False),
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("value", sa.Double, nullable=True),
    sa.Column("summary", sa.String(MAX_SUMMARY_LEN), nullable=True),
)
sa.Index("ix_alert_history_tenant_at", alert_history.c.tenant_id, alert_history.c.at)
sa.Index("ix_alert_history_at", alert_history.c.at)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.PrimaryKeyConstraint("name", name="pk_leases"),
)


@dataclass(frozen=True, slots=True)
class AlertState:
    """One rule's alert as stored."""

    rule: str
    tenant_id: str
    status: str
    since: float
    fired_at: float | None = None
    notified_at: float | None = None
    value: float | None = None
    level: float | None = None
    summary: str | None = None


@dataclass(frozen=True, slots=True)
class AlertTransition:
    """One notified transition (or repeat) of an alert."""

    rule: str
    tenant_id: str
    status: str
    at: float
    value: float | None
    summary: str | None


def _state(row: Mapping[Any, Any]) -> AlertState:
    def opt(name: str) -> float | None:
        return None if row[name] is None else float(row[name])

    return AlertState(
        rule=str(row["rule"]),
        tenant_id=str(row["tenant_id"]),
        status=str(row["status"]),
        since=float(row["since"]),
        fired_at=opt("fired_at"),
        notified_at=opt("notified_at"),
        value=opt("value"),
        level=opt("level"),
        summary=None if row["summary"] is None else str(row["summary"]),
    )


class AlertStore:
    """The store's alert states, history and leases (``store.alerts``). Thread-safe; blocks."""

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

    def states(self, tenant_id: str | None = None) -> dict[str, AlertState]:
        """Every stored state by rule name (only `tenant_id`'s when given)."""
        query = sa.select(alert_states)
        if tenant_id is not None:
            query = query.where(alert_states.c.tenant_id == tenant_id)
        with self._reading("reading alert states") as conn:
            return {s.rule: s for s in map(_state, conn.execute(query).mappings())}

    def save(self, states: Sequence[AlertState], transitions: Sequence[AlertTransition], now: float) -> None:
        """Write `states` (replacing each rule's row) and append `transitions`, in one transaction;
        delete a few history rows older than `HISTORY_KEEP_S`."""
        if not states and not transitions:
            return
        with self._writing("saving alert states") as conn:
            if states:
                names = [s.rule for s in states]
                conn.execute(sa.delete(alert_states).where(alert_states.c.rule.in_(names)))
                conn.execute(
                    sa.insert(alert_states),
                    [
                        {
                            "rule": s.rule,
                            "tenant_id": s.tenant_id,
                            "status": s.status,
                            "since": s.since,
                            "fired_at": s.fired_at,
                            "notified_at": s.notified_at,
                            "value": s.value,
                            "level": s.level,
                            "summary": None if s.summary is None else s.summary[:MAX_SUMMARY_LEN],
                            "updated_at": now,
                        }
                        for s in states
                    ],
                )
            if transitions:
                conn.execute(
                    sa.insert(alert_history),
                    [
                        {
                            "rule": t.rule,
                            "tenant_id": t.tenant_id,
                            "status": t.status,
                            "at": t.at,
                            "value": t.value,
                            "summary": None if t.summary is None else t.summary[:MAX_SUMMARY_LEN],
                        }
                        for t in transitions
                    ],
                )
                old = (
                    sa.select(alert_history.c.id)
                    .where(alert_history.c.at < now - HISTORY_KEEP_S)
                    .order_by(alert_history.c.at)
                    .limit(HISTORY_DELETE_PER_SAVE)
                )
                ids = [int(i) for i in conn.execute(old).scalars()]
                if ids:
                    conn.execute(sa.delete(alert_history).where(alert_history.c.id.in_(ids)))

    def forget(self, keep: Sequence[str]) -> int:
        """Delete the states of rules not in `keep` (rules removed from the file); how many."""
        with self._writing("forgetting alert states") as conn:
            query = sa.delete(alert_states)
            if keep:
                query = query.where(alert_states.c.rule.not_in(list(keep)))
            return int(conn.execute(query).rowcount or 0)

    def history(self, tenant_id: str | None = None, limit: int = 100) -> list[AlertTransition]:
        """The newest `limit` transitions, newest first (only `tenant_id`'s when given)."""
        query = (
            sa.select(alert_history)
            .order_by(alert_history.c.at.desc(), alert_history.c.id.desc())
            .limit(limit)
        )
        if tenant_id is not None:
            query = query.where(alert_history.c.tenant_id == tenant_id)
        with self._reading("reading alert history") as conn:
            return [
                AlertTransition(
                    rule=str(r["rule"]),
                    tenant_id=str(r["tenant_id"]),
                    status=str(r["status"]),
                    at=float(r["at"]),
                    value=None if r["value"] is None else float(r["value"]),
                    summary=None if r["summary"] is None else str(r["summary"]),
                )
                for r in conn.execute(query).mappings()
            ]

    def try_lease(self, name: str, holder: str, now: float, ttl_s: float) -> bool:
        """Take or renew the lease `name` for `holder` until ``now + ttl_s``: True when `holder`
        holds it now (it was free, expired, or already its own), False while another holds it."""
        until = now + ttl_s
        with self._writing("taking a lease") as conn:
            taken = conn.execute(
                sa.update(leases)
                .where(leases.c.name == name, sa.or_(leases.c.holder == holder, leases.c.expires_at <= now))
                .values(holder=holder, expires_at=until)
            ).rowcount
            if taken:
                return True
            exists = conn.execute(sa.select(leases.c.holder).where(leases.c.name == name)).first()
            if exists is not None:
                return False
            conn.execute(sa.insert(leases).values(name=name, holder=holder, expires_at=until))
            return True

    def release_lease(self, name: str, holder: str) -> None:
        """Give up the lease `name` if `holder` holds it (a clean shutdown: another server takes over
        at once)."""
        with self._writing("releasing a lease") as conn:
            conn.execute(sa.delete(leases).where(leases.c.name == name, leases.c.holder == holder))
