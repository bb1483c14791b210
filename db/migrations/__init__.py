"""Alembic migrations of the provenance database (run them with `db.migrate.upgrade`)."""
