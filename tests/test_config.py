from pathlib import Path

import pytest

from digest.config import load_settings, resolve_secret_key
from digest.errors import ConfigError, SettingsError
from digest.newsletter import load_newsletter

from .conftest import DEMO


def test_defaults_match_the_documented_contract() -> None:
    s = load_settings()
    assert s.config == Path("digest.toml")
    assert s.database_url == "sqlite:///var/digest.db"
    assert s.transport == "file"
    assert s.outbox_dir == Path("var/outbox")
    assert (s.smtp_host, s.smtp_port, s.smtp_security) == ("localhost", 25, "none")
    assert s.sendgrid_host == "https://api.sendgrid.com"
    assert s.base_url == "http://127.0.0.1:8000"
    assert (s.timezone, s.send_time.isoformat()) == ("UTC", "07:00:00")


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("DIGEST_SMTP_PORT", "not-a-port", "DIGEST_SMTP_PORT"),
        ("DIGEST_TRANSPORT", "pigeon", "DIGEST_TRANSPORT"),
        ("DIGEST_TIMEZONE", "Mars/Olympus", "DIGEST_TIMEZONE"),
        ("DIGEST_SEND_TIME", "25:99", "DIGEST_SEND_TIME"),
        ("DIGEST_BASE_URL", "example.com", "DIGEST_BASE_URL"),
        ("DIGEST_SECRET_KEY", "changeme", "DIGEST_SECRET_KEY"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith(named)
    assert "\n" not in str(info.value)


def test_smtp_and_sendgrid_need_a_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_TRANSPORT", "smtp")
    with pytest.raises(SettingsError, match="DIGEST_SECRET_KEY"):
        load_settings()
    monkeypatch.setenv("DIGEST_SECRET_KEY", "a-real-key-of-some-length-0123456789")
    monkeypatch.setenv("DIGEST_TRANSPORT", "sendgrid")
    with pytest.raises(SettingsError, match="SENDGRID_API_KEY"):
        load_settings()
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.abc")
    assert load_settings().transport == "sendgrid"


def test_dot_env_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DIGEST_TIMEZONE=Europe/Paris\n")
    assert load_settings().timezone == "Europe/Paris"


def test_file_transport_keeps_one_generated_dev_key(tmp_path: Path) -> None:
    s = load_settings(var_dir=tmp_path / "var")
    first = resolve_secret_key(s)
    assert len(first) > 30
    assert resolve_secret_key(s) == first


def test_demo_newsletter_loads_with_paths_resolved() -> None:
    n = load_newsletter(DEMO / "digest.toml")
    assert [t.name for t in n.topics] == ["EV industry", "Robotics", "Smartphones"]
    assert n.source_location(n.sources[0]) == str((DEMO / "feeds/autowire.xml").resolve())
    assert n.topic_names[-1] == "More news"


GOOD = """[newsletter]
title = "T"
from_email = "a@example.com"
postal_address = "1 Street"

[[topics]]
name = "EV"

[[sources]]
name = "A"
url = "a.xml"

[[sources]]
name = "B"
url = "b.xml"
topic = "{topic}"
"""


def test_errors_name_the_key_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "digest.toml"
    path.write_text(GOOD.format(topic="Nope"))
    with pytest.raises(ConfigError) as info:
        load_newsletter(path)
    assert str(info.value) == f"{path}:16: sources #2 topic: unknown topic 'Nope'"


def test_a_wrong_type_is_located(tmp_path: Path) -> None:
    path = tmp_path / "digest.toml"
    path.write_text(GOOD.format(topic="EV").replace('from_email = "a@example.com"', "from_email = 3"))
    with pytest.raises(ConfigError, match=r"digest.toml:3: newsletter.from_email: "):
        load_newsletter(path)


def test_toml_syntax_errors_carry_the_line(tmp_path: Path) -> None:
    path = tmp_path / "digest.toml"
    path.write_text('[newsletter]\ntitle = "unterminated\n')
    with pytest.raises(ConfigError, match=r"line 2"):
        load_newsletter(path)


def test_missing_file_says_how_to_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="digest init"):
        load_newsletter(tmp_path / "nope.toml")
