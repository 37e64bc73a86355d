"""Alembic environment: runs against the engine handed over by core.db.migrate()."""

from alembic import context
from sqlmodel import SQLModel

import core.tables  # noqa: F401  (registers the tables on SQLModel.metadata)

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=engine.dialect.name == "sqlite",  # SQLite ALTERs become copy-and-move
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
