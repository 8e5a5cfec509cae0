"""Alembic environment: always called with a live connection by store.db.upgrade
(or `alembic -x url=...` by hand, which creates its own engine)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from zonewall.controller.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("alembic: no database URL (-x url=... or sqlalchemy.url)")
    engine = create_engine(url)
    with engine.begin() as own:
        context.configure(connection=own, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
