"""Run feedparser's own fixture corpus (2,242 small feeds shipped in its sdist) through digest's parser.

Each fixture is given to `parse_feed` as one source would be. A SourceError is an expected,
recorded outcome (the feed is reported as failed, the run goes on); any other exception escaping
the parser would be a bug that stops a collection, and makes this script fail.

The sdist is fetched once with pip into benchmarks/.cache/ (set FEEDPARSER_SDIST to use a copy you
already have). Usage: python benchmarks/bench_feedparser_fixtures.py
"""

import collections
import json
import os
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

VERSION = "6.0.14"
CACHE = Path(__file__).resolve().parent / ".cache"


def sdist() -> Path:
    """The feedparser sdist: from FEEDPARSER_SDIST, the cache, or pip download."""
    given = os.environ.get("FEEDPARSER_SDIST")
    if given:
        return Path(given)
    path = CACHE / f"feedparser-{VERSION}.tar.gz"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"feedparser=={VERSION}",
                "-d",
                str(CACHE),
            ],
            check=True,
        )
    return path


def fixtures(path: Path) -> list[tuple[str, bytes]]:
    """Every .xml file under tests/ in the sdist, with its path."""
    found = []
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if member.isfile() and "/tests/" in member.name and member.name.endswith(".xml"):
                handle = tar.extractfile(member)
                assert handle is not None
                found.append((member.name.split("/tests/", 1)[1], handle.read()))
    return sorted(found)


def main() -> int:
    from digest.errors import SourceError
    from digest.sources.parse import parse_feed, read_xml

    corpus = fixtures(sdist())
    outcomes: collections.Counter[str] = collections.Counter()
    parsers: collections.Counter[str] = collections.Counter()
    entries = 0
    escaped = []
    started = time.perf_counter()
    for name, body in corpus:
        url = f"http://fixtures.example/{name}"
        try:
            parsers[read_xml(body, url, {})[1]] += 1
            feed = parse_feed(name, body, url=url)
            entries += len(feed.entries)
            outcomes["parsed"] += 1
        except SourceError:
            outcomes["source error (recorded, run goes on)"] += 1
        except Exception:  # the point of this script: count what would escape the source boundary
            outcomes["ESCAPED"] += 1
            escaped.append((name, traceback.format_exc(limit=3)))
    elapsed = time.perf_counter() - started
    print(f"{len(corpus)} fixture feeds from feedparser {VERSION} in {elapsed:.2f} s")
    for outcome, count in outcomes.most_common():
        print(f"  {outcome}: {count}")
    print(f"  entries kept: {entries}; read by {dict(parsers)}")
    for name, trace in escaped[:10]:
        print(f"ESCAPED {name}\n{trace}")
    note = f"feedparser {VERSION} sdist fixtures"
    for metric, value, unit in (
        ("fixture feeds", len(corpus), ""),
        ("exceptions escaping", outcomes["ESCAPED"], ""),
        ("source errors", outcomes["source error (recorded, run goes on)"], ""),
        ("entries kept", entries, ""),
        ("time", round(elapsed, 2), "s"),
    ):
        row = {"benchmark": "feedparser fixtures", "metric": metric, "value": value, "unit": unit}
        print("BENCH " + json.dumps({**row, "note": note}))
    return 1 if escaped else 0


if __name__ == "__main__":
    sys.exit(main())
