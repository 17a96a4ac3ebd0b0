"""Alembic environment: digest passes its engine in; nothing is read from alembic.ini."""

from alembic import context
from sqlmodel import SQLModel

import digest.db.models  # noqa: F401  (registers the tables on SQLModel.metadata)

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
