"""The CLI contract: every command has help with an example; user errors are one line."""

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from digest.cli import app
from digest.config_messages import port_mismatch
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
    from digest.newsletter import load_newsletter

    assert load_newsletter(toml).newsletter.title == "My Daily Brief"


def test_unsubscribe_mail_without_a_mailbox_names_the_setting() -> None:
    result = runner.invoke(app, ["unsubscribe-mail"])
    assert result.exit_code == 1
    assert "DIGEST_UNSUBSCRIBE_MAILBOX: not set" in result.output


def test_a_broken_user_template_is_named_by_its_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 14: this read "error: template None:43: Expected an expression".
    assert runner.invoke(app, ["init"]).exit_code == 0
    (tmp_path / "templates").mkdir()
    broken = "".join(f"{{#- line {n} #}}\n" for n in range(1, 43)) + "<mjml>{{ }}</mjml>\n"
    (tmp_path / "templates" / "digest.mjml.j2").write_text(broken)
    monkeypatch.setenv("DIGEST_TEMPLATES_DIR", "templates")
    result = runner.invoke(app, ["preview"])
    assert result.exit_code == 1
    assert result.output.startswith("error: template templates/digest.mjml.j2:43: Expected an expression")


def test_an_mjml_error_in_a_user_template_names_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runner.invoke(app, ["init"]).exit_code == 0
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "digest.mjml.j2").write_text(
        "<mjml>\n<mj-bodyy>{{ slot.unsubscribe_url }}\n</mj-bodyy></mjml>\n"
    )
    monkeypatch.setenv("DIGEST_TEMPLATES_DIR", "templates")
    result = runner.invoke(app, ["preview"])
    assert result.exit_code == 1
    assert "templates/digest.mjml.j2" in result.output and "MJML does not compile" in result.output


def test_log_warnings_read_as_plain_lines_unless_verbose(tmp_path: Path) -> None:
    # A user template MJML accepts but digest's check flags (an attribute MJML ignores) logs a
    # warning. A real process: the CLI sets up logging itself, which pytest's capture would hide.
    assert runner.invoke(app, ["init"]).exit_code == 0
    (tmp_path / "templates" / "partials").mkdir(parents=True)
    footer = (Path(__file__).parents[1] / "templates" / "partials" / "footer.mjml.j2").read_text()
    (tmp_path / "templates" / "partials" / "footer.mjml.j2").write_text(
        footer.replace("<mj-text ", '<mj-text paddng="1" ', 1)
    )
    env = {**os.environ, "DIGEST_TEMPLATES_DIR": "templates"}

    def warning_line(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "digest", *args, "preview"], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        return next(ln for ln in done.stderr.splitlines() if "paddng" in ln)

    assert warning_line().startswith("warning: template check: templates/partials/footer.mjml.j2:")
    loud = warning_line("-v")
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ WARNING digest\.", loud), loud


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=" ".join)
def test_help_labels_no_flag_with_a_type(path: tuple[str, ...]) -> None:
    # Issue 14: `digest preview --open`, not `--open <bool>`; `--topic <str>`, not `<list[str]>`.
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    assert "<bool>" not in result.output and "<list[" not in result.output


def test_init_prints_the_next_three_commands(tmp_path: Path) -> None:
    result = runner.invoke(app, ["init"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    steps = [line.strip() for line in result.output.splitlines() if line.startswith("  digest ")]
    assert [s.split("#")[0].split()[:2] for s in steps] == [
        ["digest", "subscribers"],
        ["digest", "collect"],
        ["digest", "preview"],
    ]
    assert all(len(line) <= 80 for line in result.output.splitlines())


def test_run_help_explains_the_exit_status() -> None:
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "100"})
    flat = " ".join(result.output.split())
    assert "Exit status (for cron): 0 all done; 1 an error stopped the job" in flat
    assert "3 some recipients failed" in flat


def test_subscribers_remove_asks_unless_yes(tmp_path: Path) -> None:
    assert runner.invoke(app, ["init"]).exit_code == 0
    for email in ("ana@example.com", "ben@example.com"):
        assert runner.invoke(app, ["subscribers", "add", email]).exit_code == 0
    kept = runner.invoke(app, ["subscribers", "remove", "ana@example.com"], input="n\n")
    assert kept.exit_code == 1 and "nothing removed" in kept.output
    gone = runner.invoke(app, ["subscribers", "remove", "ana@example.com"], input="y\n")
    assert gone.exit_code == 0 and "removed ana@example.com" in gone.output
    quiet = runner.invoke(app, ["subscribers", "remove", "ben@example.com", "--yes"])
    assert quiet.exit_code == 0 and "Delete" not in quiet.output
    listed = runner.invoke(app, ["subscribers", "list"])
    assert "ana@example.com" not in listed.output and "ben@example.com" not in listed.output


def test_a_real_send_refuses_the_starters_placeholders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runner.invoke(app, ["init"]).exit_code == 0
    monkeypatch.setenv("DIGEST_TRANSPORT", "smtp")
    monkeypatch.setenv("DIGEST_SECRET_KEY", "k3y-" + "Zx8Qw2Lm9Rt4Yp7Hs1Jd6Fg3Vb5Nc0" * 2)
    refused = runner.invoke(app, ["send"])
    assert refused.exit_code == 1
    assert "newsletter.from_email is still the starter's placeholder 'news@example.com'" in refused.output
    toml = tmp_path / "digest.toml"
    toml.write_text(toml.read_text().replace("news@example.com", "letters@my-town.org"))
    refused = runner.invoke(app, ["run"])
    assert "newsletter.postal_address is still the starter's placeholder" in refused.output
    assert runner.invoke(app, ["send", "--dry-run"]).exit_code == 0  # a dry run sends nothing
    monkeypatch.setenv("DIGEST_TRANSPORT", "file")
    toml.write_text(toml.read_text().replace("letters@my-town.org", "news@example.com"))
    assert runner.invoke(app, ["send"]).exit_code == 0  # the file outbox is fine with them


@pytest.mark.parametrize(
    ("base_url", "port", "warned"),
    [
        ("http://127.0.0.1:8000", 8000, False),
        ("http://127.0.0.1:8000", 8080, True),
        ("http://localhost", 80, False),
        ("https://news.example.org", 8000, False),  # behind a proxy: the usual case
    ],
)
def test_serve_warns_when_its_port_differs_from_a_local_base_url(
    base_url: str, port: int, warned: bool
) -> None:
    warning = port_mismatch(base_url, port)
    assert (warning is not None) == warned
    if warning:
        assert warning.endswith(f"set DIGEST_BASE_URL=http://127.0.0.1:{port}")


def test_make_serve_demo_takes_a_port() -> None:
    root = Path(__file__).resolve().parents[1]
    dry = subprocess.run(
        ["make", "-n", "--no-print-directory", "-C", str(root), "serve-demo", "PORT=8123"],
        capture_output=True,
        text=True,
        check=True,
    )
    command = dry.stdout.splitlines()[-1]
    assert "DIGEST_BASE_URL=http://127.0.0.1:8123" in command and "--port 8123" in command
