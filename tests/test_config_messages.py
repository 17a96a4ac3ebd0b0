"""Issue 14: configuration errors in plain words, at the right line, with 1-based positions and
"did you mean" for misspelt settings, digest.toml tables and keys."""

from pathlib import Path

import pytest

from digest.cli import app
from digest.config import load_settings, settings_warnings
from digest.config_messages import find_line, place
from digest.errors import ConfigError, SettingsError
from digest.newsletter import load_newsletter
from tests.cli_helpers import ClockedRunner

# Library wording that must never reach the operator.
LIBRARY_WORDS = ("Extra inputs", "String should", "input is too short", "Input should", "Field required")

# [newsletter] after the array tables on purpose: the old line finder lost its way there.
SOURCES = "".join(f'[[sources]]\nname = "{n}"\nurl = "{n.lower()}.xml"\n\n' for n in "ABC")
BASE = f"""\
[[topics]]
name = "EV"

{SOURCES}[newsletter]
title = "T"
from_email = "news@example.com"
postal_address = "1 Main St"
"""


def error_for(tmp_path: Path, text: str) -> str:
    path = tmp_path / "digest.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_newsletter(path)
    message = str(caught.value)
    assert not any(words in message for words in LIBRARY_WORDS), message
    assert "\n" not in message
    return message.removeprefix(f"{path}")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('url = "c.xml"', 'url = ""', ":14: sources #3 url: must not be empty"),
        ('url = "c.xml"', 'url = "c.xml"\nweight = -1',
         ":15: sources #3 weight: must be more than 0 (got -1)"),
        ('from_email = "news@example.com"', 'from_email = "news@example"',
         ":18: newsletter.from_email: is not an email address like news@example.com (got 'news@example')"),
        ('title = "T"', 'titel = "T"', ":17: newsletter: unknown key 'titel' (did you mean 'title'?)"),
        ('name = "B"', 'name = "B"\nurll = "b2.xml"',
         ":10: sources #2: unknown key 'urll' (did you mean 'url'?)"),
        ("[[sources]]\nname = \"C\"", "[[source]]\nname = \"C\"",
         ":12: unknown table 'source' (did you mean 'sources'?)"),
        ('postal_address = "1 Main St"\n', "", ":16: newsletter.postal_address: is missing (it is required)"),
        ('name = "EV"', 'name = "EV"\nkeywords = "battery"',
         ':3: topics #1 keywords: must be a list, like ["a", "b"] (got \'battery\')'),
        ('name = "A"', "name = 7", ":5: sources #1 name: must be text (in quotes) (got 7)"),
    ],
)  # fmt: skip
def test_digest_toml_errors_are_plain_and_point_at_the_line(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    assert old in BASE
    assert error_for(tmp_path, BASE.replace(old, new, 1)) == expected


def test_an_empty_topics_list_needs_one_entry(tmp_path: Path) -> None:
    text = BASE.replace('[[topics]]\nname = "EV"\n', "topics = []\n")
    assert "topics: needs at least 1 entry" in error_for(tmp_path, text)


def test_place_counts_from_one() -> None:
    assert place(("sources", 2, "url")) == "sources #3 url"
    assert place(("newsletter", "from_email")) == "newsletter.from_email"
    assert place(("topics", 0)) == "topics #1"


def test_find_line_handles_quoted_keys_comments_and_table_order() -> None:
    text = '# [[sources]] in a comment\n[newsletter]\n"title" = "x"\n[[sources]]\nurl = "a"\n[[sources]]\n'
    assert find_line(text, ("newsletter", "title")) == 3
    assert find_line(text, ("sources", 0, "url")) == 5
    assert find_line(text, ("sources", 1, "url")) == 6  # missing: its table's header
    assert find_line(text, ("sources", 5, "url")) is None


@pytest.mark.parametrize(
    ("env", "value", "expected"),
    [
        ("DIGEST_SMTP_PORT", "0", "DIGEST_SMTP_PORT: must be at least 1 (got '0')"),
        ("DIGEST_SMTP_PORT", "ssl", "DIGEST_SMTP_PORT: must be a whole number (got 'ssl')"),
        ("DIGEST_TRANSPORT", "pigeon",
         "DIGEST_TRANSPORT: must be one of 'file', 'smtp' or 'sendgrid' (got 'pigeon')"),
        ("DIGEST_SEND_TIME", "7", "DIGEST_SEND_TIME: is not a time of day like 07:00 (got '7')"),
        ("DIGEST_UNSUBSCRIBE_MAILTO", "nobody", "DIGEST_UNSUBSCRIBE_MAILTO: is not an email address like "
         "news@example.com (got 'nobody')"),
        ("DIGEST_COLLECT_EVERY_MINUTES", "1", "DIGEST_COLLECT_EVERY_MINUTES: must be at least 5 (got '1')"),
        ("DIGEST_BROKER_QUEUE", "a b",
         "DIGEST_BROKER_QUEUE: may hold only letters, digits and _ . : - (got 'a b')"),
    ],
)  # fmt: skip
def test_settings_errors_are_plain(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == expected


def test_a_secret_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_SECRET_KEY", "short-but-private")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "short-but-private" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["postgres://ana:pw@db.example.com:5432/news", "postgresql://ana:pw@db.example.com:5432/news"],
)
def test_postgres_urls_are_taken_as_psycopg3(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("DIGEST_DATABASE_URL", url)
    assert load_settings().database_url == "postgresql+psycopg://ana:pw@db.example.com:5432/news"


def test_another_postgres_driver_is_explained_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_DATABASE_URL", "postgresql+psycopg2://ana:pw@db.example.com/news")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == (
        "DIGEST_DATABASE_URL: uses the psycopg2 driver; digest talks to PostgreSQL through psycopg 3: "
        "write postgresql+psycopg://db.example.com/news"
    )


def test_misspelt_settings_in_the_environment_and_dot_env_get_a_did_you_mean(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("# comment\nDIGEST_TIMEZNE=Europe/Paris\nDIGEST_TIMEZONE=UTC\n")
    environ = {"DIGEST_SMTP_HOTS": "mx", "DIGEST_SMTP_HOST": "mx", "DIGEST_TEST_DATABASE_URL": "x",
               "DIGEST_WHATEVER_ELSE": "1", "HOME": "/root"}  # fmt: skip
    assert settings_warnings(environ, tmp_path / ".env") == [
        "DIGEST_SMTP_HOTS is not a digest setting (did you mean DIGEST_SMTP_HOST?); it is ignored",
        "DIGEST_WHATEVER_ELSE is not a digest setting; it is ignored",
        f"{tmp_path / '.env'}:2: DIGEST_TIMEZNE is not a digest setting (did you mean DIGEST_TIMEZONE?); "
        "it is ignored",
    ]


def test_the_cli_warns_of_a_misspelt_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_OUTBOX_DRI", "elsewhere")
    result = ClockedRunner().invoke(app, ["init"])
    assert result.exit_code == 0
    assert (
        "warning: DIGEST_OUTBOX_DRI is not a digest setting (did you mean DIGEST_OUTBOX_DIR?)"
        in result.output
    )
