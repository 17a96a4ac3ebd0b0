"""Migrations that rewrite data: what a database written by an earlier release holds afterwards."""

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from sqlmodel import Session, select

from digest.db.engine import _alembic_config, make_engine, upgrade
from digest.db.models import Article, Source, Story, Subscriber


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
