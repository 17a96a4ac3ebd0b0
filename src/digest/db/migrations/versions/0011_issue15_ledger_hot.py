"""issue15 the ledger's status is not indexed: its updates stay on their page (HOT)

Revision ID: 0011_issue15_ledger_hot
Revises: 0010_issue15_sqlite_times
Create Date: 2026-12-01 03:30:00

A send updates every ledger row twice (`sending`, then the answer). With an index on `status`
each update wrote a new entry into all five of the table's indexes; without it PostgreSQL keeps
most of them on their heap page and writes no index entry (a 2,000-reader send over SMTP: 76% of
its updates HOT instead of none, 6.1 MB of WAL instead of 11.7 MB). `ix_delivery_edition_id`
repeated the first column of `uq_delivery` and goes too.

The crash sweeps found `sending` rows through that index, in any edition; they now look only in
the editions whose send is open (`edition.sending_since`). Every edition that may still hold a
pending, retry or sending row is marked open here, so a crash before this release is still found.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from digest.db.models import UTCDateTime

revision: str = "0011_issue15_ledger_hot"
down_revision: str | None = "0010_issue15_sqlite_times"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("edition", sa.Column("sending_since", UTCDateTime(), nullable=True))
    edition = sa.table(
        "edition",
        sa.column("id", sa.Integer),
        sa.column("built_at", UTCDateTime()),
        sa.column("sending_since", UTCDateTime()),
    )
    delivery = sa.table("delivery", sa.column("edition_id", sa.Integer), sa.column("status", sa.String))
    live = sa.select(delivery.c.edition_id).where(delivery.c.status.in_(("pending", "retry", "sending")))
    # Since the edition was built (the sweeps only ask whether it is set; no clock read here).
    op.execute(sa.update(edition).where(edition.c.id.in_(live)).values(sending_since=edition.c.built_at))
    op.drop_index("ix_delivery_status", table_name="delivery")
    op.drop_index("ix_delivery_edition_id", table_name="delivery")


def downgrade() -> None:
    op.create_index("ix_delivery_edition_id", "delivery", ["edition_id"], unique=False)
    op.create_index("ix_delivery_status", "delivery", ["status"], unique=False)
    with op.batch_alter_table("edition") as batch_op:
        batch_op.drop_column("sending_since")
