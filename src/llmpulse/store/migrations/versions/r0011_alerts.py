"""Alerts: ``alert_states`` (one row per rule), ``alert_history`` (notified transitions) and
``leases`` (which server evaluates the rules).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07

Frozen copy of the schema at this revision (not imported from `_alerts`, which may move on).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the three tables and their indexes."""
    op.create_table(
        "alert_states",
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("tenant_id", sa.String(256), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("since", sa.Double, nullable=False),
        sa.Column("fired_at", sa.Double, nullable=True),
        sa.Column("notified_at", sa.Double, nullable=True),
        sa.Column("value", sa.Double, nullable=True),
        sa.Column("level", sa.Double, nullable=True),
        sa.Column("summary", sa.String(1024), nullable=True),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("rule", name="pk_alert_states"),
    )
    op.create_table(
        "alert_history",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("tenant_id", sa.String(256), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("value", sa.Double, nullable=True),
        sa.Column("summary", sa.String(1024), nullable=True),
    )
    op.create_index("ix_alert_history_tenant_at", "alert_history", ["tenant_id", "at"])
    op.create_index("ix_alert_history_at", "alert_history", ["at"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_table("leases")
    op.drop_index("ix_alert_history_at", table_name="alert_history")
    op.drop_index("ix_alert_history_tenant_at", table_name="alert_history")
    op.drop_table("alert_history")
    op.drop_table("alert_states")
