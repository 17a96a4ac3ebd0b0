"""The connections of a collection run: one small pool per host, connecting to pinned addresses.

httpcore's single pool looks at every connection it holds for each request it places, so one
pool for a thousand feeds on a thousand hosts spends its time scanning (a third of a run's CPU
when every feed answers 304), and an idle connection it keeps alive holds a file descriptor for
seconds after its host is done. Here each host's pool is as small as its own traffic and is
closed as soon as no fetch expects it and no answer from it is still open. A host checked for a
redirect is pinned: its connections go to the addresses that were checked (fetch.py,
network.py).
"""

import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import httpcore
import httpx

from digest.sources.network import AsyncioNetwork, IPAddress


def host_key(url: httpx.URL) -> str:
    """The host of a URL as a pool knows it."""
    return url.raw_host.decode("ascii").lower()  # IDNA form, as the connection pool sees it


def location_host(location: str) -> str | None:
    """The pool key of an http(s) source's URL; None for a file or a URL httpx would refuse."""
    if location.isascii():  # the common case, without httpx's URL parser (~50 us)
        parts = urlsplit(location)
        if parts.scheme.lower() not in ("http", "https"):
            return None
        return (parts.hostname or "").lower() or None
    try:
        url = httpx.URL(location)
    except (httpx.InvalidURL, ValueError):
        return None
    return host_key(url) if url.scheme in ("http", "https") and url.host else None


class ReleasedOnClose(httpx.AsyncByteStream):
    """A response body that tells its pool when it is closed (read to the end, or abandoned)."""

    def __init__(self, inner: httpx.AsyncByteStream, release: Callable[[], Awaitable[None]]) -> None:
        self.inner = inner
        self.release: Callable[[], Awaitable[None]] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            yield chunk

    async def aclose(self) -> None:
        """Close the body, then release the pool (once)."""
        try:
            await self.inner.aclose()
        finally:
            release, self.release = self.release, None
            if release is not None:
                await release()


class PoolPerHost(httpx.AsyncBaseTransport):
    """One small connection pool per host, closed when the run has nothing more to ask it.

    httpcore's pool looks at every connection it holds for each request it places, so one pool
    for a thousand feeds on a thousand hosts spends its time scanning (a third of a run's CPU when
    every feed answers 304); and an idle connection it keeps alive holds a file descriptor for
    seconds after its host is done. Here each host's pool is as small as its own traffic, and is
    closed as soon as no fetch expects it (`done_with`) and no answer from it is still open.
    """

    def __init__(self, pins: dict[str, tuple[IPAddress, ...]], per_host: int) -> None:
        self.network = AsyncioNetwork(pins)
        self.per_host = per_host
        self.tls: ssl.SSLContext | None = None  # made on the first https request (see _context)
        self.pools: dict[str, dict[str, _Transport]] = {}  # host -> scheme -> its pool
        self.expected: Counter[str] = Counter()  # fetches still to come or under way, per host
        self.active: Counter[str] = Counter()  # requests whose answer is not closed yet, per host

    def _context(self) -> ssl.SSLContext:
        # One TLS context for every https pool of the run: loading the CA bundle costs ~40 ms, which
        # a run of plain-http sources (an intranet, a local mirror) need not pay at all.
        if self.tls is None:
            self.tls = httpx.create_ssl_context()
        return self.tls

    def _pool(self, host: str, scheme: str) -> "_Transport":
        by_scheme = self.pools.setdefault(host, {})
        transport = by_scheme.get(scheme)
        if transport is None:
            transport = by_scheme[scheme] = _Transport(
                httpcore.AsyncConnectionPool(
                    ssl_context=self._context() if scheme == "https" else None,
                    max_connections=None,  # fetch_all's semaphores bound the requests in flight
                    max_keepalive_connections=self.per_host,
                    keepalive_expiry=5.0,
                    network_backend=self.network,
                )
            )
        return transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` through its host's pool; the pool stays open until its answer is closed."""
        host = host_key(request.url)
        self.active[host] += 1
        try:
            response = await self._pool(host, request.url.scheme).handle_async_request(request)
        except BaseException:
            await self._release(host)
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)  # an async transport's answer
        response.stream = ReleasedOnClose(response.stream, lambda: self._release(host))
        return response

    async def _release(self, host: str) -> None:
        self.active[host] -= 1
        await self._close_if_idle(host)

    async def done_with(self, host: str) -> None:
        """One expected request to `host` has ended (its redirects too)."""
        self.expected[host] -= 1
        await self._close_if_idle(host)

    async def _close_if_idle(self, host: str) -> None:
        # A pool that another source's redirect is still reading from is not closed under it;
        # a redirect target nobody expects is closed once its answer has been read.
        if self.expected[host] > 0 or self.active[host] > 0:
            return
        del self.expected[host], self.active[host]
        for transport in self.pools.pop(host, {}).values():
            await transport.aclose()

    async def aclose(self) -> None:
        """Close every pool still open (redirect targets, an interrupted run)."""
        pools, self.pools = [t for by_scheme in self.pools.values() for t in by_scheme.values()], {}
        for transport in pools:
            await transport.aclose()


class _Transport(httpx.AsyncHTTPTransport):
    """httpx's transport around a pool made here: httpx has no public hook for the network layer
    (encode/httpx#1319), and its own constructor would load a TLS context for every pool."""

    def __init__(self, pool: httpcore.AsyncConnectionPool) -> None:  # the parent's is not run
        self._pool = pool
