"""`digest preview`: every format, a chosen subscriber, files; and the live preview server."""

import email
import json
import os
import webbrowser
from datetime import datetime
from email import policy
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from digest import pipeline
from digest.cli import app
from digest.clock import FixedClock
from digest.config import load_settings
from digest.db import engine as db_engine
from digest.db.engine import session_scope
from digest.newsletter import load_newsletter
from digest.render.email import bundled_templates_dir
from digest.subscribers.roster import add_subscriber
from digest.web.preview import create_preview_app, templates_fingerprint
from tests.cli_helpers import ClockedRunner
from tests.render.htmlscan import scan
from tests.web_helpers import serve

runner = ClockedRunner()


@pytest.fixture
def demo_env(
    demo_dir: Path,
    db_url: str,
    engine: sa.Engine,
    tmp_path: Path,
    now: datetime,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """Environment for the CLI: the demo newsletter, collected, with one subscriber for Robotics."""
    # The CLI opens the database itself; hand it the fixture's engine, which the fixture disposes.
    # Patched where the CLI looks it up when a command runs (cli/common imports it inside _engine).
    monkeypatch.setattr(db_engine, "open_database", lambda url: engine if url == db_url else pytest.fail(url))
    env = {
        "DIGEST_CONFIG": str(demo_dir / "digest.toml"),
        "DIGEST_DATABASE_URL": db_url,
        "DIGEST_VAR_DIR": str(tmp_path / "var"),
        "DIGEST_BASE_URL": "https://news.example.org",
    }
    settings = load_settings(config=demo_dir / "digest.toml", database_url=db_url, var_dir=tmp_path / "var")
    newsletter = load_newsletter(settings.config)
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(now))
    with session_scope(engine) as session:
        add_subscriber(
            "rita@example.com",
            session=session,
            now=now,
            known_topics=newsletter.topic_names,
            name="Rita",
            topics=["Robotics"],
        )
    return env


def preview(env: dict[str, str], *args: str) -> bytes:
    result = runner.invoke(app, ["preview", "--date", "2026-11-25", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


def test_every_format(demo_env: dict[str, str]) -> None:
    html = preview(demo_env).decode()
    assert scan(html).all("html")[0]["lang"] == "en"
    assert "Hi Sample Reader, here are today's 14 stories." in scan(html).visible
    text = preview(demo_env, "--format", "text").decode()
    assert text.startswith("EV Brief · Wednesday, November 25, 2026\n")
    mjml = preview(demo_env, "--format", "mjml").decode()
    assert mjml.lstrip().startswith('<mjml lang="en">')
    edition = json.loads(preview(demo_env, "--format", "json"))
    assert edition["date"] == "2026-11-25"
    assert sum(len(t["stories"]) for t in edition["topics"]) == 14
    message = email.message_from_bytes(preview(demo_env, "--format", "eml"), policy=policy.default)
    assert message["To"] == "Sample Reader <reader@example.com>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]


def test_subscriber_sees_their_topics_and_name(demo_env: dict[str, str]) -> None:
    text = preview(demo_env, "--format", "text", "--subscriber", "rita@EXAMPLE.com").decode()
    assert "Hi Rita, here are today's 4 stories." in text
    assert "\nROBOTICS\n" in text
    assert "\nSMARTPHONES\n" not in text
    assert "subscribed with rita@example.com" in text


def test_unknown_subscriber_is_one_clear_line(demo_env: dict[str, str]) -> None:
    result = runner.invoke(app, ["preview", "--subscriber", "nobody@example.com"], env=demo_env)
    assert result.exit_code == 1
    assert "error: no subscriber nobody@example.com" in result.output


def test_bad_format_is_refused(demo_env: dict[str, str]) -> None:
    result = runner.invoke(app, ["preview", "--format", "pdf"], env=demo_env)
    assert result.exit_code == 1
    assert "--format: 'pdf' is not one of html, text, eml, mjml, json" in result.output


def test_output_file_and_draft_note(demo_env: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "out" / "p.html"
    result = runner.invoke(app, ["preview", "--date", "2026-11-25", "--output", str(target)], env=demo_env)
    assert result.exit_code == 0, result.output
    assert "not built yet" in result.output  # nothing was sent: the preview is a draft
    assert target.read_text().startswith("<!doctype html>")


def test_help_shows_examples() -> None:
    result = runner.invoke(app, ["preview", "--help"], env={"COLUMNS": "200"})
    assert "Example: digest preview --date" in result.output
    assert "--serve" in result.output


def test_fingerprint_follows_template_edits(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    before = templates_fingerprint(mine)
    assert templates_fingerprint(mine) == before
    (mine / "digest.txt.j2").write_text("x")
    added = templates_fingerprint(mine)
    assert added != before
    os.utime(mine / "digest.txt.j2", ns=(1, 1))
    assert templates_fingerprint(mine) != added


def test_preview_server_shows_editions_and_reloads_on_template_change(
    demo_dir: Path, db_url: str, engine: sa.Engine, tmp_path: Path, now: datetime
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    settings = load_settings(
        config=demo_dir / "digest.toml",
        database_url=db_url,
        var_dir=tmp_path / "var",
        templates_dir=mine,
    )
    newsletter = load_newsletter(settings.config)
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(now))
    app_ = create_preview_app(settings, newsletter, engine=engine, clock=lambda: now)
    with serve(app_) as base, httpx.Client(base_url=base) as client:
        index = client.get("/")
        assert index.status_code == 200
        assert 'href="/edition/2026-11-25"' in index.text
        assert "draft" in index.text

        page = client.get("/edition/2026-11-25")
        assert page.status_code == 200
        assert 'style="width:375px" src="/render/2026-11-25.html"' in page.text
        assert 'style="width:700px" src="/render/2026-11-25.html"' in page.text
        assert "Hi Sample Reader, here are today&#39;s 14 stories." in page.text  # the text part
        assert "setTimeout(poll" in page.text

        html = client.get("/render/2026-11-25.html")
        assert "EV Brief" in scan(html.text).visible
        assert client.get("/render/2026-11-25.eml").headers["content-type"] == "message/rfc822"

        version = client.get("/version").json()["templates"]
        assert f'data-version="{version}"' in page.text
        # Edit a template: the fingerprint changes (the page reloads) and the new text shows.
        (mine / "digest.txt.j2").write_text(
            (bundled_templates_dir() / "digest.txt.j2")
            .read_text()
            .replace("In this edition:", "Inside today:")
        )
        assert client.get("/version").json()["templates"] != version
        assert "Inside today:" in client.get("/render/2026-11-25.txt").text

        # A broken template shows the error (file and line) instead of the email, and no crash.
        (mine / "digest.txt.j2").write_text("{{ oops }")
        broken = client.get("/edition/2026-11-25")
        assert broken.status_code == 200
        assert "mine/digest.txt.j2:1" in broken.text
        frame = client.get("/render/2026-11-25.html")
        assert frame.status_code == 500
        assert "mine/digest.txt.j2:1" in frame.text
        assert client.get("/edition/not-a-date").text.count("is not a date") == 1


def test_open_writes_a_file_and_opens_it(
    demo_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", opened.append)  # cli/daily imports it when a preview opens
    result = runner.invoke(
        app, ["preview", "--date", "2026-11-25", "--format", "text", "--open"], env=demo_env
    )
    assert result.exit_code == 0, result.output
    target = tmp_path / "var" / "preview" / "2026-11-25.txt"
    assert opened == [target.resolve().as_uri()]
    assert target.read_text().startswith("EV Brief · ")
