"""A database brought to an older schema version, as an older controller left it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

from zonewall.controller.store.db import SCHEMA_SCRIPTS, make_engine


@contextmanager
def at_schema(db_url: str, version: str, *, downgrade: bool = False) -> Iterator[Connection]:
    """A connection to the database at schema `version` (upgraded to it, or with
    `downgrade` brought down to it), in one transaction; the engine goes after."""
    engine = make_engine(db_url)
    config = Config()
    config.set_main_option("script_location", str(SCHEMA_SCRIPTS))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            (command.downgrade if downgrade else command.upgrade)(config, version)
            yield connection
    finally:
        engine.dispose()
