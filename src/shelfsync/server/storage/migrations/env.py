"""Alembic environment: runs against the engine handed in by storage/migrate.py."""

from alembic import context

from shelfsync.server.storage.job_locks import Job, hold_for_transaction
from shelfsync.server.storage.tables import metadata

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        # Several server processes may start at once on one PostgreSQL database:
        # one migrates while the others wait, then find the schema current.
        hold_for_transaction(connection, Job.MIGRATIONS)
        context.run_migrations()
    connection.commit()
