"""The network under httpcore for a collection run: plain asyncio streams.

httpcore's asyncio support goes through anyio, whose cancel scopes, task groups and library
sniffing cost more than the work itself when a run opens a thousand connections that each carry
one small request: a quarter of the fetch loop's CPU in a run of 1,000 feeds that all answer 304.
asyncio itself has every piece httpcore asks of a network backend: a connection within a timeout
(with Happy Eyeballs across a name's addresses), reads and writes within a timeout, and TLS on an
open connection. Errors are httpcore's own, as its anyio backend raises them, so the layers above
(httpx's mapping, fetch.py's messages) see no difference.
"""

import asyncio
import contextlib
import ipaddress
import resource
import ssl
from collections.abc import Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpcore

# Happy Eyeballs (RFC 8305): the next address is tried after this long without an answer, so a
# host whose IPv6 route is broken costs a quarter of a second, not the whole connect timeout.
HAPPY_EYEBALLS_DELAY = 0.25
LOOKUPS_AT_ONCE = 40
# Open files a run keeps besides its connections: the database, the workers' pipes, the log, the
# CA bundle while it is read.
RESERVED_FILES = 128

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

T = TypeVar("T")


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One TCP (or TLS) connection, read and written through asyncio's streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Up to `max_bytes` bytes; b"" once the peer has closed."""
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as e:
            raise httpcore.ReadTimeout(f"no data within {timeout} s") from e
        except OSError as e:
            raise httpcore.ReadError(str(e) or type(e).__name__) from e

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Every byte of `buffer`, handed to the kernel (or queued within its flow-control limit)."""
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError as e:
            raise httpcore.WriteTimeout(f"could not send within {timeout} s") from e
        except OSError as e:
            raise httpcore.WriteError(str(e) or type(e).__name__) from e

    async def aclose(self) -> None:
        """Close at once. A TLS close_notify would wait for the peer's reply (up to 30 s in
        asyncio) for nothing: HTTP/1.1 frames its own messages, as httpcore's anyio backend also
        assumes when it drops the connection."""
        self._writer.transport.abort()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        """TLS over this connection, the certificate checked against `server_hostname`."""
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as e:
            await self.aclose()
            raise httpcore.ConnectTimeout(f"no TLS handshake within {timeout} s") from e
        except OSError as e:  # ssl.SSLError (a certificate refused, say) is an OSError
            await self.aclose()
            raise httpcore.ConnectError(str(e) or type(e).__name__) from e
        return self

    def get_extra_info(self, info: str) -> Any:
        """What httpcore asks of a connection: its TLS object, addresses, socket, and whether an
        idle one has been closed by its server (then it is not reused)."""
        if info == "is_readable":
            return self._reader.at_eof() or self._writer.transport.is_closing()
        key = {"client_addr": "sockname", "server_addr": "peername"}.get(info, info)
        if key in ("ssl_object", "sockname", "peername", "socket"):
            return self._writer.get_extra_info(key)
        return None


class AsyncioNetwork(httpcore.AsyncNetworkBackend):
    """Connections opened by asyncio. A pinned host (one fetch.py checked before following a
    redirect to it) is connected to exactly the addresses that were checked, in turn, not to
    whatever a second DNS answer says; other names are looked up in the loop's default executor
    (see `run_with_lookups`)."""

    def __init__(self, pins: dict[str, tuple[IPAddress, ...]] | None = None) -> None:
        self.pins = pins if pins is not None else {}

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A TCP connection to `host` (a name or an address) on `port`, within `timeout`."""
        addresses = self.pins.get(host.lower())
        if not addresses:
            return await _connect(host, port, timeout, local_address, socket_options)
        error: Exception | None = None
        for address in addresses:
            try:
                return await _connect(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Not used for feeds."""
        raise httpcore.ConnectError(f"unix sockets are not used for feeds ({path})")

    async def sleep(self, seconds: float) -> None:
        """httpcore's pause between retries (it makes none here)."""
        await asyncio.sleep(seconds)


async def _connect(
    host: str,
    port: int,
    timeout: float | None,
    local_address: str | None,
    socket_options: Iterable[httpcore.SOCKET_OPTION] | None,
) -> AsyncioStream:
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                local_addr=(local_address, 0) if local_address else None,
                # An address needs no race; a name may have several, of both families.
                happy_eyeballs_delay=None if _is_address(host) else HAPPY_EYEBALLS_DELAY,
            )
    except TimeoutError as e:
        raise httpcore.ConnectTimeout(f"no connection to {host}:{port} within {timeout} s") from e
    except OSError as e:  # refused, unreachable, or a name with no address (socket.gaierror)
        raise httpcore.ConnectError(str(e) or type(e).__name__) from e
    if socket_options:
        sock = writer.get_extra_info("socket")
        for option in socket_options:
            sock.setsockopt(*option)
    return AsyncioStream(reader, writer)


def run_with_lookups(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` with room for many name lookups at once.

    asyncio looks names up (getaddrinfo, which blocks) in the loop's default executor, sized for
    CPU work: 6 threads on 2 cores. A run over hundreds of hosts waits on DNS, not on the CPU;
    anyio, which did the lookups before, allowed 40 at once. Threads start only when a name is
    looked up: a run whose sources are all addresses starts none.
    """

    async def with_lookups() -> T:
        lookups = ThreadPoolExecutor(LOOKUPS_AT_ONCE, thread_name_prefix="digest-lookup")
        asyncio.get_running_loop().set_default_executor(lookups)  # asyncio.run shuts it down
        return await main

    return asyncio.run(with_lookups())


def sockets_allowed(wanted: int) -> int:
    """How many connections a run may have open at once: `wanted`, or fewer when the open-files
    limit cannot make room for them.

    The soft limit is raised toward the hard one first, as Go's runtime does for every program:
    the usual soft 1,024 dates from select(), and asyncio waits with epoll. Where the hard limit is
    lower than the run needs, fewer requests go at once and every source is still fetched.
    """
    need = wanted + RESERVED_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        raised = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):  # not allowed here: keep the soft limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - RESERVED_FILES))


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
