"""Subscriber CSV files: a streamed import that names the line of every row it refuses, and a
streamed export a spreadsheet shows as text (the format: subscribers/README.md).

Long: import and export share the column rules, the formula escaping and the streamed,
all-or-nothing writer; apart, one could change without the other.
"""

import csv
import pickle
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa
from sqlmodel import Session

from digest.db.bulk import ids_and_new_ids, insert_per_key, insert_rows
from digest.db.models import Subscriber, SubscriberEvent, SubscriberStatus, new_token_keys
from digest.errors import SubscriberError
from digest.subscribers.formats import ExportFormat, detect_format
from digest.subscribers.roster import (
    NO_CONSENT,
    ROW_FIELDS,
    Consent,
    CsvRow,
    apply_row,
    change_kind,
    check_text,
    check_timezone,
    check_topics,
    clean_name,
    normalize_email,
    shown,
)

CSV_COLUMNS = ("email", "name", "topics", "timezone")
CONSENT_COLUMNS = ("consent_source", "consent_at", "consent_ip", "confirmed_at", "confirmed_ip")
EXPORT_COLUMNS = (*CSV_COLUMNS, "status", *CONSENT_COLUMNS)
_CONSENT = frozenset(CONSENT_COLUMNS)
# digest's own columns, read as they are; other services' exports: subscribers/formats.py.
NATIVE = ExportFormat("digest", (), frozenset(EXPORT_COLUMNS), lambda row, _source: dict(row))

# A line of a subscriber list is a few hundred characters; 64 Ki leaves room for columns we
# ignore (a CRM's notes) and bounds what one line can cost. Longer lines are refused by number
# and skipped without being held (issue 12, row 13: a 200 KB field).
MAX_LINE = 65_536
CONSENT_TEXT_LIMIT = 300  # consent_source ("import:" and a file name) and consent_ip
BATCH_SIZE = 1_000  # rows read, looked up and written per statement
MAX_LISTED = 1_000  # invalid rows quoted in the error of a rejected file (all are counted)
MAX_TOPIC_CELLS = 1_000  # distinct topics cells remembered once checked (memory stays bounded)

# OWASP "CSV Injection": a cell starting with = + - @ TAB or CR is a formula to a spreadsheet, so
# export prefixes a single quote. A value that already starts with quotes before such a character
# gets one more too, so import can remove exactly the quote export added: `'*` below.
_FORMULA = re.compile("'*[=+\\-@\t\r]")
_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # bytes that did not decode, kept by surrogateescape
_TABLE: sa.Table = Subscriber.__table__  # type: ignore[attr-defined]
_EVENTS: sa.Table = SubscriberEvent.__table__  # type: ignore[attr-defined]


def escape_cell(value: str) -> str:
    """`value` as a spreadsheet shows it as text: a formula's first character quoted."""
    return "'" + value if _FORMULA.match(value) else value


def unescape_cell(value: str) -> str:
    """`value` as it was before `escape_cell` (only a quote that function adds is removed)."""
    return value[1:] if value.startswith("'") and _FORMULA.match(value) else value


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did: added, updated, kept out for consent, merged duplicates, bad rows."""

    added: int = 0
    updated: int = 0
    kept_out: tuple[str, ...] = ()
    duplicates: int = 0
    invalid: tuple[str, ...] = field(default_factory=tuple)  # the first MAX_LISTED
    ignored_columns: tuple[str, ...] = ()
    invalid_count: int = 0
    format: str = "digest"  # whose export the file was (issue 14: Mailchimp, Ghost, ...)


def _sniff_delimiter(header: str) -> str:
    # The header holds only column names, so the delimiter is whichever of , ; TAB it uses most;
    # csv.Sniffer guesses from data rows and picks ";" when topics like "a;b" fill them.
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _lines(stream: TextIO, path: Path) -> Iterator[tuple[int, str | None]]:
    """(number, text) of each physical line; text None for a line over MAX_LINE, whose rest is
    read past in pieces, never held."""
    number = 0
    try:
        while text := stream.readline(MAX_LINE + 1):
            number += 1
            if len(text) > MAX_LINE and not text.endswith(("\n", "\r")):
                while (rest := stream.readline(MAX_LINE)) and not rest.endswith(("\n", "\r")):
                    pass
                yield number, None
            else:
                yield number, text
    except OSError as e:
        raise SubscriberError(f"{path}:{number + 1}: cannot read: {e}") from e


def _cells(text: str, delimiter: str) -> list[str]:
    """The values of one line. Each line is parsed alone: a quote left open reports its own line
    and cannot swallow the rows after it (issue 12, row 13)."""
    bad = None if text.isascii() else _NOT_UTF8.search(text)
    if bad is not None:
        raise SubscriberError(
            f"not UTF-8: byte 0x{ord(bad.group()) - 0xDC00:02X} at character {bad.start() + 1} "
            "(save the file as UTF-8)"
        )
    if '"' not in text:  # no quoting: the csv module would split it just so (a line ends once)
        return text.rstrip("\r\n").split(delimiter)
    try:
        return next(csv.reader((text,), delimiter=delimiter, strict=True), [])
    except csv.Error as e:
        if text.count('"') % 2:
            raise SubscriberError('a quoted value does not close on this line (a closing " missing?)') from e
        raise SubscriberError(f"bad quoting: {e}") from e


def _parse_time(value: str, column: str) -> datetime | None:
    if not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise SubscriberError(f"{column}: {shown(value.strip())} is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        raise SubscriberError(f"{column}: {shown(value.strip())} has no UTC offset")
    return parsed


class _Topics:
    """A topics cell as the configured topic names, each distinct cell checked once (a list of
    200,000 readers has a handful of distinct topic choices)."""

    def __init__(self, known: Sequence[str]) -> None:
        self._known = known
        self._seen: dict[str, tuple[str, ...]] = {}

    def __call__(self, cell: str) -> tuple[str, ...]:
        found = self._seen.get(cell)
        if found is None:
            found = tuple(check_topics([t for t in cell.split(";") if t.strip()], self._known))
            if len(self._seen) < MAX_TOPIC_CELLS:
                self._seen[cell] = found
        return found


def _parse_row(values: dict[str, str], topics: _Topics, line: int) -> CsvRow:
    email = normalize_email(values.get("email", ""))
    name = clean_name(values.get("name", ""))
    tz_name = values.get("timezone", "").strip()
    status: SubscriberStatus | None = None
    if values.get("status", "").strip():
        try:
            status = SubscriberStatus(values["status"].strip().lower())
        except ValueError:
            raise SubscriberError(
                f"status: {shown(values['status'].strip())} is not one of "
                + ", ".join(s.value for s in SubscriberStatus)
            ) from None
    consent = None
    if not _CONSENT.isdisjoint(values) and any(values.get(c, "").strip() for c in CONSENT_COLUMNS):
        consent = Consent(
            source=check_text(values.get("consent_source", ""), "consent_source", CONSENT_TEXT_LIMIT),
            at=_parse_time(values.get("consent_at", ""), "consent_at"),
            ip=check_text(values.get("consent_ip", ""), "consent_ip", CONSENT_TEXT_LIMIT) or None,
            confirmed_at=_parse_time(values.get("confirmed_at", ""), "confirmed_at"),
            confirmed_ip=check_text(values.get("confirmed_ip", ""), "confirmed_ip", CONSENT_TEXT_LIMIT)
            or None,
        )
    return CsvRow(
        line,
        email,
        name,
        topics(values.get("topics", "")),
        check_timezone(tz_name) if tz_name else None,
        status,
        consent,
        frozenset(values),
    )


class CsvFile:
    """An open subscriber CSV: its header, then its rows, one line at a time."""

    def __init__(self, path: Path, stream: TextIO) -> None:
        self.path = path
        self._lines = _lines(stream, path)
        number, text = next(self._lines, (1, ""))
        if text is None:
            raise SubscriberError(f"{path}:1: header longer than {MAX_LINE:,} characters")
        self._delimiter = _sniff_delimiter(text)
        try:
            self.header = tuple(h.strip().lower() for h in _cells(text, self._delimiter))
        except SubscriberError as e:
            raise SubscriberError(f"{path}:{number}: {e}") from e
        self.format = detect_format(self.header, NATIVE)
        if self.format.email_column(self.header) is None:
            raise SubscriberError(
                f"{path}:1: header must have an 'email' column "
                f"(got {shown(', '.join(self.header)) if self.header else 'nothing'})"
            )
        self.ignored = self.format.unused(self.header)
        self._source = f"import:{path.name} ({self.format.name})"

    def rows(self, known_topics: Sequence[str]) -> Iterator[CsvRow | str]:
        """Each data line, in order, as a valid row or a "file:line: reason" message."""
        header, delimiter, topics = self.header, self._delimiter, _Topics(known_topics)
        translate = None if self.format is NATIVE else self.format.translate
        for number, text in self._lines:
            if text is None:
                yield f"{self.path}:{number}: line longer than {MAX_LINE:,} characters, skipped whole"
                continue
            try:
                cells = _cells(text, delimiter)
                if not "".join(cells).strip():
                    continue
                if len(cells) > len(header):
                    raise SubscriberError(
                        f"{len(cells)} fields but the header has {len(header)} "
                        "(quote a value that contains the delimiter)"
                    )
                # Only a cell that starts with a quote can carry one export added.
                values = dict(zip(header, map(unescape_cell, cells) if "'" in text else cells, strict=False))
                yield _parse_row(
                    values if translate is None else translate(values, self._source), topics, number
                )
            except SubscriberError as e:
                yield f"{self.path}:{number}: {e}"


@contextmanager
def open_csv(path: Path) -> Iterator[CsvFile]:
    """A subscriber CSV opened and its header checked; SubscriberError names the file and line."""
    try:
        # -sig: Excel writes a BOM. surrogateescape: a byte that is not UTF-8 is reported with
        # its line, not as one error for the whole file. newline="": the csv module's own.
        stream = path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as e:
        raise SubscriberError(f"{path}: cannot read: {e}") from e
    with stream:
        yield CsvFile(path, stream)


class _Spool:
    """Valid rows parked on disk until the whole file is read, one per address (the last row
    for it, in the place of the first), so that an invalid row found late leaves the database
    untouched and duplicates merge across batches, without holding the file in memory."""

    def __init__(self) -> None:
        # "": a private temporary database, deleted on close; past its small page cache it
        # spills to disk, so a file of any size costs a few megabytes here.
        self._db = sqlite3.connect("")
        # `first` is the rowid: an upsert keeps it, so file order is a scan of the table. A row's
        # fields are plain columns (pickling each row cost more than the rest of the spool);
        # `columns` numbers the distinct sets of columns the rows had.
        self._db.execute(
            "CREATE TABLE row (first INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL, line INTEGER, "
            "name TEXT, topics TEXT, timezone TEXT, status TEXT, consent BLOB, columns INTEGER)"
        )
        self._pending: list[tuple[Any, ...]] = []
        self._columns: dict[frozenset[str], int] = {}
        self.rows = 0

    def add(self, row: CsvRow) -> None:
        """Park a valid row (a later row for the same address replaces it)."""
        columns = self._columns.setdefault(row.columns, len(self._columns))
        # pickle: a value this process made, read back by this process, never from outside.
        consent = None if row.consent is None else pickle.dumps(row.consent, pickle.HIGHEST_PROTOCOL)
        status = None if row.status is None else row.status.value
        topics = "\n".join(row.topics)
        self._pending.append(
            (row.line, row.email, row.line, row.name, topics, row.timezone, status, consent, columns)
        )
        if len(self._pending) >= BATCH_SIZE:
            self._flush()

    def _flush(self) -> None:
        with self._db:
            self._db.executemany(
                "INSERT INTO row VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (email) DO UPDATE SET "
                "line = excluded.line, name = excluded.name, topics = excluded.topics, "
                "timezone = excluded.timezone, status = excluded.status, consent = excluded.consent, "
                "columns = excluded.columns",
                self._pending,
            )
        self.rows += len(self._pending)
        self._pending.clear()

    def duplicates(self) -> int:
        """Rows merged into an earlier row for the same address."""
        self._flush()
        (distinct,) = self._db.execute("SELECT count(*) FROM row").fetchone()
        return self.rows - int(distinct)

    def batches(self) -> Iterator[list[CsvRow]]:
        """The parked rows in file order, BATCH_SIZE at a time."""
        self._flush()
        sets = list(self._columns)
        statuses = {s.value: s for s in SubscriberStatus}
        cursor = self._db.execute(
            "SELECT line, email, name, topics, timezone, status, consent, columns FROM row ORDER BY first"
        )
        while chunk := cursor.fetchmany(BATCH_SIZE):
            yield [
                CsvRow(
                    line,
                    email,
                    name,
                    tuple(topics.split("\n")) if topics else (),
                    timezone,
                    None if status is None else statuses[status],
                    None if consent is None else pickle.loads(consent),
                    sets[columns],
                )
                for line, email, name, topics, timezone, status, consent, columns in chunk
            ]

    def close(self) -> None:
        """Delete the spool."""
        self._db.close()


@dataclass(slots=True)
class _Found:
    """What the list holds of one batch's addresses: their rows, and on PostgreSQL the ids the
    new ones will have."""

    existing: dict[str, Any]
    fresh: list[int] | None


@dataclass(slots=True)
class _Batch:
    """One batch's writes, decided: new rows and the kind of event each gets, changed rows and
    their events."""

    new: list[dict[str, Any]] = field(default_factory=list)
    new_kinds: list[str | None] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    ids_given: bool = False


class _Inline:
    """Runs each submitted call at once, in this thread, its outcome kept in a Future as an
    executor's would be (see _Writer.write_all)."""

    def __enter__(self) -> "_Inline":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Callable[..., None], *args: Any) -> "Future[None]":
        done: Future[None] = Future()
        try:
            fn(*args)
        except Exception as e:  # raised where the result is read, as from the thread
            done.set_exception(e)
        else:
            done.set_result(None)
        return done


@dataclass
class _Writer:
    """Writes batches of valid rows: one lookup, one insert, one update and one event insert
    per batch (Core statements: nothing stays in the session)."""

    session: Session
    now: datetime
    source: str
    resubscribe: bool
    added: int = 0
    updated: int = 0
    kept_out: list[str] = field(default_factory=list)

    def write_all(self, batches: Iterator[list[CsvRow]]) -> None:
        """Apply every batch of rows (one per address, across batches) to the subscribers table.

        Batch N is sent from a second thread while this one decides batch N+1, so the server's
        work (three indexes a subscriber, five and a foreign-key check an event) overlaps this
        process's own (issue 15). The connection is used by one thread at a time: batch N+1's
        lookup is made before batch N is handed over, which gives the same answer as after, as
        no address is in two batches. A failed write stops the next lookup; the caller's
        transaction rolls back all. On SQLite the writes are this process's own CPU work, which
        a second thread only contends for (the GIL): there each batch is written in this thread,
        in the same order."""
        conn = self.session.connection()
        sender: ThreadPoolExecutor | _Inline = _Inline()
        if conn.dialect.name != "sqlite":
            sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest-import")
        with sender:
            sending: Future[None] | None = None
            rows = next(batches, None)
            found = None if rows is None else self._look_up(conn, rows)
            while rows is not None and found is not None:
                batch = self._decide(rows, found)
                rows = next(batches, None)
                if sending is not None:
                    sending.result()  # the connection is free (or batch N-1's error is raised here)
                found = None if rows is None else self._look_up(conn, rows)
                sending = sender.submit(self._send, conn, batch)
            if sending is not None:
                sending.result()

    def _look_up(self, conn: sa.Connection, rows: list[CsvRow]) -> _Found:
        t = _TABLE
        # Most rows of an import are new: one cheap probe by address (on PostgreSQL it also
        # takes the new rows' ids), and the full rows (typed through SQLAlchemy) only of the
        # addresses already on the list.
        known, fresh = ids_and_new_ids(conn, t.c.email, [r.email for r in rows])
        existing: dict[str, Any] = {}
        if known:
            found = conn.execute(
                sa.select(t.c.id, t.c.email, *(t.c[f] for f in ROW_FIELDS)).where(t.c.id.in_(known.values()))
            )
            existing = {m["email"]: m for m in found.mappings()}
        return _Found(existing, fresh)

    def _decide(self, rows: list[CsvRow], found: _Found) -> _Batch:
        """What one batch writes (no database here: this runs while the previous batch is sent)."""
        batch = _Batch()
        for row in rows:
            current = found.existing.get(row.email)
            if current is None:
                values, previous = apply_row(None, row, now=self.now, source=self.source)
                values["email"], values["created_at"] = row.email, self.now
                batch.new.append(values)
                batch.new_kinds.append(None if previous is None else change_kind(previous, values["status"]))
                continue
            wants = row.status or SubscriberStatus.ACTIVE
            if current["status"] in NO_CONSENT and wants not in NO_CONSENT and not self.resubscribe:
                self.kept_out.append(f"{row.email} ({current['status']})")
                continue
            values, previous = apply_row(current, row, now=self.now, source=self.source)
            batch.changed.append({"row_id": current["id"], **values})
            if previous is not None:
                batch.events.append(self._event(current["id"], change_kind(previous, values["status"])))
        for v, key in zip(batch.new, new_token_keys(len(batch.new)), strict=True):
            v["token_key"] = key
        # One id a new row, unless a row found by the probe was deleted before its full row was
        # read (it is added again, numbered by the database, its event found by address).
        if found.fresh is not None and len(found.fresh) == len(batch.new):
            batch.ids_given = True
            for v, id_ in zip(batch.new, found.fresh, strict=True):
                v["id"] = id_
        self.added += len(batch.new)
        self.updated += len(batch.changed)
        return batch

    def _send(self, conn: sa.Connection, batch: _Batch) -> None:
        """Write one decided batch (in the sending thread)."""
        t = _TABLE
        if batch.new:
            insert_rows(conn, t, batch.new)
            by_kind: dict[str, list[Any]] = {}
            for v, k in zip(batch.new, batch.new_kinds, strict=True):
                if k is not None:
                    by_kind.setdefault(k, []).append(v["id"] if batch.ids_given else v["email"])
            for kind, keys in by_kind.items():
                if batch.ids_given:  # no lookup by address
                    insert_per_key(conn, _EVENTS.c.subscriber_id, keys, self._event_values(kind))
                else:
                    conn.execute(self._events_of_new(kind, keys))
        if batch.changed:
            conn.execute(sa.update(t).where(t.c.id == sa.bindparam("row_id")), batch.changed)
        if batch.events:
            insert_rows(conn, _EVENTS, batch.events)

    def _events_of_new(self, kind: str, emails: list[str]) -> sa.Insert:
        """One INSERT ... SELECT of the `kind` events of new subscribers (all "subscribe" for a
        plain list): the database finds the ids by address, none travel back here."""
        t = _TABLE
        return sa.insert(_EVENTS).from_select(
            ["subscriber_id", "kind", "method", "detail", "created_at"],
            sa.select(
                t.c.id,
                sa.literal(kind, sa.String),
                sa.literal("import", sa.String),
                sa.literal(self.source, sa.String),
                sa.literal(self.now, _EVENTS.c.created_at.type),
            )
            .where(t.c.email.in_(emails))
            .order_by(t.c.id),
        )

    def _event_values(self, kind: str) -> dict[str, Any]:
        """The values of an import's `kind` event but its subscriber."""
        return {"kind": kind, "method": "import", "detail": self.source, "created_at": self.now}

    def _event(self, subscriber_id: int, kind: str) -> dict[str, Any]:
        return {
            "subscriber_id": subscriber_id, "edition_id": None, "user_agent": None, "ip": None,
            "external_id": None, **self._event_values(kind),
        }  # fmt: skip


def import_csv(
    path: Path,
    *,
    session: Session,
    now: datetime,
    known_topics: Sequence[str],
    skip_invalid: bool = False,
    resubscribe: bool = False,
    on_invalid: Callable[[str], None] | None = None,
) -> ImportReport:
    """Import a CSV: all or nothing unless `skip_invalid`, never resubscribing without consent.
    Every invalid row goes to `on_invalid` ("file:line: reason") as it is found. Streams:
    memory stays a batch of rows whatever the size of the file."""
    invalid: list[str] = []
    count = 0
    try:
        with open_csv(path) as table, closing(_Spool()) as spool:
            for item in table.rows(known_topics):
                if isinstance(item, CsvRow):
                    spool.add(item)
                    continue
                count += 1
                if on_invalid is not None:
                    on_invalid(item)
                if len(invalid) < MAX_LISTED:
                    invalid.append(item)
            if count and not skip_invalid:
                more = f"\n  ... and {count - len(invalid):,} more" if count > len(invalid) else ""
                raise SubscriberError(
                    f"{path}: {count} invalid row(s), nothing imported:\n  " + "\n  ".join(invalid) + more
                )
            writer = _Writer(session, now, f"import:{path.name}", resubscribe)
            writer.write_all(spool.batches())
            duplicates = spool.duplicates()
    except sqlite3.Error as e:  # the spool's own database (the list's errors come wrapped by SQLAlchemy)
        raise SubscriberError(f"{path}: the import's temporary file: {e}") from e
    except sa.exc.IntegrityError as e:  # only the unique address can clash: a sign-up meanwhile
        raise SubscriberError(
            f"{path}: an address in the file was added by someone else during the import "
            f"({str(e.orig).splitlines()[0]}); nothing imported: run it again"
        ) from e
    return ImportReport(
        writer.added,
        writer.updated,
        tuple(writer.kept_out),
        duplicates,
        tuple(invalid),
        table.ignored,
        count,
        table.format.name,
    )


def export_rows(*, session: Session) -> Iterator[dict[str, str]]:
    """Every subscriber as a CSV row (import columns plus status and consent), streamed from
    the database a batch at a time (a server-side cursor on PostgreSQL)."""
    query = sa.select(_TABLE).order_by(_TABLE.c.id).execution_options(yield_per=BATCH_SIZE)
    for s in session.execute(query).mappings():
        yield {
            "email": s["email"],
            "name": s["name"],
            "topics": ";".join(t for t in s["topics"].split("\n") if t),
            "timezone": s["timezone"] or "",
            "status": str(s["status"]),
            "consent_source": s["consent_source"],
            "consent_at": s["consent_at"].isoformat() if s["consent_at"] else "",
            "consent_ip": s["consent_ip"] or "",
            "confirmed_at": s["confirmed_at"].isoformat() if s["confirmed_at"] else "",
            "confirmed_ip": s["confirmed_ip"] or "",
        }


def write_csv(rows: Iterable[dict[str, str]], out: TextIO) -> int:
    """Write export rows as CSV, every cell safe to open in a spreadsheet; returns the count."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for row in rows:
        writer.writerow([escape_cell(row[c]) for c in EXPORT_COLUMNS])
        count += 1
    return count
