"""Worker processes for a collection run: parsing on the other cores, numpy kept off the main one."""

import asyncio
import contextlib
import html
import re
import threading
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext

from digest.errors import SourceError
from digest.sources.model import Fetched, ParsedFeed
from digest.stories import KnownArticle, StoryDoc, cluster, score_batch, terms, warm_up
from digest.story_terms import Batch, Pairs

SUMMARY_HTML_CHARS = 2000  # story matching reads the start of a summary only
_TAG = re.compile(r"<[^>]*>")


def summary_text(summary_html: str) -> str:
    """The text of a sanitized summary's start: its tags dropped, good enough to compare."""
    return html.unescape(_TAG.sub(" ", summary_html[:SUMMARY_HTML_CHARS]))


Clusterer = Callable[[Sequence[StoryDoc], Sequence[KnownArticle]], list[int]]


def parse_with_terms(name: str, body: bytes, url: str, headers: dict[str, str]) -> ParsedFeed:
    """Parse, and compute each entry's story-matching terms while in a worker (they cost ~40 us)."""
    feed = _parse_feed(name, body, url, headers)
    entries = tuple(
        replace(e, terms=terms(StoryDoc(e.title, summary_text(e.summary_html)))) for e in feed.entries
    )
    return replace(feed, entries=entries)


def _parse_feed(name: str, body: bytes, url: str, headers: dict[str, str]) -> ParsedFeed:
    # The feed parsers (feedparser, feedparser-rs, the JSON Feed model) are loaded on the first
    # feed to parse, in the process that parses it: a collect whose sources all answer 304 never
    # loads them, and forked workers load them while the network is waited for.
    from digest.sources.parse import parse_feed

    return parse_feed(name, body, url=url, headers=headers)


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


def _scientist_loop(conn: Connection) -> None:
    """The clustering worker: load numpy on "warm", score each batch it is sent, stop on None."""
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the collect has gone
            return
        if message is None:
            return
        if message == "warm":
            warm_up()
            continue
        try:
            conn.send((True, score_batch(message)))
        except Exception:  # a bug: said to the collect, which raises it
            conn.send((False, traceback.format_exc()))


class _Scientist:
    """One process for the matrix work, driven over a pipe.

    Not a ProcessPoolExecutor: a pool starts threads in this process on its first task, and the
    parse workers forked after them would be forked from a process with threads (where a lock
    another thread held at that instant stays locked in the child for ever, as seen under
    libfaketime). A plain process and a pipe start none.
    """

    def __init__(self, context: BaseContext) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_scientist_loop, args=(child,), daemon=True)  # type: ignore[attr-defined]
        self.process.start()
        child.close()

    def warm(self) -> None:
        """Have numpy and scipy.sparse loaded while the network is waited for."""
        self.conn.send("warm")

    def score(self, batch: Batch) -> Pairs:
        """score_batch(batch), computed in the worker."""
        self.conn.send(batch)
        ok, value = self.conn.recv()
        if not ok:
            raise RuntimeError(f"the clustering worker failed:\n{value}")
        result: Pairs = value
        return result

    def close(self) -> None:
        """Stop the worker (it ends on None, or when the pipe closes)."""
        with contextlib.suppress(OSError):  # it has gone already
            self.conn.send(None)
        self.conn.close()
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


class Workers:
    """Parses inline, or in worker processes started on the first body that needs parsing.

    With workers, one more process imports numpy and scipy.sparse (~0.3 s of CPU) while the network
    is waited for, and later does the matrix work of story clustering; only plain bytes and lists
    travel to it and back.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.parsers: ProcessPoolExecutor | None = None
        self.scientist: _Scientist | None = None
        self.method: str | None = None  # how the processes were started, once they are
        self._warm = False

    def start(self) -> None:
        """Start the worker processes now, if there are to be any.

        collect calls this before its first fetch, so the processes are forked while this is still
        the only thread: a progress bar started from `on_fetched` (Rich's refresh thread) comes
        after them and cannot make them spawned (each spawned worker imports everything again,
        ~1 s of CPU). With fork, a pool forks all its processes on its first submit (the no-op
        submit below), then starts its threads; the clustering worker, forked first, starts none.
        """
        if self.workers <= 0 or self.parsers is not None:
            return
        self.method = start_method()
        context = get_context(self.method)
        self.scientist = _Scientist(context)
        self.parsers = ProcessPoolExecutor(self.workers, mp_context=context)
        self.parsers.submit(int)

    def parse(
        self, loop: asyncio.AbstractEventLoop, name: str, fetched: Fetched
    ) -> "asyncio.Future[ParsedFeed]":
        """A future of the parsed feed (or of the SourceError saying why it is not one)."""
        assert fetched.body is not None
        if self.workers <= 0:
            future: asyncio.Future[ParsedFeed] = loop.create_future()
            try:
                future.set_result(_parse_feed(name, fetched.body, url=fetched.url, headers=fetched.headers))
            except SourceError as e:
                future.set_exception(e)
            return future
        self.start()
        assert self.parsers is not None and self.scientist is not None
        if not self._warm:  # numpy is loaded only when there is something to cluster
            self._warm = True
            self.scientist.warm()
        args = (name, fetched.body, fetched.url, fetched.headers)
        return loop.run_in_executor(self.parsers, parse_with_terms, *args)

    def cluster(self, new: Sequence[StoryDoc], known: Sequence[KnownArticle]) -> list[int]:
        """stories.cluster, with the matrix work in the worker that has numpy loaded."""
        scientist = self.scientist
        if scientist is None:
            return cluster(new, known)

        return cluster(new, known, compute=scientist.score)

    def close(self) -> None:
        """Stop the worker processes, if any were started."""
        if self.parsers is not None:
            self.parsers.shutdown(cancel_futures=True)
        if self.scientist is not None:
            self.scientist.close()
