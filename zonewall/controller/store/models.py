"""Database tables. Changing one means a new Alembic migration in ../migrations/versions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class RevisionRow(Base):
    """One accepted policy: the whole document set, never edited afterwards. Its
    documents are read through store/chunks.py (`RevisionStore.documents_of`)."""

    __tablename__ = "revisions"

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    author: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(32))  # upload | change | rollback
    change: Mapped[str] = mapped_column(Text, default="")  # what a targeted change did, as JSON
    rollback_of: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Since schema 0007 the documents are chunks (store/chunks.py, DocumentChunkRow) and
    # this holds their layout, JSON {file name: [chunk digest, ...]}; before, the
    # documents themselves were the row's, JSON {file name: YAML text}, which is ""
    # in newer rows. Both are read only when asked for (deferred): a revision's row
    # is otherwise a few hundred bytes.
    layout: Mapped[str | None] = mapped_column(Text, nullable=True, deferred=True)
    legacy_documents: Mapped[str] = mapped_column("documents", Text, deferred=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    # Before schema 0006 the diff was stored in the revision's own row; SQLite rewrites a
    # whole row (16 MB of documents at 10,000 VMs, ~0.9 s) to update one column, so
    # diffs now have their own table. These columns keep older revisions' diffs.
    legacy_diff: Mapped[str | None] = mapped_column("diff", Text, nullable=True)
    legacy_diff_error: Mapped[str | None] = mapped_column("diff_error", Text, nullable=True)
    semantic_diff: Mapped[RevisionDiffRow | None] = relationship(lazy="joined", uselist=False)

    @property
    def diff(self) -> str | None:
        """analysis.diff JSON against the previous revision (None: not computed, or failed)."""
        return self.semantic_diff.diff if self.semantic_diff is not None else self.legacy_diff

    @property
    def diff_error(self) -> str | None:
        return self.semantic_diff.error if self.semantic_diff is not None else self.legacy_diff_error


class RevisionDiffRow(Base):
    """A revision's semantic diff (or why it failed), stored once when computed."""

    __tablename__ = "revision_diffs"

    revision: Mapped[int] = mapped_column(Integer, ForeignKey("revisions.number"), primary_key=True)
    diff: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class DocumentChunkRow(Base):
    """A piece of a document's text, stored once for every revision that holds it."""

    __tablename__ = "document_chunks"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the text
    text: Mapped[str] = mapped_column(Text)


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
    state: Mapped[str] = mapped_column(String(16), default="registered")  # registered | ok | degraded | error
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    problems: Mapped[str] = mapped_column(Text, default="[]")  # the agent's own faults (JSON list of lines)
    drift_repairs: Mapped[int] = mapped_column(Integer, default=0)
    taps: Mapped[str] = mapped_column(Text, default="{}")  # discovered NIC -> tap, JSON
    apply_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)  # the agent's last apply, wall time


class NodeLogRow(Base):
    """Log lines an agent sent about its own node (applies, repairs, errors)."""

    __tablename__ = "node_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node: Mapped[str] = mapped_column(String(64), ForeignKey("nodes.name"), index=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)


class LogRecordRow(Base):
    """One packet log record (NFLOG) an agent shipped. Addresses are also kept as
    `*_key`: 32 hex digits of the 16-byte address (IPv4 as ::ffff:a.b.c.d), so that a
    CIDR search is an index range scan."""

    __tablename__ = "log_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[float] = mapped_column(Float)  # epoch seconds (the kernel's timestamp)
    node: Mapped[str] = mapped_column(String(64))
    vm: Mapped[str | None] = mapped_column(String(64), nullable=True)
    zone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    nic: Mapped[str | None] = mapped_column(String(80), nullable=True)
    direction: Mapped[str | None] = mapped_column(String(8), nullable=True)
    family: Mapped[str | None] = mapped_column(String(8), nullable=True)
    src: Mapped[str | None] = mapped_column(String(45), nullable=True)
    dst: Mapped[str | None] = mapped_column(String(45), nullable=True)
    src_key: Mapped[str | None] = mapped_column(String(32), nullable=True)
    dst_key: Mapped[str | None] = mapped_column(String(32), nullable=True)
    proto: Mapped[str | None] = mapped_column(String(16), nullable=True)
    sport: Mapped[int | None] = mapped_column(Integer, nullable=True)
    dport: Mapped[int | None] = mapped_column(Integer, nullable=True)
    icmp_type: Mapped[int | None] = mapped_column(Integer, nullable=True)
    verdict: Mapped[str | None] = mapped_column(String(16), nullable=True)
    rule: Mapped[str | None] = mapped_column(String(128), nullable=True)
    scope: Mapped[str | None] = mapped_column(String(128), nullable=True)
    level: Mapped[str | None] = mapped_column(String(16), nullable=True)
    iface: Mapped[str | None] = mapped_column(String(32), nullable=True)
    agent_time: Mapped[float | None] = mapped_column(Float, nullable=True)  # set when the agent's clock was off: `time` is the arrival


class LogBatchRow(Base):
    """A batch id seen once: a batch sent again (lost answer, agent restart) is not stored twice."""

    __tablename__ = "log_batches"

    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[float] = mapped_column(Float)
    records: Mapped[int] = mapped_column(Integer)


class LogStatsRow(Base):
    """Per node: records received, suppressed by the log rate, dropped from a full agent buffer."""

    __tablename__ = "log_stats"

    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    received: Mapped[int] = mapped_column(Integer, default=0)
    suppressed: Mapped[int] = mapped_column(Integer, default=0)
    dropped: Mapped[int] = mapped_column(Integer, default=0)


class RuleCounterRow(Base):
    """A rule's counter on one node: packets/bytes counted since it was first seen (they
    never go backwards: `instances` holds the last reading of each kernel rule, a new
    kernel rule counts from 0) and when it last grew. A rule gone from the node leaves
    its counts to its scope's row of removed rules of its verdict (`present` false,
    rule `(removed drop)`...: store/counters.py), so sums over a VM's rules never
    shrink and the rows stay those of the rules that exist."""

    __tablename__ = "rule_counters"

    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    level: Mapped[str] = mapped_column(String(16), primary_key=True)
    scope: Mapped[str] = mapped_column(String(128), primary_key=True)
    direction: Mapped[str] = mapped_column(String(8), primary_key=True)
    rule: Mapped[str] = mapped_column(String(128), primary_key=True)
    verdict: Mapped[str] = mapped_column(String(16), default="")
    packets: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    first_seen: Mapped[float] = mapped_column(Float)
    last_hit: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)
    instances: Mapped[str] = mapped_column(Text, default="{}")  # JSON {family:handle: [packets, bytes]}, the last reading
    present: Mapped[bool] = mapped_column(Boolean, default=True)


class DiffJobRow(Base):
    """A revision whose semantic diff is still to be computed (a durable job).

    Inserted with the revision, in its transaction, leased to the controller that
    committed it; any controller takes over a job whose lease ran out (its holder
    died), and the row goes when the diff is stored.
    """

    __tablename__ = "diff_jobs"

    revision: Mapped[int] = mapped_column(Integer, ForeignKey("revisions.number"), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the controller computing it
    lease_until: Mapped[float] = mapped_column(Float, default=0.0)  # epoch seconds; free once past
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class IdempotencyKeyRow(Base):
    """A write request's `Idempotency-Key` and what it produced: a retry gets that answer."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))  # the same key with another request is refused
    revision: Mapped[int] = mapped_column(Integer)
    created: Mapped[bool] = mapped_column(Boolean)  # False: the write changed nothing
    created_at: Mapped[float] = mapped_column(Float, index=True)


class RevisionFloorRow(Base):
    """The highest revision number any agent has reported (one row).

    New revisions are numbered above it as well as above every stored one, so a
    number an agent has applied is never given to other documents, even when the
    database lost its last revisions (restored backup, asynchronous replica).
    """

    __tablename__ = "revision_floor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    number: Mapped[int] = mapped_column(Integer, default=0)


class MigrationRow(Base):
    """A live migration: running (`running_vm` set, one per VM) or finished."""

    __tablename__ = "migrations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    running_vm: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)  # NULL once finished
    vm: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(128))
    started: Mapped[float] = mapped_column(Float)
    phase: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    arrived: Mapped[bool] = mapped_column(Boolean, default=False)  # the hypervisor says the guest runs on the target
    alive_until: Mapped[float] = mapped_column(Float)  # its controller's heartbeat: past it, the migration is dead


class MigrationStepRow(Base):
    """One step of a migration for one node's agent, and its answer."""

    __tablename__ = "migration_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node: Mapped[str] = mapped_column(String(64), index=True)
    step: Mapped[str] = mapped_column(String(16))
    args: Mapped[str] = mapped_column(Text)  # JSON
    state: Mapped[str] = mapped_column(String(8))  # queued | picked | done
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class LogRollupRow(Base):
    """Denied-packet records per minute, overall and per source, destination, port, VM
    and node: what the dashboard's graphs and top lists read (kept like the records)."""

    __tablename__ = "log_rollup"

    minute: Mapped[int] = mapped_column(Integer, primary_key=True)
    dimension: Mapped[str] = mapped_column(String(8), primary_key=True)
    value: Mapped[str] = mapped_column(String(64), primary_key=True)
    records: Mapped[int] = mapped_column(Integer)
