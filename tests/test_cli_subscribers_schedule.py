"""The CLI doors of issue 6: help with an example, `digest status`, import errors as one message."""

from pathlib import Path

import pytest

from digest.cli import app
from digest.runners.local import LocalRunner
from tests.cli_helpers import ClockedRunner
from tests.schedule_helpers import NEWSLETTER_TOML

COMMANDS = [
    ["status"],
    ["schedule"],
    ["serve"],
    ["subscribers", "add"],
    ["subscribers", "import"],
    ["subscribers", "export"],
    ["subscribers", "list"],
    ["subscribers", "remove"],
    ["subscribers", "unsubscribe"],
]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "digest.toml").write_text(NEWSLETTER_TOML)
    monkeypatch.setenv("DIGEST_DATABASE_URL", f"sqlite:///{tmp_path / 'd.db'}")
    monkeypatch.setenv("DIGEST_VAR_DIR", str(tmp_path / "var"))
    return tmp_path


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_has_an_example(command: list[str]) -> None:
    result = ClockedRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example: digest " + " ".join(command) in " ".join(result.output.split())


def test_status_on_a_fresh_database(env: Path) -> None:
    result = ClockedRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "scheduler: not running" in result.output
    assert "Last runs: none yet" in result.output


def test_import_errors_are_one_message_naming_lines(env: Path) -> None:
    (env / "list.csv").write_text("email,timezone\na@example.com,\nb@,\nc@example.com,Mars/Olympus\n")
    result = ClockedRunner().invoke(app, ["subscribers", "import", "list.csv"])
    assert result.exit_code == 1
    assert "list.csv: 2 invalid row(s), nothing imported" in result.output
    assert "list.csv:3:" in result.output
    assert "list.csv:4: unknown time zone 'Mars/Olympus'" in result.output
    result = ClockedRunner().invoke(app, ["subscribers", "import", "list.csv", "--skip-invalid"])
    assert result.exit_code == 0
    assert "added 1" in result.output


def test_export_then_import_round_trip_through_the_cli(env: Path) -> None:
    runner = ClockedRunner()
    assert (
        runner.invoke(app, ["subscribers", "add", "Ana@Example.com", "--timezone", "Asia/Tokyo"]).exit_code
        == 0
    )
    assert runner.invoke(app, ["subscribers", "export", "out.csv"]).exit_code == 0
    text = (env / "out.csv").read_text()
    assert text.startswith("email,name,topics,timezone,status,consent_source,consent_at,")
    assert "ana@example.com,,,Asia/Tokyo,active,cli," in text


def test_status_after_runs_shows_zones_and_results(env: Path) -> None:
    from datetime import UTC, datetime

    from digest.config import load_settings
    from digest.db.engine import open_database
    from digest.newsletter import load_newsletter
    from digest.schedule import dispatch
    from tests.schedule_helpers import Clock, RecordingTransport, add_story, add_subscribers

    settings = load_settings()
    engine = open_database(settings.database_url)
    add_subscribers(engine, datetime(2026, 11, 1, tzinfo=UTC), ["Asia/Tokyo", None])
    clock = Clock(datetime(2026, 11, 25, 7, 0, tzinfo=UTC))
    add_story(engine, clock.now, 1)
    dispatch.dispatch(
        settings,
        load_newsletter(settings.config),
        engine=engine,
        clock=clock,
        runner=LocalRunner(settings, transport_factory=lambda: RecordingTransport(clock)),
        owner="test-owner",
    )
    engine.dispose()
    result = ClockedRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "Asia/Tokyo" in result.output
    assert "send 2026-11-25 UTC: ok - 1 stories; sent 1" in result.output
    assert "send 2026-11-25 Asia/Tokyo: skipped - stale: edition 2026-11-25 for Asia/Tokyo" in result.output
