"""Table models, and nothing else. (No `from __future__ import annotations` here: SQLModel needs
the real annotations to build relationships and columns.)"""

import base64
import datetime as dt
import enum
import secrets
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone; we put it back)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} refused: pass aware UTC datetimes")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _ts(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=nullable, index=index))


class SubscriberStatus(enum.StrEnum):
    """Where a subscriber stands; only `active` ones receive editions."""

    PENDING = "pending"
    ACTIVE = "active"
    PAUSED = "paused"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class DeliveryStatus(enum.StrEnum):
    """Life of one (edition, subscriber) delivery row."""

    PENDING = "pending"  # built, not yet handed to a transport
    SENDING = "sending"  # claimed; if a crash leaves it here the outcome is unknown
    SENT = "sent"
    FAILED = "failed"  # permanent failure (5xx, 4xx other than rate limits)
    RETRY = "retry"  # transient failure, a later send tries again
    UNKNOWN = "unknown"  # in flight during a crash: maybe delivered, maybe not
    SKIPPED = "skipped"  # not sent on purpose (empty digest, unsubscribed meanwhile)


class Source(SQLModel, table=True):
    """A feed as configured in digest.toml, with its fetch state and health."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True)
    url: str
    etag: str | None = None
    last_modified: str | None = None
    last_fetched_at: datetime | None = _ts()
    last_success_at: datetime | None = _ts()
    last_error: str | None = None
    last_error_at: datetime | None = _ts()
    failure_streak: int = 0  # runs in a row that failed or gave a malformed feed
    last_outcome: str | None = Field(default=None, max_length=16)  # ok, malformed or failed (issue 11)


class Story(SQLModel, table=True):
    """One event, however many articles (from however many sources) report it."""

    id: int | None = Field(default=None, primary_key=True)
    title: str
    url: str
    topic: str | None = Field(default=None, index=True)
    topic_reason: str | None = None
    published_at: datetime = _ts(nullable=False, index=True)
    first_seen_at: datetime = _ts(nullable=False, index=True)


class Article(SQLModel, table=True):
    """One entry of one feed, stored once per canonical URL."""

    id: int | None = Field(default=None, primary_key=True)
    source_id: int = Field(foreign_key="source.id", index=True)
    story_id: int | None = Field(default=None, foreign_key="story.id", index=True)
    guid: str | None = Field(default=None, index=True)
    url: str = Field(unique=True)
    title: str
    summary_html: str = ""
    author: str | None = None
    tags: str = ""  # feed categories, "\n"-separated: evidence for topic matching
    published_at: datetime = _ts(nullable=False, index=True)
    first_seen_at: datetime = _ts(nullable=False)
    updated_at: datetime | None = _ts()
    # stories.terms of the title and summary, computed once (in a parse worker): a collect compares
    # new articles with every recent one, and recomputing those terms each time cost ~50 us each
    story_terms: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary(), nullable=True))


class Topic(SQLModel, table=True):
    """A topic name as configured; kept so subscribers' choices can be checked and listed."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    position: int = 0


def new_token_key() -> str:
    """A fresh random key for a new subscriber's links (16 URL-safe characters)."""
    return secrets.token_urlsafe(12)


def new_token_keys(count: int) -> list[str]:
    """`count` keys as `new_token_key` makes them, from one read of the system's randomness (an
    import adds thousands: one read each cost more than the rest of the row's insert)."""
    text = base64.urlsafe_b64encode(secrets.token_bytes(12 * count)).decode()
    return [text[i : i + 16] for i in range(0, 16 * count, 16)]  # 12 bytes are 16 characters


class Subscriber(SQLModel, table=True):
    """A reader: address, chosen topics, time zone, status and how they consented."""

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, index=True)
    name: str = ""
    topics: str = ""  # topic names, "\n"-separated; empty means all topics
    timezone: str | None = None  # IANA name; None means DIGEST_TIMEZONE
    status: SubscriberStatus = Field(
        default=SubscriberStatus.ACTIVE,
        sa_column=sa.Column(sa.String(16), nullable=False, index=True),
    )
    consent_source: str = ""  # e.g. "import:subscribers/example.csv", "web", "cli"
    consent_at: datetime | None = _ts()
    consent_ip: str | None = None
    confirmed_at: datetime | None = _ts()
    confirmed_ip: str | None = None  # where a web sign-up was confirmed from (double opt-in)
    paused_until: datetime | None = _ts()
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)
    # Signed into every link (issue 12): a subscriber deleted and created again, even under a
    # reused row id, gets a new key, so links sent to the old one do nothing to the new one.
    # The column default also covers Core inserts (bulk imports, benchmarks).
    token_key: str = Field(
        default_factory=new_token_key,
        sa_column=sa.Column(sa.String(32), nullable=False, default=new_token_key),
    )
    # True for rows that existed before token keys (migration 0005): their mail carries links
    # without a key, which keep working for them (CAN-SPAM: opt-out links must keep working).
    legacy_links: bool = Field(
        default=False,
        sa_column=sa.Column(sa.Boolean(), nullable=False, default=False, server_default=sa.false()),
    )


class Edition(SQLModel, table=True):
    """One day's digest, frozen when built so every subscriber gets the same content."""

    id: int | None = Field(default=None, primary_key=True)
    date: dt.date = Field(unique=True, index=True)
    subject: str
    content_json: str  # the composed edition (compose.Edition) as JSON
    story_count: int = 0
    built_at: datetime = _ts(nullable=False)
    sent_at: datetime | None = _ts()
    # Set when a send readies the edition (deliver/send.py's open_edition, under the send lock),
    # cleared by a later send's crash sweep once none of its rows is pending, retry or sending
    # (deliver/open_sends.py).
    # The sweeps look for rows left `sending` only in these editions, so the ledger needs no
    # index on its status, which made every status update a non-HOT one (issue 15).
    sending_since: datetime | None = _ts()


class EditionStory(SQLModel, table=True):
    """Which stories an edition carried: a story goes into one edition only."""

    edition_id: int = Field(foreign_key="edition.id", primary_key=True)
    story_id: int = Field(foreign_key="story.id", primary_key=True, unique=True)
    topic: str
    position: int


class StoryLink(SQLModel, table=True):
    """A follow-up (issue 16): a story a later edition carried continues one an earlier edition
    carried. Written once, when the later edition is frozen; never merges the two stories."""

    __table_args__ = (sa.Index("ix_storylink_earlier_date", "earlier_date"),)

    later_story_id: int = Field(foreign_key="story.id", primary_key=True)
    earlier_story_id: int = Field(foreign_key="story.id", primary_key=True, index=True)
    later_edition_id: int = Field(foreign_key="edition.id", index=True)
    earlier_edition_id: int = Field(foreign_key="edition.id", index=True)
    later_date: dt.date
    earlier_date: dt.date
    later_title: str  # as the editions showed them (a story split by topic shows its part's title)
    earlier_title: str
    later_topic: str
    earlier_topic: str
    rank: int = 0  # 0 for the newest earlier story of the later one


class Delivery(SQLModel, table=True):
    """The ledger: one row per (edition, subscriber), the only record of what was sent."""

    __table_args__ = (
        sa.UniqueConstraint("edition_id", "subscriber_id", name="uq_delivery"),
        # A send reads its edition's rows a page at a time in id order (ledger.sendable_rows) and
        # a worker its batch's id range (deliver/claims.py). Through uq_delivery the database
        # found every row of the edition and sorted them, for every page: a 100,000-reader send
        # on SQLite spent 6 s of its 17 s there (issue 15). Neither column ever changes, so the
        # status updates stay HOT on PostgreSQL.
        sa.Index("ix_delivery_edition_page", "edition_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # Found by edition through uq_delivery or ix_delivery_edition_page, whose first column it is.
    edition_id: int = Field(foreign_key="edition.id")
    subscriber_id: int = Field(foreign_key="subscriber.id", index=True)
    # Not indexed: a send updates it twice a message, and on PostgreSQL an update that changes no
    # indexed column stays on its page (HOT) and writes no index entry; half the WAL a message
    # (issue 15). Every query by status also names the edition (Edition.sending_since).
    status: DeliveryStatus = Field(
        default=DeliveryStatus.PENDING,
        sa_column=sa.Column(sa.String(16), nullable=False),
    )
    attempts: int = 0
    error: str | None = None
    message_id: str | None = None
    claimed_at: datetime | None = _ts()
    # Distributed send (issue 7): the worker ("host:pid") that claimed the row; kept after the
    # answer so `digest stats` can count per worker. Single-process sends leave it empty.
    claimed_by: str | None = None
    sent_at: datetime | None = _ts()
    updated_at: datetime = _ts(nullable=False)


class SeedCopy(SQLModel, table=True):
    """A copy of an edition for a DIGEST_SEED_ADDRESSES address (inbox monitoring, issue 14).

    Outside the ledger and the subscriber counts; one row per (edition, address), claimed
    (`sending`, committed) before the transport call, so an address gets an edition at most once.
    """

    __table_args__ = (sa.UniqueConstraint("edition_id", "address", name="uq_seed_copy"),)

    id: int | None = Field(default=None, primary_key=True)
    edition_id: int = Field(foreign_key="edition.id", index=True)
    address: str = Field(max_length=320)
    status: str = Field(max_length=16)  # sending, sent or failed (a failed one is tried again)
    error: str | None = None
    updated_at: datetime = _ts(nullable=False)


class EditionDecision(SQLModel, table=True):
    """One decision of the editor's desk about the draft of a date (issue 14), in order.

    `action` is drop, pin or move (a story, to `topic`), split (a merged story, done at once to the
    stories and kept here as the record), note (the editor's note; the latest counts) or approve.
    Applied by compose.apply_decisions while the edition is a draft; frozen into it when built.
    """

    id: int | None = Field(default=None, primary_key=True)
    edition_date: dt.date = Field(index=True)
    action: str = Field(max_length=16)
    story_id: int | None = None
    topic: str | None = None
    note: str | None = None
    actor: str = Field(default="cli", max_length=16)  # cli or web
    created_at: datetime = _ts(nullable=False)


class SubscriberEvent(SQLModel, table=True):
    """Every change to a subscriber: what, how, when, from which edition's link, and by what agent."""

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscriber.id", index=True)
    edition_id: int | None = Field(default=None, foreign_key="edition.id", index=True)
    kind: str = Field(index=True)  # subscribe, confirm, unsubscribe, resubscribe, bounce, ...
    method: str  # one-click, link, preferences, admin, import, bounce, complaint, webhook
    user_agent: str | None = None
    ip: str | None = None
    detail: str | None = None
    external_id: str | None = Field(default=None, unique=True)  # e.g. SendGrid sg_event_id
    created_at: datetime = _ts(nullable=False, index=True)


class ScheduleRun(SQLModel, table=True):
    """One scheduled run (collect, a zone's send, expiry): when, by whom, and how it ended."""

    id: int | None = Field(default=None, primary_key=True)
    job: str = Field(index=True)  # collect, send, expire
    key: str = Field(index=True)  # e.g. "2026-11-25 Asia/Tokyo" for a send: what the run was for
    scheduled_for: datetime = _ts(nullable=False)
    started_at: datetime = _ts(nullable=False, index=True)
    finished_at: datetime | None = _ts()
    status: str = Field(index=True)  # running, ok, failed, skipped, interrupted
    detail: str = ""
    owner: str = ""  # the scheduler instance that ran it


class SchedulerLease(SQLModel, table=True):
    """Who may act as the scheduler now: only one process holds the lease at a time."""

    name: str = Field(primary_key=True)
    owner: str
    acquired_at: datetime = _ts(nullable=False)
    expires_at: datetime = _ts(nullable=False)


class CollectResult(SQLModel, table=True):
    """One source's answer in a distributed collection run (issue 7), staged for the coordinator.

    Workers only write here; the coordinator alone stores articles and stories from these rows,
    so clustering keeps one writer and the same order as a collect in one process. One row per
    (run, source): a task delivered twice writes nothing the second time.
    """

    __table_args__ = (sa.UniqueConstraint("run", "source", name="uq_collectresult"),)

    id: int | None = Field(default=None, primary_key=True)
    run: str
    source: str  # the source's name (unique in digest.toml)
    status: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))  # ok, not-modified, failed
    etag: str | None = None
    last_modified: str | None = None
    error: str | None = None
    feed_json: str | None = Field(default=None, sa_column=sa.Column(sa.Text(), nullable=True))
    created_at: datetime = _ts(nullable=False, index=True)
