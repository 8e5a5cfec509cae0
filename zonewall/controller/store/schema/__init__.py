"""The controller database's schema versions: Alembic scripts, run by store.db.upgrade.

Named `schema`, not `migrations`: in zonewall a migration is a VM moving between nodes."""
