"""The journal of a send: it writes each transport call's answers to the ledger (bounced readers
suppressed in the same transaction) and keeps the tally that becomes the send's SendReport.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlmodel import Session

from digest.clock import Clock
from digest.db.models import Subscriber, SubscriberStatus
from digest.deliver import ledger
from digest.deliver.base import OutgoingMessage, SendResult
from digest.deliver.proofs import NO_SEEDS, SeedReport
from digest.deliver.sender import Call
from digest.subscribers.roster import record_event

# A report lists this many failures; the rest are counted (every error is in the ledger), so a
# send that fails for all of 100,000 readers does not hold 100,000 strings.
FAILURES_KEPT = 20


@dataclass(frozen=True, slots=True)
class SendReport:
    """What one `send` did for one edition."""

    edition_date: date
    story_count: int
    sent: int = 0
    failed: int = 0
    retry: int = 0
    skipped: int = 0
    unknown: int = 0
    failures: tuple[str, ...] = ()  # "address: error", the first FAILURES_KEPT of failed + retry
    already: int = 0  # readers (of the audience) who had this edition before this send
    seeds: SeedReport = NO_SEEDS  # copies for DIGEST_SEED_ADDRESSES, outside the counts above

    @property
    def nothing_new(self) -> bool:
        """True when this send had nothing to do because everyone already had the edition."""
        return bool(self.already) and not (self.sent or self.failed or self.retry or self.skipped)

    @property
    def needs_attention(self) -> bool:
        """True when something failed or is unknown (the exit status tells cron)."""
        return bool(self.failed or self.retry or self.unknown)


@dataclass
class Journal:
    """Writes the ledger around each transport call (see deliver/sender.py) and keeps the tally."""

    writer: ledger.LedgerWriter
    clock: Clock
    sent: int = 0
    failed: int = 0
    retry: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)  # the first FAILURES_KEPT
    on_progress: Callable[[int], None] | None = None  # told the answers of each call (issue 14)

    def report(
        self,
        edition_date: date,
        story_count: int,
        *,
        unknown: int = 0,
        already: int = 0,
        seeds: SeedReport = NO_SEEDS,
    ) -> SendReport:
        """The tally as a send's report."""
        return SendReport(
            edition_date=edition_date,
            story_count=story_count,
            sent=self.sent,
            failed=self.failed,
            retry=self.retry,
            skipped=self.skipped,
            unknown=unknown,
            failures=tuple(self.failures),
            already=already,
            seeds=seeds,
        )

    def step(self, done: Sequence[Call], claim: Sequence[OutgoingMessage]) -> None:
        """Record finished calls and mark the next call `sending`, in one transaction."""
        if not done and not claim:
            return
        now = self.clock()
        bounced = []
        for batch, results in done:
            failed = [r for r in results if not r.ok]
            self.sent += len(results) - len(failed)
            if not failed:
                continue
            by_id = {m.delivery_id: m for m in batch}
            for result in failed:
                message = by_id[result.delivery_id]
                if len(self.failures) < FAILURES_KEPT:
                    self.failures.append(f"{message.to_email}: {result.error}")
                if result.permanent:
                    self.failed += 1
                else:
                    self.retry += 1
                if result.bounce:
                    bounced.append((message, result))
        results = [r for _, call_results in done for r in call_results]
        claim_ids = [m.delivery_id for m in claim]
        if results and self.on_progress is not None:
            self.on_progress(len(results))
        if not bounced:
            self.writer.write(results, claim_ids, now=now)
            return
        # Rare: the bounced readers are suppressed in the same transaction as the answers.
        with self.writer.transaction() as conn:
            self.writer.record(results, conn=conn, now=now)
            with Session(bind=conn) as session:
                for message, result in bounced:
                    suppress_bounced(session, message, result, now=now)
                session.flush()
            self.writer.mark_sending(claim_ids, conn=conn, now=now)


def suppress_bounced(
    session: Session, message: OutgoingMessage, result: SendResult, *, now: datetime
) -> None:
    """Mark a reader whose address bounced as bounced (if still active) and record why."""
    fresh = session.get(Subscriber, message.subscriber_id)
    if fresh is not None and fresh.status == SubscriberStatus.ACTIVE:
        fresh.status, fresh.updated_at = SubscriberStatus.BOUNCED, now
        session.add(fresh)
        record_event(
            session, fresh, "bounce", "bounce", now=now, edition_id=message.edition_id, detail=result.error
        )
