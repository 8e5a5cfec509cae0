"""Several controllers on one database: durable semantic-diff jobs, idempotency keys,
the revision floor, and live migrations with their agents' steps.

Revisions stored without a diff and without a diff error (their controller died while
computing it) get a job, so a controller computes their diff now.

Revision ID: 0003_i15_ha
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_i15_ha"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "diff_jobs",
        sa.Column("revision", sa.Integer, sa.ForeignKey("revisions.number"), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.Float, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("created", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])
    op.create_table(
        "revision_floor",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("number", sa.Integer, nullable=False),
    )
    op.execute("INSERT INTO revision_floor (id, number) VALUES (1, 0)")
    op.create_table(
        "migrations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("running_vm", sa.String(64), nullable=True, unique=True),
        sa.Column("vm", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("started", sa.Float, nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("arrived", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("alive_until", sa.Float, nullable=False),
    )
    op.create_table(
        "migration_steps",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("step", sa.String(16), nullable=False),
        sa.Column("args", sa.Text, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("answer", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_migration_steps_node", "migration_steps", ["node"])
    op.execute("INSERT INTO diff_jobs (revision, owner, lease_until, attempts) "
               "SELECT number, NULL, 0, 0 FROM revisions WHERE diff IS NULL AND diff_error IS NULL")


def downgrade() -> None:
    op.drop_index("ix_migration_steps_node", "migration_steps")
    op.drop_table("migration_steps")
    op.drop_table("migrations")
    op.drop_table("revision_floor")
    op.drop_index("ix_idempotency_keys_created_at", "idempotency_keys")
    op.drop_table("idempotency_keys")
    op.drop_table("diff_jobs")
