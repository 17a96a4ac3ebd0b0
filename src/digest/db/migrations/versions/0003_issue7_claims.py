"""issue7 distributed send: which worker claimed a delivery row

Revision ID: 0003_issue7_claims
Revises: 0002_issue6_schedule
Create Date: 2026-11-25 13:55:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_issue7_claims"
down_revision: str | None = "0002_issue6_schedule"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("delivery") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery") as batch:
        batch.drop_column("claimed_by")
