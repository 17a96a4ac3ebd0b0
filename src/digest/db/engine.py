"""Engines, sessions and migrations: the same code on SQLite and PostgreSQL."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlmodel import Session

from digest.errors import DatabaseError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> sa.Engine:
    """Create an engine for a SQLAlchemy URL; SQLite gets its folder, WAL and foreign keys."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as e:
        raise DatabaseError(f"DIGEST_DATABASE_URL: cannot parse {url!r}") from e
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # The web app serves from worker threads; SQLite's own locking keeps that safe.
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    try:
        engine = sa.create_engine(url, **kwargs)
    except (sa.exc.ArgumentError, ImportError) as e:
        raise DatabaseError(f"DIGEST_DATABASE_URL: {e}") from e
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the web app read while a send writes; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _alembic_config(engine: sa.Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """The newest migration shipped with this version of digest."""
    return ScriptDirectory.from_config(_alembic_config(sa.create_engine("sqlite://"))).get_current_head()


def upgrade(engine: sa.Engine) -> None:
    """Apply every pending migration (a no-op when the database is current)."""
    try:
        if current_revision(engine) == head_revision():
            return
        log.info("migrating database url=%s", engine.url.render_as_string(hide_password=True))
        command.upgrade(_alembic_config(engine), "head")
    except sa.exc.OperationalError as e:
        raise DatabaseError(f"database {engine.url.render_as_string(hide_password=True)}: {e.orig}") from e


def open_database(url: str) -> sa.Engine:
    """An engine whose schema is current: migrations run automatically on first use."""
    engine = make_engine(url)
    upgrade(engine)
    return engine


@contextmanager
def session_scope(engine: sa.Engine) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
