"""`digest send` for cron: exit status, failures listed, the https warning, stats per edition."""

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from digest.cli import app, progress, reports
from digest.config import Settings
from digest.db.engine import session_scope
from digest.deliver import journal
from digest.editions import build_edition
from tests.cli_helpers import ClockedRunner
from tests.deliver.builders import Handler, smtp_server
from tests.world import World, use_in_cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    """The world's settings as environment variables, with its edition frozen by the fixed clock."""
    with session_scope(world.engine) as session:
        build_edition(
            world.newsletter,
            session=session,
            edition_date=world.now.date(),
            now=world.now,
            zone=world.settings.zone,
        )
    use_in_cli(world, monkeypatch)
    return world


def test_a_bounce_exits_3_and_names_the_address(env: World, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = env.emails[4]
    with smtp_server(Handler(refuse={bad: "550 5.1.1 no such user"})) as (server, handler):
        monkeypatch.setenv("DIGEST_TRANSPORT", "smtp")
        monkeypatch.setenv("DIGEST_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("DIGEST_SMTP_PORT", str(server.port))
        monkeypatch.setenv("DIGEST_BASE_URL", "https://digest.example")
        result = ClockedRunner().invoke(app, ["send", "--date", env.now.date().isoformat()])
    assert result.exit_code == 3, result.output
    assert "sent 11, failed 1" in result.output
    assert f"failed: {bad}: 550 5.1.1 no such user" in result.output
    assert "warning" not in result.output
    assert len(handler.received) == 11
    again = ClockedRunner().invoke(app, ["send", "--date", env.now.date().isoformat()])
    assert again.exit_code == 0, again.output  # nothing left to do: the bounce is settled
    assert "edition 2026-11-25: already sent to 11; nothing left to send" in again.output
    assert "sent 0" not in again.output
    stats = ClockedRunner().invoke(app, ["stats", "--date", env.now.date().isoformat()])
    assert stats.exit_code == 0, stats.output
    flat = " ".join(stats.output.replace("│", " ").split())
    # stories, recipients, sent, failed, retry, unknown, skipped, unsubscribes, rate
    assert re.search(r"\b\d+ 12 11 1 0 0 0 0 0\.00%", flat), flat


def test_failures_past_the_listed_ones_are_counted(env: World, monkeypatch: pytest.MonkeyPatch) -> None:
    refused = dict.fromkeys(env.emails[:3], "550 5.1.1 no such user")
    monkeypatch.setattr(journal, "FAILURES_KEPT", 1)
    with smtp_server(Handler(refuse=refused)) as (server, _):
        monkeypatch.setenv("DIGEST_TRANSPORT", "smtp")
        monkeypatch.setenv("DIGEST_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("DIGEST_SMTP_PORT", str(server.port))
        monkeypatch.setenv("DIGEST_BASE_URL", "https://digest.example")
        result = ClockedRunner().invoke(app, ["send", "--date", env.now.date().isoformat()])
    assert result.exit_code == 3, result.output
    assert result.output.count("failed: ") == 1
    assert "... and 2 more" in result.output


def test_a_dry_run_counts_and_sends_nothing(env: World) -> None:
    result = ClockedRunner().invoke(app, ["send", "--dry-run", "--date", env.now.date().isoformat()])
    assert result.exit_code == 0, result.output
    assert "would send 12, skip 0" in result.output
    again = ClockedRunner().invoke(app, ["send", "--dry-run", "--date", env.now.date().isoformat()])
    assert "would send 12, skip 0" in again.output  # nothing was recorded as sent


def test_a_plain_http_base_url_is_warned_about(env: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_BASE_URL", "http://news.example.com")
    result = ClockedRunner().invoke(app, ["send", "--date", env.now.date().isoformat()])
    assert result.exit_code == 0, result.output
    assert "warning: DIGEST_BASE_URL=http://news.example.com is not https" in " ".join(result.output.split())
    assert "sent 12" in result.output


def test_every_setting_is_documented_in_env_example() -> None:
    text = (ROOT / ".env.example").read_text()
    for name, field in Settings.model_fields.items():
        variable = "SENDGRID_API_KEY" if name == "sendgrid_api_key" else f"DIGEST_{name.upper()}"
        assert variable in text, f"{variable} ({field.description or name}) missing from .env.example"


def test_send_says_where_the_outbox_put_the_messages_and_stats_fit_80_columns(env: World) -> None:
    # Issue 14: the file outbox's folder is named; `digest stats` fits an 80-column terminal.
    runner = ClockedRunner()
    result = runner.invoke(app, ["send", "--date", env.now.date().isoformat()])
    assert result.exit_code == 0, result.output
    assert f"messages are in {env.settings.outbox_dir.resolve()}" in " ".join(result.output.split())
    stats = runner.invoke(app, ["stats"], env={"COLUMNS": "80"})
    assert stats.exit_code == 0, stats.output
    lines = stats.output.splitlines()
    assert all(len(line) <= 80 for line in lines), stats.output
    assert "…" not in stats.output  # no header or value cut short
    assert "readers" in stats.output and str(env.now.date()) in stats.output


def test_send_shows_a_progress_bar_on_a_terminal_only(env: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 14: as `collect` does; piped (cron, a file), the output is the report lines alone.
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=120)
    monkeypatch.setattr(reports, "out", terminal)  # the report lines (cli/reports.py)
    monkeypatch.setattr(progress, "out", terminal)  # the bar (cli/progress.py)
    result = ClockedRunner().invoke(app, ["send", "--date", env.now.date().isoformat()])
    assert result.exit_code == 0, result.output
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())  # the terminal's codes out
    assert "sending" in shown and "12 sent" in shown  # the bar counted every answered message
    assert "sent 12, failed 0" in shown


def test_send_piped_has_no_progress_bar(env: World) -> None:
    result = ClockedRunner().invoke(app, ["send", "--date", env.now.date().isoformat()])
    assert result.exit_code == 0, result.output
    assert "sending" not in result.output and "\x1b[" not in result.output
    assert "sent 12, failed 0" in result.output
