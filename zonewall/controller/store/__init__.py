"""The controller's database: SQLAlchemy 2 models, its schema versions (Alembic, `schema/`), and one
module per kind of record (revisions, tokens, nodes)."""
