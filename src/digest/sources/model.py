"""Plain values that leave the sources stage."""

from dataclasses import dataclass, field
from datetime import datetime


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
    terms: tuple[str, ...] | None = None  # what story matching compares, when computed ahead


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """A parsed feed: its title and link, and its entries in feed order."""

    title: str
    link: str | None
    entries: tuple[FeedEntry, ...] = field(default_factory=tuple)


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
