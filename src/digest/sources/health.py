"""How each source is doing: the sources of digest.toml with what the database remembers of them.

`digest sources list` and `digest status` read this. A source that digest.toml no longer names
keeps its row (its articles point to it) and is shown as removed, never as one still collected.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, select

from digest.db.models import Source
from digest.newsletter import Newsletter


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """One source's health, for people to read."""

    name: str
    location: str
    state: str  # "ok", "malformed", "failed", "FAILING", "not fetched yet" or "removed"
    failure_streak: int = 0
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    etag: str | None = None

    @property
    def label(self) -> str:
        """The health column: "FAILING (3 runs in a row)", "malformed last run", "ok", ..."""
        if self.state == "FAILING":
            return f"FAILING ({self.failure_streak} runs in a row)"
        if self.state in ("failed", "malformed"):
            return f"{self.state} last run"
        if self.state == "removed":
            return "removed from digest.toml"
        return self.state

    @property
    def failing(self) -> bool:
        """True when the source needs the operator: FAILING, or its last run failed or was malformed."""
        return self.state in ("FAILING", "failed", "malformed")


def _state(row: Source | None, alert: int) -> str:
    if row is None or row.last_fetched_at is None:
        return "not fetched yet"
    if row.failure_streak >= alert:
        return "FAILING"
    if row.failure_streak:
        return row.last_outcome if row.last_outcome in ("failed", "malformed") else "failed"
    return "ok"


def source_health(newsletter: Newsletter, *, session: Session, alert: int) -> list[SourceHealth]:
    """Every source of digest.toml in its order, then those the database has but the file dropped.

    `alert`: failures in a row (DIGEST_SOURCE_FAILURE_ALERT) from which a source is FAILING.
    """
    rows = {r.name: r for r in session.exec(select(Source))}
    health = []
    for cfg in newsletter.sources:
        row = rows.pop(cfg.name, None)
        health.append(_health(cfg.name, newsletter.source_location(cfg), row, _state(row, alert)))
    for name in sorted(rows):
        health.append(_health(name, rows[name].url, rows[name], "removed"))
    return health


def _health(name: str, location: str, row: Source | None, state: str) -> SourceHealth:
    if row is None:
        return SourceHealth(name, location, state)
    return SourceHealth(
        name=name,
        location=location,
        state=state,
        failure_streak=row.failure_streak,
        last_success_at=row.last_success_at,
        last_error=row.last_error,
        last_error_at=row.last_error_at,
        etag=row.etag,
    )
