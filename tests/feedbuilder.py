"""Builders for test feeds: RSS 2.0, Atom and JSON Feed documents from a few plain values."""

import json
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape


@dataclass
class Item:
    """One entry of a test feed."""

    title: str
    url: str
    guid: str | None = None
    summary: str = ""
    published: datetime | None = None
    tags: list[str] = field(default_factory=list)


def rss(
    items: list[Item],
    *,
    title: str = "Test feed",
    link: str = "https://example.com/",
    encoding: str = "utf-8",
) -> bytes:
    """An RSS 2.0 document in the given encoding (declared in the XML prolog)."""
    parts = [
        f'<?xml version="1.0" encoding="{encoding}"?>\n<rss version="2.0"><channel>',
        f"<title>{escape(title)}</title><link>{escape(link)}</link><description>d</description>",
    ]
    for it in items:
        parts.append("<item>")
        parts.append(f"<title>{escape(it.title)}</title><link>{escape(it.url)}</link>")
        if it.guid:
            parts.append(f'<guid isPermaLink="false">{escape(it.guid)}</guid>')
        if it.summary:
            parts.append(f"<description>{escape(it.summary)}</description>")
        if it.published:
            parts.append(f"<pubDate>{format_datetime(it.published)}</pubDate>")
        parts.extend(f"<category>{escape(t)}</category>" for t in it.tags)
        parts.append("</item>")
    parts.append("</channel></rss>")
    return "".join(parts).encode(encoding, errors="xmlcharrefreplace")


def atom(items: list[Item], *, title: str = "Test feed", link: str = "https://example.com/") -> bytes:
    """An Atom 1.0 document."""
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">',
        f'<title>{escape(title)}</title><id>{escape(link)}</id><link href="{escape(link)}"/>',
        "<updated>2026-11-25T00:00:00Z</updated>",
    ]
    for it in items:
        parts.append(f"<entry><title>{escape(it.title)}</title><id>{escape(it.guid or it.url)}</id>")
        parts.append(f'<link rel="alternate" href="{escape(it.url)}"/>')
        if it.published:
            parts.append(f"<updated>{it.published.isoformat()}</updated>")
        if it.summary:
            parts.append(f'<summary type="html">{escape(it.summary)}</summary>')
        parts.extend(f'<category term="{escape(t)}"/>' for t in it.tags)
        parts.append("</entry>")
    parts.append("</feed>")
    return "".join(parts).encode()


def json_feed(items: list[Item], *, title: str = "Test feed", link: str = "https://example.com/") -> bytes:
    """A JSON Feed 1.1 document."""
    return json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "title": title,
            "home_page_url": link,
            "items": [
                {
                    "id": it.guid or it.url,
                    "url": it.url,
                    "title": it.title,
                    "content_html": it.summary,
                    **({"date_published": it.published.isoformat()} if it.published else {}),
                    "tags": it.tags,
                }
                for it in items
            ],
        }
    ).encode()


def newsletter_toml(sources: dict[str, str], *, topics: str = "", extra: str = "") -> str:
    """A digest.toml with the given sources (name -> url or path) and topics (TOML text)."""
    text = (
        '[newsletter]\ntitle = "Test"\nfrom_email = "news@test.example"\n'
        f'postal_address = "1 Test Street"\n{extra}\n'
    )
    text += topics or '[[topics]]\nname = "Tech"\nkeywords = ["robot"]\n'
    for name, url in sources.items():
        text += f'\n[[sources]]\nname = "{name}"\nurl = "{url}"\n'
    return text


def write(path: Path, body: bytes) -> Path:
    """Write a feed file, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path
