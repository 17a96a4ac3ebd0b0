"""Time as a dependency: the Clock every door makes once and passes down (issue 11).

No stage reads the wall clock; a CLI command, the web app, the scheduler and a worker each make
one clock and hand `now` (or the clock, where something waits) to what they call. Tests inject a
`FixedClock` through the same door, so no test depends on the real date.
"""

import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, tzinfo

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The real clock: timezone-aware UTC."""
    return datetime.now(UTC)


class FixedClock:
    """A clock that stands still until told to move: tests and simulations step it themselves."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FixedClock needs a timezone-aware datetime")
        self.now = start.astimezone(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        """Move the clock forward by `delta` and return the new time."""
        self.now += delta
        return self.now

    def set(self, when: datetime) -> None:
        """Jump to `when` (timezone-aware)."""
        self.now = when.astimezone(UTC)


class RunningClock:
    """A clock whose first reading is `start` and which then runs at the real pace (monotonic).

    For tests that wait on real processes or servers (a timeout must expire) while every date
    they see stays independent of the real calendar.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("RunningClock needs a timezone-aware datetime")
        self.start = start.astimezone(UTC)
        self._origin: float | None = None

    def __call__(self) -> datetime:
        now = time.monotonic()
        if self._origin is None:
            self._origin = now
        return self.start + timedelta(seconds=now - self._origin)


def local_date(zone: tzinfo, now: datetime) -> date:
    """The calendar date of `now` in `zone` (an edition's date in the newsletter's time zone)."""
    return now.astimezone(zone).date()
