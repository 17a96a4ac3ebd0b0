"""The collection commands through the CLI: collect's summary, source health, topic explanations."""

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from digest.cli import app, progress, reports
from tests.cli_helpers import ClockedRunner, use_newsletter
from tests.feedbuilder import Item, newsletter_toml, rss, write
from tests.httpserver import Reply, serving

runner = ClockedRunner()
TOPICS = (
    '[[topics]]\nname = "EV"\nkeywords = ["EV", "battery"]\n'
    '[[topics]]\nname = "Phones"\nkeywords = ["phone"]\n'
)


@pytest.fixture
def env(tmp_path: Path, db_url: str, now: datetime, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A newsletter with one good and one broken source, on a fresh database."""
    config = tmp_path / "digest.toml"
    config.write_text(
        newsletter_toml(
            {"Good": "feeds/good.xml", "Broken": "feeds/broken.xml"},
            topics=TOPICS,
            extra='catch_all_topic = ""',
        )
    )
    write(tmp_path / "feeds" / "good.xml", rss([
        Item("EV maker opens battery plant", "https://g.example/1", summary="A battery plant."),
        Item("Phone with a bigger battery", "https://g.example/2", summary="The phone lasts longer."),
        Item("Weather is nice", "https://g.example/3", summary='<a href="https://ev.example/">x</a>'),
    ]))  # fmt: skip
    write(tmp_path / "feeds" / "broken.xml", b"<html>nope</html>")
    use_newsletter(monkeypatch, config, db_url)
    return tmp_path


def _flat(output: str) -> str:
    return " ".join(output.replace("│", " ").replace("┃", " ").split())


def test_collect_prints_a_summary_per_source_and_a_total(env: Path) -> None:
    result = runner.invoke(app, ["collect"])
    assert result.exit_code == 0, result.output
    flat = _flat(result.output)
    assert "Good new 3 3 0" in flat
    assert "Broken failed 0 0 0 source 'Broken': not an RSS, Atom or JSON feed" in flat
    assert "2 sources: 3 new articles, 0 updated, 1 failed" in flat


def test_sources_list_flags_a_source_failing_three_runs_in_a_row(env: Path) -> None:
    for _ in range(2):
        runner.invoke(app, ["collect"])
    flat = _flat(runner.invoke(app, ["sources", "list"]).output)
    assert "Broken failed last run" in flat and "FAILING" not in flat
    runner.invoke(app, ["collect"])
    result = runner.invoke(app, ["sources", "list"])
    flat = _flat(result.output)
    assert "Broken FAILING (3 runs in a row) never 3" in flat
    assert "Good ok 2026-11-25 07:00 0" in flat
    assert "1 source(s) failed 3+ runs in a row: Broken" in flat


def test_topics_explains_each_waiting_story(env: Path) -> None:
    runner.invoke(app, ["collect"])
    result = runner.invoke(app, ["topics"])
    assert result.exit_code == 0, result.output
    flat = _flat(result.output)
    assert "'EV' in title; 'battery' in title+summary (score 7)" in flat
    assert "Phones" in flat and "EV (3)" in flat  # the phone story also matched EV (battery)
    # A keyword inside a link's URL is not evidence: the weather story matches nothing and is dropped.
    assert "(dropped) Weather is nice" in flat and "no: dropped" in flat


def test_collect_shows_a_progress_bar_on_a_terminal(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=200)
    monkeypatch.setattr(reports, "out", terminal)  # the table (cli/reports.py)
    monkeypatch.setattr(progress, "out", terminal)  # the bar (cli/progress.py)
    result = runner.invoke(app, ["collect"])
    assert result.exit_code == 0, result.output
    shown = screen.getvalue()
    assert "fetching" in shown and "2/2" in shown  # the bar counted both sources
    assert "2 sources: 3 new articles" in shown


def test_collect_exits_1_when_every_source_failed(env: Path) -> None:
    (env / "feeds" / "good.xml").write_bytes(b"not a feed either")
    result = runner.invoke(app, ["collect"])
    assert result.exit_code == 1
    assert "every source failed" in result.output


# --- issue 11 point 4: a broken feed is reported broken ------------------------------------

GOOD_ITEMS = [Item(f"Robot news number {i}", f"https://n.example/{i}", guid=f"n{i}") for i in range(3)]


def _truncated() -> bytes:
    """A feed cut off in the middle of its third entry, as an interrupted upload leaves it."""
    body = rss(GOOD_ITEMS)
    return body[: body.index(b"https://n.example/2") + len(b"https://n.ex")]


@pytest.fixture
def broken_site(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Four sources on a real HTTP server: a good feed, a cut-off one, an empty 200, an HTML page."""
    with serving() as server:
        good = rss([Item("Robot arm wins a chess match", "https://good.example/1")])
        server.route("/good", Reply(headers={"Content-Type": "application/rss+xml"}, body=good))
        server.route("/cut", Reply(headers={"Content-Type": "application/rss+xml"}, body=_truncated()))
        server.route("/empty", Reply(headers={"Content-Type": "application/rss+xml"}, body=b""))
        page = b"<!DOCTYPE html>\n<html><head><title>Blog</title></head><body>We moved!</body></html>"
        server.route("/page", Reply(headers={"Content-Type": "text/html"}, body=page))
        sources = {name: server.url(f"/{name.lower()}") for name in ("Good", "Cut", "Empty", "Page")}
        (tmp_path / "digest.toml").write_text(newsletter_toml(sources))
        use_newsletter(monkeypatch, tmp_path / "digest.toml", db_url)
        yield tmp_path


def test_a_cut_off_feed_an_empty_answer_and_an_html_page_are_reported_broken(broken_site: Path) -> None:
    result = runner.invoke(app, ["collect"])
    assert result.exit_code == 0, result.output
    flat = _flat(result.output)
    # The two whole entries of the cut-off feed are stored; the one cut in the middle is not.
    assert "Cut malformed 2 2 0 malformed feed: Feed is truncated or has unclosed XML elements" in flat
    assert "Empty failed 0 0 0 source 'Empty': not an RSS, Atom or JSON feed at" in flat
    assert "/empty: an empty response (0 bytes)" in flat
    assert "/page: an HTML page (has the feed moved?)" in flat
    assert "4 sources: 3 new articles, 0 updated, 2 failed, 1 malformed" in flat
    listed = _flat(runner.invoke(app, ["sources", "list"]).output)
    assert "Good ok 2026-11-25 07:00 0" in listed
    assert "Cut malformed last run never 1 2026-11-25 07:00: malformed feed: Feed is truncated" in listed
    assert "Empty failed last run never 1" in listed and "Page failed last run never 1" in listed
    status = runner.invoke(app, ["status"])
    assert status.exit_code == 0, status.output
    assert "sources: 4 in digest.toml (1 ok, 1 malformed last run, 2 failed last run)" in status.output
    assert "  Cut: malformed last run: malformed feed: Feed is truncated" in status.output
    assert "  Page: failed last run: source 'Page': not an RSS, Atom or JSON feed" in status.output


def test_a_malformed_feed_counts_toward_failures_in_a_row(broken_site: Path) -> None:
    for _ in range(3):
        assert runner.invoke(app, ["collect"]).exit_code == 0
    result = runner.invoke(app, ["sources", "list"])
    flat = _flat(result.output)
    assert "Cut FAILING (3 runs in a row) never 3" in flat
    assert "3 source(s) failed 3+ runs in a row: Cut, Empty, Page" in flat
    assert "Good ok" in flat
    status = _flat(runner.invoke(app, ["status"]).output)
    assert "sources: 4 in digest.toml (1 ok, 3 FAILING (3 runs in a row))" in status


def test_sources_list_shows_the_sources_of_digest_toml(env: Path) -> None:
    runner.invoke(app, ["collect"])
    config = env / "digest.toml"
    text = config.read_text().replace('name = "Broken"', 'name = "Renamed"')
    config.write_text(text)
    flat = _flat(runner.invoke(app, ["sources", "list"]).output)
    # Renamed is in the file but was never fetched; Broken is remembered but no longer in the file.
    assert flat.index("Good ok") < flat.index("Renamed not fetched yet never 0")
    assert "Broken removed from digest.toml never 1" in flat
    assert "failed 3+ runs" not in flat
