from datetime import date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from digest.db.engine import current_revision, head_revision, open_database, session_scope, upgrade
from digest.db.models import Delivery, Edition, Subscriber
from digest.errors import DatabaseError


def test_first_use_migrates_an_empty_database(db_url: str) -> None:
    engine = open_database(db_url)
    assert current_revision(engine) == head_revision()
    tables = set(sa.inspect(engine).get_table_names())
    assert {"source", "article", "story", "topic", "subscriber", "edition", "delivery"} <= tables
    assert "subscriberevent" in tables
    upgrade(engine)  # idempotent
    engine.dispose()


def test_datetimes_come_back_aware_utc(engine: sa.Engine, now: datetime) -> None:
    paris = now.astimezone(timezone(timedelta(hours=1)))
    with session_scope(engine) as session:
        session.add(Subscriber(email="a@example.com", created_at=paris, updated_at=paris))
    with Session(engine) as session:
        row = session.get(Subscriber, 1)
        assert row is not None
        assert row.created_at == now
        assert row.created_at.tzinfo is not None
        assert row.created_at.utcoffset() == timedelta(0)


def test_naive_datetimes_are_refused(engine: sa.Engine) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), session_scope(engine) as session:
        naive = datetime(2026, 1, 1)
        session.add(Subscriber(email="a@example.com", created_at=naive, updated_at=naive))


def test_one_delivery_per_edition_and_subscriber(engine: sa.Engine, now: datetime) -> None:
    with session_scope(engine) as session:
        session.add(Subscriber(email="a@example.com", created_at=now, updated_at=now))
        session.add(Edition(date=date(2026, 11, 25), subject="s", content_json="{}", built_at=now))
    with session_scope(engine) as session:
        session.add(Delivery(edition_id=1, subscriber_id=1, updated_at=now))
    with pytest.raises(sa.exc.IntegrityError), session_scope(engine) as session:
        session.add(Delivery(edition_id=1, subscriber_id=1, updated_at=now))


def test_an_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(DatabaseError, match=r"127\.0\.0\.1:1"):
        open_database("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")


def test_a_bad_url_names_the_setting() -> None:
    with pytest.raises(DatabaseError, match="DIGEST_DATABASE_URL"):
        open_database("not a url")


def test_the_head_read_from_the_scripts_is_alembics() -> None:
    """head_revision reads the migration scripts' text (no Alembic import at start-up)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from digest.db.engine import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(cfg).get_current_head()
