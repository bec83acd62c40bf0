"""Call records keep the cost their call event carried beside the one that counts.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

A call event's own cost without a source (token-copilot's static price table) or marked
``estimate`` may be replaced by genai-prices' figure (`ProcessorConfig.estimate_cost`); the
sender's figure is kept in ``sender_cost_usd`` so neither is lost. A nullable column added at the
end of ``calls`` (no rebuild on either dialect); older records have none.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``calls.sender_cost_usd``."""
    op.add_column("calls", sa.Column("sender_cost_usd", sa.Double, nullable=True))


def downgrade() -> None:
    """Drop ``calls.sender_cost_usd`` (SQLite >= 3.35 drops a column in place, keeping WITHOUT ROWID)."""
    op.drop_column("calls", "sender_cost_usd")
