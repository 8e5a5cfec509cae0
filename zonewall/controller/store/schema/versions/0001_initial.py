"""The first schema: revisions, tokens, nodes, node logs.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revisions",
        sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("change", sa.Text, nullable=False),
        sa.Column("rollback_of", sa.Integer, nullable=True),
        sa.Column("documents", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("diff", sa.Text, nullable=True),
        sa.Column("diff_error", sa.Text, nullable=True),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("node", sa.String(64), nullable=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_tokens_secret_hash", "tokens", ["secret_hash"], unique=True)
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_contact", sa.DateTime(timezone=True), nullable=False),
        sa.Column("agent_version", sa.String(64), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("applied_revision", sa.Integer, nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("ruleset_hash", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("drift_repairs", sa.Integer, nullable=False),
        sa.Column("taps", sa.Text, nullable=False),
    )
    op.create_table(
        "node_logs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("node", sa.String(64), sa.ForeignKey("nodes.name"), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_node_logs_node", "node_logs", ["node"])


def downgrade() -> None:
    op.drop_index("ix_node_logs_node", "node_logs")
    op.drop_table("node_logs")
    op.drop_table("nodes")
    op.drop_index("ix_tokens_secret_hash", "tokens")
    op.drop_table("tokens")
    op.drop_table("revisions")
