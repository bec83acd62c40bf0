"""Shared budgets: ``budgets`` (definitions), ``budget_periods`` (one ledger row per budget and
period) and ``budget_reservations``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07

Frozen copy of the schema at this revision (not imported from `_budgets`, which may move on).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None

_NAME = 256
_ID = 128


def upgrade() -> None:
    """Create the three tables and their indexes."""
    op.create_table(
        "budgets",
        sa.Column("budget_id", sa.String(_ID), nullable=False),
        sa.Column("tenant_id", sa.String(_NAME), nullable=False),
        sa.Column("user_id", sa.String(_NAME), nullable=True),
        sa.Column("org_id", sa.String(_NAME), nullable=True),
        sa.Column("feature", sa.String(_NAME), nullable=True),
        sa.Column("environment", sa.String(_NAME), nullable=True),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("amount_nano", sa.BigInteger, nullable=False),
        sa.Column("hard", sa.Boolean, nullable=False),
        sa.Column("reservation_ttl_s", sa.Double, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("budget_id", name="pk_budgets"),
    )
    op.create_index("ix_budgets_tenant", "budgets", ["tenant_id"])
    op.create_table(
        "budget_periods",
        sa.Column("budget_id", sa.String(_ID), nullable=False),
        sa.Column("period_start", sa.Double, nullable=False),
        sa.Column("committed_nano", sa.BigInteger, nullable=False),
        sa.Column("reserved_nano", sa.BigInteger, nullable=False),
        sa.Column("overrun_nano", sa.BigInteger, nullable=False),
        sa.Column("open_count", sa.BigInteger, nullable=False),
        sa.Column("expired_count", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("budget_id", "period_start", name="pk_budget_periods"),
    )
    op.create_table(
        "budget_reservations",
        sa.Column("reservation_id", sa.String(32), nullable=False),
        sa.Column("budget_id", sa.String(_ID), nullable=False),
        sa.Column("period_start", sa.Double, nullable=False),
        sa.Column("estimate_nano", sa.BigInteger, nullable=False),
        sa.Column("cost_nano", sa.BigInteger, nullable=True),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("settled_at", sa.Double, nullable=True),
        sa.PrimaryKeyConstraint("reservation_id", name="pk_budget_reservations"),
    )
    op.create_index(
        "ix_budget_reservations_expiry", "budget_reservations", ["budget_id", "state", "expires_at"]
    )
    op.create_index("ix_budget_reservations_settled", "budget_reservations", ["budget_id", "settled_at"])


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_index("ix_budget_reservations_settled", table_name="budget_reservations")
    op.drop_index("ix_budget_reservations_expiry", table_name="budget_reservations")
    op.drop_table("budget_reservations")
    op.drop_table("budget_periods")
    op.drop_index("ix_budgets_tenant", table_name="budgets")
    op.drop_table("budgets")
