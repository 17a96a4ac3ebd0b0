"""issue7 distributed collect: staging table for each source's answer in a run

Revision ID: 0004_issue7_collect_result
Revises: 0003_issue7_claims
Create Date: 2026-11-25 15:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import digest.db.models

revision: str = "0004_issue7_collect_result"
down_revision: str | None = "0003_issue7_claims"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "collectresult",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("etag", sa.String(), nullable=True),
        sa.Column("last_modified", sa.String(), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("feed_json", sa.Text(), nullable=True),
        sa.Column("created_at", digest.db.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run", "source", name="uq_collectresult"),
    )
    with op.batch_alter_table("collectresult") as batch:
        batch.create_index(batch.f("ix_collectresult_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("collectresult") as batch:
        batch.drop_index(batch.f("ix_collectresult_created_at"))
    op.drop_table("collectresult")
