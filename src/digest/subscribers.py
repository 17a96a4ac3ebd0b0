"""Subscribers: add, import, export, list, remove, unsubscribe; consent is kept and never forced."""

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session, col, select

from digest.db.models import Delivery, Subscriber, SubscriberEvent, SubscriberStatus
from digest.errors import SubscriberError

CSV_COLUMNS = ("email", "name", "topics", "timezone")
EXPORT_COLUMNS = (
    *CSV_COLUMNS,
    "status",
    "consent_source",
    "consent_at",
    "consent_ip",
    "confirmed_at",
)
# Statuses an import must not undo without the admin saying so: the reader said no.
NO_CONSENT = frozenset({SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED})


def normalize_email(address: str) -> str:
    """A validated, normalized address (syntax only, no DNS); SubscriberError says why not."""
    try:
        info = validate_email(address.strip(), check_deliverability=False)
    except EmailNotValidError as e:
        raise SubscriberError(f"{address.strip()!r}: {e}") from e
    local, _, domain = info.normalized.rpartition("@")
    return f"{local}@{domain.lower()}"


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
    if row is None:
        row = Subscriber(email=address, created_at=now, updated_at=now)
    was_active = row.status == SubscriberStatus.ACTIVE and row.id is not None
    row.name, row.topics, row.timezone = name or row.name, "\n".join(chosen), tz
    row.status = SubscriberStatus.ACTIVE
    if not was_active:
        row.consent_source, row.consent_at, row.confirmed_at = source, now, now
    row.updated_at = now
    session.add(row)
    session.flush()
    if not was_active:
        record_event(
            session,
            row,
            "subscribe",
            "admin" if source == "cli" else "import",
            now=now,
            detail=source,
        )
    return row


@dataclass(frozen=True, slots=True)
class CsvRow:
    """A valid row of a subscriber CSV file."""

    line: int
    email: str
    name: str
    topics: tuple[str, ...]
    timezone: str | None


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did: added, updated, kept out for consent, merged duplicates, bad rows."""

    added: int = 0
    updated: int = 0
    kept_out: tuple[str, ...] = ()
    duplicates: int = 0
    invalid: tuple[str, ...] = field(default_factory=tuple)


def read_csv(path: Path, *, known_topics: Sequence[str]) -> tuple[list[CsvRow], list[str], int]:
    """Parse and validate a subscriber CSV: (good rows, "line N: reason" errors, duplicates merged)."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: Excel writes a BOM
    except (OSError, UnicodeDecodeError) as e:
        raise SubscriberError(f"{path}: cannot read: {e}") from e
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=dialect)
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if "email" not in fields:
        raise SubscriberError(
            f"{path}:1: header must have an 'email' column (got {', '.join(fields) or 'nothing'})"
        )
    reader.fieldnames = fields
    rows: dict[str, CsvRow] = {}
    errors: list[str] = []
    duplicates = 0
    for raw in reader:
        line = reader.line_num
        if not any((v or "").strip() for v in raw.values() if isinstance(v, str)):
            continue
        try:
            email = normalize_email(raw.get("email") or "")
            topics = check_topics(
                [t for t in (raw.get("topics") or "").split(";") if t.strip()], known_topics
            )
            tz_name = (raw.get("timezone") or "").strip()
            tz = check_timezone(tz_name) if tz_name else None
        except SubscriberError as e:
            errors.append(f"{path}:{line}: {e}")
            continue
        if email in rows:
            duplicates += 1
        rows[email] = CsvRow(line, email, (raw.get("name") or "").strip(), tuple(topics), tz)
    return list(rows.values()), errors, duplicates


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
    rows, errors, duplicates = read_csv(path, known_topics=known_topics)
    if errors and not skip_invalid:
        raise SubscriberError(
            f"{path}: {len(errors)} invalid row(s), nothing imported:\n  " + "\n  ".join(errors)
        )
    existing = {
        s.email: s
        for s in session.exec(select(Subscriber).where(col(Subscriber.email).in_([r.email for r in rows])))
    }
    added = updated = 0
    kept_out = []
    for row in rows:
        current = existing.get(row.email)
        if current is not None and current.status in NO_CONSENT and not resubscribe:
            kept_out.append(f"{row.email} ({current.status})")
            continue
        add_subscriber(
            row.email,
            session=session,
            now=now,
            known_topics=known_topics,
            name=row.name,
            topics=row.topics,
            timezone=row.timezone,
            source=f"import:{path.name}",
            resubscribe=resubscribe,
        )
        if current is None:
            added += 1
        else:
            updated += 1
    return ImportReport(added, updated, tuple(kept_out), duplicates, tuple(errors))


def export_rows(*, session: Session) -> Iterator[dict[str, str]]:
    """Every subscriber as a CSV row (import columns plus status and consent)."""
    for s in session.exec(select(Subscriber).order_by(col(Subscriber.id))):
        yield {
            "email": s.email,
            "name": s.name,
            "topics": ";".join(sorted(topics_of(s))),
            "timezone": s.timezone or "",
            "status": str(s.status),
            "consent_source": s.consent_source,
            "consent_at": s.consent_at.isoformat() if s.consent_at else "",
            "consent_ip": s.consent_ip or "",
            "confirmed_at": s.confirmed_at.isoformat() if s.confirmed_at else "",
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


def unsubscribe(
    subscriber: Subscriber,
    *,
    session: Session,
    now: datetime,
    method: str,
    edition_id: int | None = None,
    user_agent: str | None = None,
    ip: str | None = None,
) -> bool:
    """Unsubscribe (idempotent); True when this call changed the status."""
    if subscriber.status == SubscriberStatus.UNSUBSCRIBED:
        return False
    subscriber.status = SubscriberStatus.UNSUBSCRIBED
    subscriber.updated_at = now
    session.add(subscriber)
    record_event(
        session,
        subscriber,
        "unsubscribe",
        method,
        now=now,
        edition_id=edition_id,
        user_agent=user_agent,
        ip=ip,
    )
    return True


def remove_subscriber(email: str, *, session: Session) -> None:
    """Delete a subscriber and their history (a data-deletion request)."""
    row = get_subscriber(email, session=session)
    for model in (SubscriberEvent, Delivery):
        for item in session.exec(select(model).where(model.subscriber_id == row.id)):
            session.delete(item)
    session.delete(row)
