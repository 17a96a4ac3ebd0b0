"""Other newsletter services' subscriber exports, recognised by their header row and read as
digest's own columns (issue 14). Which column maps to what: subscribers/README.md.

A format turns one row (a dict keyed by the lower-cased header) into digest's columns: `email`,
`name`, `timezone`, `status` and the consent columns, so the importer in `subscribers/csvfile.py`
validates and writes every format the same way. Columns a format does not use are reported,
never an error. Pure: no database, no clock."""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from digest.errors import SubscriberError
from digest.subscribers.roster import shown

Row = Mapping[str, str]
Translate = Callable[[Row, str], dict[str, str]]

# Go's time.Time.String(), as listmonk writes created_at: "2024-05-01 10:20:30.5 +0000 UTC".
_GO_TIME = re.compile(r"^(\S+ \S+) ([+-]\d{2})(\d{2})(?: [A-Za-z]{1,6})?$")


def export_time(value: str, column: str) -> str:
    """A date-time as another service writes it, as ISO 8601 in UTC; "" when empty. A time
    without an offset is read as UTC (Mailchimp's OPTIN_TIME, CONFIRM_TIME)."""
    text = value.strip()
    if not text:
        return ""
    go = _GO_TIME.match(text)
    if go is not None:
        text = f"{go[1]}{go[2]}:{go[3]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise SubscriberError(f"{column}: {shown(value.strip())} is not a date and time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat()


def _yes(value: str) -> bool:
    return value.strip().lower() in {"true", "yes", "1", "t", "y"}


def _zone(value: str) -> dict[str, str]:
    """A time zone column kept only when it is an IANA name: a guess by another service (from
    an IP address) must not refuse the row."""
    name = value.strip()
    if not name:
        return {}
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return {}
    return {"timezone": name}


def _consent(
    source: str, at: str, confirmed: str = "", ip: str = "", confirmed_ip: str = ""
) -> dict[str, str]:
    """The consent columns, only when the export dates the consent (otherwise the import's own
    time and file stand for it, as for a plain list)."""
    if not at and not confirmed:
        return {}
    return {
        "consent_source": source,
        "consent_at": at or confirmed,
        "confirmed_at": confirmed or at,
        "consent_ip": ip,
        "confirmed_ip": confirmed_ip,
    }


def _mailchimp(row: Row, source: str) -> dict[str, str]:
    # One file per audience status in Mailchimp's zip: subscribed, unsubscribed (UNSUB_TIME set)
    # and cleaned (CLEAN_TIME set: addresses that bounced hard). Its nonsubscribed file (contacts
    # who never opted in) is not to be imported: subscribers/README.md says so.
    name = " ".join(p for p in (row.get("first name", "").strip(), row.get("last name", "").strip()) if p)
    status = "active"
    if row.get("clean_time", "").strip():
        status = "bounced"
    elif row.get("unsub_time", "").strip():
        status = "unsubscribed"
    return {
        "email": row.get("email address", ""),
        "name": name,
        "status": status,
        **_zone(row.get("timezone", "")),
        **_consent(
            source,
            export_time(row.get("optin_time", ""), "OPTIN_TIME"),
            export_time(row.get("confirm_time", ""), "CONFIRM_TIME"),
            row.get("optin_ip", ""),
            row.get("confirm_ip", ""),
        ),
    }


def _substack_data(row: Row, source: str) -> dict[str, str]:
    # The data export's email_list.*.csv: email_disabled is the reader having stopped the emails.
    created = export_time(row.get("created_at", ""), "created_at")
    return {
        "email": row.get("email", ""),
        "status": "unsubscribed" if _yes(row.get("email_disabled", "")) else "active",
        **_consent(source, created),
    }


def _substack_dashboard(row: Row, source: str) -> dict[str, str]:
    # The subscriber dashboard's export: every row receives emails (it lists subscribers only).
    return {
        "email": row.get("email", ""),
        "name": row.get("name", ""),
        "status": "active",
        **_consent(source, export_time(row.get("subscription date", ""), "Subscription date")),
    }


# Buttondown's subscriber types (its API documentation), as digest's statuses.
_BUTTONDOWN_STATUS = {
    "regular": "active", "premium": "active", "trialed": "active", "unpaid": "active",
    "gifted": "active", "churning": "active", "past_due": "active", "paused": "paused",
    "unactivated": "pending", "unsubscribed": "unsubscribed", "removed": "unsubscribed",
    "undeliverable": "bounced", "complained": "complained",
}  # fmt: skip


def _buttondown(row: Row, source: str) -> dict[str, str]:
    kind_column = "subscriber_type" if "subscriber_type" in row else "type"
    kind = row.get(kind_column, "").strip().lower() or "regular"
    if kind not in _BUTTONDOWN_STATUS:
        raise SubscriberError(
            f"{kind_column}: {shown(kind)} is not a Buttondown subscriber type digest knows "
            f"({', '.join(sorted(_BUTTONDOWN_STATUS))})"
        )
    return {
        "email": row.get("email", "") or row.get("email_address", ""),
        "status": _BUTTONDOWN_STATUS[kind],
        **_consent(
            source, export_time(row.get("creation_date", ""), "creation_date"), ip=row.get("ip_address", "")
        ),
    }


# listmonk's subscriber statuses: "disabled" is set by an admin and stops mail, so it pauses;
# "blocklisted" is an unsubscribe that must stick.
_LISTMONK_STATUS = {"enabled": "active", "disabled": "paused", "blocklisted": "unsubscribed"}


def _listmonk(row: Row, source: str) -> dict[str, str]:
    status = row.get("status", "").strip().lower() or "enabled"
    if status not in _LISTMONK_STATUS:
        raise SubscriberError(f"status: {shown(status)} is not one of enabled, disabled, blocklisted")
    return {
        "email": row.get("email", ""),
        "name": row.get("name", ""),
        "status": _LISTMONK_STATUS[status],
        **_consent(source, export_time(row.get("created_at", ""), "created_at")),
    }


def _ghost(row: Row, source: str) -> dict[str, str]:
    left = row.get("deleted_at", "").strip() or not _yes(row.get("subscribed_to_emails", "true"))
    return {
        "email": row.get("email", ""),
        "name": row.get("name", ""),
        "status": "unsubscribed" if left else "active",
        **_consent(source, export_time(row.get("created_at", ""), "created_at")),
    }


@dataclass(frozen=True, slots=True)
class ExportFormat:
    """A service's export: the columns that tell it apart, the columns it reads, and how."""

    name: str
    marks: tuple[frozenset[str], ...]  # the header has every column of one of these sets
    reads: frozenset[str]  # columns used; the rest are reported as not imported
    translate: Translate

    def matches(self, header: frozenset[str]) -> bool:
        """Whether a lower-cased header is this format's."""
        return any(mark <= header for mark in self.marks)

    def unused(self, header: tuple[str, ...]) -> tuple[str, ...]:
        """The columns of `header` this format does not import, in file order."""
        return tuple(h for h in header if h not in self.reads)

    def email_column(self, header: tuple[str, ...]) -> str | None:
        """The header's address column, None when it has none."""
        names = ("email", "email address", "email_address")
        return next((c for c in names if c in header and c in self.reads), None)


def _set(*columns: str) -> frozenset[str]:
    return frozenset(columns)


# Most specific first: a Ghost or listmonk header also has an `email` column.
FORMATS = (
    ExportFormat(
        "Mailchimp",
        (_set("email address", "leid"), _set("email address", "euid"), _set("email address", "optin_time")),
        _set(
            "email address",
            "first name",
            "last name",
            "optin_time",
            "optin_ip",
            "confirm_time",
            "confirm_ip",
            "timezone",
            "unsub_time",
            "clean_time",
        ),
        _mailchimp,
    ),
    ExportFormat(
        "listmonk",
        (_set("uuid", "email", "attributes", "status"),),
        _set("email", "name", "status", "created_at"),
        _listmonk,
    ),
    ExportFormat(
        "Ghost",
        (_set("email", "subscribed_to_emails"), _set("email", "complimentary_plan", "stripe_customer_id")),
        _set("email", "name", "subscribed_to_emails", "created_at", "deleted_at"),
        _ghost,
    ),
    ExportFormat(
        "Substack",
        (_set("email", "active_subscription", "email_disabled"),),
        _set("email", "email_disabled", "created_at"),
        _substack_data,
    ),
    ExportFormat(
        "Substack (dashboard)",
        (_set("email", "subscription type", "subscription date"),),
        _set("email", "name", "subscription date"),
        _substack_dashboard,
    ),
    ExportFormat(
        "Buttondown",
        (_set("email", "creation_date"), _set("email_address", "creation_date")),
        _set("email", "email_address", "creation_date", "subscriber_type", "type", "ip_address"),
        _buttondown,
    ),
)


def detect_format(header: tuple[str, ...], default: ExportFormat) -> ExportFormat:
    """The export format a lower-cased header row belongs to; `default` when none matches."""
    columns = frozenset(header)
    return next((f for f in FORMATS if f.matches(columns)), default)
