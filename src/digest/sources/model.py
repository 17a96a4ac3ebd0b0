"""Plain values that leave the sources stage."""

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One entry of a feed, cleaned: text title, sanitized summary, canonical URL."""

    url: str
    title: str
    guid: str | None = None
    summary_html: str = ""
    author: str | None = None
    published: datetime | None = None  # aware UTC, or None when the feed gives no date
    tags: tuple[str, ...] = ()
    terms: bytes | None = None  # stories.terms (what story matching compares), when computed ahead


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """A parsed feed: its title and link, its entries in feed order, and what was wrong with it.

    `problem` is the parser's reason when the document was not well-formed (cut off, broken
    markup, an invalid item): the entries are those it could recover, and the source is reported
    "malformed" rather than "ok".
    """

    title: str
    link: str | None
    entries: tuple[FeedEntry, ...] = field(default_factory=tuple)
    problem: str | None = None

    def to_json(self) -> str:
        """Serialize losslessly (a distributed collect's worker hands its parsed feed over in this)."""
        return json.dumps(
            {
                "title": self.title,
                "link": self.link,
                "entries": [_entry_dict(e) for e in self.entries],
                "problem": self.problem,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> "ParsedFeed":
        """Inverse of `to_json`: equal values, datetimes aware UTC, tuples as tuples."""
        data = json.loads(text)
        return cls(
            title=data["title"],
            link=data["link"],
            entries=tuple(_entry_of(e) for e in data["entries"]),
            problem=data.get("problem"),  # staged by a worker of an older version: none
        )


def _entry_dict(entry: FeedEntry) -> dict[str, Any]:
    return {
        "url": entry.url,
        "title": entry.title,
        "guid": entry.guid,
        "summary_html": entry.summary_html,
        "author": entry.author,
        "published": entry.published.astimezone(UTC).isoformat() if entry.published else None,
        "tags": list(entry.tags),
        "terms": base64.b64encode(entry.terms).decode() if entry.terms is not None else None,
    }


def _entry_of(data: dict[str, Any]) -> FeedEntry:
    published = data["published"]
    terms = data["terms"]
    return FeedEntry(
        url=data["url"],
        title=data["title"],
        guid=data["guid"],
        summary_html=data["summary_html"],
        author=data["author"],
        published=datetime.fromisoformat(published).astimezone(UTC) if published else None,
        tags=tuple(data["tags"]),
        terms=base64.b64decode(terms) if terms is not None else None,
    )


@dataclass(frozen=True, slots=True)
class Fetched:
    """What fetching a source produced: a body, or word that it has not changed (HTTP 304)."""

    url: str
    body: bytes | None  # None when not modified
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None
    last_modified: str | None = None

    @property
    def not_modified(self) -> bool:
        """True when the server answered 304 to our conditional GET."""
        return self.body is None
