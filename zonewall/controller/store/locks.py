"""Serializing writers across every controller that shares the database.

Several controllers (replicas) may serve one PostgreSQL; each decides "the current
revision is N, so this change becomes N+1" and that decision must not interleave
with another replica's. The database is the only place all replicas share, so the
lock lives there:

* PostgreSQL: a transaction-level advisory lock (`pg_advisory_xact_lock`), released
  by the commit or rollback, also when the holder's connection dies with its process;
* SQLite: `BEGIN IMMEDIATE`, SQLite's own write lock, taken before the first read of
  the transaction (a deferred transaction that reads first and writes later could
  be refused its upgrade instead of waiting: SQLITE_BUSY_SNAPSHOT).

The same mechanism, with another key, keeps two controllers that start together on
an empty database from both creating the schema.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session, sessionmaker

# Advisory lock keys (any 64-bit numbers unique to zonewall within the database).
POLICY_WRITE_KEY = 0x7A77_0001  # "zw" 1: revisions, their floor and idempotency keys
SCHEMA_UPGRADE_KEY = 0x7A77_0002  # "zw" 2: schema upgrades at start


def lock_database(connection: Connection, key: int) -> None:
    """Take the database-wide lock `key` for the rest of the current transaction.

    Must be the first statement of the transaction on SQLite."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    elif dialect == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(f"no write lock for {dialect}")


class SerializedWrites:
    """`with writes() as session:` one transaction holding the policy write lock.

    The in-process lock in front keeps this process's threads from queueing inside
    the database (SQLite's busy handler sleeps and polls; a PostgreSQL backend per
    waiting thread would hold a pooled connection for nothing).
    """

    def __init__(self, sessions: sessionmaker[Session], key: int = POLICY_WRITE_KEY) -> None:
        self._sessions = sessions
        self._key = key
        self._local = threading.Lock()

    @contextmanager
    def __call__(self) -> Iterator[Session]:
        with self._local, self._sessions() as session:
            lock_database(session.connection(), self._key)
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
