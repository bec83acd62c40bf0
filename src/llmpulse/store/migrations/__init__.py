"""Alembic migrations of the store schema, run programmatically by `llmpulse.store.Store.open`."""
