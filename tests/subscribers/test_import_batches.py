"""A subscriber import at its batch boundaries, and the shortcuts of its fast path (issue 15): each
must read and write what the plain way did. SQLite and PostgreSQL."""

import csv
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest.db.bulk import insert_rows
from digest.db.engine import session_scope
from digest.db.models import Subscriber, SubscriberEvent, SubscriberStatus
from digest.errors import SubscriberError
from digest.subscribers import csvfile
from digest.subscribers.csvfile import ImportReport, import_csv, open_csv
from digest.subscribers.roster import CsvRow, add_subscriber

TOPICS = ["EV industry", "Robotics"]


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "list.csv"
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def in_batches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, size: int, lines: list[str]) -> Path:
    """The file of `lines`, imported `size` rows at a time."""
    monkeypatch.setattr(csvfile, "BATCH_SIZE", size)
    return write(tmp_path, lines)


def do_import(engine: sa.Engine, path: Path, now: datetime, **kwargs: bool) -> ImportReport:
    with session_scope(engine) as session:
        return import_csv(path, session=session, now=now, known_topics=TOPICS, **kwargs)


def subscribers(engine: sa.Engine) -> list[Subscriber]:
    with Session(engine) as session:
        return list(session.exec(select(Subscriber).order_by(col(Subscriber.id))))


def events(engine: sa.Engine) -> list[tuple[str, str]]:
    """(address, kind) of every event, in the order they were written."""
    with Session(engine) as session:
        rows = session.exec(
            select(Subscriber.email, SubscriberEvent.kind)
            .join(Subscriber, col(Subscriber.id) == col(SubscriberEvent.subscriber_id))
            .order_by(col(SubscriberEvent.id))
        )
        return [(email, kind) for email, kind in rows]


def test_a_duplicate_in_a_later_batch_is_one_row_in_the_first_place_with_one_event(
    engine: sa.Engine, tmp_path: Path, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = in_batches(
        monkeypatch,
        tmp_path,
        2,
        [
            "email,name,status",
            "a@example.com,First,active",
            "b@example.com,Ben,",
            "c@example.com,Cy,paused",
            "d@example.com,Di,",
            "A@Example.com,Last,unsubscribed",  # the third batch: merged into line 2's row
        ],
    )
    report = do_import(engine, path, now)
    assert (report.added, report.updated, report.duplicates) == (4, 0, 1)
    rows = subscribers(engine)
    assert [(s.email, s.name, s.status) for s in rows] == [
        ("a@example.com", "Last", SubscriberStatus.UNSUBSCRIBED),
        ("b@example.com", "Ben", SubscriberStatus.ACTIVE),
        ("c@example.com", "Cy", SubscriberStatus.PAUSED),
        ("d@example.com", "Di", SubscriberStatus.ACTIVE),
    ]
    # One event an address, from its state before the import (new) to the merged row's.
    assert sorted(events(engine)) == [
        ("a@example.com", "unsubscribe"),
        ("b@example.com", "subscribe"),
        ("c@example.com", "paused"),
        ("d@example.com", "subscribe"),
    ]
    assert len({s.token_key for s in rows}) == 4


def test_a_bad_row_in_the_middle_of_a_batch_is_named_by_its_line_and_the_rest_is_written(
    engine: sa.Engine, tmp_path: Path, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = in_batches(
        monkeypatch,
        tmp_path,
        3,
        [
            "email,name,topics",
            "r1@example.com,One,Robotics",
            "",  # a blank line still counts as a line
            '"r2@example.com","Two, quoted",robotics',
            "not-an-address,Bad,Robotics",  # line 5: the middle of the second batch of rows
            "r3@example.com,Three,Knitting",  # line 6: an unknown topic
            "r4@example.com,Four,Knitting",  # the same bad cell again: named again
            "r5@example.com,Five,EV industry;Robotics",
        ],
    )
    report = do_import(engine, path, now, skip_invalid=True)
    assert [line.split(": ", 1)[0] for line in report.invalid] == [f"{path}:5", f"{path}:6", f"{path}:7"]
    assert "unknown topic 'Knitting'" in report.invalid[2]
    assert report.added == 3
    assert [(s.email, s.name, s.topics) for s in subscribers(engine)] == [
        ("r1@example.com", "One", "Robotics"),
        ("r2@example.com", "Two, quoted", "Robotics"),
        ("r5@example.com", "Five", "EV industry\nRobotics"),
    ]


def test_existing_and_new_addresses_in_one_batch_are_updated_and_added(
    engine: sa.Engine, tmp_path: Path, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    with session_scope(engine) as session:
        add_subscriber("old@example.com", session=session, now=now, known_topics=TOPICS, name="Old")
        gone = add_subscriber("gone@example.com", session=session, now=now, known_topics=TOPICS)
        gone.status = SubscriberStatus.UNSUBSCRIBED
    path = in_batches(
        monkeypatch,
        tmp_path,
        4,
        [
            "email,name",
            "new1@example.com,N1",
            "old@example.com,Renamed",
            "gone@example.com,Back",
            "new2@example.com,N2",
        ],
    )
    report = do_import(engine, path, now)
    assert (report.added, report.updated, report.kept_out) == (2, 1, ("gone@example.com (unsubscribed)",))
    assert {s.email: s.name for s in subscribers(engine)} == {
        "old@example.com": "Renamed",
        "gone@example.com": "",
        "new1@example.com": "N1",
        "new2@example.com": "N2",
    }
    assert events(engine)[-2:] == [("new1@example.com", "subscribe"), ("new2@example.com", "subscribe")]


def test_a_clash_in_a_batch_after_one_already_sent_names_the_file_and_leaves_the_list_untouched(
    engine: sa.Engine, tmp_path: Path, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batch 2 is looked up while batch 1 is being sent; someone signs up with one of its
    # addresses before batch 2 is written (here, in the import's own transaction, just before).
    path = in_batches(
        monkeypatch,
        tmp_path,
        2,
        ["email", "a@example.com", "b@example.com", "c@example.com", "d@example.com"],
    )
    send = csvfile._Writer._send
    sent: list[list[str]] = []

    def sign_up_then_send(writer: csvfile._Writer, conn: sa.Connection, batch: csvfile._Batch) -> None:
        sent.append([v["email"] for v in batch.new])
        if len(sent) == 2:
            row = {"email": "d@example.com", "status": "active", "created_at": now, "updated_at": now}
            insert_rows(conn, Subscriber.__table__, [row])  # type: ignore[attr-defined]
        send(writer, conn, batch)

    monkeypatch.setattr(csvfile._Writer, "_send", sign_up_then_send)
    with pytest.raises(SubscriberError, match=r"list\.csv: an address in the file was added by someone else"):
        do_import(engine, path, now)
    assert sent == [["a@example.com", "b@example.com"], ["c@example.com", "d@example.com"]]
    assert subscribers(engine) == [] and events(engine) == []


def test_an_error_deciding_a_batch_while_the_previous_one_is_sent_leaves_the_list_untouched(
    engine: sa.Engine, tmp_path: Path, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = in_batches(monkeypatch, tmp_path, 1, ["email", "a@example.com", "b@example.com", "c@example.com"])
    decide = csvfile._Writer._decide
    decided: list[str] = []

    def fail_on_the_second(
        writer: csvfile._Writer, rows: list[CsvRow], found: csvfile._Found
    ) -> csvfile._Batch:
        decided.append(rows[0].email)
        if len(decided) == 2:
            raise RuntimeError("a bug")
        return decide(writer, rows, found)

    monkeypatch.setattr(csvfile._Writer, "_decide", fail_on_the_second)
    with pytest.raises(RuntimeError, match="a bug"):
        do_import(engine, path, now)
    assert decided == ["a@example.com", "b@example.com"]
    assert subscribers(engine) == [] and events(engine) == []


def test_a_row_deleted_between_the_probe_and_its_read_is_added_again_with_its_event(
    engine: sa.Engine, tmp_path: Path, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    with session_scope(engine) as session:
        add_subscriber("old@example.com", session=session, now=now, known_topics=TOPICS, name="Old")
    path = write(tmp_path, ["email,name", "new@example.com,New", "old@example.com,Again"])
    probe = csvfile.ids_and_new_ids

    def probe_then_delete(
        conn: sa.Connection, column: sa.Column[str], values: list[str]
    ) -> tuple[dict[str, int], list[int] | None]:
        found = probe(conn, column, values)  # "old" is found: one fresh id, for "new" only
        conn.execute(sa.delete(SubscriberEvent))
        conn.execute(sa.delete(Subscriber).where(col(Subscriber.email) == "old@example.com"))
        return found

    monkeypatch.setattr(csvfile, "ids_and_new_ids", probe_then_delete)
    report = do_import(engine, path, now)
    assert (report.added, report.updated) == (2, 0)
    assert [(s.email, s.name) for s in subscribers(engine)] == [
        ("new@example.com", "New"),
        ("old@example.com", "Again"),
    ]
    assert events(engine) == [("new@example.com", "subscribe"), ("old@example.com", "subscribe")]


def test_batches_written_from_the_sending_thread_are_all_there_in_file_order_with_their_events(
    engine: sa.Engine, tmp_path: Path, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [f"r{i}@example.com,R{i}" for i in range(7)]
    path = in_batches(monkeypatch, tmp_path, 2, ["email,name", *lines])
    report = do_import(engine, path, now)
    assert report.added == 7
    rows = subscribers(engine)
    assert [s.email for s in rows] == [f"r{i}@example.com" for i in range(7)]
    assert events(engine) == [(f"r{i}@example.com", "subscribe") for i in range(7)]


@pytest.mark.parametrize(
    "line",
    [
        "a@example.com,Ana,Robotics,UTC\n",
        "a@example.com,Ana,Robotics,UTC\r\n",
        "a@example.com,Ana,Robotics,UTC\r",
        "a@example.com,,,\n",
        ",,,\n",
        "\n",
        "a@example.com, Ana ,Robotics;EV industry\n",
        "a@example.com,Ana\x00,Robotics,UTC\n",
        "a@example.com,Ana,Robotics,UTC",
    ],
)
@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_a_line_without_quotes_is_split_as_the_csv_module_splits_it(line: str, delimiter: str) -> None:
    text = line.replace(",", delimiter)
    expected = next(csv.reader((text,), delimiter=delimiter, strict=True), [])
    got = csvfile._cells(text, delimiter)
    assert got == expected or (expected == [] and got == [""])  # both a blank line, skipped


def test_a_file_read_row_by_row_gives_the_rows_the_spool_gives_back(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            "email,name,topics,timezone,status,consent_source,consent_at",
            "a@example.com,Ana,Robotics,Europe/Paris,paused,form,2026-01-02T03:04:05+00:00",
            "b@example.com,'=Ben,,,,,",
            "c@example.com",  # a short row: the columns it lacks are not set
        ],
    )
    with open_csv(path) as table:
        rows = [r for r in table.rows(TOPICS) if isinstance(r, CsvRow)]
    spool = csvfile._Spool()
    try:
        for row in rows:
            spool.add(row)
        back = [r for batch in spool.batches() for r in batch]
    finally:
        spool.close()
    assert back == rows
    assert rows[0].consent is not None and rows[0].status == SubscriberStatus.PAUSED
    assert rows[1].name == "=Ben"  # the quote an export adds before a formula is taken back
    assert rows[2].columns == frozenset({"email"})
