"""Alembic environment: digest passes its engine in; nothing is read from alembic.ini."""

from alembic import context
from sqlmodel import SQLModel

import digest.db.models  # noqa: F401  (registers the tables on SQLModel.metadata)

# Tables that a library manages through its own definition: autogenerate must not drop them.
FOREIGN_TABLES = frozenset({"apscheduler_jobs"})


def _include_name(name: str | None, type_: str, _parents: object) -> bool:
    return not (type_ == "table" and name in FOREIGN_TABLES)


engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        include_name=_include_name,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
