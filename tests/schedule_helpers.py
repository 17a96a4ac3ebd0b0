"""Builders shared by the schedule tests: a newsletter, settings, stories and a recording transport."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import select

from digest.config import Settings, load_settings
from digest.db.engine import session_scope
from digest.db.models import Article, Source, Story, Subscriber, SubscriberStatus
from digest.deliver.base import OutgoingMessage, SendResult
from digest.newsletter import Newsletter

# The same newsletter as a file, for commands run in a subprocess or through the CLI runner.
NEWSLETTER_TOML = """
[newsletter]
title = "Zone Daily"
from_email = "digest@example.com"
postal_address = "1 Main St, Springfield"

[[topics]]
name = "Robotics"
keywords = ["robot"]
"""


def newsletter() -> Newsletter:
    """A small newsletter whose catch-all topic takes every story (no caps get in the way)."""
    return Newsletter.model_validate(
        {
            "newsletter": {
                "title": "Zone Daily",
                "from_email": "digest@example.com",
                "postal_address": "1 Main St, Springfield",
                "max_stories_per_topic": 500,
                "max_stories": 500,
            },
            "topics": [{"name": "Robotics", "keywords": ["robot"]}],
        }
    )


def settings(tmp_path: Path, db_url: str, **overrides: Any) -> Settings:
    """File-transport settings in the test's folder, sending at 07:00."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "var_dir": tmp_path / "var",
        "outbox_dir": tmp_path / "outbox",
        "timezone": "UTC",
        "send_time": time(7, 0),
    }
    values.update(overrides)
    return load_settings(**values)


def add_subscribers(
    engine: sa.Engine,
    now: datetime,
    zones: Sequence[str | None],
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
) -> list[str]:
    """One subscriber per entry (None: no time zone); returns their addresses."""
    with session_scope(engine) as session:
        start = len(session.exec(select(Subscriber.id)).all())
        emails = []
        for i, zone in enumerate(zones, start=start):
            email = f"r{i}-{(zone or 'default').replace('/', '-').lower()}@example.com"
            session.add(Subscriber(email=email, timezone=zone, status=status, created_at=now, updated_at=now))
            emails.append(email)
    return emails


def add_story(engine: sa.Engine, seen: datetime, n: int) -> None:
    """A story with one article, first seen at `seen`."""
    with session_scope(engine) as session:
        source = session.exec(select(Source)).first()
        if source is None:
            source = Source(name="wire", url="https://wire.example/feed")
            session.add(source)
            session.flush()
        story = Story(
            title=f"Story {n}", url=f"https://wire.example/{n}", published_at=seen, first_seen_at=seen
        )
        session.add(story)
        session.flush()
        assert source.id is not None
        session.add(
            Article(
                source_id=source.id,
                story_id=story.id,
                url=story.url,
                title=story.title,
                published_at=seen,
                first_seen_at=seen,
            )
        )


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class RecordingTransport:
    """Keeps each message with the clock time it was sent at."""

    clock: Callable[[], datetime]
    sent: list[tuple[datetime, OutgoingMessage]] = field(default_factory=list)
    name: str = "recording"
    max_batch: int = 1  # messages per send call (the Transport protocol)

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Record and succeed."""
        now = self.clock()
        self.sent.extend((now, m) for m in messages)
        return [SendResult(m.delivery_id, True) for m in messages]

    def close(self) -> None:
        """Nothing to release."""
