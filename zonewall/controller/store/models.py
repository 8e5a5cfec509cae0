"""Database tables. Changing one means a new Alembic migration in ../migrations/versions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class RevisionRow(Base):
    """One accepted policy: the whole document set, never edited afterwards."""

    __tablename__ = "revisions"

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    author: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(32))  # upload | change | rollback
    change: Mapped[str] = mapped_column(Text, default="")  # what a targeted change did, as JSON
    rollback_of: Mapped[int | None] = mapped_column(Integer, nullable=True)
    documents: Mapped[str] = mapped_column(Text)  # JSON {file name: YAML text}
    content_hash: Mapped[str] = mapped_column(String(64))
    diff: Mapped[str | None] = mapped_column(Text, nullable=True)  # analysis.diff JSON against the previous revision
    diff_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class TokenRow(Base):
    """An API token; only the SHA-256 of the secret is stored."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))  # admin | viewer | agent
    node: Mapped[str | None] = mapped_column(String(64), nullable=True)  # agent tokens only
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class NodeRow(Base):
    """What the controller knows of a node's agent (the inventory)."""

    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_contact: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    agent_version: Mapped[str] = mapped_column(String(64), default="")
    hostname: Mapped[str] = mapped_column(String(255), default="")
    applied_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ruleset_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="registered")  # registered | ok | error
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    drift_repairs: Mapped[int] = mapped_column(Integer, default=0)
    taps: Mapped[str] = mapped_column(Text, default="{}")  # discovered NIC -> tap, JSON


class NodeLogRow(Base):
    """Log lines an agent sent about its own node (applies, repairs, errors)."""

    __tablename__ = "node_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node: Mapped[str] = mapped_column(String(64), ForeignKey("nodes.name"), index=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
