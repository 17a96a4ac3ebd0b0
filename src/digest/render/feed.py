"""The archive as an Atom feed (RFC 4287), one entry per sent edition (issue 14). Pure: plain
values in, bytes out. Built with xml.etree, which escapes every text and attribute; characters
XML 1.0 cannot carry at all (C0 controls other than tab and line breaks) are dropped first."""

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from html import escape

ATOM = "http://www.w3.org/2005/Atom"
MAX_ENTRIES = 30  # a feed reader needs the recent editions; the archive page lists them all
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One sent edition as the feed shows it."""

    day: date
    subject: str
    sent_at: datetime
    summary: str  # "12 stories: EV industry (5), Robotics (7)"
    headlines: tuple[tuple[str, str], ...]  # (title, article URL), in edition order


def _text(value: str) -> str:
    return _NOT_XML.sub("", value)


def _stamp(moment: datetime) -> str:
    # RFC 3339 in UTC; a naive time is UTC (SQLite returns stored times without their zone).
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _add(parent: ET.Element, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", {k: _text(v) for k, v in attributes.items()})
    if text is not None:
        element.text = _text(text)
    return element


def _content_html(entry: FeedEntry) -> str:
    # The entry's HTML, as text: ElementTree escapes it once more inside <content type="html">.
    items = "".join(f'<li><a href="{escape(url)}">{escape(title)}</a></li>' for title, url in entry.headlines)
    return f"<p>{escape(entry.summary)}</p><ul>{items}</ul>"


def atom_feed(
    *,
    title: str,
    subtitle: str,
    author: str,
    base_url: str,
    entries: Sequence[FeedEntry],
    now: datetime,
) -> bytes:
    """The feed document: the newest MAX_ENTRIES editions, each linking to its archive page.
    `updated` is the newest edition's send time, or `now` when none was sent yet."""
    archive = f"{base_url}/archive/"
    feed = ET.Element(f"{{{ATOM}}}feed")
    _add(feed, "id", archive)
    _add(feed, "title", title)
    if subtitle:
        _add(feed, "subtitle", subtitle)
    newest = max((e.sent_at for e in entries), default=None, key=lambda t: _stamp(t))
    _add(feed, "updated", _stamp(newest or now))
    _add(feed, "link", rel="self", type="application/atom+xml", href=f"{archive}feed.xml")
    _add(feed, "link", rel="alternate", type="text/html", href=archive)
    _add(_add(feed, "author"), "name", author)
    _add(feed, "generator", "digest")
    for entry in sorted(entries, key=lambda e: e.day, reverse=True)[:MAX_ENTRIES]:
        page = f"{archive}{entry.day.isoformat()}"
        item = _add(feed, "entry")
        _add(item, "id", page)
        _add(item, "title", entry.subject)
        _add(item, "updated", _stamp(entry.sent_at))
        _add(item, "published", _stamp(entry.sent_at))
        _add(item, "link", rel="alternate", type="text/html", href=page)
        _add(item, "summary", entry.summary)
        _add(item, "content", _content_html(entry), type="html")
    ET.register_namespace("", ATOM)
    return bytes(ET.tostring(feed, encoding="utf-8", xml_declaration=True))
