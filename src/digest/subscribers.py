"""Subscribers: add, import, export, list, remove, unsubscribe; consent is kept and never forced."""

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO, TypedDict, Unpack
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session, col, select

from digest.db.models import Delivery, Subscriber, SubscriberEvent, SubscriberStatus
from digest.errors import SubscriberError

CSV_COLUMNS = ("email", "name", "topics", "timezone")
CONSENT_COLUMNS = ("consent_source", "consent_at", "consent_ip", "confirmed_at", "confirmed_ip")
EXPORT_COLUMNS = (*CSV_COLUMNS, "status", *CONSENT_COLUMNS)


# Statuses an import must not undo without the admin saying so: the reader said no.
class Via(TypedDict, total=False):
    """Where a status change came from, for its event: the edition whose link was used, and the
    browser (user agent, address) that asked."""

    edition_id: int | None
    user_agent: str | None
    ip: str | None


NO_CONSENT = frozenset({SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED})


def normalize_email(address: str) -> str:
    """A validated, normalized address (syntax only, no DNS); SubscriberError says why not."""
    try:
        info = validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as e:
        raise SubscriberError(f"{address.strip()!r}: {e}") from e
    # Lower-case all of it: local parts are case-sensitive in theory (RFC 5321 §2.4) but not at
    # any real mailbox provider, and "Ana@x" and "ana@x" must be one subscriber, not two.
    return info.normalized.lower()


def check_timezone(name: str) -> str:
    """An IANA time zone name, or SubscriberError."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise SubscriberError(f"unknown time zone {name!r}") from e
    return name


def check_topics(topics: Iterable[str], known: Sequence[str]) -> list[str]:
    """Topic names as configured (case-insensitive match), or SubscriberError naming the unknown."""
    by_lower = {k.lower(): k for k in known}
    result = []
    for topic in topics:
        name = by_lower.get(topic.strip().lower())
        if name is None:
            raise SubscriberError(f"unknown topic {topic.strip()!r} (known: {', '.join(known)})")
        if name not in result:
            result.append(name)
    return result


def topics_of(subscriber: Subscriber) -> frozenset[str]:
    """The subscriber's chosen topics; empty means all."""
    return frozenset(t for t in subscriber.topics.split("\n") if t)


def record_event(
    session: Session,
    subscriber: Subscriber,
    kind: str,
    method: str,
    *,
    now: datetime,
    edition_id: int | None = None,
    user_agent: str | None = None,
    ip: str | None = None,
    detail: str | None = None,
    external_id: str | None = None,
) -> None:
    """Append a subscriber event (the audit trail of every change)."""
    assert subscriber.id is not None
    session.add(
        SubscriberEvent(
            subscriber_id=subscriber.id,
            edition_id=edition_id,
            kind=kind,
            method=method,
            user_agent=user_agent,
            ip=ip,
            detail=detail,
            external_id=external_id,
            created_at=now,
        )
    )


def get_subscriber(email: str, *, session: Session) -> Subscriber:
    """The subscriber with this address, or SubscriberError."""
    address = normalize_email(email)
    row = session.exec(select(Subscriber).where(Subscriber.email == address)).first()
    if row is None:
        raise SubscriberError(f"no subscriber {address}")
    return row


def add_subscriber(
    email: str,
    *,
    session: Session,
    now: datetime,
    known_topics: Sequence[str],
    name: str = "",
    topics: Sequence[str] = (),
    timezone: str | None = None,
    source: str = "cli",
    resubscribe: bool = False,
) -> Subscriber:
    """Add (or update) an active subscriber; someone who left stays out unless `resubscribe`."""
    address = normalize_email(email)
    chosen = check_topics(topics, known_topics)
    tz = check_timezone(timezone) if timezone else None
    row = session.exec(select(Subscriber).where(Subscriber.email == address)).first()
    if row is not None and row.status in NO_CONSENT and not resubscribe:
        raise SubscriberError(
            f"{address} is {row.status}: not resubscribed without their consent (use --resubscribe "
            "if they asked to come back)"
        )
    given = {"email"} | {c for c, v in (("name", name), ("topics", topics), ("timezone", timezone)) if v}
    record = CsvRow(0, address, name, tuple(chosen), tz, columns=frozenset(given))
    change = _apply_row(session, row, record, now=now, source=source)
    _record_changes(session, [change], now=now, source=source)
    return change[0]


def _apply_row(
    session: Session, row: Subscriber | None, record: "CsvRow", *, now: datetime, source: str
) -> tuple[Subscriber, SubscriberStatus | None]:
    """Set one validated row (the file's status and consent when it has them, else active now);
    returns it with its status before (None when the status did not change). Nothing is flushed:
    an import of many rows is a few bulk statements, not one round trip per row."""
    if row is None:
        row = Subscriber(email=record.email, created_at=now, updated_at=now, status=SubscriberStatus.PENDING)
    previous = row.status
    status = record.status or SubscriberStatus.ACTIVE
    fresh = row.id is None
    if fresh or "name" in record.columns:
        row.name = record.name
    if fresh or "topics" in record.columns:
        row.topics = "\n".join(record.topics)
    if fresh or "timezone" in record.columns:
        row.timezone = record.timezone
    if record.consent is not None:  # an export being imported: keep its consent as it was
        c = record.consent
        row.consent_source, row.consent_at, row.consent_ip = c.source, c.at, c.ip
        row.confirmed_at, row.confirmed_ip = c.confirmed_at, c.confirmed_ip
    elif status == SubscriberStatus.ACTIVE and previous != SubscriberStatus.ACTIVE:
        row.consent_source, row.consent_at, row.confirmed_at = source, now, now
        row.consent_ip = row.confirmed_ip = None
    row.status = status
    row.updated_at = now
    session.add(row)
    return row, (previous if status != previous else None)


def _record_changes(
    session: Session,
    changes: Iterable[tuple[Subscriber, SubscriberStatus | None]],
    *,
    now: datetime,
    source: str,
) -> None:
    """Flush the rows (new ones get their ids), then add one event per status change."""
    session.flush()
    method = "admin" if source == "cli" else "import"
    for row, previous in changes:
        if previous is None:
            continue
        kind = {
            SubscriberStatus.ACTIVE: "resubscribe" if previous in NO_CONSENT else "subscribe",
            SubscriberStatus.UNSUBSCRIBED: "unsubscribe",
        }.get(row.status, str(row.status))
        record_event(session, row, kind, method, now=now, detail=source)


@dataclass(frozen=True, slots=True)
class Consent:
    """How and when someone agreed to receive the digest, as an export records it."""

    source: str
    at: datetime | None
    ip: str | None
    confirmed_at: datetime | None
    confirmed_ip: str | None


@dataclass(frozen=True, slots=True)
class CsvRow:
    """A valid row of a subscriber CSV file (status and consent only when the file has them)."""

    line: int
    email: str
    name: str
    topics: tuple[str, ...]
    timezone: str | None
    status: SubscriberStatus | None = None
    consent: Consent | None = None
    # Columns the file had: an existing subscriber keeps what a file without that column says
    # nothing about (a list of addresses alone must not wipe everyone's topics and time zone).
    columns: frozenset[str] = frozenset(CSV_COLUMNS)


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did: added, updated, kept out for consent, merged duplicates, bad rows."""

    added: int = 0
    updated: int = 0
    kept_out: tuple[str, ...] = ()
    duplicates: int = 0
    invalid: tuple[str, ...] = field(default_factory=tuple)
    ignored_columns: tuple[str, ...] = ()


def _sniff_delimiter(header: str) -> str:
    # The header holds only column names, so the delimiter is whichever of , ; TAB it uses most;
    # csv.Sniffer guesses from data rows and picks ";" when topics like "a;b" fill them.
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _parse_time(value: str, column: str) -> datetime | None:
    if not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise SubscriberError(f"{column}: {value.strip()!r} is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        raise SubscriberError(f"{column}: {value.strip()!r} has no UTC offset")
    return parsed


def _parse_row(values: dict[str, str], known_topics: Sequence[str], line: int) -> CsvRow:
    email = normalize_email(values.get("email", ""))
    topics = check_topics([t for t in values.get("topics", "").split(";") if t.strip()], known_topics)
    tz_name = values.get("timezone", "").strip()
    status: SubscriberStatus | None = None
    if values.get("status", "").strip():
        try:
            status = SubscriberStatus(values["status"].strip().lower())
        except ValueError:
            raise SubscriberError(
                f"status: {values['status'].strip()!r} is not one of "
                + ", ".join(s.value for s in SubscriberStatus)
            ) from None
    consent = None
    if any(values.get(c, "").strip() for c in CONSENT_COLUMNS):
        consent = Consent(
            source=values.get("consent_source", "").strip(),
            at=_parse_time(values.get("consent_at", ""), "consent_at"),
            ip=values.get("consent_ip", "").strip() or None,
            confirmed_at=_parse_time(values.get("confirmed_at", ""), "confirmed_at"),
            confirmed_ip=values.get("confirmed_ip", "").strip() or None,
        )
    return CsvRow(
        line,
        email,
        values.get("name", "").strip(),
        tuple(topics),
        check_timezone(tz_name) if tz_name else None,
        status,
        consent,
        frozenset(values),
    )


def read_csv(path: Path, *, known_topics: Sequence[str]) -> tuple[list[CsvRow], list[str], int, list[str]]:
    """Parse and validate a subscriber CSV: (good rows, "file:line: reason" errors, duplicates
    merged, ignored columns)."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: Excel writes a BOM
    except (OSError, UnicodeDecodeError) as e:
        raise SubscriberError(f"{path}: cannot read: {e}") from e
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_sniff_delimiter(text.split("\n", 1)[0]))
    try:
        header = [h.strip().lower() for h in next(reader, [])]
    except csv.Error as e:
        raise SubscriberError(f"{path}:1: {e}") from e
    if "email" not in header:
        raise SubscriberError(
            f"{path}:1: header must have an 'email' column (got {', '.join(header) or 'nothing'})"
        )
    ignored = [h for h in header if h not in EXPORT_COLUMNS]
    rows: dict[str, CsvRow] = {}
    errors: list[str] = []
    duplicates = 0
    line = reader.line_num
    while True:
        start = line + 1  # a quoted value may span lines: name the line where the row starts
        try:
            raw = next(reader, None)
        except csv.Error as e:
            errors.append(f"{path}:{start}: {e}")
            break
        line = reader.line_num
        if raw is None:
            break
        if not any(v.strip() for v in raw):
            continue
        if len(raw) > len(header):
            errors.append(
                f"{path}:{start}: {len(raw)} fields but the header has {len(header)} "
                "(quote a value that contains the delimiter)"
            )
            continue
        try:
            record = _parse_row(dict(zip(header, raw, strict=False)), known_topics, start)
        except SubscriberError as e:
            errors.append(f"{path}:{start}: {e}")
            continue
        if record.email in rows:
            duplicates += 1
        rows[record.email] = record
    return list(rows.values()), errors, duplicates, ignored


def import_csv(
    path: Path,
    *,
    session: Session,
    now: datetime,
    known_topics: Sequence[str],
    skip_invalid: bool = False,
    resubscribe: bool = False,
) -> ImportReport:
    """Import a CSV: all or nothing unless `skip_invalid`; never resubscribes without consent."""
    rows, errors, duplicates, ignored = read_csv(path, known_topics=known_topics)
    if errors and not skip_invalid:
        raise SubscriberError(
            f"{path}: {len(errors)} invalid row(s), nothing imported:\n  " + "\n  ".join(errors)
        )
    existing: dict[str, Subscriber] = {}
    for start in range(0, len(rows), 500):  # bounded IN lists (SQLite caps bound parameters)
        chunk = [r.email for r in rows[start : start + 500]]
        existing.update(
            (s.email, s) for s in session.exec(select(Subscriber).where(col(Subscriber.email).in_(chunk)))
        )
    added = updated = 0
    kept_out = []
    changes = []
    for row in rows:
        current = existing.get(row.email)
        wants = row.status or SubscriberStatus.ACTIVE
        if (
            current is not None
            and current.status in NO_CONSENT
            and wants not in NO_CONSENT
            and not resubscribe
        ):
            kept_out.append(f"{row.email} ({current.status})")
            continue
        changes.append(_apply_row(session, current, row, now=now, source=f"import:{path.name}"))
        if current is None:
            added += 1
        else:
            updated += 1
    _record_changes(session, changes, now=now, source=f"import:{path.name}")
    return ImportReport(added, updated, tuple(kept_out), duplicates, tuple(errors), tuple(ignored))


def export_rows(*, session: Session) -> Iterator[dict[str, str]]:
    """Every subscriber as a CSV row (import columns plus status and consent)."""
    for s in session.exec(select(Subscriber).order_by(col(Subscriber.id))):
        yield {
            "email": s.email,
            "name": s.name,
            "topics": ";".join(t for t in s.topics.split("\n") if t),
            "timezone": s.timezone or "",
            "status": str(s.status),
            "consent_source": s.consent_source,
            "consent_at": s.consent_at.isoformat() if s.consent_at else "",
            "consent_ip": s.consent_ip or "",
            "confirmed_at": s.confirmed_at.isoformat() if s.confirmed_at else "",
            "confirmed_ip": s.confirmed_ip or "",
        }


def write_csv(rows: Iterable[dict[str, str]], out: TextIO) -> int:
    """Write export rows as CSV; returns the number of rows."""
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
    return count


def list_subscribers(*, session: Session, status: SubscriberStatus | None = None) -> list[Subscriber]:
    """Subscribers, optionally of one status, oldest first."""
    query = select(Subscriber).order_by(col(Subscriber.id))
    if status is not None:
        query = query.where(Subscriber.status == status)
    return list(session.exec(query))


def _transition(
    subscriber: Subscriber,
    status: SubscriberStatus,
    kind: str,
    *,
    session: Session,
    now: datetime,
    method: str,
    paused_until: datetime | None = None,
    detail: str | None = None,
    **via: Unpack[Via],
) -> None:
    """Set a subscriber's status and record the change as an event (every change leaves one)."""
    subscriber.status, subscriber.paused_until, subscriber.updated_at = status, paused_until, now
    session.add(subscriber)
    record_event(
        session,
        subscriber,
        kind,
        method,
        now=now,
        detail=detail,
        **via,
    )


def unsubscribe(
    subscriber: Subscriber,
    *,
    session: Session,
    now: datetime,
    method: str,
    **via: Unpack[Via],
) -> bool:
    """Unsubscribe (idempotent); True when this call changed the status.

    A reader who complained stays `complained`: that is a stronger no, and turning it into a
    plain unsubscribe would let a "subscribe again" click undo it (issue 12).
    """
    if subscriber.status in (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.COMPLAINED):
        return False
    _transition(
        subscriber,
        SubscriberStatus.UNSUBSCRIBED,
        "unsubscribe",
        session=session,
        now=now,
        method=method,
        paused_until=subscriber.paused_until,
        **via,
    )
    return True


def resubscribe(
    subscriber: Subscriber,
    *,
    session: Session,
    now: datetime,
    method: str,
    **via: Unpack[Via],
) -> bool:
    """Undo the reader's own unsubscribe (the confirmation page offers it); True when it changed.

    Never after a spam complaint that is still in force: that reader must confirm by email
    first (optin.subscribe_again), so a click on a page cannot undo a complaint.
    """
    if subscriber.status != SubscriberStatus.UNSUBSCRIBED or complaint_in_force(subscriber, session=session):
        return False
    _transition(
        subscriber,
        SubscriberStatus.ACTIVE,
        "resubscribe",
        session=session,
        now=now,
        method=method,
        paused_until=subscriber.paused_until,
        **via,
    )
    return True


def complaint_in_force(subscriber: Subscriber, *, session: Session) -> bool:
    """Whether the reader complained (marked us as spam) and has not confirmed by email since."""
    if subscriber.status == SubscriberStatus.COMPLAINED:
        return True
    last = session.exec(
        select(SubscriberEvent.kind)
        .where(SubscriberEvent.subscriber_id == subscriber.id)
        .where(col(SubscriberEvent.kind).in_(("complaint", "confirm")))
        .order_by(col(SubscriberEvent.id).desc())  # insertion order: times can be equal
        .limit(1)
    ).first()
    return last == "complaint"


def remove_subscriber(email: str, *, session: Session) -> None:
    """Delete a subscriber and their history (a data-deletion request)."""
    row = get_subscriber(email, session=session)
    for model in (SubscriberEvent, Delivery):
        for item in session.exec(select(model).where(model.subscriber_id == row.id)):
            session.delete(item)
    session.delete(row)


# --- pause (preferences page) ------------------------------------------------------------------

PAUSE_CHOICES_WEEKS = (1, 2, 4, 8)
RESUME_BATCH = 500  # paused subscribers reactivated per query


def pause(
    subscriber: Subscriber,
    *,
    session: Session,
    now: datetime,
    until: datetime,
    method: str = "preferences",
    **via: Unpack[Via],
) -> None:
    """Stop editions until `until`; the first send after that date resumes them."""
    if subscriber.status not in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED):
        raise SubscriberError(f"{subscriber.email} is {subscriber.status}: nothing to pause")
    _transition(
        subscriber,
        SubscriberStatus.PAUSED,
        "pause",
        session=session,
        now=now,
        method=method,
        paused_until=until,
        detail=f"until {until.date().isoformat()}",
        **via,
    )


def resume(
    subscriber: Subscriber,
    *,
    session: Session,
    now: datetime,
    method: str,
    **via: Unpack[Via],
) -> bool:
    """End a pause now; True when this call changed the status."""
    if subscriber.status != SubscriberStatus.PAUSED:
        return False
    _transition(
        subscriber,
        SubscriberStatus.ACTIVE,
        "resume",
        session=session,
        now=now,
        method=method,
        **via,
    )
    return True


def resume_paused(*, session: Session, now: datetime) -> int:
    """Reactivate everyone whose pause has ended (called before each send), a batch at a time."""
    due = (
        select(Subscriber)
        .where(Subscriber.status == SubscriberStatus.PAUSED, col(Subscriber.paused_until) <= now)
        .order_by(col(Subscriber.id))
        .limit(RESUME_BATCH)
    )
    resumed = 0
    while batch := session.exec(due).all():
        for subscriber in batch:
            resume(subscriber, session=session, now=now, method="schedule")
        # Flushed, the resumed rows leave the query, so the next batch is the next rows due; the
        # session's identity map holds clean rows weakly, so memory stays one batch.
        session.flush()
        resumed += len(batch)
    return resumed


@dataclass(frozen=True, slots=True)
class PreferenceChange:
    """What the preferences form asks for: topics, a time zone, and optionally a pause or its end."""

    topics: list[str]
    timezone: str | None = None  # None: the newsletter's DIGEST_TIMEZONE
    set_timezone: bool = False  # the form carried a time zone choice
    pause_weeks: int = 0
    resume: bool = False


def apply_preferences(
    subscriber: Subscriber,
    change: PreferenceChange,
    *,
    session: Session,
    now: datetime,
    **via: Unpack[Via],
) -> None:
    """Save topics and time zone (an event when they change), then pause or resume as asked."""
    if change.pause_weeks and change.pause_weeks not in PAUSE_CHOICES_WEEKS:
        raise SubscriberError(f"a pause is one of {', '.join(map(str, PAUSE_CHOICES_WEEKS))} weeks")
    topics = "\n".join(change.topics)
    zone = change.timezone if change.set_timezone else subscriber.timezone
    if topics != subscriber.topics or zone != subscriber.timezone:
        subscriber.topics, subscriber.timezone, subscriber.updated_at = topics, zone, now
        session.add(subscriber)
        record_event(
            session,
            subscriber,
            "preferences",
            "preferences",
            now=now,
            detail=(";".join(change.topics) or "all") + (f"; time zone {zone}" if zone else ""),
            **via,
        )
    if change.resume:
        resume(
            subscriber,
            session=session,
            now=now,
            method="preferences",
            **via,
        )
    elif change.pause_weeks:
        pause(
            subscriber,
            session=session,
            now=now,
            until=now + timedelta(weeks=change.pause_weeks),
            **via,
        )
