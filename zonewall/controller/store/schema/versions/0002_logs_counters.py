"""Packet logs (with the indexes the searches use), batch ids, log stats, rule counters,
and the last apply's duration per node.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# (name, columns): every common filter walks an index in time order
LOG_INDEXES = [
    ("ix_log_records_time", ["time"]),
    ("ix_log_records_vm_time", ["vm", "time"]),
    ("ix_log_records_zone_time", ["zone", "time"]),
    ("ix_log_records_node_time", ["node", "time"]),
    ("ix_log_records_rule_time", ["rule", "time"]),
    ("ix_log_records_dport_time", ["dport", "time"]),
    ("ix_log_records_src_key", ["src_key"]),
    ("ix_log_records_dst_key", ["dst_key"]),
]


def upgrade() -> None:
    op.create_table(
        "log_records",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("vm", sa.String(64), nullable=True),
        sa.Column("zone", sa.String(64), nullable=True),
        sa.Column("nic", sa.String(80), nullable=True),
        sa.Column("direction", sa.String(8), nullable=True),
        sa.Column("family", sa.String(8), nullable=True),
        sa.Column("src", sa.String(45), nullable=True),
        sa.Column("dst", sa.String(45), nullable=True),
        sa.Column("src_key", sa.String(32), nullable=True),
        sa.Column("dst_key", sa.String(32), nullable=True),
        sa.Column("proto", sa.String(16), nullable=True),
        sa.Column("sport", sa.Integer, nullable=True),
        sa.Column("dport", sa.Integer, nullable=True),
        sa.Column("icmp_type", sa.Integer, nullable=True),
        sa.Column("verdict", sa.String(16), nullable=True),
        sa.Column("rule", sa.String(128), nullable=True),
        sa.Column("scope", sa.String(128), nullable=True),
        sa.Column("level", sa.String(16), nullable=True),
        sa.Column("iface", sa.String(32), nullable=True),
    )
    for name, columns in LOG_INDEXES:
        op.create_index(name, "log_records", columns)
    op.create_table(
        "log_batches",
        sa.Column("node", sa.String(64), primary_key=True),
        sa.Column("batch_id", sa.String(64), primary_key=True),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("records", sa.Integer, nullable=False),
    )
    op.create_table(
        "log_stats",
        sa.Column("node", sa.String(64), primary_key=True),
        sa.Column("received", sa.Integer, nullable=False),
        sa.Column("suppressed", sa.Integer, nullable=False),
        sa.Column("dropped", sa.Integer, nullable=False),
    )
    op.create_table(
        "rule_counters",
        sa.Column("node", sa.String(64), primary_key=True),
        sa.Column("level", sa.String(16), primary_key=True),
        sa.Column("scope", sa.String(128), primary_key=True),
        sa.Column("direction", sa.String(8), primary_key=True),
        sa.Column("rule", sa.String(128), primary_key=True),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("packets", sa.BigInteger, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("last_hit", sa.Float, nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("apply_seconds", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("apply_seconds")
    op.drop_table("rule_counters")
    op.drop_table("log_stats")
    op.drop_table("log_batches")
    for name, _ in LOG_INDEXES:
        op.drop_index(name, "log_records")
    op.drop_table("log_records")
