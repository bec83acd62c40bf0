"""Rollups built once an hour is over: ``rollup_progress`` (tenant → rolled_through).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

Until this revision every commit added its deltas to the hourly and daily rollups as well as to the
minute windows, each a read, merge and write of a row whose histograms hold an hour's or a day's
buckets: `make bench` measured that as about a third of embedded ingest's time. From now on an hour
of a tenant is summed into the rollups from its minute windows once it is over
(`llmpulse.store._roller`), and ``rollup_progress`` says how far that has gone.

The rollups of a store migrated here hold every delta committed so far, so each tenant's row starts
past the last hour that has a window or an hourly rollup: the roller never adds those hours again,
and later commits for them keep adding to the rollups directly.

Frozen copy of the schema at this revision (not imported from `_tables`, which may move on).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create ``rollup_progress`` and start each existing tenant after its last stored hour."""
    op.create_table(
        "rollup_progress",
        sa.Column("tenant_id", sa.String(256), nullable=False),
        sa.Column("rolled_through", sa.BigInteger, nullable=False, autoincrement=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_rollup_progress"),
    )
    op.execute(
        "INSERT INTO rollup_progress (tenant_id, rolled_through) "
        "SELECT tenant_id, (MAX(window_start) / 3600 + 1) * 3600 FROM ("
        "SELECT tenant_id, window_start FROM windows UNION ALL "
        "SELECT tenant_id, window_start FROM rollups_hour) AS seen GROUP BY tenant_id"
    )


def downgrade() -> None:
    """Drop ``rollup_progress`` (the rollups then miss the hours it had not rolled yet)."""
    op.drop_table("rollup_progress")
