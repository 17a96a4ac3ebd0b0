"""The daily job through the CLI on the demo content: what reaches the outbox."""

import email
import email.policy
import re
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from digest.cli import app
from tests.cli_helpers import ClockedRunner

from .conftest import ROOT

runner = ClockedRunner()


@pytest.fixture
def demo_env(
    demo_dir: Path, tmp_path: Path, db_url: str, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Settings for the demo newsletter, a fixed clock, and the example subscribers imported."""
    monkeypatch.setenv("DIGEST_CONFIG", str(demo_dir / "digest.toml"))
    monkeypatch.setenv("DIGEST_DATABASE_URL", db_url)
    monkeypatch.setenv("DIGEST_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("DIGEST_VAR_DIR", str(tmp_path / "var"))
    result = runner.invoke(app, ["subscribers", "import", str(ROOT / "subscribers" / "example.csv")])
    assert result.exit_code == 0, result.output
    return tmp_path / "outbox"


def _messages(outbox: Path) -> dict[str, EmailMessage]:
    found = {}
    for path in sorted(outbox.rglob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        found[str(msg["To"].addresses[0].addr_spec)] = msg
    return found


def _parts(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content().replace("\r\n", "\n"), html.get_content().replace("\r\n", "\n")


def test_run_delivers_one_message_per_subscriber_with_their_topics(demo_env: Path) -> None:
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 0, result.output
    assert "sent 4" in result.output

    messages = _messages(demo_env)
    assert set(messages) == {"ana@example.com", "ben@example.com", "chen@example.com", "dana@example.com"}

    # Ana chose nothing: every topic, in newsletter order, each heading once.
    text, html = _parts(messages["ana@example.com"])
    positions = [text.index(f"\n{name.upper()}\n") for name in ("EV industry", "Robotics", "Smartphones")]
    assert positions == sorted(positions)
    assert "Tesla to end Model S and Model X production" in text.split("\nROBOTICS\n")[1]
    assert "Thin phones are back" in text.split("\nSMARTPHONES\n")[1]
    assert "Hi Ana," in text and "Hi Ana," in html

    # The same story from two outlets is shown once, with "also reported by".
    assert html.count("Ford and Xiaomi will build their joint EVs at Ford") == 1
    assert "Also reported by" in html

    # Ben chose EV industry only.
    text, _ = _parts(messages["ben@example.com"])
    assert "EV INDUSTRY" in text and "ROBOTICS" not in text and "SMARTPHONES" not in text

    # Chen: Robotics and Smartphones.
    text, _ = _parts(messages["chen@example.com"])
    assert "ROBOTICS" in text and "SMARTPHONES" in text and "EV INDUSTRY" not in text


def test_each_subscriber_gets_their_own_working_unsubscribe_link(demo_env: Path) -> None:
    assert runner.invoke(app, ["run"]).exit_code == 0
    links = {}
    for address, msg in _messages(demo_env).items():
        header = str(msg["List-Unsubscribe"]).strip()
        match = re.fullmatch(r"<(http://127\.0\.0\.1:8000/unsubscribe/[\w.-]+)>", header)
        assert match, header
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        text, html = _parts(msg)
        assert match.group(1) in text
        assert f'href="{match.group(1)}"' in html
        assert "1 Example Street, Springfield" in text and "1 Example Street, Springfield" in html
        links[address] = match.group(1)
    assert len(set(links.values())) == 4


def test_messages_are_proper_multipart(demo_env: Path) -> None:
    assert runner.invoke(app, ["run"]).exit_code == 0
    msg = _messages(demo_env)["dana@example.com"]
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert re.fullmatch(r"<[^<>@]+@evbrief\.example>", str(msg["Message-ID"]))
    assert msg["Date"] is not None
    assert str(msg["From"]) == "EV Brief <news@evbrief.example>"
    assert "Nov 25" in str(msg["Subject"])


def test_running_twice_sends_nothing_twice(demo_env: Path) -> None:
    assert runner.invoke(app, ["run"]).exit_code == 0
    first = sorted(p.name for p in demo_env.rglob("*.eml"))
    second = runner.invoke(app, ["run"])
    assert second.exit_code == 0, second.output
    assert "already sent to 4; nothing left to send" in second.output  # not "sent 0"
    assert sorted(p.name for p in demo_env.rglob("*.eml")) == first


def test_a_broken_feed_leaves_the_others_collected(demo_env: Path, demo_dir: Path) -> None:
    (demo_dir / "feeds" / "pocket-tech.json").write_text("{ not json")
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 0, result.output
    assert "Pocket Tech" in result.output and "failed" in result.output
    text, _ = _parts(_messages(demo_env)["ana@example.com"])
    assert "ROBOTICS" in text and "Thin phones are back" not in text


def test_preview_writes_the_html_a_subscriber_would_get(demo_env: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["collect"]).exit_code == 0
    out = tmp_path / "preview.html"
    result = runner.invoke(app, ["preview", "--subscriber", "ben@example.com", "--output", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "Hi Ben," in html and "EV industry" in html and "Optimus" not in html
    assert not list(demo_env.rglob("*.eml"))  # previewing sends nothing


def test_preview_json_is_the_composed_edition(demo_env: Path) -> None:
    import json

    assert runner.invoke(app, ["collect"]).exit_code == 0
    result = runner.invoke(app, ["preview", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["date"] == "2026-11-25"
    names = [t["name"] for t in data["topics"]]
    assert names == ["EV industry", "Robotics", "Smartphones"]
    story = data["topics"][0]["stories"][0]
    assert {"title", "url", "published", "sources"} <= set(story)
    assert {"name", "url"} <= set(story["sources"][0])
