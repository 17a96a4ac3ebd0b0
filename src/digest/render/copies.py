"""Each reader's copy: a rendered digest filled with their greeting, signed links and list headers."""

import logging
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from sqlmodel import Session, select

from digest import compose
from digest.config import Settings, signing_keys
from digest.db.models import (
    Subscriber,
    SubscriberStatus,
)
from digest.deliver.base import MessageContent, OutgoingMessage
from digest.deliver.message import MessageIds, unsubscribe_mailto
from digest.newsletter import Newsletter
from digest.render.email import (
    RenderedDigest,
    check_environment,
    check_slots,
    make_environment,
    personal_values,
    render_digest,
)
from digest.subscribers.bounces import ReturnPathSigner, bounce_signer, return_path
from digest.tokens import LinkToken, TokenSigner

log = logging.getLogger(__name__)


class Reader(Protocol):
    """Who a message is for: a Subscriber row, or a ledger.PendingRow in the send loop."""

    @property
    def id(self) -> int | None:
        """The subscriber's id."""
        ...

    @property
    def email(self) -> str:
        """The address."""
        ...

    @property
    def name(self) -> str:
        """The name for the greeting ("" for none)."""
        ...

    @property
    def token_key(self) -> str:
        """The subscriber's key, signed into their links (issue 12)."""
        ...


KEEP_EDITIONS = 3  # dates whose rendered copies a long-running process keeps
KEEP_ARCHIVE_PAGES = 32  # archive pages the web app keeps rendered
# What tells two copies of one edition apart: the topics shown, and the topics of the "Earlier:"
# links kept (a link is kept when its topic is chosen).
_Content = tuple[frozenset[str], frozenset[str]]


def _linked_topics(copy: compose.Edition) -> frozenset[str]:
    return frozenset(link.topic for t in copy.topics for s in t.stories for link in s.earlier)


@dataclass
class Renderer:
    """Renders each distinct (edition, topic set, time zone) once and fills it per reader.

    Story times are shown in the reader's time zone, so a copy is rendered per zone among its
    readers, not per reader: a reader costs a dictionary lookup, whatever their zone.
    """

    settings: Settings
    newsletter: Newsletter
    env: jinja2.Environment
    signer: TokenSigner
    # Signs each reader's VERP return path when DIGEST_BOUNCE_ADDRESS is set (issue 14).
    verp: ReturnPathSigner | None = None
    _cache: dict[tuple[date, _Content, str], tuple[compose.Edition, RenderedDigest]] = field(
        default_factory=dict
    )
    _copies: dict[tuple[date, frozenset[str]], tuple[compose.Edition, _Content]] = field(default_factory=dict)
    _archives: dict[tuple[date, object], RenderedDigest] = field(default_factory=dict)
    _zones: dict[str | None, ZoneInfo] = field(default_factory=dict, repr=False)
    _contents: dict[int, tuple[RenderedDigest, MessageContent]] = field(default_factory=dict)
    _used: dict[date, None] = field(default_factory=dict)  # dates cached, least recently used first
    _message_ids: MessageIds | None = field(default=None, repr=False, compare=False)
    # A threads-pool worker shares one renderer between its tasks: without the lock two tasks
    # could render one copy twice and give its messages two MessageContent keys.
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def digest_for(
        self, edition: compose.Edition, chosen: frozenset[str], timezone: str | None = None
    ) -> tuple[compose.Edition, RenderedDigest]:
        """The subscriber's copy of the edition, rendered with story times in `timezone` (None:
        the newsletter's DIGEST_TIMEZONE); cached per topic set and zone."""
        zone = self.zone(timezone)
        with self._lock:
            self._used.pop(edition.date, None)
            self._used[edition.date] = None  # the most recently used date goes last
            picked = self._copies.get((edition.date, chosen))
            if picked is None:
                copy = compose.for_subscriber(edition, chosen)
                # Topic sets that give the same stories and keep the same "Earlier:" links (issue
                # 16: only to topics the reader chose) share one rendered copy.
                content = (copy.topic_names, _linked_topics(copy))
                picked = self._copies[(edition.date, chosen)] = (copy, content)
            copy, content = picked
            key = (edition.date, content, zone.key)
            hit = self._cache.get(key)
            if hit is None:
                rendered = self._render(copy, zone)
                hit = self._cache[key] = (copy, rendered)
                self._forget_old_editions()
        return hit

    def archive_for(self, edition: compose.Edition) -> RenderedDigest:
        """The whole edition as its public archive page shows it, with the "Later:" lines it has
        now (compose.with_later); rendered again only when those change."""
        key = (edition.date, tuple((s.id, s.later) for t in edition.topics for s in t.stories if s.later))
        with self._lock:
            hit = self._archives.pop(key, None)
            if hit is None:
                hit = self._render(edition, self.settings.zone, web_copy=True)
            self._archives[key] = hit  # the most recently used goes last
            while len(self._archives) > KEEP_ARCHIVE_PAGES:
                del self._archives[next(iter(self._archives))]
        return hit

    def _render(self, copy: compose.Edition, zone: ZoneInfo, *, web_copy: bool = False) -> RenderedDigest:
        rendered = render_digest(
            self.env,
            self.newsletter.newsletter,
            copy,
            archive_url=self.archive_url(copy.date),
            zone=zone,
            web_copy=web_copy,
        )
        if not web_copy:  # the web copy has no personal links: it says how to subscribe instead
            check_slots(rendered)
        return rendered

    def zone(self, name: str | None) -> ZoneInfo:
        """A reader's time zone by name: the newsletter's for None, or for a name zoneinfo does not
        know (hand-edited in the database; the scheduler logs those and leaves their readers out)."""
        hit = self._zones.get(name)
        if hit is None:
            try:
                hit = ZoneInfo(name) if name else self.settings.zone
            except (ZoneInfoNotFoundError, ValueError):
                hit = self.settings.zone
            self._zones[name] = hit
        return hit

    def _forget_old_editions(self) -> None:
        """Drop the copies of all but the KEEP_EDITIONS dates used last (caller holds the lock).

        A worker or scheduler lives for months and renders each day's copies; kept forever they
        would grow without bound. Recency, not the date, decides, so a catch-up send of an old
        edition keeps its copies while it runs.
        """
        if len(self._used) <= KEEP_EDITIONS:
            return
        stale = set(list(self._used)[:-KEEP_EDITIONS])
        for day in stale:
            del self._used[day]
        for key in [k for k in self._cache if k[0] in stale]:
            del self._cache[key]
        for picked in [k for k in self._copies if k[0] in stale]:
            del self._copies[picked]
        alive = {id(rendered) for _, rendered in self._cache.values()}
        for ident in [i for i in self._contents if i not in alive]:
            del self._contents[ident]

    def prepare(self, edition: compose.Edition, topic_sets: Iterable[frozenset[str]]) -> int:
        """Render the full edition and every given topic set's copy now (in the newsletter's time
        zone: a template error shows up in any one); the number of copies of the edition so far."""
        for chosen in [frozenset(), *topic_sets]:
            self.digest_for(edition, chosen)
        with self._lock:
            return sum(1 for day, _, _ in self._cache if day == edition.date)

    def archive_url(self, day: date) -> str:
        """Public web copy of an edition."""
        return f"{self.settings.base_url}/archive/{day.isoformat()}"

    def links(self, subscriber: Reader, edition_id: int | None) -> tuple[str, str]:
        """(unsubscribe URL, preferences URL) for one reader and edition."""
        assert subscriber.id is not None
        token = self.signer.sign(LinkToken(subscriber.id, edition_id, subscriber.token_key))
        base = self.settings.base_url
        return f"{base}/unsubscribe/{token}", f"{base}/preferences/{token}"

    def content_for(self, rendered: RenderedDigest) -> MessageContent:
        """The shared part of every message of one rendered digest (made once, reused)."""
        with self._lock:
            hit = self._contents.get(id(rendered))
            if hit is None or hit[0] is not rendered:
                info = self.newsletter.newsletter
                content = MessageContent(
                    key=secrets.token_hex(8),
                    from_email=info.from_email,
                    from_name=info.from_name or info.title,
                    subject=rendered.subject,
                    list_id=f"{info.title} <{_list_id(info.title, info.sender_domain)}>",
                    html=rendered.html,
                    text=rendered.text,
                    reply_to=info.reply_to,
                )
                hit = self._contents[id(rendered)] = (rendered, content)
        return hit[1]

    def message(
        self,
        rendered: RenderedDigest,
        *,
        subscriber: Reader,
        delivery_id: int,
        edition_id: int,
    ) -> OutgoingMessage:
        """One reader's message: shared content, the reader's slot values and unsubscribe links."""
        assert subscriber.id is not None
        unsubscribe_url, preferences_url = self.links(subscriber, edition_id)
        mailbox = self.settings.unsubscribe_mailto
        return OutgoingMessage(
            delivery_id=delivery_id,
            subscriber_id=subscriber.id,
            edition_id=edition_id,
            to_email=subscriber.email,
            to_name=subscriber.name,
            content=self.content_for(rendered),
            values=personal_values(
                email=subscriber.email,
                name=subscriber.name,
                unsubscribe_url=unsubscribe_url,
                preferences_url=preferences_url,
            ),
            message_id=self.message_id(),
            unsubscribe_url=unsubscribe_url,
            unsubscribe_mailto=(
                unsubscribe_mailto(mailbox, unsubscribe_url.rsplit("/", 1)[1]) if mailbox else None
            ),
            token_key=subscriber.token_key,
            return_path=self.return_path(subscriber, edition_id),
        )

    def message_id(self) -> str:
        """A new unique Message-ID on the newsletter's domain."""
        ids = self._message_ids
        domain = self.newsletter.newsletter.sender_domain
        if ids is None or ids.domain != domain:
            ids = self._message_ids = MessageIds(domain)
        return ids()

    def return_path(self, subscriber: Reader, edition_id: int) -> str | None:
        """The reader's VERP envelope sender for an edition, or None without DIGEST_BOUNCE_ADDRESS."""
        address = self.settings.bounce_address
        if address is None or self.verp is None or not subscriber.id:
            return None  # the sample reader (id 0) of a preview or a test send has no bounces to read
        return return_path(
            address,
            signer=self.verp,
            subscriber_id=subscriber.id,
            edition_id=edition_id,
            token_key=subscriber.token_key,
        )


def _list_id(title: str, domain: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-") or "digest"
    return f"{slug}.{domain}"


def make_renderer(settings: Settings, newsletter: Newsletter) -> Renderer:
    """A renderer with the configured templates and link signer."""
    env = make_environment(settings.templates_dir)
    if settings.templates_dir is not None:
        # mjml-python drops unknown tags and attributes silently: say so for the user's templates.
        for problem in check_environment(env):
            log.warning("template check: %s", problem)
    return Renderer(
        settings=settings,
        newsletter=newsletter,
        env=env,
        signer=TokenSigner(signing_keys(settings)),
        verp=bounce_signer(settings) if settings.bounce_address else None,
    )


def active_topic_sets(*, session: Session) -> set[frozenset[str]]:
    """The distinct topic choices of active subscribers (one rendered copy each)."""
    rows = session.exec(
        select(Subscriber.topics).where(Subscriber.status == SubscriberStatus.ACTIVE).distinct()
    )
    return {frozenset(t for t in topics.split("\n") if t) for topics in rows}
