"""The collection commands through the CLI: collect's summary, source health, topic explanations."""

from datetime import datetime
from pathlib import Path

import pytest

from digest.cli import app, common, daily
from tests.cli_helpers import ClockedRunner
from tests.feedbuilder import Item, newsletter_toml, rss, write

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
    monkeypatch.setenv("DIGEST_CONFIG", str(config))
    monkeypatch.setenv("DIGEST_DATABASE_URL", db_url)
    monkeypatch.setenv("DIGEST_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setattr(common.out, "width", 400)  # one table row per line
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
    monkeypatch.setattr(daily, "out", Console(file=screen, force_terminal=True, width=200))
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
