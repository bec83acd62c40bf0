"""Initial schema: windows, processor checkpoint tables, server counters.

Revision ID: 0001
Revises:
Create Date: 2026-05-01

Frozen copy of the schema at this revision (not imported from `_tables`, which may move on).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
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


def upgrade() -> None:
    """Create every table and index of the first schema."""
    op.create_table(
        "windows",
        sa.Column("tenant_id", sa.String(256), nullable=False),
        sa.Column("route", sa.String(256), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("window_start", sa.BigInteger, nullable=False, autoincrement=False),
        *(sa.Column(name, sa.BigInteger, nullable=False, server_default="0") for name in _COUNTS),
        *(sa.Column(name, sa.Double, nullable=False, server_default="0") for name in _SUMS),
        *(sa.Column(name, sa.Text, nullable=False, server_default="{}") for name in _HISTS),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "window_start", "route", "model", name="pk_windows"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "processor_offsets",
        sa.Column("consumer", sa.String(256), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("consumer", "partition", name="pk_processor_offsets"),
    )
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
    op.create_table(
        "processor_dedup",
        sa.Column(
            "chunk_id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            nullable=False,
            autoincrement=True,
        ),
        sa.Column("consumer", sa.String(256), nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("keys", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("chunk_id", name="pk_processor_dedup"),
    )
    op.create_index("ix_processor_dedup_consumer_expires", "processor_dedup", ["consumer", "expires_at"])
    op.create_table(
        "processor_meta",
        sa.Column("consumer", sa.String(256), nullable=False),
        sa.Column("watermark", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("consumer", name="pk_processor_meta"),
    )
    op.create_table(
        "server_counters",
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_server_counters"),
    )


def downgrade() -> None:
    """Drop everything `upgrade` created."""
    for table in ("server_counters", "processor_meta", "processor_dedup", "processor_pending"):
        op.drop_table(table)
    op.drop_table("processor_offsets")
    op.drop_table("windows")
