"""Synthetic news feeds that look like real ones, served from many loopback hosts.

The feeds: RSS 2.0 (four in five) and Atom (one in five), each entry with a title, a link carrying
tracking parameters, a GUID, a date within the last day and a half, an author, categories and an
HTML summary of two to four paragraphs with inline links, emphasis, often a leading figure (an
image with a caption), sometimes a list or a quotation, a tracking pixel or a script to be
stripped, and a "read more" link. About one entry in ten reports an event that other feeds report
too, in words of their own, so story clustering has work to do.

The server: one process, one asyncio loop, one listener per host on 127.0.1.1, 127.0.1.2, ...
(all of 127.0.0.0/8 reaches the loopback interface on Linux), so the feeds' URLs name as many
different hosts as there are feeds. Each request is answered after `latency` seconds; the server
honours If-None-Match (ETag) and If-Modified-Since (Last-Modified) with 304, compresses with gzip
when asked, keeps connections alive when the client does, and counts what it answered
(`GET /__stats`).

Usage from a benchmark: `with FeedServer(feeds, entries, latency, now) as server: server.urls`.
Run alone (`python benchmarks/news_feeds.py --serve ...`) it prints `{"host": port, ...}` and serves.
"""

import argparse
import asyncio
import contextlib
import gzip
import hashlib
import itertools
import json
import random
import resource
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from xml.sax.saxutils import escape, quoteattr

# Invented companies, places and people: the proper nouns headlines lead with.
NAMES = [
    "Calderon Motors", "Brightwell", "Ostrava Cells", "Pinemark", "Quillon", "Tessaro Robotics",
    "Vantor", "Helio Grid", "Marrow & Finch", "Nordvik", "Umbra Labs", "Sable Mobile", "Kestrel Air",
    "Ferrante", "Lumo Phones", "Ardent Charge", "Halvorsen", "Cobalt Ridge", "Ismay", "Ravel Systems",
]  # fmt: skip
PEOPLE = ["Ines Marlow", "Tomasz Brill", "Ade Okafor", "Mei Lindqvist", "Ruth Castellan", "Jonah Pell"]
TOPIC_WORDS = ["battery", "robot", "smartphone", "charging", "factory", "chip", "recall", "launch"]


def _vocabulary(size: int = 16000) -> list[str]:
    """Pronounceable made-up words in a fixed random order (the rank of each in `_words`)."""
    rnd = random.Random(7)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["ar", "en", "ol", "ist"]
    words = sorted({"".join(rnd.choices(syllables, k=rnd.randint(2, 4))) for _ in range(size)})
    rnd.shuffle(words)
    return words


VOCAB = _vocabulary()
# Words of news follow Zipf's law: a few are in every story, most are rare.
CUMULATIVE = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(VOCAB))))


def _words(rnd: random.Random, k: int) -> list[str]:
    return rnd.choices(VOCAB, cum_weights=CUMULATIVE, k=k)


def _sentence(rnd: random.Random, k: int) -> str:
    words = _words(rnd, k)
    return " ".join([words[0].capitalize(), *words[1:]]) + "."


@dataclass(frozen=True)
class Entry:
    """One generated article."""

    title: str
    link: str
    guid: str
    published: datetime
    author: str
    categories: tuple[str, ...]
    summary_html: str


def _paragraph(rnd: random.Random, site: str) -> str:
    """A paragraph of two to four sentences with a link or two and some emphasis."""
    parts = [_sentence(rnd, rnd.randint(8, 22)) for _ in range(rnd.randint(2, 4))]
    for _ in range(rnd.randint(1, 2)):
        anchor = " ".join(_words(rnd, rnd.randint(1, 3)))
        if rnd.random() < 0.3:
            href = f"/tags/{rnd.choice(VOCAB[:200])}"  # relative: resolved against the entry's link
        else:
            slug = anchor.replace(" ", "-")
            href = f"https://{site}/{rnd.randrange(10**6)}/{slug}?utm_source=rss&amp;utm_medium=feed"
        parts.insert(rnd.randrange(len(parts) + 1), f'<a href="{href}">{escape(anchor)}</a>')
    if rnd.random() < 0.5:
        parts.insert(rnd.randrange(len(parts) + 1), f"<strong>{escape(_sentence(rnd, 4))}</strong>")
    if rnd.random() < 0.3:
        parts.insert(rnd.randrange(len(parts) + 1), f"<em>{escape(' '.join(_words(rnd, 3)))}</em>")
    return "<p>" + " ".join(parts) + "</p>"


def summary_html(rnd: random.Random, site: str, lead: str) -> str:
    """The HTML of an entry's summary: a figure, paragraphs, maybe a list or a quote, a link out."""
    blocks = []
    if rnd.random() < 0.6:
        image = f"https://cdn.{site}/images/{rnd.randrange(10**8):08d}.jpg"
        caption = escape(_sentence(rnd, rnd.randint(5, 10)))
        blocks.append(
            f'<figure><img src="{image}" alt={quoteattr(lead[:60])} width="1200" height="675" '
            f'loading="lazy" srcset="{image}?w=600 600w, {image}?w=1200 1200w">'
            f"<figcaption>{caption} Photo: {escape(rnd.choice(PEOPLE))}</figcaption></figure>"
        )
    blocks.append(f"<p><strong>{escape(lead)}</strong> {escape(_sentence(rnd, rnd.randint(12, 25)))}</p>")
    blocks.extend(_paragraph(rnd, site) for _ in range(rnd.randint(1, 3)))
    roll = rnd.random()
    if roll < 0.15:
        items = "".join(f"<li>{escape(_sentence(rnd, rnd.randint(4, 9)))}</li>" for _ in range(3))
        blocks.append(f"<ul>{items}</ul>")
    elif roll < 0.3:
        blocks.append(f"<blockquote><p>{escape(_sentence(rnd, rnd.randint(10, 20)))}</p></blockquote>")
    if rnd.random() < 0.1:
        pixel = f"https://track.{site}/p.gif?id={rnd.randrange(10**9)}"
        blocks.append(f'<img src="{pixel}" width="1" height="1">')
    if rnd.random() < 0.05:
        blocks.append("<script>window.loadComments && loadComments();</script>")
    blocks.append(f'<p><a href="https://{site}/more/{rnd.randrange(10**6)}">Read more</a></p>')
    return "\n".join(blocks)


def entries_of(feed: int, count: int, now: datetime) -> list[Entry]:
    """The `count` entries of feed number `feed`, newest first; the same for the same arguments."""
    rnd = random.Random(feed * 7919 + count)
    site = f"news{feed}.example"
    found = []
    for n in range(count):
        if rnd.random() < 0.1:
            # An event other feeds report too (they draw the same numbers): its subject, a figure and
            # a few distinctive words in the title and the lead, the rest in this feed's own words.
            event = rnd.randrange(max(30, count * 3))
            said = random.Random(event)
            subject, figure, key = said.choice(NAMES), said.randrange(2, 98), said.sample(VOCAB[2000:], 6)
            picked = rnd.sample(key, 4)
            title = (
                f"{subject} {picked[0]} {picked[1]} {rnd.choice(TOPIC_WORDS)} {_words(rnd, 1)[0]} {picked[2]}"
            )
            lead = f"{subject} {' '.join(rnd.sample(key, 5))} {figure} percent {' '.join(_words(rnd, 4))}."
        else:
            own = " ".join(_words(rnd, rnd.randint(5, 9)))
            title = f"{rnd.choice(NAMES)} {rnd.choice(TOPIC_WORDS)} {own}"
            lead = _sentence(rnd, rnd.randint(6, 12))
        published = now - timedelta(minutes=n * 20 + rnd.randrange(20))
        slug = "-".join(title.lower().split()[:6])
        found.append(
            Entry(
                title=title,
                link=f"https://{site}/{published:%Y/%m/%d}/{slug}?utm_source=rss&utm_campaign=feed",
                guid=f"{site}/{feed}-{n}",
                published=published,
                author=rnd.choice(PEOPLE),
                categories=tuple(rnd.sample(TOPIC_WORDS, 2)),
                summary_html=summary_html(rnd, site, lead),
            )
        )
    return found


def rss(feed: int, entries: list[Entry]) -> bytes:
    """An RSS 2.0 document of these entries."""
    items = "".join(
        f"<item><title>{escape(e.title)}</title><link>{escape(e.link)}</link>"
        f'<guid isPermaLink="false">{escape(e.guid)}</guid><pubDate>{format_datetime(e.published)}</pubDate>'
        f"<author>{escape(e.author)}</author>"
        + "".join(f"<category>{escape(c)}</category>" for c in e.categories)
        + f"<description>{escape(e.summary_html)}</description></item>\n"
        for e in entries
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        f"<title>News {feed}</title><link>https://news{feed}.example/</link>"
        f"<description>Stories from site {feed}</description><language>en</language>\n"
        f"{items}</channel></rss>\n"
    ).encode()


def atom(feed: int, entries: list[Entry]) -> bytes:
    """An Atom document of these entries."""
    updated = max((e.published for e in entries), default=datetime(2026, 1, 1, tzinfo=UTC))
    items = "".join(
        f'<entry><title>{escape(e.title)}</title><link rel="alternate" href={quoteattr(e.link)}/>'
        f"<id>tag:news{feed}.example,2026:{escape(e.guid)}</id><updated>{e.published.isoformat()}</updated>"
        f"<author><name>{escape(e.author)}</name></author>"
        + "".join(f"<category term={quoteattr(c)}/>" for c in e.categories)
        + f'<summary type="html">{escape(e.summary_html)}</summary></entry>\n'
        for e in entries
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>News {feed}</title><id>tag:news{feed}.example,2026:feed</id>"
        f'<link rel="alternate" href="https://news{feed}.example/"/><updated>{updated.isoformat()}</updated>\n'
        f"{items}</feed>\n"
    ).encode()


def document(feed: int, count: int, now: datetime) -> tuple[bytes, str]:
    """Feed number `feed` as bytes, and its media type (every fifth feed is Atom)."""
    found = entries_of(feed, count, now)
    if feed % 5 == 4:
        return atom(feed, found), "application/atom+xml; charset=utf-8"
    return rss(feed, found), "application/rss+xml; charset=utf-8"


def hosts(count: int) -> list[str]:
    """`count` loopback addresses: 127.0.1.1 ... 127.0.1.250, then 127.0.2.1 ..."""
    return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(count)]


def path_of(feed: int) -> str:
    """The URL path of feed number `feed`."""
    return f"/feeds/{feed}.xml"


@dataclass
class _Doc:
    body: bytes
    gzipped: bytes
    media_type: str
    etag: str


async def serve(feeds: int, entries: int, latency: float, now: datetime) -> None:
    """Serve every feed on its own host; print the {host: port} map as one JSON line, then serve."""
    last_modified = now - timedelta(minutes=5)
    docs = {}
    for feed in range(feeds):
        body, media_type = document(feed, entries, now)
        etag = f'"{hashlib.sha1(body).hexdigest()[:16]}"'
        docs[path_of(feed)] = _Doc(body, gzip.compress(body, 6), media_type, etag)
    counts = {"200": 0, "304": 0, "404": 0, "bytes": 0}
    modified = format_datetime(last_modified, usegmt=True)

    def respond(path: str, headers: dict[str, str]) -> bytes:
        if path == "/__stats":
            body = json.dumps(counts).encode()
            return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
                len(body),
                body,
            )
        doc = docs.get(path)
        if doc is None:
            counts["404"] += 1
            return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        fresh = headers.get("if-none-match") == doc.etag
        if "if-none-match" not in headers and "if-modified-since" in headers:
            try:
                fresh = parsedate_to_datetime(headers["if-modified-since"]) >= last_modified.replace(
                    microsecond=0
                )
            except (TypeError, ValueError):
                fresh = False
        validators = f"ETag: {doc.etag}\r\nLast-Modified: {modified}\r\n"
        if fresh:
            counts["304"] += 1
            return f"HTTP/1.1 304 Not Modified\r\n{validators}\r\n".encode()
        counts["200"] += 1
        zipped = "gzip" in headers.get("accept-encoding", "")
        body = doc.gzipped if zipped else doc.body
        counts["bytes"] += len(body)
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: {doc.media_type}\r\n{validators}"
            + ("Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n" if zipped else "")
            + f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _, path, version = [*lines[0].split(" "), "", "", ""][:3]
                fields = (h.partition(":") for h in lines[1:] if h)
                headers = {k.strip().lower(): v.strip() for k, _, v in fields}
                if path != "/__stats":
                    await asyncio.sleep(latency)  # the far site thinking, and the round trips
                writer.write(respond(path.split("?")[0], headers))
                await writer.drain()
                if headers.get("connection", "").lower() == "close" or version == "HTTP/1.0":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    # One listening socket per host, and the clients' connections: more than the usual 1,024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 3 * feeds + 1024)), hard))
    ports = {}
    for host in hosts(feeds):
        server = await asyncio.start_server(handle, host, 0, backlog=256)
        ports[host] = server.sockets[0].getsockname()[1]
    print(json.dumps(ports), flush=True)
    await asyncio.Event().wait()


class FeedServer:
    """The feed server in its own process (so it does not take the measured process's CPU)."""

    def __init__(self, feeds: int, entries: int, latency: float, now: datetime) -> None:
        self.feeds, self.entries, self.latency, self.now = feeds, entries, latency, now
        self.ports: dict[str, int] = {}
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> "FeedServer":
        argv = [sys.executable, __file__, "--serve", "--feeds", str(self.feeds)]
        argv += [
            "--entries",
            str(self.entries),
            "--latency",
            str(self.latency),
            "--now",
            self.now.isoformat(),
        ]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the feed server did not start")
        self.ports = json.loads(line)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait()
            if self.process.stdout is not None:
                self.process.stdout.close()

    @property
    def urls(self) -> list[str]:
        """Each feed's URL, each on its own host."""
        return [f"http://{host}:{self.ports[host]}{path_of(i)}" for i, host in enumerate(hosts(self.feeds))]

    def stats(self) -> dict[str, int]:
        """What the server has answered so far: {"200": n, "304": n, "404": n, "bytes": n}."""
        host = hosts(1)[0]
        with urllib.request.urlopen(f"http://{host}:{self.ports[host]}/__stats", timeout=10) as r:
            return dict(json.loads(r.read()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="serve the feeds (else: write one to stdout)")
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--now", default=None, help="ISO date-time the entries are dated from")
    parser.add_argument("--show", type=int, default=None, help="print feed number N and exit")
    args = parser.parse_args()
    now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    if args.show is not None:
        sys.stdout.buffer.write(document(args.show, args.entries, now)[0])
        return
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.feeds, args.entries, args.latency, now))
        return
    parser.print_help()


if __name__ == "__main__":
    main()
