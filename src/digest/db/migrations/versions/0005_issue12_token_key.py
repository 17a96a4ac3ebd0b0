"""issue12 token keys: a random key per subscriber, signed into every link

Revision ID: 0005_issue12_token_key
Revises: 0004_issue7_collect_result
Create Date: 2026-11-25 18:00:00

Existing subscribers get a random key and `legacy_links` set: links already mailed to them carry
no key and must keep working (CAN-SPAM wants opt-out links to work for 30 days at least). A row
created later has `legacy_links` false, so a keyless link never acts on it, even if SQLite gives
it the id of a deleted row.
"""
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_issue12_token_key"
down_revision: str | None = "0004_issue7_collect_result"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000  # rows updated per statement batch while backfilling


def upgrade() -> None:
    with op.batch_alter_table("subscriber") as batch:
        batch.add_column(sa.Column("token_key", sa.String(32), nullable=True))
        batch.add_column(
            sa.Column("legacy_links", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    subscriber = sa.table(
        "subscriber",
        sa.column("id", sa.Integer()),
        sa.column("token_key", sa.String()),
        sa.column("legacy_links", sa.Boolean()),
    )
    conn = op.get_bind()
    ids = [row[0] for row in conn.execute(sa.select(subscriber.c.id).order_by(subscriber.c.id))]
    update = (
        sa.update(subscriber)
        .where(subscriber.c.id == sa.bindparam("row_id"))
        .values(token_key=sa.bindparam("key"), legacy_links=sa.true())
    )
    for start in range(0, len(ids), BATCH):
        conn.execute(
            update, [{"row_id": i, "key": secrets.token_urlsafe(12)} for i in ids[start : start + BATCH]]
        )
    with op.batch_alter_table("subscriber") as batch:
        batch.alter_column("token_key", existing_type=sa.String(32), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("subscriber") as batch:
        batch.drop_column("legacy_links")
        batch.drop_column("token_key")
