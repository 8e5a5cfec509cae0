"""Faults an agent reports beside its apply state (`problems`: a stopped packet log,
a full buffer...), and packet log records whose agent clock was off (`agent_time`:
what the agent said; `time` then holds when the controller received the record).

Revision ID: 0005_17_hardening
Revises: 0004_19_counter_totals
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_17_hardening"
down_revision = "0004_19_counter_totals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as table:
        table.add_column(sa.Column("problems", sa.Text, nullable=False, server_default="[]"))
    with op.batch_alter_table("log_records") as table:
        table.add_column(sa.Column("agent_time", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("log_records") as table:
        table.drop_column("agent_time")
    with op.batch_alter_table("nodes") as table:
        table.drop_column("problems")
