"""A revision's documents as content-defined chunks, each stored once (store/chunks.py).

A revision's row held its whole documents (16 MB at 10,000 VMs) although a change
alters a line of them: 16 GB of database per 1,000 changes. New revisions store the
layout of their chunks instead; rows stored before keep their documents and are read
as they are (nothing is rewritten by the upgrade: it stays instant on a large
database).

Revision ID: 0007_document_chunks
Revises: 0006_revision_diffs
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0007_document_chunks"
down_revision = "0006_revision_diffs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "document_chunks",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("text", sa.Text, nullable=False),
    )
    op.add_column("revisions", sa.Column("layout", sa.Text, nullable=True))


def downgrade() -> None:
    # the older schema reads documents from the revision's row: put them back there
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT number, layout FROM revisions WHERE layout IS NOT NULL")).all()
    for number, layout in rows:
        documents: dict[str, str] = {}
        for name, digests in json.loads(layout).items():
            texts: dict[str, str] = dict(connection.execute(sa.text("SELECT digest, text FROM document_chunks WHERE digest IN :digests")
                                            .bindparams(sa.bindparam("digests", expanding=True)), {"digests": sorted(set(digests))}).all())
            documents[name] = "".join(texts[key] for key in digests)
        connection.execute(sa.text("UPDATE revisions SET documents = :documents WHERE number = :number"),
                           {"documents": json.dumps(documents, sort_keys=True, separators=(",", ":")), "number": number})
    op.drop_column("revisions", "layout")  # SQLite >= 3.35 drops a column in place (a batch copy would break revision_diffs' key)
    op.drop_table("document_chunks")
