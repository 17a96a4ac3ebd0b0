"""Write the demo feeds (RSS 2.0, Atom, JSON Feed) with dates relative to now.

Usage: python examples/demo/make_feeds.py [--out DIR] [--now 2026-11-25T07:00:00+00:00]
"""

import argparse
import json
import tomllib
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ATOM = "http://www.w3.org/2005/Atom"


def _rss(feed: dict[str, Any], items: list[dict[str, Any]], now: datetime) -> bytes:
    rss = ET.Element("rss", version="2.0")
    channel = ET.SubElement(rss, "channel")
    ET.SubElement(channel, "title").text = feed["title"]
    ET.SubElement(channel, "link").text = feed["link"]
    ET.SubElement(channel, "description").text = f"{feed['title']} (digest demo feed)"
    for item in items:
        node = ET.SubElement(channel, "item")
        ET.SubElement(node, "title").text = item["title"]
        ET.SubElement(node, "link").text = item["url"]
        ET.SubElement(node, "guid", isPermaLink="false").text = item["id"]
        ET.SubElement(node, "pubDate").text = format_datetime(now - timedelta(hours=item["hours_ago"]))
        ET.SubElement(node, "description").text = item["summary"]
        for tag in item.get("tags", []):
            ET.SubElement(node, "category").text = tag
    return ET.tostring(rss, encoding="utf-8", xml_declaration=True)


def _atom(feed: dict[str, Any], items: list[dict[str, Any]], now: datetime) -> bytes:
    ET.register_namespace("", ATOM)
    root = ET.Element(f"{{{ATOM}}}feed")
    ET.SubElement(root, f"{{{ATOM}}}title").text = feed["title"]
    ET.SubElement(root, f"{{{ATOM}}}id").text = feed["link"]
    ET.SubElement(root, f"{{{ATOM}}}link", href=feed["link"])
    ET.SubElement(root, f"{{{ATOM}}}updated").text = now.isoformat()
    for item in items:
        entry = ET.SubElement(root, f"{{{ATOM}}}entry")
        ET.SubElement(entry, f"{{{ATOM}}}title").text = item["title"]
        ET.SubElement(entry, f"{{{ATOM}}}id").text = item["id"]
        ET.SubElement(entry, f"{{{ATOM}}}link", href=item["url"], rel="alternate")
        stamp = (now - timedelta(hours=item["hours_ago"])).isoformat()
        ET.SubElement(entry, f"{{{ATOM}}}published").text = stamp
        ET.SubElement(entry, f"{{{ATOM}}}updated").text = stamp
        ET.SubElement(entry, f"{{{ATOM}}}summary", type="html").text = item["summary"]
        for tag in item.get("tags", []):
            ET.SubElement(entry, f"{{{ATOM}}}category", term=tag)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _json(feed: dict[str, Any], items: list[dict[str, Any]], now: datetime) -> bytes:
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": feed["title"],
        "home_page_url": feed["link"],
        "items": [
            {
                "id": item["id"],
                "url": item["url"],
                "title": item["title"],
                "content_html": item["summary"],
                "date_published": (now - timedelta(hours=item["hours_ago"])).isoformat(),
                "tags": item.get("tags", []),
            }
            for item in items
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False).encode()


WRITERS = {"rss": _rss, "atom": _atom, "json": _json}


def write_feeds(out: Path, now: datetime) -> list[Path]:
    """Write every demo feed into `out`; returns the paths."""
    data = tomllib.loads((HERE / "stories.toml").read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, feed in data["feeds"].items():
        items = [s for s in data["stories"] if s["feed"] == key]
        path = out / feed["file"]
        path.write_bytes(WRITERS[feed["format"]](feed, items, now))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "feeds")
    parser.add_argument("--now", type=datetime.fromisoformat, default=None)
    args = parser.parse_args()
    now = args.now or datetime.now(UTC)
    for path in write_feeds(args.out, now):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
