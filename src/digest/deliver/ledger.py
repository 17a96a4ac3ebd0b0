"""The delivery ledger: one row per (edition, subscriber); claims and results are written in bulk."""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest.db.models import Delivery, DeliveryStatus, Subscriber, SubscriberStatus
from digest.deliver.base import SendResult

SENDABLE = (DeliveryStatus.PENDING, DeliveryStatus.RETRY)


def ensure_deliveries(
    edition_id: int, *, session: Session, now: datetime, audience: sa.ColumnElement[bool] | None = None
) -> int:
    """Add a pending row for every active subscriber (of `audience`) without one (INSERT ... SELECT)."""
    has_row = sa.exists().where(
        col(Delivery.edition_id) == edition_id, col(Delivery.subscriber_id) == col(Subscriber.id)
    )
    source = sa.select(
        sa.literal(edition_id),
        col(Subscriber.id),
        sa.literal(DeliveryStatus.PENDING.value),
        sa.literal(0),
        sa.literal(now, type_=Delivery.__table__.c.updated_at.type),  # type: ignore[attr-defined]
    ).where(col(Subscriber.status) == SubscriberStatus.ACTIVE.value, ~has_row)
    if audience is not None:  # e.g. the subscribers of one time zone (scheduler)
        source = source.where(audience)
    insert = sa.insert(Delivery).from_select(
        ["edition_id", "subscriber_id", "status", "attempts", "updated_at"], source
    )
    result = session.execute(insert)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def mark_interrupted(edition_id: int, *, session: Session, now: datetime) -> int:
    """Rows left `sending` by a crash: maybe delivered, maybe not. Mark them `unknown`."""
    result = session.execute(
        sa.update(Delivery)
        .where(
            col(Delivery.edition_id) == edition_id,
            col(Delivery.status) == DeliveryStatus.SENDING.value,
        )
        .values(status=DeliveryStatus.UNKNOWN.value, updated_at=now, error="interrupted while sending")
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def requeue_unknown(edition_id: int, *, session: Session, now: datetime) -> int:
    """`--resend-unknown`: put the unknown rows back in the queue."""
    result = session.execute(
        sa.update(Delivery)
        .where(
            col(Delivery.edition_id) == edition_id,
            col(Delivery.status) == DeliveryStatus.UNKNOWN.value,
        )
        .values(status=DeliveryStatus.RETRY.value, updated_at=now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def claim_batch(
    edition_id: int,
    *,
    session: Session,
    now: datetime,
    size: int,
    not_claimed_since: datetime,
    audience: sa.ColumnElement[bool] | None = None,
) -> list[tuple[Delivery, Subscriber]]:
    """Take up to `size` sendable rows not tried since `not_claimed_since` and mark them `sending`.

    The caller commits before sending, so a crash leaves the rows visibly in flight.
    """
    rows = list(
        session.exec(
            select(Delivery, Subscriber)
            .join(Subscriber, col(Delivery.subscriber_id) == col(Subscriber.id))
            .where(col(Delivery.edition_id) == edition_id, col(Delivery.status).in_(SENDABLE))
            .where(sa.or_(col(Delivery.claimed_at).is_(None), col(Delivery.claimed_at) < not_claimed_since))
            .where(audience if audience is not None else sa.true())  # e.g. one time zone (scheduler)
            .order_by(col(Delivery.id))
            .limit(size)
        )
    )
    if rows:
        session.execute(
            sa.update(Delivery)
            .where(col(Delivery.id).in_([d.id for d, _ in rows]))
            .values(
                status=DeliveryStatus.SENDING.value,
                claimed_at=now,
                updated_at=now,
                attempts=col(Delivery.attempts) + 1,
            )
        )
    return rows


def record_results(results: Sequence[SendResult], *, session: Session, now: datetime) -> None:
    """Write every transport answer in one bulk UPDATE by primary key."""
    if not results:
        return
    session.execute(
        sa.update(Delivery),
        [
            {
                "id": r.delivery_id,
                "status": (
                    DeliveryStatus.SENT
                    if r.ok
                    else DeliveryStatus.FAILED
                    if r.permanent
                    else DeliveryStatus.RETRY
                ).value,
                "error": r.error,
                "message_id": r.provider_id,
                "sent_at": now if r.ok else None,
                "updated_at": now,
            }
            for r in results
        ],
    )


def skip(delivery_ids: Sequence[int], reason: str, *, session: Session, now: datetime) -> None:
    """Mark rows skipped on purpose, with the reason (e.g. nothing new for their topics)."""
    if delivery_ids:
        session.execute(
            sa.update(Delivery)
            .where(col(Delivery.id).in_(list(delivery_ids)))
            .values(status=DeliveryStatus.SKIPPED.value, error=reason, updated_at=now)
        )


@dataclass(frozen=True, slots=True)
class LedgerCounts:
    """How many rows of an edition are in each status."""

    by_status: dict[str, int]

    @property
    def recipients(self) -> int:
        """All rows."""
        return sum(self.by_status.values())

    def __getitem__(self, status: DeliveryStatus) -> int:
        return self.by_status.get(status.value, 0)


def counts(edition_id: int, *, session: Session) -> LedgerCounts:
    """Rows of an edition by status."""
    rows = session.exec(
        select(Delivery.status, sa.func.count())
        .where(Delivery.edition_id == edition_id)
        .group_by(Delivery.status)
    ).all()
    return LedgerCounts(dict(Counter({str(status): int(n) for status, n in rows})))
