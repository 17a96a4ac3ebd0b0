"""Which editions a send has opened: the only ones whose ledger rows can be left `sending`.

The ledger's status has no index (a message's two updates then stay on their page: HOT updates
on PostgreSQL, issue 15), so the crash sweeps (ledger.mark_interrupted, claims.expire_sending)
cannot find `sending` rows across the whole ledger cheaply. A send marks its edition open before
it marks any row; the sweeps look in the open editions only, and close those left with nothing
to answer.
"""

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col

from digest.db.models import Delivery, DeliveryStatus, Edition
from digest.db.queries import SENDABLE


def opened() -> sa.Select[Any]:
    """The editions a send opened whose rows may still change (the only ones that can hold a
    `sending` row): a subquery for `Delivery.edition_id.in_(...)`."""
    return sa.select(col(Edition.id)).where(col(Edition.sending_since).is_not(None))


def open_send(edition_id: int, *, session: Session, now: datetime) -> None:
    """Note that a send of the edition began, before any of its rows is marked `sending`.

    Call it holding the send lock, in the transaction that readies the ledger rows; the mark
    stays until a crash sweep finds none of the edition's rows pending, retry or sending. A
    statement, not an attribute of a loaded Edition, which a sweep earlier in the session may
    have changed behind the ORM's back.
    """
    session.execute(
        sa.update(Edition)
        .where(col(Edition.id) == edition_id, col(Edition.sending_since).is_(None))
        .values(sending_since=now)
        .execution_options(synchronize_session=False)
    )


def close_finished_sends(*, session: Session) -> int:
    """Clear `sending_since` on the editions none of whose rows is pending, retry or sending.

    No process can mark such a row `sending` again without a send reopening its edition first:
    only a pending or retry row is marked; a row turns retry from `sending` (its edition still
    open), and pending or retry from anything else only in open_edition, under the send lock,
    which reopens the edition. Safe beside live workers too: a row one of them is about to mark
    is still pending or retry to this statement, so its edition stays open.
    """
    live = sa.exists().where(
        col(Delivery.edition_id) == col(Edition.id),
        col(Delivery.status).in_([*(s.value for s in SENDABLE), DeliveryStatus.SENDING.value]),
    )
    result = session.execute(
        sa.update(Edition)
        .where(col(Edition.sending_since).is_not(None), ~live)
        .values(sending_since=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
