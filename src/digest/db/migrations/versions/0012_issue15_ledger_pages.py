"""issue15 the ledger's rows of an edition are read in id order through an index

Revision ID: 0012_issue15_ledger_pages
Revises: 0011_issue15_ledger_hot
Create Date: 2026-12-01 12:00:00

A send reads its edition's ledger a page at a time: `edition_id = ? AND id > ? ORDER BY id
LIMIT n`. 0011 dropped `ix_delivery_edition_id`, which on SQLite was also an index on
(edition_id, rowid) and answered that query by a range; through `uq_delivery` SQLite found every
row of the edition and sorted them for every page, so a send's reads grew with the square of its
readers (100,000 readers: 6 s of a 17 s send). PostgreSQL walked the primary key instead, through
the rows of every earlier edition. Both now read the page by a range of this index. Neither
column changes after the insert, so a send's status updates stay HOT (0011).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012_issue15_ledger_pages"
down_revision: str | None = "0011_issue15_ledger_hot"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_delivery_edition_page", "delivery", ["edition_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_delivery_edition_page", table_name="delivery")
