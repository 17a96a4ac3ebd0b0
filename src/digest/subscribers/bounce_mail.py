"""Bounce mail applied: `digest bounces` reads the bounce mailbox and changes subscribers.

Each report (read by `bounces.parse_report`) is applied only to a delivery the ledger recorded:
found by a return-path token that verifies against its subscriber's row, else by the unsubscribe
token in the returned copy's List-Unsubscribe (of that very row, as the web app checks it), else
(a report with no copy of the original at all) by a failed address we sent to in the last RECENT
days. A token that does not verify (forged, damaged, or made for a deleted subscriber whose row id
a new one has), a copy that is not ours, an address we did not mail: counted unmatched, nothing
changes. A hard failure suppresses the reader at once, as a SendGrid bounce does
(`webhooks.apply_action`); soft ones when DIGEST_SOFT_BOUNCE_LIMIT editions in a row bounced.
Each message is marked seen after its commit, and a report is applied once (its fingerprint is
the event's external id), so a rerun after a crash counts nothing twice.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest.config import Settings, signing_keys
from digest.db.engine import session_scope
from digest.db.models import Delivery, DeliveryStatus, Edition, Subscriber, SubscriberEvent, SubscriberStatus
from digest.errors import SubscriberError, TokenError
from digest.subscribers.bounces import (
    MAX_BYTES,
    Failure,
    Report,
    ReturnPathSigner,
    Severity,
    bounce_signer,
    parse_report,
)
from digest.subscribers.roster import normalize_email
from digest.subscribers.unsubscribe_mail import Mailbox
from digest.subscribers.webhooks import Action, apply_action
from digest.tokens import TokenSigner, subscriber_for

log = logging.getLogger(__name__)

RECENT = timedelta(days=14)  # an address-only report must follow a delivery this recent
# Ledger states in which the message left us (FAILED: an earlier report already marked it).
LEFT_US = (DeliveryStatus.SENT.value, DeliveryStatus.UNKNOWN.value, DeliveryStatus.FAILED.value)
HARD_KIND, SOFT_KIND = "bounce", "soft-bounce"  # SubscriberEvent kinds ("bounce" as SMTP and SendGrid)


@dataclass
class BounceReport:
    """What one pass over the bounce mailbox did."""

    read: int = 0
    hard: int = 0  # hard failures applied
    soft: int = 0  # soft failures applied
    suppressed: int = 0  # readers whose status became bounced (hard, or the soft limit reached)
    delayed: int = 0  # reports that only say delivery is still being tried
    duplicates: int = 0  # reports applied before (a copy, or a rerun after a crash)
    not_bounces: list[str] = field(default_factory=list)  # no failure in it (auto-replies, ...)
    unmatched: list[str] = field(default_factory=list)  # "From: Subject (why)"


@dataclass(frozen=True, slots=True)
class _Match:
    subscriber: Subscriber
    edition_id: int
    failure: Failure


def process_bounces(box: Mailbox, *, settings: Settings, engine: sa.Engine, now: datetime) -> BounceReport:
    """Apply every unread report in the bounce mailbox; each message is marked done after its commit."""
    report = BounceReport()
    signers = (bounce_signer(settings), TokenSigner(signing_keys(settings)))
    for request in box.unread():
        report.read += 1
        apply_report(
            parse_report(box.raw(request, limit=MAX_BYTES), bounce_address=settings.bounce_address),
            report,
            engine=engine,
            signers=signers,
            soft_limit=settings.soft_bounce_limit,
            now=now,
        )
        box.mark_done(request)
    return report


def apply_report(
    parsed: Report,
    report: BounceReport,
    *,
    engine: sa.Engine,
    signers: tuple[ReturnPathSigner, TokenSigner],
    soft_limit: int,
    now: datetime,
) -> None:
    """Match one report to the deliveries it is about and apply it, in one transaction."""
    if not parsed.failures:
        report.not_bounces.append(parsed.summary)
        return
    if all(f.severity is Severity.DELAYED for f in parsed.failures):
        report.delayed += 1
        return
    with session_scope(engine) as session:
        matches, why = _matches(parsed, signers=signers, session=session, now=now)
        if not matches:
            report.unmatched.append(f"{parsed.summary} ({why})")
            log.warning("bounce matched no delivery report=%s why=%s", parsed.summary, why)
            return
        for match in matches:
            _apply(match, parsed, report, session=session, soft_limit=soft_limit, now=now)


def _matches(
    parsed: Report, *, signers: tuple[ReturnPathSigner, TokenSigner], session: Session, now: datetime
) -> tuple[list[_Match], str]:
    """The deliveries a report is about, or none and why."""
    bad = ""
    for value in parsed.verp_tokens:
        try:
            token = signers[0].read(value)
        except TokenError:
            bad = bad or "return-path token does not verify"
            continue
        subscriber = session.get(Subscriber, token.subscriber_id)
        # The MAC covers the row's token_key: forged, damaged, and made for a deleted subscriber
        # whose id a new one has (issue 12) look alike, and none of them names anyone.
        if subscriber is None or not signers[0].verify(token, subscriber.token_key):
            bad = bad or "return-path token does not verify"
            continue
        return _matched(subscriber, token.edition_id, parsed, "return-path token", session=session)
    for value in parsed.link_tokens:
        try:
            link = signers[1].verify(value)
        except TokenError:
            bad = bad or "unsubscribe token of the returned copy does not verify"
            continue
        subscriber = subscriber_for(link, session=session)  # the web app's rule: this very row
        if subscriber is None or link.edition_id is None:
            return [], "unsubscribe token of the returned copy names no subscriber or edition we have"
        return _matched(
            subscriber, link.edition_id, parsed, "unsubscribe token of the returned copy", session=session
        )
    if bad:
        # Forged or damaged: the report's own addresses are not trusted either, or a forged
        # report could suppress anyone we mail.
        return [], bad
    if parsed.has_copy:
        return [], "the returned copy is not one of our messages"
    matches = []
    for failure in parsed.failures:
        found = _recent_delivery(failure.address, session=session, now=now)
        if found is not None and failure.severity is not Severity.DELAYED:
            matches.append(_Match(found[0], found[1], failure))
    return matches, f"no token, and no address we sent to in the last {RECENT.days} days"


def _matched(
    subscriber: Subscriber, edition_id: int, parsed: Report, what: str, *, session: Session
) -> tuple[list[_Match], str]:
    """The delivery a token names, if the ledger sent it."""
    assert subscriber.id is not None
    if _delivery(subscriber.id, edition_id, session=session) is None:
        return [], f"{what} names a delivery the ledger has not sent"
    return [_Match(subscriber, edition_id, _failure_for(subscriber.email, parsed.failures))], ""


def _failure_for(email: str, failures: Sequence[Failure]) -> Failure:
    """The failure about `email`; else (a forwarding address failed) hard only if all are hard."""
    for f in failures:
        if email in (f.address, f.original):
            return f
    real = [f for f in failures if f.severity is not Severity.DELAYED]
    return next((f for f in real if f.severity is Severity.SOFT), real[0])


def _delivery(subscriber_id: int, edition_id: int, *, session: Session) -> Delivery | None:
    return session.exec(
        select(Delivery).where(
            Delivery.subscriber_id == subscriber_id,
            Delivery.edition_id == edition_id,
            col(Delivery.status).in_(LEFT_US),
        )
    ).first()


def _recent_delivery(address: str, *, session: Session, now: datetime) -> tuple[Subscriber, int] | None:
    """The subscriber at `address` and the edition last sent to them, if sent within RECENT."""
    try:
        email = normalize_email(address)
    except SubscriberError:
        return None
    subscriber = session.exec(select(Subscriber).where(Subscriber.email == email)).first()
    if subscriber is None:
        return None
    last = session.exec(
        select(Delivery)
        .where(
            Delivery.subscriber_id == subscriber.id,
            col(Delivery.status).in_(LEFT_US),
            col(Delivery.sent_at) >= now - RECENT,
        )
        .order_by(col(Delivery.sent_at).desc())
    ).first()
    return None if last is None else (subscriber, last.edition_id)


def _apply(
    match: _Match, parsed: Report, report: BounceReport, *, session: Session, soft_limit: int, now: datetime
) -> None:
    subscriber, failure = match.subscriber, match.failure
    assert subscriber.id is not None
    if failure.severity is Severity.DELAYED:  # the reader's own line says "still trying"
        report.delayed += 1
        return
    external_id = f"bounce:{parsed.fingerprint}:{subscriber.id}"
    if session.exec(select(SubscriberEvent.id).where(SubscriberEvent.external_id == external_id)).first():
        report.duplicates += 1
        return
    hard = failure.severity is Severity.HARD
    receiving = subscriber.status in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED)
    words = f"{failure.severity} {failure.status or 'no status'}: {failure.diagnostic}".strip(": ")
    apply_action(
        subscriber,
        # The same change as a SendGrid bounce; someone who left meanwhile keeps their status.
        Action(
            HARD_KIND if hard else SOFT_KIND,
            "bounce",
            SubscriberStatus.BOUNCED if hard and receiving else None,
            True,
        ),
        session=session,
        now=now,
        edition_id=match.edition_id,
        error=f"bounced later: {words}",
        detail=words[:500],
        user_agent=f"bounce report from {parsed.reporter}"[:200],
        external_id=external_id,
    )
    if hard:
        report.hard += 1
        report.suppressed += int(receiving)
        return
    report.soft += 1
    session.flush()
    run = _bounced_run(subscriber.id, match.edition_id, session=session)
    if run >= soft_limit and receiving:
        apply_action(
            subscriber,
            Action(HARD_KIND, "bounce", SubscriberStatus.BOUNCED, False),
            session=session,
            now=now,
            edition_id=match.edition_id,
            error="",
            detail=f"soft bounces in {run} editions in a row (DIGEST_SOFT_BOUNCE_LIMIT={soft_limit})",
            user_agent=f"bounce report from {parsed.reporter}"[:200],
        )
        report.suppressed += 1


def _bounced_run(subscriber_id: int, edition_id: int, *, session: Session) -> int:
    """How many editions sent to the reader in a row, around `edition_id`, bounced.

    "In a row" counts editions, not reports: one edition sent without a bounce ends a run, so a
    mailbox full now and then never adds up, while one full for three days does. The run is found
    on both sides of the edition, so reports arriving out of order still add up.
    """
    sent = list(
        session.exec(
            select(Delivery.edition_id)
            .join(Edition, col(Edition.id) == col(Delivery.edition_id))
            .where(Delivery.subscriber_id == subscriber_id, col(Delivery.status).in_(LEFT_US))
            .order_by(col(Edition.date))
        )
    )
    bounced = set(
        session.exec(
            select(SubscriberEvent.edition_id).where(
                SubscriberEvent.subscriber_id == subscriber_id,
                col(SubscriberEvent.kind).in_((HARD_KIND, SOFT_KIND)),
            )
        )
    )
    if edition_id not in sent:
        return 0
    at = sent.index(edition_id)
    start = at
    while start > 0 and sent[start - 1] in bounced:
        start -= 1
    end = at
    while end + 1 < len(sent) and sent[end + 1] in bounced:
        end += 1
    return end - start + 1 if edition_id in bounced else 0
