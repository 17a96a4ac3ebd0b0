"""issue11 stories: each article keeps its story-matching terms

Revision ID: 0006_issue11_stories_terms
Revises: 0005_issue12_token_key
Create Date: 2026-11-30 12:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_issue11_stories_terms"
down_revision: str | None = "0005_issue12_token_key"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Articles stored before this have none: a collect computes theirs from title and summary.
    with op.batch_alter_table("article") as batch:
        batch.add_column(sa.Column("story_terms", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("article") as batch:
        batch.drop_column("story_terms")
