"""Turn fetched bytes into a ParsedFeed: feedparser for RSS/Atom, a strict model for JSON Feed."""

import calendar
import json
import re
from datetime import UTC, datetime
from typing import Any

import feedparser
import feedparser_rs
from pydantic import BaseModel, ConfigDict, ValidationError

from digest.errors import SourceError
from digest.sources.clean import canonical_url, plain_text, sanitize_html
from digest.sources.model import FeedEntry, ParsedFeed


def parse_feed(name: str, body: bytes, *, url: str, headers: dict[str, str] | None = None) -> ParsedFeed:
    """Parse any supported feed format; raise SourceError naming the source when it is not a feed."""
    content_type = (headers or {}).get("content-type", "")
    if "json" in content_type or body.lstrip()[:1] in (b"{", b"["):
        return _parse_json_feed(name, body, url)
    return _parse_xml_feed(name, body, url, headers or {})


# --- RSS 0.9x/1.0/2.0 and Atom ----------------------------------------------------------


def _charset(headers: dict[str, str]) -> str | None:
    match = re.search(r"charset=[\"']?([\w.:-]+)", headers.get("content-type", ""), re.IGNORECASE)
    return match.group(1).lower() if match else None


def read_xml(body: bytes, url: str, headers: dict[str, str]) -> tuple[Any, str]:
    """Parse RSS/Atom bytes: (feedparser-style result, which parser read it).

    feedparser-rs first: it reads a feed ~50x faster than feedparser (0.05 s against 1.5-4 s for
    10,000 entries on this machine) with the same result shape. feedparser, the reference,
    takes over where the fast parser is weaker: a charset given only by the HTTP header (RFC 7303
    rules), and documents the fast parser cannot read or finds no entries in (feedparser's
    recovery from ill-formed XML is older and broader).
    """
    if _charset(headers) in (None, "utf-8", "utf8", "us-ascii"):
        try:
            fast = feedparser_rs.parse(body, sanitize_html=False, resolve_relative_uris=True)
        except (ValueError, RuntimeError, UnicodeError):
            fast = None  # the fast parser's own errors: let the reference parser try
        if fast is not None and fast.entries:
            return fast, "feedparser-rs"
    # feedparser gets bytes, never a URL: it must not fetch (no timeout) or open local files.
    return feedparser.parse(body, response_headers={**headers, "content-location": url}), "feedparser"


def _parse_xml_feed(name: str, body: bytes, url: str, headers: dict[str, str]) -> ParsedFeed:
    parsed, _ = read_xml(body, url, headers)
    # Both parsers are lenient: a feed with a wrong Content-Type or a stray error is still "bozo".
    # Only a document that is not recognizably a feed, with no entries, is a failure.
    if parsed.bozo and not parsed.entries and not parsed.get("version"):
        reason = parsed.get("bozo_exception") or "not a feed"
        raise SourceError(f"source {name!r}: not an RSS, Atom or JSON feed at {url} ({reason})")
    feed = parsed.feed
    base = feed.get("link") or url
    entries = []
    for raw in parsed.entries:
        entry = _xml_entry(raw, base)
        if entry is not None:
            entries.append(entry)
    return ParsedFeed(
        title=plain_text(feed.get("title") or ""), link=feed.get("link"), entries=tuple(entries)
    )


def _xml_entry(raw: Any, base: str) -> FeedEntry | None:
    link = raw.get("link") or ""
    guid = raw.get("id") or None
    if not link and guid and str(guid).startswith(("http://", "https://")):
        link = guid
    if not link:
        return None  # nothing to link to: a digest card without a link is useless
    try:
        url = canonical_url(str(link), base_url=base)
    except ValueError:  # e.g. "http://[broken/": urllib refuses it; so do we, for this entry only
        return None
    summary = raw.get("summary") or ""
    if not summary and raw.get("content"):
        summary = raw["content"][0].get("value") or ""
    title = plain_text(raw.get("title") or "") or url
    tags = tuple(t.get("term") or "" for t in raw.get("tags") or [])
    return FeedEntry(
        url=url,
        title=title,
        guid=str(guid) if guid else None,
        summary_html=sanitize_html(summary, base_url=url),
        author=plain_text(raw.get("author") or "") or None,
        published=_published(raw),
        tags=tuple(t for t in (plain_text(tag) for tag in tags) if t),
    )


def _published(raw: Any) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        value = raw.get(key)
        if value:
            try:
                return datetime.fromtimestamp(calendar.timegm(value), tz=UTC)
            except (ValueError, OverflowError, OSError):  # a date out of any sane range
                continue
    return None


# --- JSON Feed 1.0/1.1 (https://www.jsonfeed.org/version/1.1/) ----------------------------


class _JsonAuthor(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str | None = None


class _JsonItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str | int
    url: str | None = None
    external_url: str | None = None
    title: str | None = None
    content_html: str | None = None
    content_text: str | None = None
    summary: str | None = None
    date_published: datetime | None = None
    date_modified: datetime | None = None
    authors: list[_JsonAuthor] = []
    author: _JsonAuthor | None = None  # JSON Feed 1.0
    tags: list[str] = []


class _JsonFeed(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: str
    title: str
    home_page_url: str | None = None
    feed_url: str | None = None
    items: list[_JsonItem]


def _parse_json_feed(name: str, body: bytes, url: str) -> ParsedFeed:
    try:
        feed = _JsonFeed.model_validate(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SourceError(f"source {name!r}: invalid JSON at {url}: {e}") from e
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SourceError(f"source {name!r}: not a JSON Feed at {url}: {where}: {first['msg']}") from e
    if not feed.version.startswith("https://jsonfeed.org/version/"):
        raise SourceError(f"source {name!r}: unknown JSON Feed version {feed.version!r} at {url}")
    base = feed.home_page_url or url
    entries = []
    for item in feed.items:
        link = item.url or item.external_url
        if not link:
            continue
        try:
            entry_url = canonical_url(link, base_url=base)
        except ValueError:  # as for RSS/Atom: urllib refuses it, so this entry is skipped, not the feed
            continue
        published = item.date_published or item.date_modified
        if published is not None and published.tzinfo is None:
            published = published.replace(tzinfo=UTC)
        summary = item.content_html or item.summary or item.content_text or ""
        authors = item.authors or ([item.author] if item.author else [])
        entries.append(
            FeedEntry(
                url=entry_url,
                title=plain_text(item.title or "") or entry_url,
                guid=str(item.id),
                summary_html=sanitize_html(summary, base_url=entry_url),
                author=", ".join(a.name for a in authors if a.name) or None,
                published=published.astimezone(UTC) if published else None,
                tags=tuple(item.tags),
            )
        )
    return ParsedFeed(title=plain_text(feed.title), link=feed.home_page_url, entries=tuple(entries))
