"""Alembic environment: runs on the engine hostpower hands over."""

from alembic import context
from sqlalchemy import text

from hostpower.store.tables import Base

# Engines sharing one PostgreSQL database upgrade it when they start; the
# first takes this lock and migrates, the others wait and then find the
# schema current. (SQLite has one engine; its file lock serializes writers.)
MIGRATION_LOCK = 0x686F7374706F7772  # "hostpowr"

engine = context.config.attributes["engine"]

with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    context.run_migrations()
