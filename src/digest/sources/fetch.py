"""Fetch sources' bytes: http(s) through httpx (timeouts, a deadline, size cap, conditional GET,
guarded redirects), or a file.

Many sources are fetched at once on one event loop, with at most `per_host` requests in flight to
any one host (politeness) and at most `concurrency` in all, so a run over many slow feeds takes
about as long as the slowest host's share, not the sum of every response time.

Every fetch ends by its deadline, however slowly a server drips bytes (per-read timeouts alone
do not bound that), and redirects are followed here, one hop at a time, so each new host can be
checked before it is asked: a feed may send us on to a public address only, unless the
operator's own URL was itself private (issue 12). A checked host is pinned: the connection goes to
the address that was checked, not to whatever a second DNS answer says (DNS rebinding).

Long: one job, the guarded fetch; its limits (deadline, size, redirects, host checks and
pinning, per-host slots) each guard the others' gaps and are read together.
"""

import asyncio
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from digest import __version__
from digest.config import Settings
from digest.errors import SourceError
from digest.sources.model import Fetched
from digest.sources.network import IPAddress, sockets_allowed
from digest.sources.pools import PoolPerHost, host_key, location_host

log = logging.getLogger(__name__)

USER_AGENT = f"digest/{__version__} (self-hosted newsletter digest; feed reader)"
MAX_BYTES = 10 * 1024 * 1024  # a real feed is well under this; more is a mistake or an attack
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class Resolver(Protocol):
    """Turns a host name into its addresses (the system's DNS; a table in tests)."""

    async def resolve(self, host: str) -> tuple[IPAddress, ...]:
        """Every address of `host`; raise OSError when it has none."""
        ...


class SystemResolver:
    """The operating system's resolver (getaddrinfo), as the HTTP client itself would use."""

    async def resolve(self, host: str) -> tuple[IPAddress, ...]:
        """Every address of `host`, in the order the system prefers them."""
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        return tuple(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


class StaticResolver:
    """A fixed table of names and their addresses (the in-memory resolver: tests use it in place
    of DNS); it remembers every name it was asked for."""

    def __init__(self, table: dict[str, Sequence[str]]) -> None:
        self.table = {
            name.lower(): tuple(ipaddress.ip_address(a) for a in addresses)
            for name, addresses in table.items()
        }
        self.asked: list[str] = []

    async def resolve(self, host: str) -> tuple[IPAddress, ...]:
        """The table's addresses for `host`; OSError when it has none, as DNS would say."""
        self.asked.append(host)
        found = self.table.get(host.lower())
        if not found:
            raise OSError(f"unknown host {host}")
        return found


def address_kind(address: IPAddress) -> str:
    """What kind of address this is: public, loopback, private, link-local, multicast, unspecified
    or reserved (Python's `ipaddress` properties, most specific first)."""
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 address carried inside IPv6 is what it carries: ::ffff:127.0.0.1 (mapped),
        # 2002:7f00:1:: (6to4), 64:ff9b::7f00:1 (NAT64, RFC 6052) all reach 127.0.0.1.
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address.sixtofour is not None:
            address = address.sixtofour
        elif address in _NAT64:
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    for kind, test in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),  # 169.254.169.254: cloud metadata services
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),  # 240.0.0.0/4: Python counts it private too
        ("private", address.is_private),
        ("public", address.is_global),
    ):
        if test:
            return kind
    return "reserved"  # neither private nor global: shared (100.64.0.0/10), benchmarking, ...


def redirect_refusal(origin_kinds: Iterable[str], target: Iterable[IPAddress]) -> str | None:
    """Why a redirect to another host with these addresses is refused, or None when it is allowed.

    Public addresses are always allowed; another kind only when the operator's own URL had it
    (a feed on the intranet may send us to another intranet host, a public feed may not).
    """
    allowed = {"public", *origin_kinds}
    for address in target:
        kind = address_kind(address)
        if kind not in allowed:
            return f"{address} is a {kind} address"
    return None


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """How politely and how patiently sources are fetched (from DIGEST_FETCH_* settings)."""

    user_agent: str = USER_AGENT
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    deadline: float = 60.0  # seconds for a whole fetch: every redirect, header and byte
    max_bytes: int = MAX_BYTES
    per_host: int = 2  # requests in flight to one host at once
    concurrency: int = 1024  # requests in flight in all (fewer if the open-files limit is lower)
    resolver: Resolver = field(default_factory=SystemResolver, compare=False)

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
            deadline=settings.fetch_deadline_seconds,
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


class FetchClient:
    """The transport of a whole collection run (a host's connections are reused while it has
    requests to come), with the hosts it has checked and pinned for redirects.

    Requests go straight to the transport, not through httpx's client: its layer adds a cookie
    jar (one feed's cookies are no business of another's), auth and redirect machinery that
    `_fetch_http` does not use, and it cost a fifth of the fetch loop's CPU in a run of 1,000
    feeds that all answer 304.
    """

    def __init__(self, options: FetchOptions) -> None:
        self.resolver = options.resolver
        self.pins: dict[str, tuple[IPAddress, ...]] = {}
        self._lookups: dict[str, asyncio.Future[tuple[IPAddress, ...]]] = {}
        self.transport = PoolPerHost(self.pins, options.per_host)
        self.headers = {
            "Accept": "*/*",
            "Accept-Encoding": "gzip, deflate",
            "Connection": "keep-alive",
            "User-Agent": options.user_agent,
        }
        self.extensions = {
            "timeout": {
                "connect": options.connect_timeout,
                "read": options.read_timeout,
                "write": options.read_timeout,
                "pool": None,  # our own semaphores bound the queue; waiting for a slot is not an error
            }
        }

    @asynccontextmanager
    async def get(
        self, url: httpx.URL | str, headers: dict[str, str] | None = None
    ) -> AsyncIterator[httpx.Response]:
        """GET `url` (no redirect followed: `_fetch_http` checks each hop); the answer's body is
        open inside the block and closed when it ends."""
        merged = {**self.headers, **headers} if headers else self.headers
        request = httpx.Request("GET", url, headers=merged, extensions=self.extensions)
        response = await self.transport.handle_async_request(request)
        response.request = request
        try:
            yield response
        finally:
            await response.aclose()

    def expect(self, locations: Iterable[str]) -> None:
        """The run will fetch these URLs: each host's pool lives until its last one has ended."""
        for location in locations:
            host = location_host(location)
            if host:
                self.transport.expected[host] += 1

    async def done_with(self, location: str) -> None:
        """The fetch of `location` (and its redirects) has ended."""
        host = location_host(location)
        if host:
            await self.transport.done_with(host)

    async def __aenter__(self) -> "FetchClient":
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.transport.aclose()

    async def kinds_of(self, host: str) -> frozenset[str]:
        """The kinds of address the operator's own host has (resolved once per run)."""
        return frozenset(address_kind(a) for a in await self._resolve(host))

    async def pin(self, host: str) -> tuple[IPAddress, ...]:
        """Resolve a redirect's host once, and connect to exactly these addresses from now on."""
        addresses = await self._resolve(host)
        self.pins.setdefault(host, addresses)
        return addresses

    async def _resolve(self, host: str) -> tuple[IPAddress, ...]:
        """One lookup per host and run, shared by every fetch that asks, even at the same moment:
        two answers (a rebinding DNS) could otherwise pass two checks and be mixed up."""
        if host not in self._lookups:
            lookup = asyncio.ensure_future(self._lookup(host))
            lookup.add_done_callback(lambda done: done.cancelled() or done.exception())  # read once
            self._lookups[host] = lookup
        # Shielded: a fetch that hits its deadline does not cancel the lookup the others wait for.
        return await asyncio.shield(self._lookups[host])

    async def _lookup(self, host: str) -> tuple[IPAddress, ...]:
        try:
            return (ipaddress.ip_address(host.strip("[]")),)
        except ValueError:
            pass
        return await self.resolver.resolve(host)


def make_client(options: FetchOptions) -> FetchClient:
    """One client for a whole collection run: `async with make_client(options) as client: ...`."""
    return FetchClient(options)


async def fetch_all(
    requests: Sequence[FetchRequest],
    *,
    client: FetchClient,
    options: FetchOptions,
    on_done: Callable[[FetchRequest, Fetched | SourceError], None] | None = None,
) -> list[Fetched | SourceError]:
    """Fetch every request concurrently; an expected failure is returned (not raised) in its slot."""
    overall = asyncio.Semaphore(sockets_allowed(min(options.concurrency, max(1, len(requests)))))
    hosts: dict[str, asyncio.Semaphore] = {}
    client.expect(r.location for r in requests)

    async def one(request: FetchRequest) -> Fetched | SourceError:
        host = urlsplit(request.location).hostname or ""
        per_host = hosts.setdefault(host, asyncio.Semaphore(options.per_host))
        async with per_host, overall:
            try:
                result: Fetched | SourceError = await fetch(request, client=client, options=options)
            except SourceError as e:
                result = e
            finally:
                await client.done_with(request.location)
        if on_done is not None:
            on_done(request, result)
        return result

    return list(await asyncio.gather(*(one(r) for r in requests)))


async def fetch(request: FetchRequest, *, client: FetchClient, options: FetchOptions) -> Fetched:
    """Fetch one source; raise SourceError naming the source on any expected failure."""
    name, location = request.name, request.location
    scheme = urlsplit(location).scheme.lower()
    if scheme in ("http", "https"):
        try:
            async with asyncio.timeout(options.deadline):
                return await _fetch_http(request, client, options.max_bytes)
        except TimeoutError as e:  # the deadline's own cancellation (httpx's timeouts are caught inside)
            raise SourceError(
                f"source {name!r}: no complete answer within the {options.deadline:g} s deadline "
                f"(DIGEST_FETCH_DEADLINE_SECONDS) from {location}"
            ) from e
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


async def _next_hop(name: str, url: httpx.URL, location: str, client: FetchClient, origin: str) -> httpx.URL:
    """Where a redirect leads, once checked: http(s) only; another host only if it may be asked."""
    try:
        target = httpx.URL(urljoin(str(url), location.strip()))
        scheme = target.scheme
    except (httpx.InvalidURL, ValueError) as e:
        raise SourceError(f"source {name!r}: redirect from {url} to an invalid URL {location[:200]!r}") from e
    refused = f"source {name!r}: redirect from {url} to {str(target)[:200]} refused"
    if scheme not in ("http", "https") or not target.host:
        raise SourceError(f"{refused}: only http(s) URLs are followed")
    host = host_key(target)
    if host == origin:
        return target  # the operator's own host: trusted as configured
    try:
        addresses = await client.pin(host)
        why = redirect_refusal(await client.kinds_of(origin), addresses)
    except OSError as e:
        raise SourceError(f"{refused}: cannot resolve {target.host}: {e}") from e
    if why is not None:
        raise SourceError(
            f"{refused}: {why}; a feed may redirect to another host only at a public address, "
            "unless its own URL is of that kind"
        )
    return target


async def _fetch_http(request: FetchRequest, client: FetchClient, max_bytes: int) -> Fetched:
    name, url = request.name, httpx.URL(request.location)
    origin = host_key(url)
    headers = {}
    # RFC 9110 §13.1: send both validators we kept; a server answers 304 when nothing changed.
    if request.etag:
        headers["If-None-Match"] = request.etag
    if request.last_modified:
        headers["If-Modified-Since"] = request.last_modified
    try:
        for _hop in range(MAX_REDIRECTS + 1):
            async with client.get(url, headers) as response:
                location = response.headers.get("location")
                if response.status_code in REDIRECTS and location:
                    url = await _next_hop(name, url, location, client, origin)
                    continue
                return await _read(request, response, str(url), max_bytes)
    except httpx.TimeoutException as e:
        kind = {
            "ConnectTimeout": "connecting",
            "ReadTimeout": "waiting for data",
            "WriteTimeout": "sending",
        }.get(type(e).__name__, "fetching")
        raise SourceError(f"source {name!r}: timed out {kind} from {url}") from e
    except httpx.HTTPError as e:
        raise SourceError(f"source {name!r}: cannot fetch {url}: {type(e).__name__}: {e}") from e
    raise SourceError(f"source {name!r}: more than {MAX_REDIRECTS} redirects from {request.location}")


async def _read(request: FetchRequest, response: httpx.Response, url: str, max_bytes: int) -> Fetched:
    name = request.name
    if response.status_code == 304:
        return Fetched(
            url=url,
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
        url=url,
        body=b"".join(chunks),
        headers={k.lower(): v for k, v in response.headers.items()},
        etag=response.headers.get("etag"),
        last_modified=response.headers.get("last-modified"),
    )


def _read_file(name: str, path: Path, max_bytes: int) -> Fetched:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise SourceError(
                f"source {name!r}: file {path} is {size:,} bytes, over the {max_bytes:,}-byte limit"
            )
        with path.open("rb") as f:
            body = f.read(max_bytes + 1)  # a device or a file growing meanwhile is cut off too
    except OSError as e:
        raise SourceError(f"source {name!r}: cannot read {path}: {e.strerror or e}") from e
    if len(body) > max_bytes:
        raise SourceError(f"source {name!r}: {path} is over the {max_bytes:,}-byte limit")
    return Fetched(url=path.resolve().as_uri(), body=body)
