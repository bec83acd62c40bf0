"""Window versions: ``windows.version``, the number of commits that changed each window.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

Existing windows start at version 0; their next commit makes them 1. Frozen copy of the schema at
this revision (not imported from `_tables`, which may move on).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``windows.version`` (BIGINT NOT NULL DEFAULT 0): a plain ``ALTER TABLE … ADD COLUMN`` on
    both dialects (SQLite keeps the table WITHOUT ROWID; no copy)."""
    op.add_column("windows", sa.Column("version", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    """Drop ``windows.version``."""
    with op.batch_alter_table("windows") as batch:
        batch.drop_column("version")
