"""Alembic environment: runs against the engine handed over by core.db.migrate()."""

from alembic import context
from sqlmodel import SQLModel

import core.tables  # noqa: F401  (registers the tables on SQLModel.metadata)

engine = context.config.attributes["engine"]
sqlite = engine.dialect.name == "sqlite"

with engine.connect() as connection:
    if sqlite:
        # A copy-and-move ALTER drops the old table; with foreign keys on, that DROP would run
        # the ON DELETE actions of every table pointing at it (rebuilding `provider` would
        # delete all cards). The pragma only works outside a transaction, hence the raw call.
        connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
    try:
        context.configure(
            connection=connection,
            target_metadata=SQLModel.metadata,
            render_as_batch=sqlite,  # SQLite ALTERs become copy-and-move
            compare_type=True,
            # SQLite's DDL is transactional too: one transaction for the whole upgrade, so a
            # failed step leaves nothing half-done, and its BEGIN IMMEDIATE makes processes
            # starting at once take turns (the later ones find the schema up to date).
            transactional_ddl=True,
        )
        with context.begin_transaction():
            if engine.dialect.name == "postgresql":
                # The same turn-taking on PostgreSQL, for processes starting at once.
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7243100001)")
            context.run_migrations()
        connection.commit()
    finally:
        if sqlite:
            connection.rollback()
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")
