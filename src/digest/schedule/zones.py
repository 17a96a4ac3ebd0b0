"""When each time zone is due its edition: pure, given the zones, DIGEST_SEND_TIME and now.

Each subscriber receives edition D at DIGEST_SEND_TIME on day D in their own time zone (no time
zone means DIGEST_TIMEZONE). The scheduler asks every quarter hour (every zone offset is a
multiple of 15 minutes) and each zone is due only its newest edition, so missed runs after
downtime are caught up once; one due longer ago than DIGEST_MAX_LATENESS_HOURS is stale.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

log = logging.getLogger(__name__)

DISPATCH_EVERY_MINUTES = 15  # IANA zone offsets are all multiples of 15 minutes


# --- pure: when is what due -----------------------------------------------------------------


def due_at(zone: str, day: date, send_time: time) -> datetime:
    """When the edition of `day` is due in `zone`, in UTC (a time in a DST gap comes an hour on)."""
    return datetime.combine(day, send_time, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def latest_due(zone: str, send_time: time, now: datetime) -> tuple[date, datetime]:
    """The newest edition date already due in `zone` at `now`, and when it fell due."""
    day = now.astimezone(ZoneInfo(zone)).date()
    due = due_at(zone, day, send_time)
    if due > now:
        day -= timedelta(days=1)
        due = due_at(zone, day, send_time)
    return day, due


def next_due(zone: str, send_time: time, now: datetime) -> tuple[date, datetime]:
    """The next edition date due in `zone` after `now`, and when."""
    day, _ = latest_due(zone, send_time, now)
    day += timedelta(days=1)
    return day, due_at(zone, day, send_time)


@dataclass(frozen=True, slots=True)
class ZonePlan:
    """One time zone's newest due edition at some moment, and whether it is too late to send."""

    zone: str
    edition_date: date
    due_at: datetime
    late: timedelta
    stale: bool

    @property
    def key(self) -> str:
        """What a send run for this plan is about, e.g. "2026-11-25 Asia/Tokyo"."""
        return f"{self.edition_date} {self.zone}"


def plan(zones: Iterable[str], *, send_time: time, now: datetime, lateness: timedelta) -> list[ZonePlan]:
    """Per zone, the newest edition due (older missed ones are coalesced away), oldest due first."""
    plans = []
    for zone in set(zones):
        day, due = latest_due(zone, send_time, now)
        plans.append(ZonePlan(zone, day, due, now - due, now - due > lateness))
    return sorted(plans, key=lambda p: (p.due_at, p.zone))
