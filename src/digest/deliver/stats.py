"""Per-edition numbers: recipients, outcomes, unsubscribes by method."""

from collections import Counter
from dataclasses import dataclass, field
from datetime import date

import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest.db.models import DeliveryStatus, Edition, SubscriberEvent
from digest.deliver import claims, ledger


@dataclass(frozen=True, slots=True)
class EditionStats:
    """What happened to one edition."""

    date: date
    stories: int
    recipients: int
    sent: int
    failed: int
    retry: int
    unknown: int
    skipped: int
    unsubscribes: dict[str, int]
    # Distributed send: rows by claiming worker ("host:pid") and status; empty when sent in one process.
    workers: dict[str, dict[str, int]] = field(default_factory=dict)
    bounces: int = 0  # "bounce" events: readers suppressed (at send, by webhook or by bounce mail)
    soft_bounces: int = 0  # "soft-bounce" events from bounce mail (suppressed only after a run)

    @property
    def unsubscribe_rate(self) -> float:
        """Unsubscribes from this edition's links per message sent."""
        return sum(self.unsubscribes.values()) / self.sent if self.sent else 0.0


def edition_stats(edition: Edition, *, session: Session) -> EditionStats:
    """Counts for one edition from the ledger and the subscriber events."""
    assert edition.id is not None
    counts = ledger.counts(edition.id, session=session)
    unsubscribes = Counter(
        {
            str(method): int(n)
            for method, n in session.exec(
                select(SubscriberEvent.method, sa.func.count())
                # A spam complaint ends the subscription too: it counts, under its own method.
                .where(
                    SubscriberEvent.edition_id == edition.id,
                    col(SubscriberEvent.kind).in_(("unsubscribe", "complaint")),
                )
                .group_by(SubscriberEvent.method)
            )
        }
    )
    bounces = dict(
        session.exec(
            select(SubscriberEvent.kind, sa.func.count())
            .where(
                SubscriberEvent.edition_id == edition.id,
                col(SubscriberEvent.kind).in_(("bounce", "soft-bounce")),
            )
            .group_by(SubscriberEvent.kind)
        ).all()
    )
    return EditionStats(
        date=edition.date,
        stories=edition.story_count,
        recipients=counts.recipients,
        sent=counts[DeliveryStatus.SENT],
        failed=counts[DeliveryStatus.FAILED],
        retry=counts[DeliveryStatus.RETRY] + counts[DeliveryStatus.PENDING],
        unknown=counts[DeliveryStatus.UNKNOWN],
        skipped=counts[DeliveryStatus.SKIPPED],
        unsubscribes=dict(unsubscribes),
        workers=claims.per_worker(edition.id, session=session),
        bounces=bounces.get("bounce", 0),
        soft_bounces=bounces.get("soft-bounce", 0),
    )
