"""Fetching against a real local HTTP server: conditional GET, timeouts, size cap, politeness."""

import asyncio
import gzip
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from digest import pipeline
from digest.clock import FixedClock
from digest.config import load_settings
from digest.errors import SourceError
from digest.newsletter import load_newsletter
from digest.sources.fetch import FetchOptions, FetchRequest, fetch_all, make_client
from digest.sources.model import Fetched
from tests.feedbuilder import Item, newsletter_toml, rss
from tests.httpserver import FeedServer, Reply, Seen, serving

FEED = rss([Item("Robot opens a door", "https://example.com/door", guid="1")])


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with serving() as s:
        yield s


def _fetch(*requests: FetchRequest, options: FetchOptions | None = None) -> list[Fetched | SourceError]:
    opts = options or FetchOptions()

    async def run() -> list[Fetched | SourceError]:
        async with make_client(opts) as client:
            return await fetch_all(list(requests), client=client, options=opts)

    return asyncio.run(run())


def _one(server: FeedServer, path: str, **kw: object) -> Fetched | SourceError:
    options = kw.pop("options", None)
    return _fetch(FetchRequest("Feed", server.url(path), **kw), options=options)  # type: ignore[arg-type]


def test_etag_and_last_modified_make_the_next_fetch_a_free_304(server: FeedServer) -> None:
    def conditional(seen: Seen) -> Reply:
        if seen.headers.get("if-none-match") == '"v1"':
            return Reply(304, {"ETag": '"v1"'})
        return Reply(200, {"ETag": '"v1"', "Last-Modified": "Tue, 24 Nov 2026 10:00:00 GMT"}, FEED)

    server.route("/feed", conditional)
    first = _one(server, "/feed")[0]
    assert isinstance(first, Fetched) and first.body == FEED
    assert (first.etag, first.last_modified) == ('"v1"', "Tue, 24 Nov 2026 10:00:00 GMT")
    second = _one(server, "/feed", etag=first.etag, last_modified=first.last_modified)[0]
    assert isinstance(second, Fetched) and second.not_modified
    assert second.etag == '"v1"'
    assert server.seen[1].headers["if-modified-since"] == "Tue, 24 Nov 2026 10:00:00 GMT"


def test_the_user_agent_names_digest_even_when_configured(server: FeedServer) -> None:
    server.route("/feed", Reply(body=FEED))
    options = FetchOptions.from_settings(load_settings(user_agent="ExampleCorp news (ops@example.com)"))
    _one(server, "/feed", options=options)
    agent = server.seen[0].headers["user-agent"]
    assert agent.startswith("ExampleCorp news (ops@example.com) digest/")


def test_gzip_bodies_are_decoded(server: FeedServer) -> None:
    server.route("/feed", Reply(headers={"Content-Encoding": "gzip"}, body=gzip.compress(FEED)))
    result = _one(server, "/feed")[0]
    assert isinstance(result, Fetched) and result.body == FEED
    assert "gzip" in server.seen[0].headers["accept-encoding"]


def test_http_errors_name_the_source_and_status(server: FeedServer) -> None:
    server.route("/gone", Reply(410, body=b"gone"))
    result = _one(server, "/gone")[0]
    assert isinstance(result, SourceError)
    assert "source 'Feed'" in str(result) and "HTTP 410" in str(result)


def test_a_slow_server_times_out_with_a_clear_error(server: FeedServer) -> None:
    def hang(_seen: Seen) -> Reply:
        server.release.wait(10)
        return Reply(body=FEED)

    server.route("/slow", hang)
    result = _one(server, "/slow", options=FetchOptions(read_timeout=0.2))[0]
    assert isinstance(result, SourceError)
    assert "timed out waiting for data" in str(result) and "/slow" in str(result)


def _endless(chunk: bytes, total: int) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield chunk
        sent += len(chunk)


def test_a_50_mb_response_is_cut_off_at_the_limit(server: FeedServer) -> None:
    # Streamed without Content-Length: the cap must hold while reading, not only on the header.
    server.route("/huge", Reply(body=_endless(b"<rss>" + b"x" * 65531, 50 * 1024 * 1024)))
    result = _one(server, "/huge")[0]
    assert isinstance(result, SourceError)
    assert "response too large: cut off at the 10,485,760-byte limit" in str(result)


def test_an_announced_oversize_body_is_refused_before_reading(server: FeedServer) -> None:
    server.route("/big", Reply(body=b"x" * 5000))
    result = _one(server, "/big", options=FetchOptions(max_bytes=4096))[0]
    assert isinstance(result, SourceError) and "announced 5,000 bytes" in str(result)


def test_redirect_loops_stop(server: FeedServer) -> None:
    server.route("/loop", Reply(302, {"Location": "/loop"}))
    result = _one(server, "/loop")[0]
    assert isinstance(result, SourceError) and "redirects" in str(result)


def test_a_redirect_is_followed_and_the_final_url_kept(server: FeedServer) -> None:
    server.route("/old", Reply(301, {"Location": "/new"}))
    server.route("/new", Reply(body=FEED))
    result = _one(server, "/old")[0]
    assert isinstance(result, Fetched) and result.url.endswith("/new")


def test_no_more_than_per_host_requests_are_in_flight_at_once(server: FeedServer) -> None:
    lock = threading.Lock()
    state = {"now": 0, "max": 0}
    crowd = threading.Condition(lock)

    def counted(_seen: Seen) -> Reply:
        with crowd:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
            crowd.notify_all()
            # Hold each request until a third one arrives (it must not) or a short while passes.
            crowd.wait_for(lambda: state["now"] > 2, timeout=0.3)
            state["now"] -= 1
        return Reply(body=FEED)

    server.route("/feed", counted)
    requests = [FetchRequest(f"F{i}", server.url(f"/feed?n={i}")) for i in range(6)]
    results = _fetch(*requests, options=FetchOptions(per_host=2))
    assert all(isinstance(r, Fetched) for r in results)
    assert state["max"] == 2


def test_a_host_keeps_its_connection_while_it_has_feeds_to_give_then_lets_it_go(
    server: FeedServer,
) -> None:
    server.route("/feed", lambda _seen: Reply(body=FEED))
    # Two names for one server: two hosts to the pools, each with its own feeds.
    other = server.url("/feed").replace("127.0.0.1", "localhost")
    requests = [FetchRequest(f"A{i}", server.url(f"/feed?n={i}")) for i in range(4)]
    requests += [FetchRequest(f"B{i}", f"{other}?n={i}") for i in range(3)]
    options = FetchOptions(per_host=1)
    open_after: list[int] = []

    async def run() -> list[Fetched | SourceError]:
        async with make_client(options) as client:
            results = await fetch_all(requests, client=client, options=options)
            open_after.append(len(client.transport.pools))
            return results

    results = asyncio.run(run())
    assert all(isinstance(r, Fetched) for r in results)
    connections: dict[str, set[tuple[str, int]]] = {}
    for seen in server.seen:
        connections.setdefault(seen.headers["host"].split(":")[0], set()).add(seen.peer)
    # One request at a time per host: each host's requests went over one kept-alive connection.
    assert {host: len(peers) for host, peers in connections.items()} == {"127.0.0.1": 1, "localhost": 1}
    assert open_after == [0]  # every host's pool closed once its last feed had answered


def test_a_hosts_pool_stays_open_while_an_answer_from_it_is_being_read(server: FeedServer) -> None:
    # Another source's redirect may still be reading from a host whose own feeds are all done.
    server.route("/feed", lambda _seen: Reply(body=FEED))
    url = server.url("/feed")

    async def run() -> tuple[bytes, int, int]:
        async with make_client(FetchOptions()) as client:
            client.expect([url])
            async with client.get(url) as response:
                await client.done_with(url)  # the one fetch that expected this host has ended
                open_while_reading = len(client.transport.pools)
                body = await response.aread()
            return body, open_while_reading, len(client.transport.pools)

    body, open_while_reading, open_after = asyncio.run(run())
    assert body == FEED
    assert (open_while_reading, open_after) == (1, 0)


def test_one_failing_source_does_not_stop_the_others(server: FeedServer) -> None:
    server.route("/ok", Reply(body=FEED))
    server.route("/bad", Reply(500, body=b"oops"))
    ok, bad = _fetch(FetchRequest("Ok", server.url("/ok")), FetchRequest("Bad", server.url("/bad")))
    assert isinstance(ok, Fetched) and isinstance(bad, SourceError)


def test_local_paths_and_file_urls(tmp_path: Path) -> None:
    path = tmp_path / "feed.xml"
    path.write_bytes(FEED)
    by_path, by_url, missing = _fetch(
        FetchRequest("P", str(path)),
        FetchRequest("U", path.as_uri()),
        FetchRequest("M", str(tmp_path / "no")),
    )
    assert isinstance(by_path, Fetched) and by_path.body == FEED
    assert isinstance(by_url, Fetched) and by_url.body == FEED
    assert isinstance(missing, SourceError) and "source 'M': cannot read" in str(missing)


def test_collect_keeps_validators_and_counts_a_304_as_unchanged(
    server: FeedServer, tmp_path: Path, engine: sa.Engine, now: datetime
) -> None:
    server.route(
        "/feed",
        lambda seen: (
            Reply(304)
            if seen.headers.get("if-none-match") == '"a"'
            else Reply(headers={"ETag": '"a"'}, body=FEED)
        ),
    )
    path = tmp_path / "digest.toml"
    path.write_text(newsletter_toml({"Remote": server.url("/feed")}))
    newsletter = load_newsletter(path)
    first = pipeline.collect(newsletter, engine=engine, clock=FixedClock(now))
    assert (first[0].status, first[0].new) == ("new", 1)
    second = pipeline.collect(newsletter, engine=engine, clock=FixedClock(now))
    assert (second[0].status, second[0].new) == ("unchanged", 0)
    assert server.seen[1].headers["if-none-match"] == '"a"'


@pytest.fixture
def https_feed(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A feed served over TLS on 127.0.0.1 with a certificate of its own: (URL, the CA file)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tests.deliver.builders import self_signed

    server_context, _ = self_signed(tmp_path)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(FEED)))
            self.end_headers()
            self.wfile.write(FEED)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.socket = server_context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}/feed", tmp_path / "cert.pem"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_https_feed_is_fetched_through_a_verified_connection(
    https_feed: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca = https_feed
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # trusted as a system store would trust it
    (result,) = _fetch(FetchRequest("Secure", url))
    assert isinstance(result, Fetched) and result.body == FEED


def test_an_https_feed_with_an_untrusted_certificate_fails_alone(
    https_feed: tuple[str, Path], server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = https_feed
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    server.route("/plain", Reply(body=FEED))
    secure, plain = _fetch(FetchRequest("Secure", url), FetchRequest("Plain", server.url("/plain")))
    assert isinstance(secure, SourceError) and "CERTIFICATE_VERIFY_FAILED" in str(secure)
    assert isinstance(plain, Fetched) and plain.body == FEED
