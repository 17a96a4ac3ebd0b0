"""The editor's desk (issue 14): decisions about a day's draft before it is frozen.

The editor drops a story, pins one to the top of its topic, moves one to another topic, splits a
wrong merge back into its stories, writes a note shown at the top, and approves the edition. Each
decision is a row of EditionDecision (the log, in order); `editions.editor_decisions` folds the
log into `compose.Decisions`, which compose applies as plain data, so the draft a preview shows,
the test send and the frozen edition agree. A split changes the stories themselves at once (the
articles other than the lead become stories of their own, which clustering never merges back) and
is logged too. Approving freezes the edition as it stands, so what was approved is what is sent.

Once an edition is frozen (built by a send, or approved), its decisions are closed: the desk
refuses with the reason. The CLI (`digest edition ...`) and the editor's page call these functions.
"""

import logging
import re
from dataclasses import dataclass
from datetime import date, datetime, tzinfo

import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest import compose, editions
from digest.db import queries
from digest.db.engine import session_scope
from digest.db.models import Article, EditionDecision, Story
from digest.errors import EditorError
from digest.newsletter import Newsletter

log = logging.getLogger(__name__)

ACTIONS = ("drop", "pin", "move", "split", "note", "approve")
NOTE_MAX = 1000  # characters: a note is a few sentences above the stories, not an essay
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")  # all but the line feed


@dataclass(frozen=True, slots=True)
class DeskStory:
    """One story waiting for the edition, as the desk shows it."""

    id: int
    title: str
    url: str
    topic: str
    reason: str  # why this topic (what `digest topics` prints), or the editor's move
    sources: tuple[str, ...]
    state: str  # "in", "pinned", "dropped" or "over the caps"

    @property
    def splittable(self) -> bool:
        """More than one outlet reported it: it may be a wrong merge."""
        return len(self.sources) > 1


@dataclass(frozen=True, slots=True)
class Desk:
    """The draft of a date with everything the editor decided about it."""

    edition_date: date
    frozen: bool  # built: decisions are closed
    sent: bool
    approved_at: datetime | None
    edition: compose.Edition  # the draft with the decisions applied, or the frozen edition
    stories: tuple[DeskStory, ...]  # the edition's stories first, in order; then the others
    decisions: int  # how many were made

    @property
    def note(self) -> str:
        """The editor's note."""
        return self.edition.note


def show(
    newsletter: Newsletter, *, engine: sa.Engine, edition_date: date, now: datetime, zone: tzinfo
) -> Desk:
    """The desk of a date: its draft (or frozen edition) and every story waiting for it."""
    with session_scope(engine) as session:
        row = queries.edition_for(edition_date, session=session)
        approval = queries.approval_of(edition_date, session=session)
        decided = queries.decisions_for(edition_date, session=session)
        if row is not None:
            edition = compose.Edition.from_json(row.content_json)
            waiting: list[compose.StoryItem] = []
        else:
            edition = editions.compose_draft(
                newsletter, session=session, edition_date=edition_date, now=now, zone=zone
            )
            waiting = editions.candidates(
                newsletter, session=session, edition_date=edition_date, now=now, zone=zone
            )
    folded = editions.editor_decisions(newsletter, decided)
    shown: list[DeskStory] = []
    seen: set[int] = set()
    for section in edition.topics:
        for item in section.stories:
            if item.id not in seen:
                seen.add(item.id)
                shown.append(_desk_story(item, "pinned" if item.id in folded.pinned else "in"))
    for item in waiting:
        if item.id not in seen:
            seen.add(item.id)
            shown.append(_desk_story(item, "dropped" if item.id in folded.dropped else "over the caps"))
    return Desk(
        edition_date=edition_date,
        frozen=row is not None,
        sent=row is not None and row.sent_at is not None,
        approved_at=approval.created_at if approval is not None else None,
        edition=edition,
        stories=tuple(shown),
        decisions=len(decided),
    )


def _desk_story(item: compose.StoryItem, state: str) -> DeskStory:
    return DeskStory(
        id=item.id,
        title=item.title,
        url=item.url,
        topic=item.topic,
        reason=item.reason,
        sources=tuple(s.name for s in item.sources),
        state=state,
    )


def clean_note(text: str) -> str:
    """The editor's note as stored: control characters dropped, trimmed, at most NOTE_MAX."""
    text = _CONTROL.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n")).strip()
    if len(text) > NOTE_MAX:
        raise EditorError(f"the note has {len(text):,} characters; at most {NOTE_MAX} are shown")
    return text


def decide(
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    edition_date: date,
    action: str,
    now: datetime,
    zone: tzinfo,
    story_id: int | None = None,
    topic: str | None = None,
    note: str | None = None,
    actor: str = "cli",
) -> str:
    """Record one decision about the draft of a date; a line saying what it did, or EditorError."""
    if action not in ACTIONS or action == "approve":
        raise EditorError(f"unknown action {action!r} (one of drop, pin, move, split, note)")
    with session_scope(engine) as session:
        _check_open(edition_date, session=session)
        if action == "note":
            text = clean_note(note or "")
            _record(session, edition_date, "note", now=now, note=text, actor=actor)
            return f"edition {edition_date}: note {'set' if text else 'removed'}"
        waiting = {
            i.id: i
            for i in editions.candidates(
                newsletter, session=session, edition_date=edition_date, now=now, zone=zone
            )
        }
        item = waiting.get(story_id or 0)
        if item is None:
            raise EditorError(
                f"story {story_id} is not waiting for the edition of {edition_date} "
                "(`digest edition show` lists the stories by number)"
            )
        if action == "move":
            topic = _known_topic(newsletter, topic)
        if action == "split":
            parts = split_story(item.id, session=session)
            _record(session, edition_date, "split", now=now, story_id=item.id, actor=actor)
            return f"story {item.id} split into {len(parts)} stories: {', '.join(map(str, parts))}"
        _record(session, edition_date, action, now=now, story_id=item.id, topic=topic, actor=actor)
    done = {"drop": "dropped", "pin": "pinned to the top of its topic", "move": f"moved to {topic}"}[action]
    return f"story {item.id} ({_short(item.title)}) {done}"


def _short(title: str) -> str:
    return title if len(title) <= 60 else title[:59] + "…"


def _known_topic(newsletter: Newsletter, topic: str | None) -> str:
    by_lower = {name.lower(): name for name in newsletter.topic_names}
    name = by_lower.get((topic or "").strip().lower())
    if name is None:
        raise EditorError(f"unknown topic {topic!r} (topics: {', '.join(newsletter.topic_names)})")
    return name


def _check_open(edition_date: date, *, session: Session) -> None:
    row = queries.edition_for(edition_date, session=session)
    if row is not None:
        raise EditorError(
            f"edition {edition_date} is frozen (built {row.built_at:%Y-%m-%d %H:%M} UTC"
            + (", sent" if row.sent_at else "")
            + "): the desk changes only a draft"
        )


def _record(
    session: Session,
    edition_date: date,
    action: str,
    *,
    now: datetime,
    actor: str,
    story_id: int | None = None,
    topic: str | None = None,
    note: str | None = None,
) -> None:
    session.add(
        EditionDecision(
            edition_date=edition_date,
            action=action,
            story_id=story_id,
            topic=topic,
            note=note,
            actor=actor,
            created_at=now,
        )
    )
    log.info(
        "desk date=%s action=%s story=%s topic=%s actor=%s", edition_date, action, story_id, topic, actor
    )


def split_story(story_id: int, *, session: Session) -> list[int]:
    """Undo a merge: every article of the story but its lead becomes a story of its own (the ids,
    the story's first). Clustering never merges stories stored apart, so it stays undone."""
    story = session.get(Story, story_id)
    articles = list(
        session.exec(
            select(Article)
            .where(Article.story_id == story_id)
            .order_by(col(Article.published_at), col(Article.id))
        )
    )
    if story is None or len(articles) < 2:
        raise EditorError(f"story {story_id} has a single article: there is nothing to split")
    lead = next((a for a in articles if a.url == story.url), articles[0])
    ids = [story_id]
    for article in articles:
        if article is lead:
            continue
        apart = Story(
            title=article.title,
            url=article.url,
            published_at=article.published_at,
            first_seen_at=article.first_seen_at,
        )
        session.add(apart)
        session.flush()
        assert apart.id is not None
        article.story_id = apart.id
        session.add(article)
        ids.append(apart.id)
    return ids


def approve(
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    edition_date: date,
    now: datetime,
    zone: tzinfo,
    horizon_days: int,
    actor: str = "cli",
) -> str:
    """Approve the edition of a date: freeze it as it stands (if not yet) and record the approval,
    which DIGEST_REQUIRE_APPROVAL makes the scheduler wait for. Approving twice changes nothing."""
    with session_scope(engine) as session:
        if queries.approval_of(edition_date, session=session) is not None:
            return f"edition {edition_date} was already approved"
        row, edition = editions.build_edition(
            newsletter,
            session=session,
            edition_date=edition_date,
            now=now,
            zone=zone,
            horizon_days=horizon_days,
        )
        _record(session, edition_date, "approve", now=now, actor=actor)
    return f"edition {edition_date} approved and frozen: {edition.story_count} stories, {row.subject!r}"
