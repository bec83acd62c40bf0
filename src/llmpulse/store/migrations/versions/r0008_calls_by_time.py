"""Call records keyed and clustered by (tenant_id, started_at, request_id), indexed by second and id.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

Until this revision ``calls`` was keyed by (request_id, tenant_id): client-chosen request ids are
random, so every new record went to its own page of that index, and every commit wrote about a page
per record (`make bench`: a record's insert cost 2.3 times what it costs keyed by time, and the
retention pruner's deletes were as scattered). Keyed by (tenant_id, started_at, request_id), a
tenant's records lie in time order: inserts append, range reads and retention deletes are
contiguous runs. ``ix_calls_second_request`` (the second a record starts in, then its request id)
replaces ``ix_calls_tenant_started`` (the key serves that now) and finds a request id near a time
whatever its tenant, which is how the processor looks up ids it let go of: one seek per second of
the span asked about (an index on ``started_at`` alone made it scan every record of the span).

SQLite cannot change a table's key: the table is rebuilt (WITHOUT ROWID) and its rows copied, which
takes a while on a large store (about 10 s per million records here). Postgres swaps the constraint.
No two records can clash under the new key: the old one was already unique per (tenant, request id).

Frozen copy of the schema at this revision (not imported from `_tables`, which may move on).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

_COLUMNS = (
    "tenant_id, request_id, started_at, route, model, provider, status, error_type, error_message, "
    "latency_ms, ttft_ms, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, "
    "reasoning_tokens, cost_usd, cost_source, user_id, user_id_hash, org_id, session_id, feature, "
    "endpoint, environment, trace_id, span_id, metadata, updated_at"
)


def _calls_table(name: str, key: tuple[str, ...], *, with_rowid: bool) -> None:
    op.create_table(
        name,
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
        sa.PrimaryKeyConstraint(*key, name="pk_calls"),  # SQLite: constraint names are per table
        sqlite_with_rowid=with_rowid,
    )


def _rebuild_sqlite(key: tuple[str, ...], *, with_rowid: bool) -> None:
    _calls_table("calls_rebuilt", key, with_rowid=with_rowid)
    op.execute(
        f"INSERT INTO calls_rebuilt ({_COLUMNS}) SELECT {_COLUMNS} FROM calls ORDER BY {', '.join(key)}"
    )
    op.drop_table("calls")  # its indexes go with it
    op.rename_table("calls_rebuilt", "calls")


def upgrade() -> None:
    """Key ``calls`` by (tenant_id, started_at, request_id); index ``started_at``."""
    key = ("tenant_id", "started_at", "request_id")
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(key, with_rowid=False)
    else:
        op.drop_index("ix_calls_tenant_started", table_name="calls")
        op.drop_constraint("pk_calls", "calls", type_="primary")
        op.create_primary_key("pk_calls", "calls", list(key))
    op.create_index("ix_calls_second_request", "calls", [sa.text("CAST(started_at AS BIGINT)"), "request_id"])


def downgrade() -> None:
    """Key ``calls`` by (request_id, tenant_id) again, indexed by (tenant_id, started_at)."""
    key = ("request_id", "tenant_id")
    op.drop_index("ix_calls_second_request", table_name="calls")
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(key, with_rowid=True)
    else:
        op.drop_constraint("pk_calls", "calls", type_="primary")
        op.create_primary_key("pk_calls", "calls", list(key))
    op.create_index("ix_calls_tenant_started", "calls", ["tenant_id", "started_at"])
