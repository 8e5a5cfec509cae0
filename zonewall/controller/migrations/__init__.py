"""Alembic migrations of the controller database (run by store.db.upgrade)."""
