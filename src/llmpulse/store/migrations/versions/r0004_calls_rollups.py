"""Call records, hourly and daily rollups, tenant-scoped pending joins.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

* ``calls``: one row per counted call, keyed by (request_id, tenant_id) (so a lookup by request
  id alone is served too), indexed by (tenant_id, started_at).
* ``rollups_hour`` and ``rollups_day``: the columns of ``windows`` at hour and day resolution. They
  are filled here from the windows already stored (histograms merged bucket by bucket), so a long
  range over old data reads the same figures as its minute windows.
* ``processor_pending`` gains ``tenant_id`` in its primary key (two tenants may wait on the same
  request id). Existing request rows get the tenant their payload names (decoded with the event
  log's codec); response rows get "" (they named no tenant before this revision).

Frozen copy of the schema at this revision (not imported from `_tables`, which may move on).
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_COUNTS = (
    "requests",
    "errors",
    "timeouts",
    "late",
    "prompt_tokens",
    "completion_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "latency_count",
    "ttft_count",
    "cost_unknown",
)
_SUMS = ("latency_sum_ms", "ttft_sum_ms", "cost_usd")
_HISTS = ("latency_hist", "ttft_hist")


def _aggregate_columns() -> list[Any]:
    return [
        sa.Column("tenant_id", sa.String(256), nullable=False),
        sa.Column("route", sa.String(256), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("window_start", sa.BigInteger, nullable=False, autoincrement=False),
        *(sa.Column(name, sa.BigInteger, nullable=False, server_default="0") for name in _COUNTS),
        *(sa.Column(name, sa.Double, nullable=False, server_default="0") for name in _SUMS),
        *(sa.Column(name, sa.Text, nullable=False, server_default="{}") for name in _HISTS),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="0"),
    ]


def _backfill(conn: sa.Connection, table: str, seconds: int) -> None:
    """Sum the stored minute windows into `table`'s buckets of `seconds` (in Python: histograms are
    JSON text). One pass over ``windows`` in key order; rows inserted in chunks."""
    cols = ("tenant_id", "route", "model", "window_start", *_COUNTS, *_SUMS, *_HISTS, "updated_at")
    rows = conn.execute(sa.text(f"SELECT {', '.join(cols)} FROM windows ORDER BY tenant_id, window_start"))
    acc: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    for row in rows.mappings():
        key = (row["tenant_id"], row["route"], row["model"], int(row["window_start"]) // seconds * seconds)
        have = acc.get(key)
        if have is None:
            have = acc[key] = dict.fromkeys((*_COUNTS, *_SUMS), 0)
            have.update(latency_hist={}, ttft_hist={}, updated_at=0.0)
        for n in (*_COUNTS, *_SUMS):
            have[n] += row[n]
        for n in _HISTS:
            for b, c in json.loads(row[n]).items():
                have[n][b] = have[n].get(b, 0) + c
        have["updated_at"] = max(have["updated_at"], float(row["updated_at"]))
    if not acc:
        return
    insert = sa.text(
        f"INSERT INTO {table} ({', '.join(cols)}, version) VALUES ({', '.join(':' + c for c in cols)}, 1)"
    )
    batch: list[dict[str, Any]] = []
    for (tenant, route, model, start), figures in acc.items():
        values = dict(figures, tenant_id=tenant, route=route, model=model, window_start=start)
        for n in _HISTS:
            values[n] = json.dumps({b: c for b, c in figures[n].items() if c}, separators=(",", ":"))
        batch.append(values)
        if len(batch) >= 1000:
            conn.execute(insert, batch)
            batch = []
    if batch:
        conn.execute(insert, batch)


def upgrade() -> None:
    """Create ``calls``, ``rollups_hour`` and ``rollups_day`` (rollups filled from ``windows``) and
    rebuild ``processor_pending`` with ``tenant_id`` in its primary key."""
    for name, seconds in (("rollups_hour", 3600), ("rollups_day", 86400)):
        op.create_table(
            name,
            *_aggregate_columns(),
            sa.PrimaryKeyConstraint("tenant_id", "window_start", "route", "model", name=f"pk_{name}"),
            sqlite_with_rowid=False,
        )
        _backfill(op.get_bind(), name, seconds)
    op.create_table(
        "calls",
        sa.Column("tenant_id", sa.String(256), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("route", sa.String(256), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("provider", sa.String(256), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_type", sa.String(128), nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("latency_ms", sa.Double, nullable=True),
        sa.Column("ttft_ms", sa.Double, nullable=True),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger, nullable=False),
        sa.Column("cache_write_tokens", sa.BigInteger, nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_usd", sa.Double, nullable=True),
        sa.Column("cost_source", sa.String(16), nullable=True),
        sa.Column("user_id", sa.String(256), nullable=True),
        sa.Column("user_id_hash", sa.String(128), nullable=True),
        sa.Column("org_id", sa.String(256), nullable=True),
        sa.Column("session_id", sa.String(256), nullable=True),
        sa.Column("feature", sa.String(256), nullable=True),
        sa.Column("endpoint", sa.String(256), nullable=True),
        sa.Column("environment", sa.String(256), nullable=True),
        sa.Column("trace_id", sa.String(128), nullable=True),
        sa.Column("span_id", sa.String(128), nullable=True),
        sa.Column("metadata", sa.Text, nullable=True),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("request_id", "tenant_id", name="pk_calls"),
    )
    op.create_index("ix_calls_tenant_started", "calls", ["tenant_id", "started_at"])

    conn = op.get_bind()
    old = conn.execute(
        sa.text("SELECT consumer, request_id, kind, payload, seen_at, expired FROM processor_pending")
    ).all()
    op.drop_table("processor_pending")
    op.create_table(
        "processor_pending",
        sa.Column("consumer", sa.String(256), nullable=False),
        sa.Column("tenant_id", sa.String(256), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("seen_at", sa.Double, nullable=False),
        sa.Column("expired", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("consumer", "tenant_id", "request_id", "kind", name="pk_processor_pending"),
    )
    if old:
        from llmpulse.events import decode_log  # the log codec reads the payloads it wrote

        table = sa.table(
            "processor_pending",
            *(sa.column(n) for n in ("consumer", "tenant_id", "request_id", "kind", "payload", "seen_at")),
            sa.column("expired"),
        )
        values = []
        for consumer, request_id, kind, payload, seen_at, expired in old:
            tenant = ""
            if kind == "request":
                (event,) = decode_log(bytes(payload))
                tenant = str(getattr(event, "tenant_id", "") or "")
            values.append(
                {
                    "consumer": consumer,
                    "tenant_id": tenant,
                    "request_id": request_id,
                    "kind": kind,
                    "payload": bytes(payload),
                    "seen_at": seen_at,
                    "expired": bool(expired),
                }
            )
        conn.execute(sa.insert(table), values)


def downgrade() -> None:
    """Drop the new tables; ``processor_pending`` loses ``tenant_id`` (a second tenant's entry for
    the same request id is dropped)."""
    op.drop_index("ix_calls_tenant_started", table_name="calls")
    op.drop_table("calls")
    op.drop_table("rollups_day")
    op.drop_table("rollups_hour")
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT consumer, request_id, kind, payload, seen_at, expired FROM processor_pending")
    ).all()
    op.drop_table("processor_pending")
    op.create_table(
        "processor_pending",
        sa.Column("consumer", sa.String(256), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("seen_at", sa.Double, nullable=False),
        sa.Column("expired", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("consumer", "request_id", "kind", name="pk_processor_pending"),
    )
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for consumer, request_id, kind, payload, seen_at, expired in rows:
        seen.setdefault(
            (consumer, request_id, kind),
            {
                "consumer": consumer,
                "request_id": request_id,
                "kind": kind,
                "payload": bytes(payload),
                "seen_at": seen_at,
                "expired": bool(expired),
            },
        )
    if seen:
        table = sa.table(
            "processor_pending",
            *(sa.column(n) for n in ("consumer", "request_id", "kind", "payload")),
            sa.column("seen_at"),
            sa.column("expired"),
        )
        conn.execute(sa.insert(table), list(seen.values()))
