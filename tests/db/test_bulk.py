"""insert_rows: the rows an ORM insert would store, on both backends."""

import re
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest.db.bulk import ids_and_new_ids, ids_by, insert_per_key, insert_rows
from digest.db.models import Subscriber, SubscriberEvent, SubscriberStatus, new_token_key, new_token_keys

TABLE: sa.Table = Subscriber.__table__  # type: ignore[attr-defined]
EVENTS: sa.Table = SubscriberEvent.__table__  # type: ignore[attr-defined]


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


def test_times_are_stored_as_the_orm_stores_them(engine: sa.Engine, now: datetime) -> None:
    # On SQLite the text itself: a bulk row written otherwise (sqlite3's own "+00:00") would
    # compare as text against the ORM's rows in every query on times.
    with Session(engine) as session:
        session.add(Subscriber(email="orm@example.com", created_at=now, updated_at=now))
        session.commit()
    with engine.begin() as conn:
        insert_rows(
            conn,
            TABLE,
            [{"email": "bulk@example.com", "status": "active", "created_at": now, "updated_at": now}],
        )
    with engine.connect() as conn:
        stored = dict(conn.exec_driver_sql("SELECT email, created_at FROM subscriber").all())
    assert stored["bulk@example.com"] == stored["orm@example.com"]


def test_an_address_already_there_is_an_integrity_error_on_both_backends(
    engine: sa.Engine, now: datetime
) -> None:
    row = {"email": "a@example.com", "status": "active", "created_at": now, "updated_at": now}
    with engine.begin() as conn:
        insert_rows(conn, TABLE, [row])
    with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        insert_rows(conn, TABLE, [{**row, "email": "b@example.com"}, row])  # COPY on PostgreSQL


def test_ids_by_finds_the_rows_there_and_only_those(engine: sa.Engine, now: datetime) -> None:
    rows = [
        {"email": f"r{i}@example.com", "status": "active", "created_at": now, "updated_at": now}
        for i in range(3)
    ]
    with engine.begin() as conn:
        insert_rows(conn, TABLE, rows)
        found = ids_by(conn, TABLE.c.email, ["r2@example.com", "r0@example.com", "nobody@example.com"])
        assert ids_by(conn, TABLE.c.email, []) == {}
    with Session(engine) as session:
        ids = {s.email: s.id for s in session.exec(select(Subscriber))}
    assert found == {"r0@example.com": ids["r0@example.com"], "r2@example.com": ids["r2@example.com"]}


def test_new_ids_are_taken_for_the_values_not_found_and_rows_inserted_with_them_are_numbered_so(
    engine: sa.Engine, now: datetime
) -> None:
    row = {"status": "active", "created_at": now, "updated_at": now}
    with engine.begin() as conn:
        insert_rows(conn, TABLE, [{"email": "old@example.com", **row}])
        known, fresh = ids_and_new_ids(
            conn, TABLE.c.email, ["new1@example.com", "old@example.com", "new2@example.com"]
        )
        assert ids_and_new_ids(conn, TABLE.c.email, [])[0] == {}
        (old_id,) = known.values()
        assert list(known) == ["old@example.com"]
        if conn.dialect.name != "postgresql":  # SQLite numbers the rows as it inserts them
            assert fresh is None
            return
        assert fresh is not None and len(fresh) == 2 and fresh == sorted(fresh) and old_id not in fresh
        insert_rows(
            conn, TABLE, [{"id": i, "email": f"new{n}@example.com", **row} for n, i in enumerate(fresh, 1)]
        )
        # the sequence is past them: a row numbered by the database does not clash
        insert_rows(conn, TABLE, [{"email": "later@example.com", **row}])
    with Session(engine) as session:
        ids = {s.email: s.id for s in session.exec(select(Subscriber))}
    assert ids["new1@example.com"] == fresh[0] and ids["new2@example.com"] == fresh[1]
    assert ids["later@example.com"] not in (old_id, *fresh)


def test_rows_per_key_are_those_insert_rows_stores_in_the_order_of_the_keys(
    engine: sa.Engine, now: datetime
) -> None:
    row = {"status": "active", "created_at": now, "updated_at": now}
    with engine.begin() as conn:
        insert_rows(conn, TABLE, [{"email": f"r{i}@example.com", **row} for i in range(3)])
        ids = sorted(ids_by(conn, TABLE.c.email, [f"r{i}@example.com" for i in range(3)]).values())
        keys = [ids[2], ids[0], ids[1]]
        values = {"kind": "subscribe", "method": "import", "detail": "import:list.csv", "created_at": now}
        insert_per_key(conn, EVENTS.c.subscriber_id, keys, values)
        insert_per_key(conn, EVENTS.c.subscriber_id, [], values)
        insert_rows(conn, EVENTS, [{"subscriber_id": k, **values} for k in keys])  # the same, row by row
    with Session(engine) as session:
        stored = list(session.exec(select(SubscriberEvent).order_by(col(SubscriberEvent.id))))
    assert [e.subscriber_id for e in stored] == keys + keys
    first, second = stored[:3], stored[3:]
    for a, b in zip(first, second, strict=True):
        assert a.model_dump(exclude={"id"}) == b.model_dump(exclude={"id"})
    assert first[0].created_at == now and first[0].edition_id is None and first[0].detail == "import:list.csv"


def test_token_keys_made_together_are_each_like_one_made_alone() -> None:
    keys = new_token_keys(1000)
    assert len(set(keys)) == 1000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{16}", k) for k in keys)
    assert re.fullmatch(r"[A-Za-z0-9_-]{16}", new_token_key())
    assert new_token_keys(0) == []
