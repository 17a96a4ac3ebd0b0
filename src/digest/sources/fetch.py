"""Fetch sources' bytes: http(s) through httpx (timeouts, size cap, conditional GET), or a file.

Many sources are fetched at once on one event loop, with at most `per_host` requests in flight to
any one host (politeness) and at most `concurrency` in all, so a run over many slow feeds takes
about as long as the slowest host's share, not the sum of every response time.
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from digest import __version__
from digest.config import Settings
from digest.errors import SourceError
from digest.sources.model import Fetched

log = logging.getLogger(__name__)

USER_AGENT = f"digest/{__version__} (self-hosted newsletter digest; feed reader)"
MAX_BYTES = 10 * 1024 * 1024  # a real feed is well under this; more is a mistake or an attack
MAX_REDIRECTS = 5


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """How politely and how patiently sources are fetched (from DIGEST_FETCH_* settings)."""

    user_agent: str = USER_AGENT
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    max_bytes: int = MAX_BYTES
    per_host: int = 2  # requests in flight to one host at once
    concurrency: int = 100  # requests in flight in all (sockets: keep under the open-files limit)

    @classmethod
    def from_settings(cls, settings: Settings) -> "FetchOptions":
        """Options from DIGEST_USER_AGENT and the DIGEST_FETCH_* settings."""
        agent = settings.user_agent or USER_AGENT
        if "digest" not in agent.lower():  # servers' admins must be able to tell who is calling
            agent = f"{agent} digest/{__version__}"
        return cls(
            user_agent=agent,
            connect_timeout=min(10.0, settings.fetch_timeout),
            read_timeout=settings.fetch_timeout,
            max_bytes=settings.fetch_max_bytes,
            per_host=settings.fetch_per_host,
            concurrency=settings.fetch_concurrency,
        )


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """One source to fetch, with what we kept from its last fetch for a conditional GET."""

    name: str
    location: str
    etag: str | None = None
    last_modified: str | None = None


def make_client(options: FetchOptions) -> httpx.AsyncClient:
    """One HTTP client for a whole collection run (connections are reused per host)."""
    return httpx.AsyncClient(
        headers={"User-Agent": options.user_agent, "Accept-Encoding": "gzip, deflate"},
        timeout=httpx.Timeout(
            connect=options.connect_timeout,
            read=options.read_timeout,
            write=options.read_timeout,
            pool=None,  # our own semaphores bound the queue; waiting for a slot is not an error
        ),
        limits=httpx.Limits(max_connections=options.concurrency, max_keepalive_connections=32),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
    )


async def fetch_all(
    requests: Sequence[FetchRequest],
    *,
    client: httpx.AsyncClient,
    options: FetchOptions,
    on_done: Callable[[FetchRequest, Fetched | SourceError], None] | None = None,
) -> list[Fetched | SourceError]:
    """Fetch every request concurrently; an expected failure is returned (not raised) in its slot."""
    overall = asyncio.Semaphore(options.concurrency)
    hosts: dict[str, asyncio.Semaphore] = {}

    async def one(request: FetchRequest) -> Fetched | SourceError:
        host = urlsplit(request.location).hostname or ""
        per_host = hosts.setdefault(host, asyncio.Semaphore(options.per_host))
        async with per_host, overall:
            try:
                result: Fetched | SourceError = await fetch(request, client=client, options=options)
            except SourceError as e:
                result = e
        if on_done is not None:
            on_done(request, result)
        return result

    return list(await asyncio.gather(*(one(r) for r in requests)))


async def fetch(request: FetchRequest, *, client: httpx.AsyncClient, options: FetchOptions) -> Fetched:
    """Fetch one source; raise SourceError naming the source on any expected failure."""
    name, location = request.name, request.location
    scheme = urlsplit(location).scheme.lower()
    if scheme in ("http", "https"):
        return await _fetch_http(request, client, options.max_bytes)
    if scheme == "file":
        return _read_file(name, Path(unquote(urlsplit(location).path)), options.max_bytes)
    if scheme and len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise SourceError(f"source {name!r}: unsupported URL scheme {scheme!r} in {location!r}")
    return _read_file(name, Path(location), options.max_bytes)


def _too_big(name: str, url: str, max_bytes: int, size: int | None = None) -> SourceError:
    said = f"announced {size:,} bytes, over" if size is not None else "cut off at"
    return SourceError(
        f"source {name!r}: response too large: {said} the {max_bytes:,}-byte limit "
        f"(DIGEST_FETCH_MAX_BYTES) from {url}"
    )


async def _fetch_http(request: FetchRequest, client: httpx.AsyncClient, max_bytes: int) -> Fetched:
    name, url = request.name, request.location
    headers = {}
    # RFC 9110 §13.1: send both validators we kept; a server answers 304 when nothing changed.
    if request.etag:
        headers["If-None-Match"] = request.etag
    if request.last_modified:
        headers["If-Modified-Since"] = request.last_modified
    try:
        async with client.stream("GET", url, headers=headers) as response:
            if response.status_code == 304:
                return Fetched(
                    url=str(response.url),
                    body=None,
                    etag=response.headers.get("etag", request.etag),
                    last_modified=response.headers.get("last-modified", request.last_modified),
                )
            if response.status_code >= 400:
                reason = response.reason_phrase or ""
                raise SourceError(f"source {name!r}: HTTP {response.status_code} {reason} from {url}".strip())
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise _too_big(name, url, max_bytes, int(declared))
            chunks: list[bytes] = []
            size = 0
            # Decoded bytes are counted, so a small gzip bomb is cut off like a large body.
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise _too_big(name, url, max_bytes)
                chunks.append(chunk)
            return Fetched(
                url=str(response.url),
                body=b"".join(chunks),
                headers={k.lower(): v for k, v in response.headers.items()},
                etag=response.headers.get("etag"),
                last_modified=response.headers.get("last-modified"),
            )
    except httpx.TimeoutException as e:
        kind = {
            "ConnectTimeout": "connecting",
            "ReadTimeout": "waiting for data",
            "WriteTimeout": "sending",
        }.get(type(e).__name__, "fetching")
        raise SourceError(f"source {name!r}: timed out {kind} from {url}") from e
    except httpx.TooManyRedirects as e:
        raise SourceError(f"source {name!r}: more than {MAX_REDIRECTS} redirects from {url}") from e
    except httpx.HTTPError as e:
        raise SourceError(f"source {name!r}: cannot fetch {url}: {type(e).__name__}: {e}") from e


def _read_file(name: str, path: Path, max_bytes: int) -> Fetched:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise SourceError(
                f"source {name!r}: file {path} is {size:,} bytes, over the {max_bytes:,}-byte limit"
            )
        body = path.read_bytes()
    except OSError as e:
        raise SourceError(f"source {name!r}: cannot read {path}: {e.strerror or e}") from e
    return Fetched(url=path.resolve().as_uri(), body=body)
