"""issue11 source health: the outcome of each source's last run (ok, malformed or failed)

Revision ID: 0007_issue11_health_outcome
Revises: 0006_issue11_stories_terms
Create Date: 2026-11-25 18:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_issue11_health_outcome"
down_revision: str | None = "0006_issue11_stories_terms"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("source") as batch:
        batch.add_column(sa.Column("last_outcome", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("source") as batch:
        batch.drop_column("last_outcome")
