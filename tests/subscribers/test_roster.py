"""Subscriber list management: CSV edge cases, consent, export -> import, all-or-nothing imports."""

import io
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from digest.db.engine import session_scope
from digest.db.models import Subscriber, SubscriberEvent, SubscriberStatus
from digest.errors import SubscriberError
from digest.subscribers import csvfile, status
from digest.subscribers.csvfile import export_rows, import_csv, open_csv, write_csv
from digest.subscribers.roster import CsvRow, add_subscriber, normalize_email
from digest.subscribers.status import pause, resume_paused, unsubscribe

TOPICS = ["EV industry", "Robotics", "Smartphones", "More news"]


def write(tmp_path: Path, text: str, name: str = "list.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def emails(engine: sa.Engine) -> dict[str, Subscriber]:
    with Session(engine) as session:
        return {s.email: s for s in session.exec(select(Subscriber))}


def read_csv(path: Path) -> tuple[list[CsvRow], list[str], tuple[str, ...]]:
    """The file's valid rows, its "file:line: reason" errors and its ignored columns."""
    with open_csv(path) as table:
        items = list(table.rows(TOPICS))
        return (
            [i for i in items if isinstance(i, CsvRow)],
            [i for i in items if isinstance(i, str)],
            table.ignored,
        )


def do_import(engine: sa.Engine, path: Path, now: datetime, **kwargs: bool) -> object:
    with session_scope(engine) as session:
        return import_csv(path, session=session, now=now, known_topics=TOPICS, **kwargs)


def test_bom_semicolons_quoted_values_and_upper_case(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "\ufeffEmail;Name;Topics;TimeZone\r\n"
        'ANA@Example.COM;"Doe; Ana";"ev industry;Robotics";Europe/Lisbon\r\n'
        "ben@example.com;Ben;;\r\n",
    )
    rows, errors, ignored = read_csv(path)
    assert errors == []
    assert ignored == ()
    assert [(r.email, r.name, r.topics, r.timezone) for r in rows] == [
        ("ana@example.com", "Doe; Ana", ("EV industry", "Robotics"), "Europe/Lisbon"),
        ("ben@example.com", "Ben", (), None),
    ]


def test_tabs_and_quoted_commas(tmp_path: Path) -> None:
    path = write(tmp_path, 'email\tname\nana@example.com\t"Doe, Ana"\n')
    rows, errors, _ = read_csv(path)
    assert errors == []
    assert rows[0].name == "Doe, Ana"


def test_comma_file_whose_topics_use_semicolons_is_not_mistaken_for_semicolons(tmp_path: Path) -> None:
    path = write(tmp_path, 'email,name,topics\na@example.com,"Doe, A",Robotics;Smartphones\n')
    rows, errors, _ = read_csv(path)
    assert errors == []
    assert rows[0].topics == ("Robotics", "Smartphones")


def test_single_column_file_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "email\n\na@example.com\n\n\nb@example.com\n")
    rows, errors, _ = read_csv(path)
    assert errors == []
    assert [r.email for r in rows] == ["a@example.com", "b@example.com"]


def test_duplicates_merge_case_insensitively_last_row_wins(
    engine: sa.Engine, tmp_path: Path, now: datetime
) -> None:
    path = write(tmp_path, "email,name\nana@example.com,First\nANA@EXAMPLE.COM,Second\n")
    report = do_import(engine, path, now)
    assert (report.added, report.duplicates) == (1, 1)  # type: ignore[attr-defined]
    assert [(r.email, r.name) for r in emails(engine).values()] == [("ana@example.com", "Second")]


def test_every_bad_line_is_named_with_its_reason(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "email,name,topics,timezone\n"
        "ok@example.com,,,\n"
        "not-an-address,,,\n"  # line 3
        'quoted@example.com,"Doe, Q",,\n'  # line 4, fine
        "plain@example.com,,,\n"  # line 5, fine
        "c@example.com,,Gardening,\n"  # line 6
        "d@example.com,,,Mars/Olympus\n"  # line 7
        "e@example.com,Doe, E,,\n",  # line 8: unquoted comma
    )
    _, errors, _ = read_csv(path)
    assert len(errors) == 4
    assert errors[0].startswith(f"{path}:3: 'not-an-address'")
    assert errors[1].startswith(f"{path}:6: unknown topic 'Gardening'")
    assert errors[2].startswith(f"{path}:7: unknown time zone 'Mars/Olympus'")
    assert errors[3].startswith(f"{path}:8: 5 fields but the header has 4")


def test_missing_email_column_names_the_header(tmp_path: Path) -> None:
    path = write(tmp_path, "mail,name\na@example.com,A\n")
    with pytest.raises(SubscriberError, match=r"list\.csv:1: header must have an 'email' column"):
        read_csv(path)


def test_not_utf8_is_a_clear_error_naming_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "email,name\nb@example.com,Ben\na@example.com,Jos\xe9\n", encoding="latin-1")
    rows, errors, _ = read_csv(path)
    assert [r.email for r in rows] == ["b@example.com"]
    assert errors == [f"{path}:3: not UTF-8: byte 0xE9 at character 18 (save the file as UTF-8)"]


def test_a_file_with_bad_rows_writes_nothing(engine: sa.Engine, tmp_path: Path, now: datetime) -> None:
    path = write(tmp_path, "email\ngood@example.com\nbad@\nalso-bad\n")
    with pytest.raises(SubscriberError) as info:
        do_import(engine, path, now)
    assert "2 invalid row(s), nothing imported" in str(info.value)
    assert ":3:" in str(info.value)
    assert ":4:" in str(info.value)
    assert emails(engine) == {}


def test_skip_invalid_imports_the_good_rows_and_reports_the_rest(
    engine: sa.Engine, tmp_path: Path, now: datetime
) -> None:
    path = write(tmp_path, "email\ngood@example.com\nbad@\n")
    report = do_import(engine, path, now, skip_invalid=True)
    assert report.added == 1  # type: ignore[attr-defined]
    assert [e.split(": ", 1)[0] for e in report.invalid] == [f"{path}:3"]  # type: ignore[attr-defined]
    assert set(emails(engine)) == {"good@example.com"}


def test_a_failure_midway_rolls_the_whole_import_back(
    engine: sa.Engine, tmp_path: Path, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    with session_scope(engine) as session:
        add_subscriber("old@example.com", session=session, now=now, known_topics=TOPICS, name="Old")
    path = write(
        tmp_path, "email,name\nold@example.com,Renamed\na@example.com,\nb@example.com,\nc@example.com,\n"
    )
    monkeypatch.setattr(csvfile, "BATCH_SIZE", 2)
    send_batch = csvfile._Writer._send
    batches: list[int] = []

    def crash_on_second_batch(writer: csvfile._Writer, conn: sa.Connection, batch: csvfile._Batch) -> None:
        batches.append(len(batch.new) + len(batch.changed))
        if len(batches) == 2:  # raised in the sending thread, raised again by import_csv
            raise RuntimeError("database went away")
        send_batch(writer, conn, batch)

    monkeypatch.setattr(csvfile._Writer, "_send", crash_on_second_batch)
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        import_csv(path, session=session, now=now, known_topics=TOPICS)
    assert batches == [2, 2]  # the first batch was written, then rolled back
    rows = emails(engine)
    assert set(rows) == {"old@example.com"}
    assert rows["old@example.com"].name == "Old"


def test_import_never_resubscribes_without_the_flag(engine: sa.Engine, tmp_path: Path, now: datetime) -> None:
    with session_scope(engine) as session:
        for address, status in [("u@example.com", "unsubscribed"), ("b@example.com", "bounced")]:
            row = add_subscriber(address, session=session, now=now, known_topics=TOPICS)
            row.status = SubscriberStatus(status)
    path = write(tmp_path, "email\nu@example.com\nb@example.com\nnew@example.com\n")
    report = do_import(engine, path, now)
    assert report.kept_out == ("u@example.com (unsubscribed)", "b@example.com (bounced)")  # type: ignore[attr-defined]
    assert emails(engine)["u@example.com"].status == SubscriberStatus.UNSUBSCRIBED
    report = do_import(engine, path, now + timedelta(days=1), resubscribe=True)
    assert report.kept_out == ()  # type: ignore[attr-defined]
    rows = emails(engine)
    assert rows["u@example.com"].status == SubscriberStatus.ACTIVE
    assert rows["u@example.com"].consent_at == now + timedelta(days=1)
    with Session(engine) as session:
        kinds = [e.kind for e in session.exec(select(SubscriberEvent).order_by(SubscriberEvent.id))]
    assert kinds.count("resubscribe") == 2


def test_add_refuses_someone_who_left(engine: sa.Engine, now: datetime) -> None:
    with session_scope(engine) as session:
        row = add_subscriber("Ana@Example.com", session=session, now=now, known_topics=TOPICS)
        unsubscribe(row, session=session, now=now, method="admin")
    with (
        pytest.raises(SubscriberError, match=r"ana@example\.com is unsubscribed"),
        session_scope(engine) as s,
    ):
        add_subscriber("ana@example.com", session=s, now=now, known_topics=TOPICS)


def test_export_then_import_is_lossless(engine: sa.Engine, tmp_path: Path, now: datetime) -> None:
    with session_scope(engine) as session:
        add_subscriber(
            "ana@example.com",
            session=session,
            now=now,
            known_topics=TOPICS,
            name="Doe, Ana",
            topics=["Smartphones", "EV industry"],
            timezone="Asia/Tokyo",
        )
        web = Subscriber(
            email="web@example.com",
            status=SubscriberStatus.ACTIVE,
            consent_source="web",
            consent_at=now - timedelta(hours=2),
            consent_ip="2001:db8::1",
            confirmed_at=now - timedelta(hours=1),
            confirmed_ip="192.0.2.7",
            created_at=now,
            updated_at=now,
        )
        gone = Subscriber(
            email="gone@example.com",
            status=SubscriberStatus.UNSUBSCRIBED,
            consent_source="import:old.csv",
            consent_at=now - timedelta(days=30),
            created_at=now,
            updated_at=now,
        )
        pending = Subscriber(
            email="p@example.com", status=SubscriberStatus.PENDING, created_at=now, updated_at=now
        )
        session.add_all([web, gone, pending])
    first = io.StringIO()
    with Session(engine) as session:
        write_csv(export_rows(session=session), first)
    path = write(tmp_path, first.getvalue(), name="export.csv")

    other = tmp_path / "other.db"
    from digest.db.engine import open_database

    fresh = open_database(f"sqlite:///{other}")
    report = do_import(fresh, path, now + timedelta(days=3))
    assert report.added == 4  # type: ignore[attr-defined]
    second = io.StringIO()
    with Session(fresh) as session:
        write_csv(export_rows(session=session), second)
    fresh.dispose()
    assert second.getvalue() == first.getvalue()
    assert "web,2026-11-25T05:00:00+00:00,2001:db8::1,2026-11-25T06:00:00+00:00,192.0.2.7" in first.getvalue()
    # and into the same database: nothing changes
    do_import(engine, path, now + timedelta(days=3))
    third = io.StringIO()
    with Session(engine) as session:
        write_csv(export_rows(session=session), third)
    assert third.getvalue() == first.getvalue()


def test_an_export_row_saying_unsubscribed_unsubscribes(
    engine: sa.Engine, tmp_path: Path, now: datetime
) -> None:
    with session_scope(engine) as session:
        add_subscriber("a@example.com", session=session, now=now, known_topics=TOPICS)
    do_import(engine, write(tmp_path, "email,status\na@example.com,unsubscribed\n"), now)
    assert emails(engine)["a@example.com"].status == SubscriberStatus.UNSUBSCRIBED


def test_bad_status_and_consent_times_are_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "email,status,consent_at\na@example.com,gone,\nb@example.com,active,yesterday\n"
        "c@example.com,active,2026-01-01T00:00:00\n",
    )
    _, errors, _ = read_csv(path)
    assert "status: 'gone' is not one of" in errors[0]
    assert "consent_at: 'yesterday' is not an ISO 8601 date-time" in errors[1]
    assert "has no UTC offset" in errors[2]


def test_unknown_columns_are_reported(tmp_path: Path) -> None:
    _, _, ignored = read_csv(write(tmp_path, "email,phone\na@example.com,123\n"))
    assert ignored == ("phone",)


@pytest.mark.parametrize(
    ("raw", "normal"),
    [("  Ana@EXAMPLE.com ", "ana@example.com"), ("b@Bücher.example", "b@bücher.example")],
)
def test_normalize_email(raw: str, normal: str) -> None:
    assert normalize_email(raw) == normal


def test_a_file_without_a_column_leaves_that_field_alone(
    engine: sa.Engine, tmp_path: Path, now: datetime
) -> None:
    with session_scope(engine) as session:
        add_subscriber(
            "ana@example.com", session=session, now=now, known_topics=TOPICS, name="Ana", topics=["Robotics"],
            timezone="Asia/Tokyo",
        )  # fmt: skip
    do_import(engine, write(tmp_path, "email\nana@example.com\n"), now)
    with session_scope(engine) as session:  # and `add` without options changes nothing either
        add_subscriber("ana@example.com", session=session, now=now, known_topics=TOPICS)
    row = emails(engine)["ana@example.com"]
    assert (row.name, row.topics, row.timezone) == ("Ana", "Robotics", "Asia/Tokyo")
    do_import(engine, write(tmp_path, "email,timezone,topics\nana@example.com,,\n"), now)
    row = emails(engine)["ana@example.com"]
    assert (row.name, row.topics, row.timezone) == ("Ana", "", None)  # empty cells do say something


def test_pauses_that_ended_are_resumed_a_batch_at_a_time(
    engine: sa.Engine, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status, "RESUME_BATCH", 3)
    with session_scope(engine) as session:
        for i in range(10):  # 7 whose pause ended (more than two batches), 3 still paused
            s = add_subscriber(f"p{i}@example.com", session=session, now=now, known_topics=TOPICS)
            ends = now - timedelta(days=1) if i < 7 else now + timedelta(days=1)
            pause(s, session=session, now=now - timedelta(days=8), until=ends)
    with session_scope(engine) as session:
        assert resume_paused(session=session, now=now) == 7
    people = emails(engine)
    assert sorted(e for e, s in people.items() if s.status == SubscriberStatus.ACTIVE) == [
        f"p{i}@example.com" for i in range(7)
    ]
    assert all(people[f"p{i}@example.com"].status == SubscriberStatus.PAUSED for i in range(7, 10))
    with Session(engine) as session:
        resumed = session.exec(select(SubscriberEvent).where(SubscriberEvent.kind == "resume")).all()
    assert len(resumed) == 7 and {e.method for e in resumed} == {"schedule"}
    with session_scope(engine) as session:
        assert resume_paused(session=session, now=now) == 0
