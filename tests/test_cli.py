"""The CLI contract: every command has help with an example; user errors are one line."""

from pathlib import Path
from typing import Any

import pytest
import typer

from digest.cli import app
from tests.cli_helpers import ClockedRunner

runner = ClockedRunner()


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        if hasattr(command, "commands"):
            found.extend(_commands(command, path))
        else:
            found.append(path)
    return found


ALL_COMMANDS = _commands(typer.main.get_command(app))


def test_the_documented_commands_exist() -> None:
    expected = {
        ("init",), ("db", "upgrade"), ("collect",), ("preview",), ("send",), ("run",),
        ("subscribers", "add"), ("subscribers", "import"), ("subscribers", "export"),
        ("subscribers", "list"), ("subscribers", "remove"), ("subscribers", "unsubscribe"),
        ("sources", "list"), ("stats",), ("serve",), ("schedule",),
    }  # fmt: skip
    assert expected <= set(ALL_COMMANDS)


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.replace("│", " ").split())
    assert "Example: digest " + " ".join(path) in flat


def test_python_dash_m_digest_is_the_same_cli() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "digest", "--help"], capture_output=True, text=True, check=True
    )
    assert "collect" in result.stdout and "subscribers" in result.stdout


def test_a_missing_newsletter_file_is_one_line_and_exit_1() -> None:
    result = runner.invoke(app, ["collect"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "digest.toml: newsletter file not found" in lines[0]
    assert "Traceback" not in result.output


def test_a_bad_setting_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_SMTP_PORT", "seventy")
    result = runner.invoke(app, ["subscribers", "list"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: DIGEST_SMTP_PORT: must be a whole number (got 'seventy')"
    ]


def test_a_bad_date_is_one_line(tmp_path: Path) -> None:
    assert runner.invoke(app, ["init"]).exit_code == 0
    result = runner.invoke(app, ["send", "--date", "yesterday"])
    assert result.exit_code == 1
    assert "--date: 'yesterday' is not a date" in result.output


def test_init_creates_starter_files_and_never_overwrites(tmp_path: Path) -> None:
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0
    assert "created digest.toml" in result.output
    toml = tmp_path / "digest.toml"
    toml.write_text(toml.read_text() + "# mine\n")
    again = runner.invoke(app, ["init"])
    assert "kept existing digest.toml" in again.output
    assert toml.read_text().endswith("# mine\n")
    # The starter file is valid as written.
    from digest.config import load_newsletter

    assert load_newsletter(toml).newsletter.title == "My Daily Brief"


def test_unsubscribe_mail_without_a_mailbox_names_the_setting() -> None:
    result = runner.invoke(app, ["unsubscribe-mail"])
    assert result.exit_code == 1
    assert "DIGEST_UNSUBSCRIBE_MAILBOX: not set" in result.output
