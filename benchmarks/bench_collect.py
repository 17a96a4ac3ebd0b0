"""Collect 200 feeds x 50 entries from a local HTTP server that answers each request after 200 ms.

The feeds live on 40 loopback hosts (127.0.0.2 ... 127.0.0.41, five feeds each), as real feeds
live on many sites; digest allows DIGEST_FETCH_PER_HOST (2) requests per host at once. The server
runs in its own process so it does not share the collector's CPU time slices. Target (issue 3):
the whole first collect (fetch, parse, sanitize, cluster, store in SQLite) in <= 3 s wall time.
A second collect, where every feed answers 304 Not Modified, is measured too.

Usage: python benchmarks/bench_collect.py [--feeds 200] [--entries 50] [--latency 0.2]
"""

import argparse
import asyncio
import collections
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

from digest.clock import FixedClock

HOSTS = 40
NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
NAMES = [
    "Voltra",
    "Kessler",
    "Marun",
    "Axon",
    "Nimbus",
    "Orbix",
    "Siliq",
    "Mindset",
    "Cartly",
    "Waylo",
    "Lumacell",
    "Cyclo",
    "Sweepo",
]


def _vocabulary(size: int = 20000) -> list[str]:
    rnd = random.Random(0)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    return sorted({"".join(rnd.choices(syllables, k=rnd.randint(2, 4))) for _ in range(size)})


VOCAB = _vocabulary()
# News words follow Zipf's law: a few are everywhere, most are rare.
ZIPF = [1 / (rank + 1) for rank in range(len(VOCAB))]


def _words(rnd: random.Random, k: int) -> list[str]:
    return rnd.choices(VOCAB, weights=ZIPF, k=k)


def feed_body(feed: int, entries: int) -> tuple[bytes, list[int | None]]:
    """One RSS 2.0 feed, and the shared event each entry reports (None: a story of its own).

    About one entry in ten reports an event that other feeds report too, in its own words.
    """
    rnd = random.Random(feed)
    items = []
    events: list[int | None] = []
    for n in range(entries):
        event: int | None = None
        if rnd.random() < 0.1:
            event = rnd.randrange(300)  # shared across feeds, worded by this feed's own choice
            ev = random.Random(event)
            subject, words = ev.choice(NAMES), _words(ev, 5)
            title = f"{subject} {' '.join(words[:3])}: {' '.join(_words(rnd, 2))} {words[3]} {event}"
        else:
            title = f"{rnd.choice(NAMES)} {' '.join(_words(rnd, 7))}"
        published = format_datetime(NOW - timedelta(minutes=rnd.randrange(2000)))
        summary = f"<p>{escape(title)}. {' '.join(_words(rnd, 25))}.</p><script>x()</script>"
        items.append(
            f"<item><title>{escape(title)}</title><link>https://site{feed}.example/{n}?utm_source=rss</link>"
            f'<guid isPermaLink="false">f{feed}-{n}</guid><pubDate>{published}</pubDate>'
            f"<description>{escape(summary)}</description><category>{rnd.choice(VOCAB[:50])}</category></item>"
        )
        events.append(event)
    body = (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>Feed {feed}</title><link>https://site{feed}.example/</link><description>d</description>"
        + "".join(items)
        + "</channel></rss>"
    ).encode()
    return body, events


def expected_stories(feeds: int, entries: int) -> int:
    """Stories a perfect clustering makes: one per lone entry, one per shared event and feed repeat.

    (A feed reporting one event twice keeps two stories: digest never merges two differently
    titled articles of one source.)
    """
    lone, per_event = 0, collections.Counter[int]()
    for feed in range(feeds):
        counts = collections.Counter(e for e in feed_body(feed, entries)[1] if e is not None)
        lone += sum(e is None for e in feed_body(feed, entries)[1])
        for event, times in counts.items():
            per_event[event] = max(per_event[event], times)
    return lone + sum(per_event.values())


async def serve(feeds: int, entries: int, latency: float) -> None:
    """Serve /feed/N on HOSTS loopback addresses; print {host: port} as one JSON line."""
    bodies = {f"/feed/{i}": feed_body(i, entries)[0] for i in range(feeds)}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
                await asyncio.sleep(latency)
                body = bodies.get(path)
                etag = f'"{path}"'
                if body is None:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                elif headers.get("if-none-match") == etag:
                    writer.write(f"HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\n\r\n".encode())
                else:
                    writer.write(
                        f"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nETag: {etag}\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionResetError):
            writer.close()

    ports = {}
    servers = []
    for h in range(HOSTS):
        host = f"127.0.0.{h + 2}"
        server = await asyncio.start_server(handle, host, 0, backlog=512)
        ports[host] = server.sockets[0].getsockname()[1]
        servers.append(server)
    print(json.dumps(ports), flush=True)
    await asyncio.Event().wait()


def newsletter_file(folder: Path, ports: dict[str, int], feeds: int) -> Path:
    """A digest.toml with one source per feed, spread over the hosts."""
    hosts = sorted(ports)
    text = (
        '[newsletter]\ntitle = "Bench"\nfrom_email = "b@bench.example"\npostal_address = "1 Bench St"\n'
        '[[topics]]\nname = "Robots"\nkeywords = ["robot"]\n'
    )
    for i in range(feeds):
        host = hosts[i % len(hosts)]
        text += f'[[sources]]\nname = "feed {i}"\nurl = "http://{host}:{ports[host]}/feed/{i}"\n'
    path = folder / "digest.toml"
    path.write_text(text)
    return path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=None, help="parse processes (default: auto)")
    parser.add_argument("--profile", action="store_true", help="cProfile the first collect")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.feeds, args.entries, args.latency))
        return 0

    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            "--feeds",
            str(args.feeds),
            "--entries",
            str(args.entries),
            "--latency",
            str(args.latency),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ports = json.loads(server.stdout.readline())
        # Imported here so the server process does not pay for them; counted outside the timing,
        # as in a long-running `digest serve` / `digest schedule` process.
        import logging

        logging.basicConfig(level=logging.WARNING, format="  %(name)s: %(message)s")
        logging.getLogger("digest.sources.collect").setLevel(logging.INFO)
        logging.getLogger("digest.sources.collect").addFilter(lambda r: "source=" not in r.getMessage())
        from digest import pipeline
        from digest.db.engine import open_database
        from digest.newsletter import load_newsletter

        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        perfect = expected_stories(args.feeds, args.entries)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            newsletter = load_newsletter(newsletter_file(folder, ports, args.feeds))
            engine = open_database(f"sqlite:///{folder / 'bench.db'}")
            profiler = None
            if args.profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            results = pipeline.collect(
                newsletter, engine=engine, clock=FixedClock(NOW), parse_workers=args.workers
            )
            first = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = [
                a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before, strict=True)
            ]
            if profiler is not None:
                import pstats

                profiler.disable()
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
            new = sum(r.new for r in results)
            with engine.connect() as conn:
                stories = conn.exec_driver_sql("SELECT count(*) FROM story").scalar_one()
            failed = [r for r in results if r.status == "failed"]
            started = time.perf_counter()
            again = pipeline.collect(
                newsletter,
                engine=engine,
                clock=FixedClock(NOW + timedelta(hours=1)),
                parse_workers=args.workers,
            )
            second = time.perf_counter() - started
            engine.dispose()
        unchanged = sum(r.status == "unchanged" for r in again)
        serial = args.feeds * args.latency
        print(f"first collect: {first:.2f} s, {new} new articles, {len(failed)} failed sources")
        print(f"  stories: {stories} (a perfect clustering of this synthetic text: {perfect})")
        print(f"  CPU time: {cpu[0]:.2f} s in the collecting process, {cpu[1]:.2f} s in its workers")
        print(f"  load average before: {load}")
        print(f"second collect (all 304): {second:.2f} s, {unchanged} unchanged")
        print(f"(one request after another would wait {serial:.0f} s for the latency alone)")
        for r in failed[:5]:
            print(f"  failed: {r.error}")
        note = f"{args.feeds} feeds x {args.entries} entries, {args.latency * 1000:.0f} ms, {HOSTS} hosts"
        for metric, value in (
            ("first collect", first),
            ("first collect CPU, all processes", sum(cpu)),
            ("second collect (304s)", second),
        ):
            row = {"benchmark": "collect", "metric": metric, "value": round(value, 2), "unit": "s"}
            print("BENCH " + json.dumps({**row, "note": note}))
        row = {"benchmark": "collect", "metric": "first collect: feeds per second", "unit": "feeds/s"}
        print("BENCH " + json.dumps({**row, "value": round(args.feeds / first, 1), "note": note}))
        row = {"benchmark": "collect", "metric": "stories from 10,000 articles", "value": stories, "unit": ""}
        print("BENCH " + json.dumps({**row, "note": f"perfect clustering: {perfect}"}))
        return 1 if failed or new != args.feeds * args.entries else 0
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
