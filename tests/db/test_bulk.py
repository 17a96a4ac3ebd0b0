"""insert_rows: the rows an ORM insert would store, on both backends."""

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest.db.bulk import insert_rows
from digest.db.models import Subscriber, SubscriberStatus

TABLE: sa.Table = Subscriber.__table__  # type: ignore[attr-defined]


def test_rows_are_stored_with_their_defaults_and_aware_times(engine: sa.Engine, now: datetime) -> None:
    paris = timezone(timedelta(hours=1))
    rows = [
        {"email": f"r{i}@example.com", "status": SubscriberStatus.ACTIVE, "created_at": now.astimezone(paris),
         "updated_at": now, "consent_at": None if i else now}
        for i in range(3)
    ]  # fmt: skip
    with engine.begin() as conn:
        insert_rows(conn, TABLE, rows)
    with Session(engine) as session:
        stored = list(session.exec(select(Subscriber).order_by(col(Subscriber.email))))
    assert [s.email for s in stored] == ["r0@example.com", "r1@example.com", "r2@example.com"]
    assert all(s.created_at == now and s.created_at.tzinfo is not None for s in stored)
    assert [s.consent_at for s in stored] == [now, None, None]
    assert all(s.status == SubscriberStatus.ACTIVE and not s.legacy_links for s in stored)
    # token_key has a Python-side default: each row gets its own, as insert(table) gives it
    assert len({s.token_key for s in stored}) == 3 and all(len(s.token_key) >= 16 for s in stored)


def test_rows_with_different_columns_are_refused(engine: sa.Engine, now: datetime) -> None:
    rows = [{"email": "a@example.com", "created_at": now, "updated_at": now}, {"email": "b@example.com"}]
    with engine.begin() as conn, pytest.raises(ValueError, match="same columns"):
        insert_rows(conn, TABLE, rows)


def test_a_naive_time_is_refused_as_the_orm_refuses_it(engine: sa.Engine) -> None:
    row = {"email": "a@example.com", "created_at": datetime(2026, 1, 1), "updated_at": datetime(2026, 1, 1)}
    with engine.begin() as conn, pytest.raises(ValueError, match="naive"):
        insert_rows(conn, TABLE, [row])
