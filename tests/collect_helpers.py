"""A small news site for collect tests (conditional GET, a broken page, a feed that is always 304)
and a snapshot of what a collect stored, to compare a distributed collect with one in-process."""

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from digest.db.models import Article, Source, Story
from tests.feedbuilder import Item, atom, json_feed, newsletter_toml, rss
from tests.httpserver import FeedServer, Reply, Seen

BASE = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
EVENTS = [  # three events that several feeds report in their own words (one story each)
    (
        "Voltra recalls 120,000 sedans over faulty brake sensor",
        "Brake sensor flaw forces Voltra to recall 120k sedans",
    ),
    ("Lumacell shows a solid-state battery cell", "Lumacell unveils solid-state battery cell prototype"),
    ("Kessler workers strike at two plants", "Strike halts two Kessler plants as workers walk out"),
]


def _items(i: int) -> list[Item]:
    event = EVENTS[i % len(EVENTS)][i % 2]
    return [
        Item(
            event,
            f"https://site{i}.example/event?utm_source=rss",
            guid=f"s{i}-e",
            summary=f"<p>{event}</p>",
            published=BASE - timedelta(minutes=7 * i),
            tags=["robot", "news"],
        ),
        Item(
            f"Site {i} column on gardening number {i}",
            f"https://site{i}.example/column",
            guid=f"s{i}-c",
            summary="<b>Soil</b> <script>x()</script>and rain",
            published=None,
        ),
        Item(
            f"Site {i} interview with a chef from town {i}",
            f"https://site{i}.example/chef",
            published=BASE + timedelta(days=2),
        ),  # in the future: clamped to the collect's time
    ]


def _conditional(body: bytes, etag: str, content_type: str) -> Any:
    def route(seen: Seen) -> Reply:
        if seen.headers.get("if-none-match") == etag:
            return Reply(304, headers={"ETag": etag})
        return Reply(200, headers={"ETag": etag, "Content-Type": content_type}, body=body)

    return route


def serve_site(server: FeedServer, feeds: int = 10) -> dict[str, str]:
    """Route `feeds` good feeds (RSS, Atom, JSON Feed in turn), a broken one and an always-304 one;
    return {source name: url}, in the order a digest.toml lists them."""
    sources = {}
    for i in range(feeds):
        maker, kind = [
            (rss, "application/rss+xml"),
            (atom, "application/atom+xml"),
            (json_feed, "application/feed+json"),
        ][i % 3]
        body = maker(_items(i), title=f"Site {i}", link=f"https://site{i}.example/")
        server.route(f"/feed/{i}", _conditional(body, f'"v{i}"', kind))
        sources[f"site{i}"] = server.url(f"/feed/{i}")
    server.route("/broken", Reply(200, headers={"Content-Type": "text/html"}, body=b"<html>moved</html>"))
    sources["broken"] = server.url("/broken")
    server.route("/same", Reply(304))
    sources["same"] = server.url("/same")
    return sources


def site_toml(sources: dict[str, str]) -> str:
    """digest.toml text for these sources."""
    return newsletter_toml(sources)


def snapshot(engine: sa.Engine) -> dict[str, Any]:
    """Everything a collect stores, by content (ids differ between databases)."""
    with Session(engine) as s:
        sources = {r.id: r for r in s.exec(select(Source))}
        stories = {r.id: r for r in s.exec(select(Story))}
        articles = list(s.exec(select(Article)))
    grouped: dict[int | None, list[str]] = {}
    for a in articles:
        grouped.setdefault(a.story_id, []).append(a.url)
    return {
        "sources": sorted(
            (
                r.name,
                r.url,
                r.etag,
                r.last_modified,
                r.last_fetched_at,
                r.last_success_at,
                r.last_error,
                r.last_error_at,
                r.failure_streak,
            )
            for r in sources.values()
        ),
        "articles": sorted(
            (
                a.url,
                a.title,
                a.guid,
                a.summary_html,
                a.author,
                a.tags,
                a.published_at,
                a.first_seen_at,
                a.updated_at,
                sources[a.source_id].name,
            )
            for a in articles
        ),
        "stories": sorted(
            (st.title, st.url, st.published_at, st.first_seen_at, tuple(sorted(grouped.get(st.id, []))))
            for st in stories.values()
        ),
    }
