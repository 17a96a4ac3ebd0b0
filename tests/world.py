"""A collected demo newsletter with N subscribers, ready to send (SQLite and PostgreSQL)."""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from digest import editions, pipeline
from digest.clock import FixedClock
from digest.config import Settings, load_settings
from digest.db.engine import session_scope
from digest.deliver import ledger, open_sends
from digest.deliver.journal import SendReport
from digest.deliver.send import send_edition
from digest.newsletter import Newsletter, load_newsletter
from digest.subscribers.roster import add_subscriber

SECRET = "test-secret-key-0123456789abcdef"


@dataclass
class World:
    """Everything a send needs, for the fixed clock."""

    settings: Settings
    newsletter: Newsletter
    engine: sa.Engine
    now: datetime
    emails: list[str]

    def open_ledger(self) -> int:
        """Build today's edition and give every reader its ledger row, as a send's coordinator
        does before anything is claimed; the edition's id."""
        with session_scope(self.engine) as session:
            row, _ = editions.build_edition(
                self.newsletter,
                session=session,
                edition_date=self.now.date(),
                now=self.now,
                zone=self.settings.zone,
            )
            assert row.id is not None
            ledger.ensure_deliveries(row.id, session=session, now=self.now)
            open_sends.open_send(row.id, session=session, now=self.now)
            return row.id

    def send(self, transport: object, **kwargs: object) -> SendReport:
        """Send today's edition through `transport` with the fixed clock."""
        return send_edition(
            self.settings,
            self.newsletter,
            engine=self.engine,
            transport=transport,  # type: ignore[arg-type]
            edition_date=self.now.date(),
            clock=lambda: self.now,
            **kwargs,  # type: ignore[arg-type]
        )


def make_world(engine: sa.Engine, demo_dir: Path, now: datetime, count: int, **settings: object) -> World:
    """Collect the demo feeds and subscribe `count` readers."""
    config = demo_dir / "digest.toml"
    defaults: dict[str, object] = {
        "config": config,
        "secret_key": SECRET,
        "base_url": "https://digest.example",
        "outbox_dir": demo_dir / "outbox",
        "var_dir": demo_dir / "var",
    }
    s = load_settings(**{**defaults, **settings})  # a test's own values win, secret_key=None too
    newsletter = load_newsletter(config)
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(now))
    emails = [f"reader{i:03d}@example.com" for i in range(1, count + 1)]
    with session_scope(engine) as session:
        for email in emails:
            add_subscriber(email, session=session, now=now, known_topics=newsletter.topic_names)
    return World(s, newsletter, engine, now, emails)


def use_in_cli(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the CLI's settings (environment variables) at this world."""
    monkeypatch.setenv("DIGEST_CONFIG", str(world.settings.config))
    monkeypatch.setenv("DIGEST_DATABASE_URL", world.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    monkeypatch.setenv("DIGEST_VAR_DIR", str(world.settings.var_dir))
    monkeypatch.setenv("DIGEST_OUTBOX_DIR", str(world.settings.outbox_dir))
