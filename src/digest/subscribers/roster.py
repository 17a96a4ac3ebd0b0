"""The subscriber list: add, list, remove, and the history of every change (`record_event`);
consent is kept and never forced. What outside text may hold is checked here (`check_text`,
`clean_name`), for every door to use. Status changes (unsubscribe, pause, preferences) are
subscribers/status.py's."""

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session, col, select

from digest.db.models import Delivery, Subscriber, SubscriberEvent, SubscriberStatus
from digest.errors import SubscriberError

# A name greets the reader ("Hi Ana,") and goes into the To: header. 100 characters hold any
# real full name with room to spare (the UK government's data standard allows 70 for one; the
# ICAO passport line 39) while a header stays far under RFC 5322's 998-character line even when
# a non-ASCII name is RFC 2047-encoded (4 bytes a character, base64: about 540 octets, folded).
# Longer is refused, never cut: a silently shortened name is a wrong name (issue 12, row 6).
NAME_MAX_LENGTH = 100

# C0 and C1 controls (CR, LF, NUL, TAB, NEL, ...), DEL, the Unicode line and paragraph
# separators, and lone surrogates (bytes that were not UTF-8). None belongs in a name or any
# other one-line value: CR/LF in a name became injected Bcc:/Cc: headers (issue 12, row 5), NUL
# is refused by PostgreSQL (row 19). Refused with a reason rather than stripped, so the operator
# sees the damaged or hostile row instead of a name quietly made up from it.
_UNFIT = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


class Via(TypedDict, total=False):
    """Where a status change came from, for its event: the edition whose link was used, and the
    browser (user agent, address) that asked."""

    edition_id: int | None
    user_agent: str | None
    ip: str | None


# Statuses an import must not undo without the admin saying so: the reader said no.
NO_CONSENT = frozenset({SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED})


def shown(value: str, limit: int = 60) -> str:
    """`value` quoted for an error message, cut to `limit` characters (a hostile value can be
    megabytes long)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value):,} characters)"


def check_text(value: str, what: str, limit: int) -> str:
    """`value` trimmed, when it is one line of text of at most `limit` characters without control
    characters; otherwise SubscriberError naming `what` and the first fault."""
    text = value.strip()
    bad = _UNFIT.search(text)
    if bad is not None:
        code = ord(bad.group())
        kind = "a byte that is not UTF-8" if 0xD800 <= code <= 0xDFFF else "a line break or control character"
        raise SubscriberError(
            f"{what}: {kind} (U+{code:04X}) at character {bad.start() + 1}: it must be one line of text"
        )
    if len(text) > limit:
        raise SubscriberError(f"{what}: {len(text):,} characters, at most {limit} allowed")
    return text


def clean_name(name: str) -> str:
    """A subscriber's name as stored: trimmed, one line, at most NAME_MAX_LENGTH characters;
    SubscriberError says why not (every door that takes a name calls this)."""
    return check_text(name, "name", NAME_MAX_LENGTH)


# An ASCII local part email_validator accepts as it is (RFC 5322 dot-atom, at most 64 octets):
# such an address is valid exactly when its domain is, and reads as local part @ that domain's
# normalized form. A list of 200,000 readers has a few thousand domains: validating each domain
# once and the local part by this pattern costs a tenth of a full validation per row (issue 15).
_PLAIN_LOCAL = re.compile(r"[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+)*")
_LOCAL_MAX, _ADDRESS_MAX = 64, 254  # octets (RFC 5321 §4.5.3.1), as email_validator counts them


@functools.lru_cache(maxsize=10_000)
def _valid_domain(domain: str) -> str | None:
    """The normalized form of an ASCII domain email_validator accepts, else None."""
    try:
        return validate_email(f"a@{domain}", check_deliverability=False).domain
    except EmailNotValidError:
        return None


def normalize_email(address: str) -> str:
    """A validated, normalized address (syntax only, no DNS); SubscriberError says why not."""
    address = address.strip()
    local, at, domain = address.rpartition("@")
    if (
        at
        and address.isascii()
        and len(address) <= _ADDRESS_MAX
        and len(local) <= _LOCAL_MAX
        and _PLAIN_LOCAL.fullmatch(local)
        and (normalized := _valid_domain(domain)) is not None
    ):
        return f"{local}@{normalized}".lower()
    try:
        info = validate_email(address, check_deliverability=False)
    except EmailNotValidError as e:
        raise SubscriberError(f"{shown(address)}: {e}") from e
    # Lower-case all of it: local parts are case-sensitive in theory (RFC 5321 §2.4) but not at
    # any real mailbox provider, and "Ana@x" and "ana@x" must be one subscriber, not two.
    return info.normalized.lower()


@functools.lru_cache(maxsize=1024)  # ~600 zones exist; ZoneInfo's own cache keeps only 8 loaded
def check_timezone(name: str) -> str:
    """An IANA time zone name, or SubscriberError."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise SubscriberError(f"unknown time zone {shown(name)}") from e
    return name


def check_topics(topics: Iterable[str], known: Sequence[str]) -> list[str]:
    """Topic names as configured (case-insensitive match), or SubscriberError naming the unknown."""
    by_lower = {k.lower(): k for k in known}
    result = []
    for topic in topics:
        name = by_lower.get(topic.strip().lower())
        if name is None:
            raise SubscriberError(f"unknown topic {shown(topic.strip())} (known: {', '.join(known)})")
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
    """A valid row of a subscriber CSV file, or an `add` (status and consent only when given)."""

    line: int
    email: str
    name: str
    topics: tuple[str, ...]
    timezone: str | None
    status: SubscriberStatus | None = None
    consent: Consent | None = None
    # Columns the file had: an existing subscriber keeps what a file without that column says
    # nothing about (a list of addresses alone must not wipe everyone's topics and time zone).
    columns: frozenset[str] = frozenset(("email", "name", "topics", "timezone"))


# The columns a row sets (besides email and created_at, set once).
ROW_FIELDS = (
    "name", "topics", "timezone", "status", "consent_source", "consent_at", "consent_ip", "confirmed_at",
    "confirmed_ip", "updated_at",
)  # fmt: skip


def apply_row(
    current: Mapping[Any, Any] | None, record: CsvRow, *, now: datetime, source: str
) -> tuple[dict[str, Any], SubscriberStatus | None]:
    """A subscriber's ROW_FIELDS after one validated row (the file's status and consent when it
    has them, else active now), and its status before when the row changed it (else None).
    Pure: `add` sets them on one row, an import writes thousands in one statement."""
    status = record.status or SubscriberStatus.ACTIVE
    c = record.consent
    if current is None:  # a new subscriber (pending before): one dict, as an import adds thousands
        if c is not None:  # an export being imported: keep its consent as it was
            consent = (c.source, c.at, c.ip, c.confirmed_at, c.confirmed_ip)
        elif status == SubscriberStatus.ACTIVE:
            consent = (source, now, None, now, None)
        else:
            consent = ("", None, None, None, None)
        fresh = {
            "name": record.name, "topics": "\n".join(record.topics), "timezone": record.timezone,
            "status": status, "consent_source": consent[0], "consent_at": consent[1],
            "consent_ip": consent[2], "confirmed_at": consent[3], "confirmed_ip": consent[4],
            "updated_at": now,
        }  # fmt: skip
        return fresh, (SubscriberStatus.PENDING if status != SubscriberStatus.PENDING else None)
    previous = SubscriberStatus(current["status"])
    values = {f: current[f] for f in ROW_FIELDS}
    if "name" in record.columns:
        values["name"] = record.name
    if "topics" in record.columns:
        values["topics"] = "\n".join(record.topics)
    if "timezone" in record.columns:
        values["timezone"] = record.timezone
    if c is not None:
        values |= {"consent_source": c.source, "consent_at": c.at, "consent_ip": c.ip}
        values |= {"confirmed_at": c.confirmed_at, "confirmed_ip": c.confirmed_ip}
    elif status == SubscriberStatus.ACTIVE and previous != SubscriberStatus.ACTIVE:
        values |= {"consent_source": source, "consent_at": now, "confirmed_at": now}
        values |= {"consent_ip": None, "confirmed_ip": None}
    values["status"], values["updated_at"] = status, now
    return values, (previous if status != previous else None)


def change_kind(previous: SubscriberStatus, status: SubscriberStatus) -> str:
    """The event kind of a status change made by `add` or an import."""
    if status == SubscriberStatus.ACTIVE:
        return "resubscribe" if previous in NO_CONSENT else "subscribe"
    return "unsubscribe" if status == SubscriberStatus.UNSUBSCRIBED else str(status)


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
    name = clean_name(name)
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
    current = None if row is None else {f: getattr(row, f) for f in ROW_FIELDS}
    values, previous = apply_row(current, record, now=now, source=source)
    if row is None:
        row = Subscriber(email=address, created_at=now, **values)
    else:
        for column, value in values.items():
            setattr(row, column, value)
    session.add(row)
    session.flush()  # the new row's id, for its event
    if previous is not None:
        method = "admin" if source == "cli" else "import"
        record_event(session, row, change_kind(previous, row.status), method, now=now, detail=source)
    return row


def list_subscribers(*, session: Session, status: SubscriberStatus | None = None) -> list[Subscriber]:
    """Subscribers, optionally of one status, oldest first."""
    query = select(Subscriber).order_by(col(Subscriber.id))
    if status is not None:
        query = query.where(Subscriber.status == status)
    return list(session.exec(query))


def remove_subscriber(email: str, *, session: Session) -> None:
    """Delete a subscriber and their history (a data-deletion request)."""
    row = get_subscriber(email, session=session)
    for model in (SubscriberEvent, Delivery):
        for item in session.exec(select(model).where(model.subscriber_id == row.id)):
            session.delete(item)
    session.delete(row)
