"""Opening the database: engine, sessions, and the Alembic upgrade at start.

SQLite is the embedded default (a file in the data directory); any SQLAlchemy URL
(e.g. postgresql+psycopg://...) switches the backend. Migrations run
programmatically on every start, so an upgraded controller brings its schema along.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import CursorResult, Engine, Executable, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from .locks import SCHEMA_UPGRADE_KEY, lock_database

SCHEMA_SCRIPTS = Path(__file__).resolve().parent / "schema"  # Alembic: the schema versions
DEFAULT_DATA_DIR = Path("/var/lib/zonewall/controller")


def changed_rows(session: Session, statement: Executable) -> int:
    """Rows an UPDATE or DELETE changed (`execute` is typed as returning a Result; for
    these statements it is a CursorResult, which counts them)."""
    return int(cast("CursorResult[Any]", session.execute(statement)).rowcount or 0)


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir.resolve() / 'zonewall.db'}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


SQLITE_CACHE_KIB = 131072  # page cache per connection: 128 MiB (SQLite's default is 2 MiB)
SQLITE_CHECKPOINT_PAGES = 16384  # the WAL is truncated back to 64 MiB of 4 KiB pages after a checkpoint
# A request's own commit checkpoints only past this (the controller's housekeeping
# thread checkpoints every second, `checkpoint` below): 256 MiB, a safety net.
SQLITE_AUTOCHECKPOINT_PAGES = 4 * SQLITE_CHECKPOINT_PAGES


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    # WAL lets `zonewall token create` write while the server reads; the busy
    # timeout makes concurrent writers wait instead of failing at once.
    # synchronous=NORMAL is WAL's usual pairing: a commit no longer waits for an
    # fsync (the WAL is synced at checkpoints); the database cannot be corrupted, a
    # power loss may only forget the last transactions. The packet-log store writes
    # a transaction per agent batch; its indexes outgrow SQLite's 2 MiB default page
    # cache quickly, hence the bigger cache (allocated as used, not up front).
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.execute("PRAGMA temp_store=MEMORY")
    # A checkpoint (the WAL copied back, two fsyncs) runs in the commit that crosses
    # the threshold: at 4 MiB (the default) after nearly every log batch, which dirties
    # hundreds of index pages; at 64 MiB in every fourth commit of a 10,000-VM policy's
    # revision (16 MB of documents), +0.15 s on this machine and over a second in a
    # busy controller, on the path of the change. So the controller's housekeeping
    # thread checkpoints (`checkpoint`), and a request's commit only past 256 MiB.
    cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")
    cursor.execute(f"PRAGMA journal_size_limit={SQLITE_CHECKPOINT_PAGES * 4096}")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# Connections per controller process: request threads (anyio's pool has 40) share
# them; long-polls hold none while they wait. Connections beyond the pool's size are
# closed when given back, so a burst (every agent reporting after a change) would
# open a new PostgreSQL connection per request if the pool were small. Three
# controllers at 24 each stay within PostgreSQL's default max_connections (100).
# SQLite too: a new connection runs the pragmas above and starts with an empty page
# cache, which at 100 agents (a status report from each after every change) cost
# the controller as much CPU as the requests themselves.
POOL_SIZE = 16
POOL_OVERFLOW = 8


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False}, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)


def checkpoint(sessions: sessionmaker[Session]) -> tuple[int, int] | None:
    """Copy SQLite's write-ahead log into the database without waiting for anyone
    (PASSIVE: readers and writers go on; what a reader still needs stays for the next
    time). (WAL frames, frames copied); None on PostgreSQL, which needs nothing."""
    engine = sessions.kw["bind"]
    if engine.dialect.name != "sqlite":
        return None
    with engine.connect() as connection:
        row = connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    return int(row[1]), int(row[2])


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest version (a no-op when it is current).

    Under the schema-upgrade lock: controllers starting together on an empty database
    upgrade one after the other, and the later ones find nothing left to do."""
    config = Config()
    config.set_main_option("script_location", str(SCHEMA_SCRIPTS))
    with engine.begin() as connection:
        lock_database(connection, SCHEMA_UPGRADE_KEY)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def open_database(url: str) -> sessionmaker[Session]:
    """Engine + migrations; returns the session factory the stores use."""
    engine = make_engine(url)
    upgrade(engine)
    return sessionmaker(engine, expire_on_commit=False)


def resolve_url(db: str | None, data_dir: Path | None) -> str:
    """--db wins; else SQLite in --data-dir (created), else in the default data dir."""
    if db:
        return db
    directory = data_dir or DEFAULT_DATA_DIR
    directory.mkdir(parents=True, exist_ok=True)
    return default_url(directory)
