"""issue15 one text form for times in SQLite: rewrite those a bulk insert stored with "+00:00"

Revision ID: 0010_issue15_sqlite_times
Revises: 0009_issue14_desk
Create Date: 2026-11-30 18:10:00

Before 8bfc0e9, db/bulk.insert_rows (the collect's new articles, the import's new subscribers)
handed SQLite aware datetimes, which its driver wrote as "2026-11-30 07:00:00+00:00", while
every other write stores "2026-11-30 07:00:00.000000" (UTC, no offset). Both read back as the
same time, but SQL compares them as text: "07:00:00+00:00" sorts before "07:00:00.000000", so a
window's edge could leave out an article stamped on that very second. This rewrites them to the
one form. PostgreSQL stores timestamptz and is not touched.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_issue15_sqlite_times"
down_revision: str | None = "0009_issue14_desk"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    inspector = sa.inspect(bind)
    for table in inspector.get_table_names():
        if table == "alembic_version":
            continue
        for column in inspector.get_columns(table):
            if not isinstance(column["type"], sa.DateTime):
                continue
            name = f'"{column["name"]}"'
            base = f"substr({name}, 1, length({name}) - 6)"
            # str(datetime) prints the microseconds only when there are some.
            op.execute(
                f'UPDATE "{table}" SET {name} = '
                f"CASE WHEN instr({base}, '.') > 0 THEN {base} ELSE {base} || '.000000' END "
                f"WHERE {name} LIKE '%+00:00'"
            )


def downgrade() -> None:
    pass  # the old form was a mistake; the rewritten times mean the same
