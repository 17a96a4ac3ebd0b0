"""issue14 before a send: seed copies outside the ledger, and the editor's decisions on a draft

Revision ID: 0009_issue14_desk
Revises: 0008_issue16_story_links
Create Date: 2026-11-30 14:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from digest.db.models import UTCDateTime

revision: str = "0009_issue14_desk"
down_revision: str | None = "0008_issue16_story_links"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "seedcopy",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("edition_id", sa.Integer(), sa.ForeignKey("edition.id"), nullable=False, index=True),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("edition_id", "address", name="uq_seed_copy"),
    )
    op.create_table(
        "editiondecision",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("edition_date", sa.Date(), nullable=False, index=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("story_id", sa.Integer(), nullable=True),
        sa.Column("topic", sa.String(), nullable=True),
        sa.Column("note", sa.String(), nullable=True),
        sa.Column("actor", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("editiondecision")
    op.drop_table("seedcopy")
