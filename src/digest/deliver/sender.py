"""The send loop's mechanics: transport calls, a rate limit, parallel lanes, and the ledger
written around every call, so that at most one call per lane is ever in flight.

The order for every call is: commit "these rows are `sending`", make the call, commit its
answers (merged with the next call's "sending" into one transaction). A crash between the two
commits leaves exactly that call's rows `sending`, which the next run reports as unknown: at
most one SMTP message, or one SendGrid request, per lane (DIGEST_SEND_CONCURRENCY lanes).
"""

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Protocol

from digest.deliver.base import OutgoingMessage, SendResult, Transport
from digest.errors import TransportUnavailable

log = logging.getLogger(__name__)

Call = tuple[list[OutgoingMessage], list[SendResult]]


class RateLimiter:
    """Paces transport calls to at most `per_second` messages a second (None: no limit)."""

    def __init__(
        self,
        per_second: float | None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.per_second = per_second
        self.monotonic = monotonic
        self.sleep = sleep
        self._next: float | None = None

    def acquire(self, count: int) -> None:
        """Wait until `count` more messages may leave."""
        if not self.per_second:
            return
        now = self.monotonic()
        if self._next is not None and self._next > now:
            self.sleep(self._next - now)
            now = self._next
        self._next = now + count / self.per_second


def batches(
    messages: Iterable[OutgoingMessage], size: int, *, max_held: int | None = None
) -> Iterator[list[OutgoingMessage]]:
    """Group messages into transport calls of at most `size`, one content per call.

    At most `max_held` messages (default 4 * size) wait in open calls: with many distinct
    contents (topic sets) a full call of each could otherwise hold a whole list of readers in
    memory. Past the bound the fullest open call leaves early, a smaller call rather than a
    bigger process.
    """
    limit = max(max_held if max_held is not None else 4 * size, 1)
    open_: dict[str, list[OutgoingMessage]] = {}
    held = 0
    for message in messages:
        bucket = open_.setdefault(message.content.key, [])
        bucket.append(message)
        held += 1
        if len(bucket) >= size:
            held -= len(bucket)
            yield open_.pop(message.content.key)
        elif held >= limit:
            fullest = max(open_, key=lambda key: len(open_[key]))
            held -= len(open_[fullest])
            yield open_.pop(fullest)
    yield from open_.values()


class Journal(Protocol):
    """Where the send loop writes the ledger: one transaction per step."""

    def step(self, done: Sequence[Call], claim: Sequence[OutgoingMessage]) -> None:
        """Record the answers of finished calls, then mark the next call's rows `sending`; commit."""
        ...


def unavailable(batch: Sequence[OutgoingMessage], error: TransportUnavailable) -> list[SendResult]:
    """Results for a call the transport could not make at all: nothing left, try again later."""
    return [SendResult(m.delivery_id, ok=False, error=str(error)) for m in batch]


def stopped(error: TransportUnavailable) -> TransportUnavailable:
    """The error a stopped send raises: the transport's line, and what the stop leaves behind."""
    return TransportUnavailable(
        f"{error}; the send stopped (no reader is bounced for this; every unsent message stays "
        "queued for the next send)"
    )


def send_calls(
    calls: Iterable[list[OutgoingMessage]],
    *,
    lanes: Sequence[Transport],
    journal: Journal,
    limiter: RateLimiter,
) -> None:
    """Send every call through the lanes (one call in flight per lane), journaling around each.

    Raises TransportUnavailable after recording the calls already made, when a lane's server
    cannot be reached: the rest stays pending for the next run.
    """
    if len(lanes) == 1:
        _send_serial(calls, lanes[0], journal, limiter)
    else:
        _send_parallel(calls, lanes, journal, limiter)


def _send_serial(
    calls: Iterable[list[OutgoingMessage]], lane: Transport, journal: Journal, limiter: RateLimiter
) -> None:
    done: list[Call] = []
    for batch in calls:
        limiter.acquire(len(batch))
        journal.step(done, batch)
        try:
            done = [(batch, lane.send(batch))]
        except TransportUnavailable as e:
            journal.step([(batch, unavailable(batch, e))], [])
            raise stopped(e) from e
    journal.step(done, [])


def _send_parallel(
    calls: Iterable[list[OutgoingMessage]],
    lanes: Sequence[Transport],
    journal: Journal,
    limiter: RateLimiter,
) -> None:
    pending = iter(calls)
    free = list(lanes)
    running: dict[Future[list[SendResult]], tuple[Transport, list[OutgoingMessage]]] = {}
    done: list[Call] = []
    failure: TransportUnavailable | None = None
    exhausted = False
    with ThreadPoolExecutor(max_workers=len(lanes), thread_name_prefix="digest-send") as pool:
        while True:
            while free and not exhausted and failure is None:
                batch = next(pending, None)
                if batch is None:
                    exhausted = True
                    break
                limiter.acquire(len(batch))
                journal.step(done, batch)
                done = []
                lane = free.pop()
                running[pool.submit(lane.send, batch)] = (lane, batch)
            if done:  # nothing more will be claimed: record now, not after the next wait
                journal.step(done, [])
                done = []
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                lane, batch = running.pop(future)
                free.append(lane)
                try:
                    done.append((batch, future.result()))
                except TransportUnavailable as e:
                    done.append((batch, unavailable(batch, e)))
                    failure = failure or e
    journal.step(done, [])
    if failure is not None:
        raise stopped(failure) from failure
