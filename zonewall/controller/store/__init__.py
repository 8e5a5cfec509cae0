"""The controller's database: SQLAlchemy 2 models, Alembic migrations, and one
module per kind of record (revisions, tokens, nodes)."""
