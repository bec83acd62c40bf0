"""Alembic environment: runs the store's migrations on the connection `Store.open` hands over.

Only online, programmatic use is supported: the caller puts an open `sqlalchemy.Connection` (already in
a transaction) into ``config.attributes["connection"]``. The migrations then run inside that transaction.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from llmpulse.store._tables import metadata


def _run() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if not isinstance(connection, sa.Connection):
        raise RuntimeError("llmpulse store migrations run only through llmpulse.store (Store.open)")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=config.get_main_option("version_table") or "llmpulse_store_version",
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


# Alembic loads this file under its own module name; importing the package module must not run it.
if __name__ != "llmpulse.store.migrations.env":
    _run()
