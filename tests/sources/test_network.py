"""The asyncio network under httpcore: real sockets on loopback, httpcore's own errors."""

import asyncio
import contextlib
import ipaddress
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable

import httpcore
import pytest

from digest.sources.network import LOOKUPS_AT_ONCE, RESERVED_FILES, AsyncioNetwork, run_with_lookups

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Loopback:
    """A TCP server on 127.0.0.1 running `handler` per connection; leaving the block waits until
    every connection's handler has ended (the client closed) and its socket is closed."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.open = 0
        self.idle = asyncio.Event()
        self.port = 0

    async def __aenter__(self) -> "Loopback":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.open:
            await asyncio.wait_for(self.idle.wait(), 10)
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.idle.clear()
        try:
            await self.handler(reader, writer)
        except OSError:
            pass  # the client reset the connection
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self.open -= 1
            if not self.open:
                self.idle.set()


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _echo_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.readline())
    await writer.drain()
    writer.close()


def test_a_connection_writes_and_reads_then_sees_the_end() -> None:
    async def run() -> tuple[bytes, bytes]:
        async with Loopback(_echo_line) as server:
            stream = await AsyncioNetwork().connect_tcp("127.0.0.1", server.port, timeout=5)
            await stream.write(b"hello\n", timeout=5)
            echoed = await stream.read(100, timeout=5)
            end = await stream.read(100, timeout=5)
            await stream.aclose()
        return echoed, end

    assert asyncio.run(run()) == (b"hello\n", b"")


def test_a_silent_server_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; returns when the client gives up

    async def run() -> None:
        async with Loopback(silent) as server:
            stream = await AsyncioNetwork().connect_tcp("127.0.0.1", server.port, timeout=5)
            try:
                with pytest.raises(httpcore.ReadTimeout):
                    await stream.read(100, timeout=0.05)
            finally:
                await stream.aclose()

    asyncio.run(run())


def test_a_refused_connection_is_a_connect_error() -> None:
    with pytest.raises(httpcore.ConnectError):
        asyncio.run(AsyncioNetwork().connect_tcp("127.0.0.1", _closed_port(), timeout=5))


def test_a_name_without_an_address_is_a_connect_error() -> None:
    # .invalid never resolves (RFC 6761); the lookup fails locally, with no network.
    with pytest.raises(httpcore.ConnectError):
        run_with_lookups(AsyncioNetwork().connect_tcp("no-such-host.invalid", 80, timeout=5))


def test_an_idle_connection_closed_by_its_server_is_not_reused() -> None:
    closed = asyncio.Event()

    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()
        closed.set()
        await reader.read()  # until the client has closed too

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def readable(handler: Handler) -> bool:
        async with Loopback(handler) as server:
            stream = await AsyncioNetwork().connect_tcp("127.0.0.1", server.port, timeout=5)
            if handler is close_at_once:
                await closed.wait()
                for _ in range(100):  # until the loop has read the server's FIN
                    if stream.get_extra_info("is_readable"):
                        break
                    await asyncio.sleep(0.01)
            answer = bool(stream.get_extra_info("is_readable"))
            await stream.aclose()
        return answer

    assert asyncio.run(readable(close_at_once)) is True
    assert asyncio.run(readable(hold)) is False


def test_a_pinned_name_goes_to_its_checked_addresses_in_turn() -> None:
    # The name does not resolve at all: only the pin can take the connection anywhere. The first
    # pinned address refuses; the second one is the server.
    async def run() -> bytes:
        async with Loopback(_echo_line) as server:
            # 127.0.0.2 is loopback too on Linux, and nothing listens there on this port.
            refusing, listening = ipaddress.ip_address("127.0.0.2"), ipaddress.ip_address("127.0.0.1")
            pins = {"feeds.example.invalid": (refusing, listening)}
            stream = await AsyncioNetwork(pins).connect_tcp("Feeds.Example.invalid", server.port, timeout=5)
            await stream.write(b"pinned\n", timeout=5)
            answer = await stream.read(100, timeout=5)
            await stream.aclose()
        return answer

    assert asyncio.run(run()) == b"pinned\n"


def test_a_pinned_name_whose_addresses_all_refuse_is_a_connect_error() -> None:
    pins = {"feeds.example.invalid": (ipaddress.ip_address("127.0.0.1"),)}
    with pytest.raises(httpcore.ConnectError):
        asyncio.run(AsyncioNetwork(pins).connect_tcp("feeds.example.invalid", _closed_port(), timeout=5))


def test_run_with_lookups_lets_many_name_lookups_wait_at_once() -> None:
    # asyncio's own default executor has min(32, cores + 4) threads: on a small machine a few
    # slow DNS answers would hold up every other host's lookup. Here 20 blocking calls must be in
    # flight together (each waits for all the others at the barrier), as anyio allowed before.
    at_once = 20
    assert at_once <= LOOKUPS_AT_ONCE
    barrier = threading.Barrier(at_once, timeout=10)

    async def run() -> list[int]:
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(None, barrier.wait) for _ in range(at_once))))

    assert sorted(run_with_lookups(run())) == list(range(at_once))


def _allowed_under(soft: int, hard: int, wanted: int) -> tuple[int, int]:
    """sockets_allowed(wanted) in a child process whose open-files limit is (soft, hard) first:
    the answer and the soft limit after it (a lowered hard limit cannot be raised again here)."""
    code = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
        "from digest.sources.network import sockets_allowed\n"
        f"print(sockets_allowed({wanted}), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    allowed, soft_after = out.split()
    return int(allowed), int(soft_after)


def test_the_soft_open_files_limit_is_raised_for_the_sockets_a_run_wants() -> None:
    assert _allowed_under(256, 4096, 1000) == (1000, 1000 + RESERVED_FILES)


def test_a_low_hard_limit_means_fewer_requests_at_once_not_failures() -> None:
    assert _allowed_under(256, 600, 1000) == (600 - RESERVED_FILES, 600)
    assert _allowed_under(64, 64, 1000) == (1, 64)  # never none: one at a time still fetches all


def test_a_limit_already_high_enough_is_left_alone() -> None:
    assert _allowed_under(5000, 5000, 1000) == (1000, 5000)
