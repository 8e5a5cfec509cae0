"""A revision's semantic diff in a table of its own.

The diff was a column of the revision's row, written after the commit; SQLite
rewrites a whole row to update one column, and a revision's row holds its documents
(16 MB at 10,000 VMs): storing each diff cost ~0.9 s. Older revisions keep their
diffs in the old columns, which are still read (models.RevisionRow.diff).

Revision ID: 0006_revision_diffs
Revises: 0005_17_hardening
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_revision_diffs"
down_revision = "0005_17_hardening"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revision_diffs",
        sa.Column("revision", sa.Integer, sa.ForeignKey("revisions.number"), primary_key=True),
        sa.Column("diff", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )


def downgrade() -> None:
    # the diffs go back where the older schema reads them
    op.execute("UPDATE revisions SET diff = (SELECT d.diff FROM revision_diffs d WHERE d.revision = revisions.number), "
               "diff_error = (SELECT d.error FROM revision_diffs d WHERE d.revision = revisions.number) "
               "WHERE number IN (SELECT revision FROM revision_diffs)")
    op.drop_table("revision_diffs")
