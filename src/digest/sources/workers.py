"""Worker processes for a collection run: parsing on the other cores, numpy kept off the main one."""

import asyncio
import html
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_all_start_methods, get_context

from digest.errors import SourceError
from digest.sources.model import Fetched, ParsedFeed
from digest.sources.parse import parse_feed
from digest.stories import Batch, KnownArticle, Pairs, StoryDoc, cluster, score_batch, terms, warm_up

SUMMARY_HTML_CHARS = 2000  # story matching reads the start of a summary only
_TAG = re.compile(r"<[^>]*>")


def summary_text(summary_html: str) -> str:
    """The text of a sanitized summary's start: its tags dropped, good enough to compare."""
    return html.unescape(_TAG.sub(" ", summary_html[:SUMMARY_HTML_CHARS]))


Clusterer = Callable[[Sequence[StoryDoc], Sequence[KnownArticle]], list[int]]


def parse_with_terms(name: str, body: bytes, url: str, headers: dict[str, str]) -> ParsedFeed:
    """Parse, and compute each entry's story-matching terms while in a worker (they cost ~40 us)."""
    feed = parse_feed(name, body, url=url, headers=headers)
    entries = tuple(
        replace(e, terms=terms(StoryDoc(e.title, summary_text(e.summary_html)))) for e in feed.entries
    )
    return replace(feed, entries=entries)


def start_method() -> str:
    """fork when it is safe, spawn otherwise.

    A forked worker starts in milliseconds with every module already imported; a spawned one
    imports them again (~1 s of CPU each). Forking is unsafe only when other threads may hold locks
    (the web app's scheduler thread, say). Open database connections are inherited but never used:
    the workers only parse and cluster, and end with os._exit, which closes nothing on the wire.
    """
    if threading.active_count() == 1 and "fork" in get_all_start_methods():
        return "fork"
    return "spawn"


class Workers:
    """Parses inline, or in worker processes started on the first body that needs parsing.

    With workers, one more process imports numpy and scipy.sparse (~0.3 s of CPU) while the network
    is waited for, and later does the matrix work of story clustering; only plain bytes and lists
    travel to it and back.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.parsers: ProcessPoolExecutor | None = None
        self.scientist: ProcessPoolExecutor | None = None

    def parse(
        self, loop: asyncio.AbstractEventLoop, name: str, fetched: Fetched
    ) -> "asyncio.Future[ParsedFeed]":
        """A future of the parsed feed (or of the SourceError saying why it is not one)."""
        assert fetched.body is not None
        if self.workers <= 0:
            future: asyncio.Future[ParsedFeed] = loop.create_future()
            try:
                future.set_result(parse_feed(name, fetched.body, url=fetched.url, headers=fetched.headers))
            except SourceError as e:
                future.set_exception(e)
            return future
        if self.parsers is None:
            context = get_context(start_method())
            self.scientist = ProcessPoolExecutor(1, mp_context=context)
            self.scientist.submit(warm_up)
            self.parsers = ProcessPoolExecutor(self.workers, mp_context=context)
        args = (name, fetched.body, fetched.url, fetched.headers)
        return loop.run_in_executor(self.parsers, parse_with_terms, *args)

    def cluster(self, new: Sequence[StoryDoc], known: Sequence[KnownArticle]) -> list[int]:
        """stories.cluster, with the matrix work in the worker that has numpy loaded."""
        scientist = self.scientist
        if scientist is None:
            return cluster(new, known)

        def compute(batch: Batch) -> Pairs:
            return scientist.submit(score_batch, batch).result()

        return cluster(new, known, compute=compute)

    def close(self) -> None:
        """Stop the worker processes, if any were started."""
        for pool in (self.parsers, self.scientist):
            if pool is not None:
                pool.shutdown(cancel_futures=True)
