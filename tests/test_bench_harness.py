"""The whole-process benchmarks' harness (benchmarks/as_user.py, benchmarks/news_feeds.py): what
they measure must be what they say (the benchmarks themselves are not run here)."""

import gzip
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from xml.etree import ElementTree

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def harness() -> Iterator[tuple[ModuleType, ModuleType]]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import as_user
        import news_feeds

        yield as_user, news_feeds
    finally:
        sys.path.remove(str(BENCHMARKS))


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:  # 304 arrives as an "error"
        return e.code, dict(e.headers), e.read()


def test_each_feed_has_its_own_host_and_a_304_for_what_the_client_has(
    harness: tuple[ModuleType, ModuleType], now: datetime
) -> None:
    _, news_feeds = harness
    with news_feeds.FeedServer(5, 3, 0.0, now) as server:
        urls = server.urls
        assert len({url.split("/")[2].split(":")[0] for url in urls}) == 5
        assert all(url.split("/")[2].startswith("127.0.1.") for url in urls)
        status, headers, body = get(urls[0])
        assert status == 200
        items = ElementTree.fromstring(body).findall("./channel/item")
        assert len(items) == 3
        assert "<img" in (items[0].findtext("description") or "") or "<a href" in (
            items[0].findtext("description") or ""
        )
        assert get(urls[0], **{"If-None-Match": headers["ETag"]})[0] == 304
        assert get(urls[0], **{"If-Modified-Since": headers["Last-Modified"]})[0] == 304
        assert get(urls[0], **{"If-None-Match": '"stale"'})[0] == 200
        status, headers, zipped = get(urls[4], **{"Accept-Encoding": "gzip"})
        assert headers["Content-Encoding"] == "gzip"
        assert b"<feed" in gzip.decompress(zipped)  # every fifth feed is Atom
        assert server.stats()["304"] == 2
        assert server.stats()["200"] == 3


def test_the_feeds_are_the_same_for_the_same_arguments(harness: tuple[ModuleType, ModuleType]) -> None:
    _, news_feeds = harness
    when = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    assert news_feeds.document(3, 10, when) == news_feeds.document(3, 10, when)
    assert news_feeds.document(3, 10, when) != news_feeds.document(4, 10, when)


@pytest.mark.parametrize("tty", [False, True])
def test_a_process_runs_piped_or_in_a_terminal_and_is_measured(
    harness: tuple[ModuleType, ModuleType], tty: bool
) -> None:
    as_user, _ = harness
    code = "import sys; print('terminal' if sys.stdout.isatty() else 'pipe'); sys.exit(3)"
    done = as_user.run([sys.executable, "-c", code], env=as_user.environment(), tty=tty)
    assert done.returncode == 3
    assert done.output.strip() == ("terminal" if tty else "pipe")
    assert done.seconds > 0
    assert done.peak_kib > 0
    with pytest.raises(SystemExit, match="exited 3"):
        done.check()


def test_the_environment_hands_digest_no_settings_or_proxies(
    harness: tuple[ModuleType, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    as_user, _ = harness
    monkeypatch.setenv("DIGEST_DATABASE_URL", "sqlite:///elsewhere.db")
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    env = as_user.environment(DIGEST_CONFIG="bench.toml")
    assert env["DIGEST_CONFIG"] == "bench.toml"
    assert "DIGEST_DATABASE_URL" not in env
    assert "http_proxy" not in env
