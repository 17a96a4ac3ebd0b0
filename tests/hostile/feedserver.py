"""A hostile feed server: a real HTTP server on loopback whose routes misbehave on purpose.

Built on tests/httpserver.FeedServer (real sockets, every request recorded). Each method routes
one kind of bad answer; the feeds themselves come from tests/feedbuilder.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from tests.feedbuilder import Item, rss
from tests.httpserver import FeedServer, Reply, serving

DRIP_LIMIT = 150  # bytes dripped at most, so a client with no deadline still ends (slowly) one day


class HostileFeeds:
    """Routes of a hostile feed server; `url(path)` links to them."""

    def __init__(self, server: FeedServer) -> None:
        self.server = server

    def url(self, path: str) -> str:
        """Absolute URL of a path on this server (http://127.0.0.1:PORT/...)."""
        return self.server.url(path)

    def asked(self, path: str) -> bool:
        """True when some client requested this path."""
        return any(seen.path.split("?")[0] == path for seen in self.server.seen)

    def feed(self, path: str, body: bytes, content_type: str = "application/rss+xml") -> str:
        """A well-behaved answer, for the good sources beside the hostile ones."""
        self.server.route(path, Reply(headers={"Content-Type": content_type}, body=body))
        return self.url(path)

    def good(self, path: str, *titles: str) -> str:
        """An RSS feed with one entry per title, linked under https://good.example/."""
        items = [Item(t, f"https://good.example/{i}", guid=f"g{i}") for i, t in enumerate(titles)]
        return self.feed(path, rss(items, title="Good feed", link="https://good.example/"))

    def drip(self, path: str, every: float = 0.2) -> str:
        """Headers at once, then the start of a feed, then one byte every `every` seconds."""
        release = self.server.release

        def chunks() -> Iterator[bytes]:
            yield b'<?xml version="1.0"?><rss version="2.0"><channel><title>Slow</title>'
            for _ in range(DRIP_LIMIT):
                if release.wait(every):  # the server is shutting down
                    return
                yield b" "

        self.server.route(
            path, lambda _seen: Reply(headers={"Content-Type": "application/rss+xml"}, body=chunks())
        )
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        """A redirect to anywhere: another host, another scheme, an internal address."""
        self.server.route(path, Reply(status, headers={"Location": location}))
        return self.url(path)


@contextmanager
def hostile_server() -> Iterator[HostileFeeds]:
    """A running hostile feed server on 127.0.0.1, shut down afterwards."""
    with serving() as server:
        yield HostileFeeds(server)
