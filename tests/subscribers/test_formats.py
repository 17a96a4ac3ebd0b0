"""Issue 14: other services' exports (Mailchimp, Substack, Buttondown, listmonk, Ghost) are
recognised by their header and imported with their consent dates and statuses. The sample files
under tests/data/exports/ are made up, with each service's column names."""

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from digest.cli import app
from digest.db.engine import session_scope
from digest.db.models import Subscriber, SubscriberStatus
from digest.errors import SubscriberError
from digest.subscribers.csvfile import ImportReport, import_csv
from digest.subscribers.formats import export_time
from digest.subscribers.roster import add_subscriber
from tests.cli_helpers import ClockedRunner
from tests.schedule_helpers import NEWSLETTER_TOML

EXPORTS = Path(__file__).parents[1] / "data" / "exports"
TOPICS = ["EV industry", "Robotics"]


def run_import(engine: sa.Engine, name: str, now: datetime, tmp_path: Path, **kwargs: bool) -> ImportReport:
    path = tmp_path / name
    shutil.copy(EXPORTS / name, path)
    with session_scope(engine) as session:
        return import_csv(path, session=session, now=now, known_topics=TOPICS, **kwargs)


def import_text(engine: sa.Engine, path: Path, text: str, now: datetime) -> ImportReport:
    path.write_text(text)
    with session_scope(engine) as session:
        return import_csv(path, session=session, now=now, known_topics=TOPICS)


def people(engine: sa.Engine) -> dict[str, Subscriber]:
    with Session(engine) as session:
        return {s.email: s for s in session.exec(select(Subscriber))}


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def same_time(stored: datetime | None, expected: datetime) -> bool:
    # SQLite gives naive UTC back, PostgreSQL aware: compare as UTC.
    assert stored is not None
    return (stored if stored.tzinfo else stored.replace(tzinfo=UTC)) == expected


def test_mailchimp_subscribed_keeps_opt_in_and_confirmation_and_names_unused_columns(
    engine: sa.Engine, now: datetime, tmp_path: Path
) -> None:
    report = run_import(engine, "mailchimp_subscribed.csv", now, tmp_path)
    assert report.format == "Mailchimp"
    assert (report.added, report.invalid_count) == (2, 0)
    assert "member_rating" in report.ignored_columns and "tags" in report.ignored_columns
    assert "email address" not in report.ignored_columns and "optin_time" not in report.ignored_columns
    found = people(engine)
    mara = found["mara.quill@example.org"]
    assert (mara.name, mara.status, mara.timezone) == ("Mara Quill", SubscriberStatus.ACTIVE, "Europe/Oslo")
    assert same_time(mara.consent_at, utc(2021, 3, 4, 8, 15))
    assert same_time(mara.confirmed_at, utc(2021, 3, 4, 8, 17, 30))
    assert (mara.consent_ip, mara.confirmed_ip) == ("198.51.100.7", "198.51.100.7")
    assert mara.consent_source == "import:mailchimp_subscribed.csv (Mailchimp)"
    teo = found["teo@example.net"]
    # No OPTIN_TIME: the confirmation stands for the consent; a zone Mailchimp guessed wrong
    # is dropped, not an error.
    assert same_time(teo.consent_at, utc(2022, 11, 20, 19, 0, 5))
    assert teo.timezone is None


def test_mailchimp_unsubscribed_and_cleaned_files_are_kept_as_unsubscribed_and_bounced(
    engine: sa.Engine, now: datetime, tmp_path: Path
) -> None:
    with session_scope(engine) as session:  # someone active here who left on Mailchimp
        add_subscriber("left@example.org", session=session, now=now, known_topics=TOPICS)
    assert run_import(engine, "mailchimp_unsubscribed.csv", now, tmp_path).updated == 1
    assert run_import(engine, "mailchimp_cleaned.csv", now, tmp_path).added == 1
    found = people(engine)
    assert found["left@example.org"].status == SubscriberStatus.UNSUBSCRIBED
    assert found["gone@example.org"].status == SubscriberStatus.BOUNCED
    # Importing the subscribed file again later does not bring them back (no consent).
    text = "Email Address,OPTIN_TIME,LEID\nleft@example.org,2020-01-01 00:00:00,1\ngone@example.org,,2\n"
    report = import_text(engine, tmp_path / "again.csv", text, now)
    assert len(report.kept_out) == 2
    assert people(engine)["left@example.org"].status == SubscriberStatus.UNSUBSCRIBED


def test_substack_data_export_email_disabled_is_unsubscribed(
    engine: sa.Engine, now: datetime, tmp_path: Path
) -> None:
    report = run_import(engine, "substack_email_list.csv", now, tmp_path)
    assert report.format == "Substack"
    assert set(report.ignored_columns) == {"active_subscription", "expiry", "plan", "first_payment_at"}
    found = people(engine)
    assert found["reader.one@example.com"].status == SubscriberStatus.ACTIVE
    assert same_time(found["reader.one@example.com"].consent_at, utc(2022, 7, 9, 14, 3, 11, 512000))
    assert found["reader.two@example.com"].status == SubscriberStatus.UNSUBSCRIBED


def test_substack_dashboard_export(engine: sa.Engine, now: datetime, tmp_path: Path) -> None:
    report = run_import(engine, "substack_dashboard.csv", now, tmp_path)
    assert report.format == "Substack (dashboard)"
    ines = people(engine)["ines@example.com"]
    assert (ines.name, ines.status) == ("Ines Roa", SubscriberStatus.ACTIVE)
    assert same_time(ines.consent_at, utc(2023, 9, 14, 10, 20))


def test_buttondown_types_map_to_statuses_and_offsets_become_utc(
    engine: sa.Engine, now: datetime, tmp_path: Path
) -> None:
    report = run_import(engine, "buttondown.csv", now, tmp_path)
    assert report.format == "Buttondown"
    assert "notes" in report.ignored_columns and "metadata" in report.ignored_columns
    found = people(engine)
    kai = found["kai@example.com"]
    assert (kai.status, kai.consent_ip) == (SubscriberStatus.ACTIVE, "203.0.113.9")
    assert same_time(kai.consent_at, utc(2020, 5, 17, 6, 45))
    assert found["new@example.com"].status == SubscriberStatus.PENDING  # never confirmed there
    assert same_time(found["new@example.com"].consent_at, utc(2024, 10, 1, 10, 0))
    assert found["stop@example.com"].status == SubscriberStatus.UNSUBSCRIBED


def test_an_unknown_buttondown_type_is_a_row_error_naming_the_line(
    engine: sa.Engine, now: datetime, tmp_path: Path
) -> None:
    text = "email,creation_date,subscriber_type\na@example.com,,regular\nb@example.com,,astral\n"
    with pytest.raises(SubscriberError) as caught:
        import_text(engine, tmp_path / "bd.csv", text, now)
    assert "bd.csv:3: subscriber_type: 'astral' is not a Buttondown subscriber type" in str(caught.value)
    assert people(engine) == {}


def test_listmonk_statuses_and_go_time_stamps(engine: sa.Engine, now: datetime, tmp_path: Path) -> None:
    report = run_import(engine, "listmonk.csv", now, tmp_path)
    assert report.format == "listmonk"
    assert report.ignored_columns == ("uuid", "attributes", "updated_at")
    found = people(engine)
    one = found["lm.one@example.com"]
    assert (one.name, one.status) == ("Ola Lund", SubscriberStatus.ACTIVE)
    assert same_time(one.consent_at, utc(2023, 4, 5, 6, 7, 8, 123456))
    assert found["lm.two@example.com"].status == SubscriberStatus.UNSUBSCRIBED  # blocklisted
    assert same_time(found["lm.two@example.com"].consent_at, utc(2022, 12, 31, 22, 30))
    assert found["lm.three@example.com"].status == SubscriberStatus.PAUSED  # disabled


def test_ghost_members_export(engine: sa.Engine, now: datetime, tmp_path: Path) -> None:
    report = run_import(engine, "ghost.csv", now, tmp_path)
    assert report.format == "Ghost"
    assert "labels" in report.ignored_columns and "stripe_customer_id" in report.ignored_columns
    found = people(engine)
    assert (found["gh.one@example.com"].name, found["gh.one@example.com"].status) == (
        "Ruth Vale",
        SubscriberStatus.ACTIVE,
    )
    assert same_time(found["gh.one@example.com"].consent_at, utc(2023, 2, 3, 4, 5, 6))
    assert found["gh.two@example.com"].status == SubscriberStatus.UNSUBSCRIBED


def test_a_plain_list_is_still_digest_format_and_unknown_columns_are_reported(
    engine: sa.Engine, now: datetime, tmp_path: Path
) -> None:
    report = import_text(engine, tmp_path / "plain.csv", "email,name,shoe size\na@example.com,Ana,38\n", now)
    assert (report.format, report.ignored_columns, report.added) == ("digest", ("shoe size",), 1)
    assert people(engine)["a@example.com"].consent_source == "import:plain.csv"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2021-03-04 08:15:00", "2021-03-04T08:15:00+00:00"),
        ("2023-04-05 06:07:08.123456789 +0000 UTC", "2023-04-05T06:07:08.123456+00:00"),
        ("2022-12-31 23:30:00 +0100 CET", "2022-12-31T22:30:00+00:00"),
        ("2022-07-09T14:03:11.512Z", "2022-07-09T14:03:11.512000+00:00"),
        ("  ", ""),
    ],
)
def test_export_time_reads_each_services_way_of_writing_time(value: str, expected: str) -> None:
    assert export_time(value, "created_at") == expected


def test_export_time_refuses_what_is_not_a_time() -> None:
    with pytest.raises(SubscriberError, match="created_at: 'last Tuesday' is not a date and time"):
        export_time("last Tuesday", "created_at")


def test_the_cli_says_which_export_it_read_and_what_it_did_not_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "digest.toml").write_text(NEWSLETTER_TOML)
    monkeypatch.setenv("DIGEST_DATABASE_URL", f"sqlite:///{tmp_path / 'd.db'}")
    monkeypatch.setenv("DIGEST_VAR_DIR", str(tmp_path / "var"))
    shutil.copy(EXPORTS / "ghost.csv", tmp_path / "ghost.csv")
    result = ClockedRunner().invoke(app, ["subscribers", "import", "ghost.csv"])
    assert result.exit_code == 0, result.output
    assert "read as a Ghost export" in result.output
    assert "added 2" in result.output
    assert "columns not imported: id, note, complimentary_plan" in result.output
