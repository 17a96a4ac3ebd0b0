"""issue16 story continuity: which story of a later edition continues which of an earlier one

Revision ID: 0008_issue16_story_links
Revises: 0007_issue11_health_outcome
Create Date: 2026-12-01 12:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_issue16_story_links"
down_revision: str | None = "0007_issue11_health_outcome"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Editions frozen before this have no links; only editions built from now on link back.
    op.create_table(
        "storylink",
        sa.Column("later_story_id", sa.Integer(), sa.ForeignKey("story.id"), primary_key=True),
        sa.Column("earlier_story_id", sa.Integer(), sa.ForeignKey("story.id"), primary_key=True),
        sa.Column("later_edition_id", sa.Integer(), sa.ForeignKey("edition.id"), nullable=False),
        sa.Column("earlier_edition_id", sa.Integer(), sa.ForeignKey("edition.id"), nullable=False),
        sa.Column("later_date", sa.Date(), nullable=False),
        sa.Column("earlier_date", sa.Date(), nullable=False),
        sa.Column("later_title", sa.String(), nullable=False),
        sa.Column("earlier_title", sa.String(), nullable=False),
        sa.Column("later_topic", sa.String(), nullable=False),
        sa.Column("earlier_topic", sa.String(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
    )
    op.create_index("ix_storylink_earlier_story_id", "storylink", ["earlier_story_id"])
    op.create_index("ix_storylink_later_edition_id", "storylink", ["later_edition_id"])
    op.create_index("ix_storylink_earlier_edition_id", "storylink", ["earlier_edition_id"])
    op.create_index("ix_storylink_earlier_date", "storylink", ["earlier_date"])


def downgrade() -> None:
    op.drop_table("storylink")
