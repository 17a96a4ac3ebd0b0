"""Waiting for the editor's approval (issue 14): DIGEST_REQUIRE_APPROVAL=1.

The scheduler sends an edition only once `digest edition approve` (or the editor's page) has
approved it. Until the deadline (DIGEST_APPROVAL_DEADLINE: a local "HH:MM" on the edition's date
in DIGEST_TIMEZONE, or minutes after its send time there) it waits, and tries again at every
dispatch; after it, DIGEST_APPROVAL_FALLBACK says whether the edition is skipped (recorded as
skipped; what the next edition's window still holds goes there, as after a stale day) or sent as
it stands. A manual `digest send` is
the operator's own decision and does not wait. Pure but for `verdict`, which reads the approval.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import Session

from digest.config import Settings
from digest.db.queries import approval_of


def deadline(settings: Settings, day: date) -> datetime:
    """When the approval of the edition of `day` must have come (aware UTC)."""
    zone = ZoneInfo(settings.timezone)
    value = settings.approval_deadline
    if ":" in value:
        hours, minutes = (int(x) for x in value.split(":"))
        local = datetime.combine(day, time(hours, minutes), tzinfo=zone)
    else:
        local = datetime.combine(day, settings.send_time, tzinfo=zone) + timedelta(minutes=int(value))
    return local.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the scheduler does now with an edition that needs approval."""

    edition_date: date
    action: str  # "send", "wait" or "skip"
    deadline: datetime
    approved: bool

    @property
    def reason(self) -> str:
        """One line for the run record and `digest status`."""
        if self.approved:
            return f"edition {self.edition_date} approved"
        if self.action == "wait":
            return (
                f"edition {self.edition_date} waits for approval (digest edition approve, or the editor's "
                f"page) until {self.deadline:%Y-%m-%d %H:%M} UTC"
            )
        verb = "skipped" if self.action == "skip" else "sent without approval"
        return f"edition {self.edition_date} not approved by {self.deadline:%Y-%m-%d %H:%M} UTC: {verb}"


def decide(settings: Settings, day: date, *, approved: bool, now: datetime) -> Verdict:
    """Send, wait or skip: pure."""
    due = deadline(settings, day)
    if approved:
        action = "send"
    elif now < due:
        action = "wait"
    else:
        action = settings.approval_fallback
    return Verdict(day, action, due, approved)


def verdict(settings: Settings, day: date, *, session: Session, now: datetime) -> Verdict:
    """`decide` with the approval as recorded in the database."""
    return decide(settings, day, approved=approval_of(day, session=session) is not None, now=now)
