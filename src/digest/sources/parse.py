"""Turn fetched bytes into a ParsedFeed: feedparser for RSS/Atom, a strict model for JSON Feed.

A document that is not a feed at all (empty, an HTML page, another XML) is a SourceError. A feed
that is not well-formed (cut off, broken markup, an invalid item) still gives the entries the
parser could recover, and says what was wrong in `ParsedFeed.problem` (issue 11): the source is
then reported "malformed", not "ok".
"""

import calendar
import html
import json
import logging
import re
import xml.sax
from datetime import UTC, datetime
from typing import Any

import feedparser
import feedparser_rs
from pydantic import BaseModel, ConfigDict, ValidationError

from digest.errors import SourceError
from digest.sources.clean import (
    AUTHOR_MAX,
    GUID_MAX,
    TAG_MAX,
    TAGS_MAX,
    TITLE_MAX,
    canonical_url,
    plain_text,
    sanitize_html,
    strip_controls,
    web_url,
)
from digest.sources.model import FeedEntry, ParsedFeed

log = logging.getLogger(__name__)

MAX_ENTRIES = 1_000  # entries read per feed, in feed order (newest first in practice)
# What the fast parser says when a document's structure broke (entries may be lost or cut short);
# its other complaints (an unknown entity, a date it cannot read) lose nothing.
_FAST_MALFORMED = ("truncated", "Malformed XML")
# feedparser's expat complaints that lose nothing: HTML entities and character references it reads anyway.
_SAX_HARMLESS = ("undefined entity", "reference to invalid character number")
_CUT_OFF = ("truncated", "no element found", "unclosed token")  # the document ends too soon
_ENTRY_END = re.compile(rb"</(?:[\w.-]+:)?(?:item|entry)\s*>")
_HTML_START = re.compile(rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html)[\s>]", re.IGNORECASE | re.DOTALL)


def _not_a_feed(name: str, url: str, body: bytes, reason: object) -> SourceError:
    if not body.strip():
        what = f"an empty response ({len(body)} bytes)"
    elif _HTML_START.match(body[:4096]):
        what = "an HTML page (has the feed moved?)"
    elif isinstance(reason, xml.sax.SAXParseException):
        what = f"not well-formed XML: {reason.getMessage()}"
    else:
        what = "no RSS, Atom or JSON Feed document in it"
    return SourceError(f"source {name!r}: not an RSS, Atom or JSON feed at {url}: {what}")


def parse_feed(name: str, body: bytes, *, url: str, headers: dict[str, str] | None = None) -> ParsedFeed:
    """Parse any supported feed format; raise SourceError naming the source when it is not a feed."""
    content_type = (headers or {}).get("content-type", "")
    if not body.strip():  # whatever the Content-Type promised
        raise _not_a_feed(name, url, body, None)
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


def _malformed(parsed: Any, parser: str) -> str | None:
    """The parser's reason when the document is not well-formed, else None."""
    if not parsed.bozo:
        return None
    reason = parsed.get("bozo_exception")
    if parser == "feedparser-rs":
        text = str(reason)
        return text if any(word in text for word in _FAST_MALFORMED) else None
    if isinstance(reason, xml.sax.SAXParseException) and reason.getMessage() not in _SAX_HARMLESS:
        return f"not well-formed XML: {reason.getMessage()}"
    return None


def _parse_xml_feed(name: str, body: bytes, url: str, headers: dict[str, str]) -> ParsedFeed:
    parsed, parser = read_xml(body, url, headers)
    # Both parsers are lenient: a feed with a wrong Content-Type or a stray error is still "bozo".
    # A document that is not recognizably a feed, with no entries, is a failure.
    if not parsed.entries and not parsed.get("version"):
        raise _not_a_feed(name, url, body, parsed.get("bozo_exception"))
    problem = _malformed(parsed, parser)
    raw_entries = list(parsed.entries)
    if problem and any(word in problem for word in _CUT_OFF):
        # An entry the document ends inside is cut short (its link too, perhaps): only entries
        # whose closing tag arrived are kept.
        raw_entries = raw_entries[: len(_ENTRY_END.findall(body))]
    feed = parsed.feed
    link = web_url(str(feed.get("link") or ""))
    entries = []
    for raw in _capped(name, raw_entries):
        entry = _xml_entry(name, raw, link or url)
        if entry is not None:
            entries.append(entry)
    return ParsedFeed(
        title=plain_text(feed.get("title") or "", limit=TITLE_MAX),
        link=link,
        entries=tuple(entries),
        problem=strip_controls(problem)[:500] if problem else None,
    )


def _capped(name: str, entries: list[Any]) -> list[Any]:
    if len(entries) > MAX_ENTRIES:
        log.warning("source=%r has %d entries: the first %d are read", name, len(entries), MAX_ENTRIES)
    return entries[:MAX_ENTRIES]


def _guid(value: object) -> str | None:
    guid = strip_controls(str(value)).strip() if value is not None else ""
    return guid if guid and len(guid) <= GUID_MAX else None


def _tags(values: list[str]) -> tuple[str, ...]:
    tags = (plain_text(t, limit=TAG_MAX) for t in values[:TAGS_MAX] if isinstance(t, str))
    return tuple(t for t in tags if t)


def _entry_url(name: str, link: str, base: str) -> str | None:
    """The entry's canonical link, or None (logged) when it has no http(s) link to a page."""
    if not link:
        return None  # nothing to link to: a digest card without a link is useless
    try:
        return canonical_url(link, base_url=base)
    except ValueError as e:  # "http://[broken/", a javascript: link, ...: this entry only is skipped
        log.info("source=%r entry skipped: %s", name, e)
        return None


def _xml_entry(name: str, raw: Any, base: str) -> FeedEntry | None:
    link = raw.get("link") or ""
    guid = raw.get("id") or None
    if not link and guid and str(guid).startswith(("http://", "https://")):
        link = guid
    url = _entry_url(name, str(link), base)
    if url is None:
        return None
    summary = raw.get("summary") or ""
    if not summary and raw.get("content"):
        summary = raw["content"][0].get("value") or ""
    return FeedEntry(
        url=url,
        title=plain_text(raw.get("title") or "", limit=TITLE_MAX) or url,
        guid=_guid(guid),
        summary_html=sanitize_html(summary, base_url=url),
        author=plain_text(raw.get("author") or "", limit=AUTHOR_MAX) or None,
        published=_published(raw),
        tags=_tags([t.get("term") or "" for t in raw.get("tags") or []]),
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
    items: list[Any]  # each validated alone: one bad item is skipped, not the whole feed


def _first_error(e: ValidationError) -> str:
    first = e.errors()[0]
    return ".".join(str(p) for p in first["loc"]) + f": {first['msg']}"


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:  # year 1 with an offset east of UTC, year 9999 west of it
        return None


def _parse_json_feed(name: str, body: bytes, url: str) -> ParsedFeed:
    try:
        feed = _JsonFeed.model_validate(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SourceError(f"source {name!r}: invalid JSON at {url}: {e}") from e
    except RecursionError as e:  # [[[[... nested deeper than the interpreter's stack
        raise SourceError(f"source {name!r}: invalid JSON at {url}: nested too deeply") from e
    except ValidationError as e:
        raise SourceError(f"source {name!r}: not a JSON Feed at {url}: {_first_error(e)}") from e
    if not feed.version.startswith("https://jsonfeed.org/version/"):
        raise SourceError(f"source {name!r}: unknown JSON Feed version {feed.version!r} at {url}")
    home = web_url(strip_controls(feed.home_page_url or ""))
    entries = []
    problem = None
    for index, raw in enumerate(_capped(name, feed.items)):
        try:
            item = _JsonItem.model_validate(raw)
        except ValidationError as e:
            problem = problem or f"invalid item: items.{index}.{_first_error(e)}"
            continue
        entry_url = _entry_url(name, item.url or item.external_url or "", home or url)
        if entry_url is None:
            continue
        # content_text is text: escaped, so a "<" in it is shown, never read as markup.
        summary = item.content_html or item.summary or html.escape(item.content_text or "")
        authors = item.authors or ([item.author] if item.author else [])
        author = ", ".join(a.name for a in authors if a.name)
        entries.append(
            FeedEntry(
                url=entry_url,
                title=plain_text(item.title or "", limit=TITLE_MAX) or entry_url,
                guid=_guid(item.id),
                summary_html=sanitize_html(summary, base_url=entry_url),
                author=plain_text(author, limit=AUTHOR_MAX) or None,
                published=_utc(item.date_published or item.date_modified),
                tags=_tags(item.tags),
            )
        )
    return ParsedFeed(
        title=plain_text(feed.title, limit=TITLE_MAX), link=home, entries=tuple(entries), problem=problem
    )
