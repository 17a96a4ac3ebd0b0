"""Migrations that rewrite data: what a database written by an earlier release holds afterwards."""

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from sqlmodel import Session, select

from digest.db.engine import _alembic_config, make_engine, upgrade
from digest.db.models import Article, Edition, Source, Story, Subscriber
from digest.deliver import ledger


def test_sqlite_times_a_bulk_insert_stored_with_an_offset_are_rewritten_to_the_one_form(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    command.upgrade(_alembic_config(engine), "0009_issue14_desk")
    with engine.begin() as conn:  # as the released insert_rows wrote them, beside ORM-written ones
        conn.execute(sa.text("INSERT INTO source (id, name, url, failure_streak) VALUES (1, 'S', 'u', 0)"))
        conn.execute(
            sa.text(
                "INSERT INTO story (id, title, url, published_at, first_seen_at) "
                "VALUES (1, 'T', 'https://a.example/1', '2026-11-30 07:00:00.000000', "
                "'2026-11-30 07:00:00.000000')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO article (id, source_id, story_id, url, title, summary_html, tags, "
                "published_at, first_seen_at) VALUES (1, 1, 1, 'https://a.example/1', 'T', '', '', "
                "'2026-11-30 07:00:00+00:00', '2026-11-30 07:00:00.250000+00:00')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO subscriber (id, email, name, topics, status, consent_source, created_at, "
                "updated_at, token_key) VALUES (1, 'a@example.com', '', '', 'active', 'import', "
                "'2026-11-29 23:59:59.000001+00:00', '2026-11-29 23:59:59+00:00', 'k')"
            )
        )
    upgrade(engine)
    with engine.connect() as conn:
        texts = conn.execute(sa.text("SELECT published_at, first_seen_at FROM article")).one()
        subscriber = conn.execute(sa.text("SELECT created_at, updated_at FROM subscriber")).one()
        story = conn.execute(sa.text("SELECT first_seen_at FROM story")).one()
    assert tuple(texts) == ("2026-11-30 07:00:00.000000", "2026-11-30 07:00:00.250000")
    assert tuple(subscriber) == ("2026-11-29 23:59:59.000001", "2026-11-29 23:59:59.000000")
    assert tuple(story) == ("2026-11-30 07:00:00.000000",)  # already in the one form: untouched
    with Session(engine) as session:  # the same times as before, and the SQL comparison now agrees
        article = session.exec(select(Article)).one()
        assert article.published_at == datetime(2026, 11, 30, 7, tzinfo=UTC)
        on_the_second = select(Article).where(Article.published_at >= datetime(2026, 11, 30, 7, tzinfo=UTC))
        assert session.exec(on_the_second).all() == [article]
        updated = session.exec(select(Subscriber)).one().updated_at
        assert updated == datetime(2026, 11, 29, 23, 59, 59, tzinfo=UTC)
        assert session.exec(select(Story)).one().first_seen_at == datetime(2026, 11, 30, 7, tzinfo=UTC)
        assert session.get(Source, 1) is not None
    engine.dispose()


def test_ledger_hot_opens_every_edition_with_rows_still_to_answer_and_drops_the_status_index(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    command.upgrade(_alembic_config(engine), "0010_issue15_sqlite_times")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO subscriber (id, email, name, topics, status, consent_source, created_at, "
                "updated_at, token_key) VALUES (1, 'a@example.com', '', '', 'active', 'import', "
                "'2026-11-29 23:59:59.000000', '2026-11-29 23:59:59.000000', 'k')"
            )
        )
        # 1: a crash left a row in flight; 2: every row answered; 3: a row still pending.
        for edition, status in ((1, "sending"), (2, "sent"), (3, "pending")):
            conn.execute(
                sa.text(
                    "INSERT INTO edition (id, date, subject, content_json, story_count, built_at) "
                    f"VALUES ({edition}, '2026-11-2{edition}', 'S', '{{}}', 0, '2026-11-29 06:00:00.000000')"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO delivery (edition_id, subscriber_id, status, attempts, updated_at) "
                    f"VALUES ({edition}, 1, '{status}', 1, '2026-11-29 07:00:00.000000')"
                )
            )
    upgrade(engine)
    with Session(engine) as session:
        opened = {e.id: e.sending_since is not None for e in session.exec(select(Edition))}
    assert opened == {1: True, 2: False, 3: True}
    indexes = {i["name"] for i in sa.inspect(engine).get_indexes("delivery")}
    assert "ix_delivery_status" not in indexes and "ix_delivery_edition_id" not in indexes
    assert "ix_delivery_subscriber_id" in indexes  # the inspection sees the table's indexes
    with Session(engine) as session:  # the sweep finds the row in flight through its open edition
        assert ledger.mark_interrupted(session=session, now=datetime(2026, 11, 30, tzinfo=UTC)) == 1
        session.commit()
        opened = {e.id: e.sending_since is not None for e in session.exec(select(Edition))}
    assert opened == {1: False, 2: False, 3: True}
    engine.dispose()
