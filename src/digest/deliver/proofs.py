"""Copies outside the ledger (issue 14): test sends and seed copies.

A test send (`digest send --test ADDRESS`, `--as SUBSCRIBER`) sends the edition of a date, frozen
or still a draft, through the configured transport with "[Test] " before the subject. It reads
the database and writes nothing: no ledger row, no event, no stats, no edition frozen, no send
lock taken, so it can neither block nor change the real send.

Seed copies go to DIGEST_SEED_ADDRESSES, the operator's own inboxes at several providers, to see
where a real edition lands (inbox, promotions, spam). They carry the real subject and the generic
copy (every topic, no reader's name or working token), are counted apart from subscribers, and
each address gets an edition once (a SeedCopy row claimed before its transport call). A seed that
fails is logged and tried again by the next send of the edition; it never stops the send.

Neither carries a reader's VERP return path: a bounce of these copies must never suppress a reader.
Through the file transport they are written apart from the readers' messages: `<outbox>/test/`
and `<outbox>/seeds/`.
"""

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import col, select

from digest import compose
from digest.config import Settings
from digest.db.engine import session_scope
from digest.db.models import Edition, SeedCopy, Subscriber
from digest.deliver.base import OutgoingMessage, SendResult, Transport
from digest.deliver.file import FileTransport
from digest.deliver.message import new_message_id
from digest.deliver.transports import make_transport
from digest.editions import edition_or_draft
from digest.errors import DeliveryError, SubscriberError
from digest.newsletter import Newsletter
from digest.render.copies import Renderer
from digest.render.email import RenderedDigest, archive_values
from digest.subscribers.roster import get_subscriber, topics_of

log = logging.getLogger(__name__)

TEST_PREFIX = "[Test] "


@dataclass(frozen=True, slots=True)
class CopyResult:
    """What happened to one copy outside the ledger."""

    address: str
    ok: bool
    error: str | None = None
    where: str | None = None  # the file the file transport wrote


@dataclass(frozen=True, slots=True)
class TestSend:
    """What `digest send --test` did."""

    __test__ = False  # not a pytest test class, whatever its name

    edition_date: date
    subject: str
    built: bool  # False: the edition is still a draft (the test shows what it would hold now)
    reader: str | None  # whose copy (`--as`), None for the generic one
    results: tuple[CopyResult, ...]

    @property
    def failed(self) -> int:
        """How many addresses the copy did not reach."""
        return sum(not r.ok for r in self.results)


def outside_transport(settings: Settings, *, clock: Callable[[], datetime], folder: str) -> Transport:
    """The configured transport; the file transport writes into `<outbox>/<folder>`."""
    if settings.transport == "file":
        return FileTransport(settings.outbox_dir / folder, clock=clock)
    return make_transport(settings, clock=clock)


def generic_copy(
    renderer: Renderer,
    rendered: RenderedDigest,
    *,
    to: str,
    number: int,
    edition_id: int,
    subject_prefix: str = "",
) -> OutgoingMessage:
    """A copy for an address that is no reader: every slot generic (no name, no working token)."""
    content = renderer.content_for(rendered)
    if subject_prefix:
        content = dataclasses.replace(
            content, key=content.key + "-test", subject=subject_prefix + content.subject
        )
    values = {**archive_values(renderer.settings.base_url), "email": to}
    return OutgoingMessage(
        delivery_id=number,
        subscriber_id=0,
        edition_id=edition_id,
        to_email=to,
        to_name="",
        content=content,
        values=values,
        message_id=new_message_id(renderer.newsletter.newsletter.sender_domain),
        unsubscribe_url=values["unsubscribe_url"],
    )


def _as_test(message: OutgoingMessage, *, to: str, number: int) -> OutgoingMessage:
    """A reader's own copy readdressed to a test address: their body and links, "[Test]" subject,
    no VERP return path (its bounce is the tester's, not the reader's)."""
    content = message.content
    content = dataclasses.replace(content, key=content.key + "-test", subject=TEST_PREFIX + content.subject)
    return dataclasses.replace(
        message, delivery_id=number, to_email=to, content=content, return_path=None, token_key=None
    )


def _find_reader(who: str, *, engine: sa.Engine) -> Subscriber:
    """A subscriber by address or by id (`--as 42`)."""
    with session_scope(engine) as session:
        if who.strip().isdigit():
            row = session.get(Subscriber, int(who.strip()))
            if row is None:
                raise SubscriberError(f"--as: no subscriber with id {who.strip()}")
            return row
        return get_subscriber(who, session=session)


def _send_all(transport: Transport, messages: Sequence[OutgoingMessage]) -> list[CopyResult]:
    """Send each message in the transport's batches; a failure is that address's alone."""
    results: list[SendResult] = []
    by_id = {m.delivery_id: m for m in messages}
    try:
        for start in range(0, len(messages), transport.max_batch):
            try:
                results += transport.send(messages[start : start + transport.max_batch])
            except DeliveryError as e:  # the relay is unreachable: every copy not yet sent fails
                done = {r.delivery_id for r in results}
                results += [
                    SendResult(m.delivery_id, ok=False, error=str(e))
                    for m in messages
                    if m.delivery_id not in done
                ]
                break
    finally:
        transport.close()
    return [
        CopyResult(
            by_id[r.delivery_id].to_email,
            r.ok,
            r.error,
            r.provider_id if transport.name == "file" and r.ok else None,
        )
        for r in results
    ]


def send_test(
    settings: Settings,
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    renderer: Renderer,
    edition_date: date,
    to: Sequence[str],
    clock: Callable[[], datetime],
    as_reader: str | None = None,
    transport: Transport | None = None,
) -> TestSend:
    """Send the edition of a date (frozen, else its draft) to `to`, marked "[Test]"; writes nothing
    to the database. `as_reader` (an address or an id): that reader's copy, with their name, topics,
    time zone and links (which act for them, as in their own copy)."""
    now = clock()
    with session_scope(engine) as session:
        edition, row = edition_or_draft(
            newsletter, session=session, edition_date=edition_date, now=now, zone=settings.zone
        )
    edition_id = (row.id or 0) if row is not None else 0
    reader = _find_reader(as_reader, engine=engine) if as_reader else None
    if reader is not None:
        copy, rendered = renderer.digest_for(edition, topics_of(reader), reader.timezone)
        own = renderer.message(rendered, subscriber=reader, delivery_id=0, edition_id=edition_id)
        messages = [_as_test(own, to=address, number=i) for i, address in enumerate(to, 1)]
    else:
        copy, rendered = renderer.digest_for(edition, frozenset())
        messages = [
            generic_copy(
                renderer, rendered, to=address, number=i, edition_id=edition_id, subject_prefix=TEST_PREFIX
            )
            for i, address in enumerate(to, 1)
        ]
    if copy.story_count == 0:
        what = f"{reader.email}'s topics" if reader is not None else "it"
        raise DeliveryError(f"edition {edition_date}: no stories in {what}, so there is nothing to test")
    transport = transport or outside_transport(settings, clock=clock, folder="test")
    results = _send_all(transport, messages)
    for r in results:
        log.info("test send edition=%s to=%s ok=%s error=%s", edition_date, r.address, r.ok, r.error)
    return TestSend(
        edition_date=edition_date,
        subject=messages[0].subject,
        built=row is not None,
        reader=reader.email if reader is not None else None,
        results=tuple(results),
    )


# --- seed copies ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeedReport:
    """The seed copies one send made (addresses that had the edition before are not counted)."""

    sent: int = 0
    failures: tuple[str, ...] = ()  # "address: error"


NO_SEEDS = SeedReport()


def _claim_seeds(edition_id: int, seeds: Sequence[str], *, engine: sa.Engine, now: datetime) -> list[str]:
    """The seeds this process may send the edition to, marked `sending` (committed) first:
    those with no row yet, and those whose copy failed before."""
    claimed = []
    for address in seeds:
        try:
            with session_scope(engine) as session:
                row = session.exec(
                    select(SeedCopy).where(SeedCopy.edition_id == edition_id, SeedCopy.address == address)
                ).first()
                if row is None:
                    session.add(
                        SeedCopy(edition_id=edition_id, address=address, status="sending", updated_at=now)
                    )
                else:
                    # Only a failed copy is taken again; the UPDATE's WHERE makes it one taker's.
                    taken = session.execute(
                        sa.update(SeedCopy)
                        .where(col(SeedCopy.id) == row.id, col(SeedCopy.status) == "failed")
                        .values(status="sending", updated_at=now)
                    )
                    if not taken.rowcount:  # type: ignore[attr-defined]
                        continue
        except sa.exc.IntegrityError:
            continue  # another send claimed it first
        claimed.append(address)
    return claimed


def send_seed_copies(
    settings: Settings,
    *,
    engine: sa.Engine,
    renderer: Renderer,
    edition_date: date,
    clock: Callable[[], datetime],
    transport: Transport | None = None,
) -> SeedReport:
    """Send the frozen edition of a date to each DIGEST_SEED_ADDRESSES address that has not had it.

    Never raises for a delivery failure: a failed seed is logged, recorded and tried again later.
    """
    if not settings.seeds:
        return SeedReport()
    with session_scope(engine) as session:
        row = session.exec(select(Edition).where(Edition.date == edition_date)).first()
    if row is None or row.id is None or row.story_count == 0:
        return SeedReport()  # no edition went to readers, so none to the seeds
    now = clock()
    claimed = _claim_seeds(row.id, settings.seeds, engine=engine, now=now)
    if not claimed:
        return SeedReport()
    _, rendered = renderer.digest_for(compose.Edition.from_json(row.content_json), frozenset())
    messages = [
        generic_copy(renderer, rendered, to=address, number=i, edition_id=row.id)
        for i, address in enumerate(claimed, 1)
    ]
    results = _send_all(transport or outside_transport(settings, clock=clock, folder="seeds"), messages)
    with session_scope(engine) as session:
        for result in results:
            session.execute(
                sa.update(SeedCopy)
                .where(col(SeedCopy.edition_id) == row.id, col(SeedCopy.address) == result.address)
                .values(status="sent" if result.ok else "failed", error=result.error, updated_at=clock())
            )
    failures = tuple(f"{r.address}: {r.error}" for r in results if not r.ok)
    for line in failures:
        log.warning("seed copy failed edition=%s %s (tried again by the next send)", edition_date, line)
    return SeedReport(sent=sum(r.ok for r in results), failures=failures)
