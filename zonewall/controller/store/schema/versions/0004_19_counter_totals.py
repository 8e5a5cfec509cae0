"""Rule counters that never go backwards: per-kernel-rule readings beside each total,
rows of rules gone from a node kept (their counts stay in the sums); per-minute
roll-ups of denied packets for the dashboard's graphs.

Revision ID: 0004_19_counter_totals
Revises: 0003_i15_ha
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_19_counter_totals"
down_revision = "0003_i15_ha"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rule_counters") as table:
        table.add_column(sa.Column("instances", sa.Text, nullable=False, server_default="{}"))
        table.add_column(sa.Column("present", sa.Boolean, nullable=False, server_default=sa.true()))
    op.create_table(
        "log_rollup",
        sa.Column("minute", sa.Integer, primary_key=True),  # epoch minutes
        sa.Column("dimension", sa.String(8), primary_key=True),  # all | src | dst | port | vm | node
        sa.Column("value", sa.String(64), primary_key=True),
        sa.Column("records", sa.Integer, nullable=False),
    )
    op.create_index("ix_log_rollup_dimension_minute", "log_rollup", ["dimension", "minute"])


def downgrade() -> None:
    op.drop_index("ix_log_rollup_dimension_minute", "log_rollup")
    op.drop_table("log_rollup")
    with op.batch_alter_table("rule_counters") as table:
        table.drop_column("present")
        table.drop_column("instances")
