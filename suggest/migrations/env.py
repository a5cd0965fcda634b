"""Alembic environment of the suggestion service's tables (own version table)."""

from __future__ import annotations

from alembic import context

from suggest.schema import metadata

VERSION_TABLE = "alembic_version_suggest"

connection = context.config.attributes["connection"]
context.configure(
    connection=connection, target_metadata=metadata, render_as_batch=True, version_table=VERSION_TABLE
)
with context.begin_transaction():
    context.run_migrations()
