"""An index on ``processor_pending (consumer, request_id)``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

The processor keeps only recent state in memory and asks the store about request ids it may have
seen before (`Store.lookup_cold`): the pending entries of one consumer by request id, whatever their
tenant, which the primary key (consumer, tenant_id, request_id, kind) does not serve.
"""

from __future__ import annotations

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create ``ix_processor_pending_consumer_request``."""
    op.create_index("ix_processor_pending_consumer_request", "processor_pending", ["consumer", "request_id"])


def downgrade() -> None:
    """Drop ``ix_processor_pending_consumer_request``."""
    op.drop_index("ix_processor_pending_consumer_request", table_name="processor_pending")
