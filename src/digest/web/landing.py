"""Web routes for growth (issue 14): `/`, the landing page (title, description, the sign-up form
of the double opt-in, the latest edition), and `/archive/feed.xml`, the archive's Atom feed. Thin:
the database gives the sent editions, render/feed.py writes the feed."""

from collections.abc import Callable
from datetime import datetime
from html import escape

import jinja2
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from digest import compose
from digest.config import Settings
from digest.db.engine import session_scope
from digest.db.models import Edition
from digest.db.queries import sent_editions
from digest.newsletter import Newsletter
from digest.render.feed import MAX_ENTRIES, FeedEntry, atom_feed
from digest.web.guard import page_response

FEED_PATH = "/archive/feed.xml"
LATEST_HEADLINES = 3  # per topic on the landing page; the archive page has the rest
# Put in the <head> of every page of the archive (the email's own HTML) so feed readers find it.
_FEED_LINK = '<link rel="alternate" type="application/atom+xml" title="{title}" href="' + FEED_PATH + '">'


def with_feed_link(html: str, title: str) -> str:
    """An archived edition's HTML with the feed announced in its <head>."""
    link = _FEED_LINK.format(title=escape(title))
    head_end = html.find("</head>")
    return html if head_end < 0 else html[:head_end] + link + html[head_end:]


def _summary(edition: compose.Edition) -> str:
    parts = [f"{t.name} ({len(t.stories)})" for t in edition.topics if t.stories]
    count = edition.story_count
    return f"{count} {'story' if count == 1 else 'stories'}: " + ", ".join(parts)


def _entry(row: Edition) -> tuple[FeedEntry, compose.Edition]:
    edition = compose.Edition.from_json(row.content_json)
    headlines = tuple((s.title, s.url) for t in edition.topics for s in t.stories)
    assert row.sent_at is not None  # sent_editions gives sent ones only
    return FeedEntry(row.date, row.subject, row.sent_at, _summary(edition), headlines), edition


def add_landing_routes(
    app: FastAPI,
    settings: Settings,
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    env: jinja2.Environment,
    clock: Callable[[], datetime],
) -> None:
    """GET / and GET /archive/feed.xml on `app`."""
    info = newsletter.newsletter

    @app.get("/", response_class=HTMLResponse)
    def landing() -> HTMLResponse:
        with session_scope(engine) as session:
            rows = sent_editions(session=session, limit=1)
            latest = _entry(rows[0]) if rows else None
        sections = []
        if latest is not None:
            sections = [
                (t.name, t.stories[:LATEST_HEADLINES], len(t.stories)) for t in latest[1].topics if t.stories
            ]
        return page_response(
            env,
            "web/landing.html.j2",
            newsletter=info,
            topics=newsletter.topic_names,
            chosen=frozenset(),
            error="",
            email="",
            send_time=settings.send_time.strftime("%H:%M"),
            latest=latest[0] if latest else None,
            sections=sections,
        )

    @app.get(FEED_PATH)
    def archive_feed() -> Response:
        with session_scope(engine) as session:
            entries = [_entry(row)[0] for row in sent_editions(session=session, limit=MAX_ENTRIES)]
        body = atom_feed(
            title=info.title,
            subtitle=info.description,
            author=info.from_name or info.title,
            base_url=settings.base_url,
            entries=entries,
            now=clock(),
        )
        return Response(body, media_type="application/atom+xml; charset=utf-8")
