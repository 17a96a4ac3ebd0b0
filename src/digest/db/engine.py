"""Engines, sessions and migrations: the same code on SQLite and PostgreSQL."""

import functools
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlmodel import Session

from digest.errors import DatabaseError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# The two lines of a migration script that name it and its parent (Alembic's script template).
_REVISION = re.compile(
    r"^(down_revision|revision)\s*(?::[^=]*)?=\s*(?:None|['\"]([^'\"]+)['\"])", re.MULTILINE
)

if TYPE_CHECKING:
    from alembic.config import Config


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


def _alembic_config(engine: sa.Engine) -> "Config":
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at, or None for an empty database.

    Read straight from Alembic's table: every command checks it, and importing Alembic to read
    one row costs more than the command's own work (issue 15).
    """
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    return rows[0] if len(rows) == 1 else None  # several heads: let Alembic sort them out


@functools.cache
def head_revision() -> str | None:
    """The newest migration shipped with this version of digest (read from the scripts' text;
    Alembic decides when the chain is not a plain line)."""
    parents: dict[str, str | None] = {}
    for script in (MIGRATIONS / "versions").glob("*.py"):
        found = dict(_REVISION.findall(script.read_text(encoding="utf-8")))
        if "revision" in found and "down_revision" in found:
            parents[found["revision"]] = found["down_revision"] or None
    heads = set(parents) - set(parents.values())
    if len(heads) == 1:
        return heads.pop()
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(sa.create_engine("sqlite://"))).get_current_head()


def upgrade(engine: sa.Engine) -> None:
    """Apply every pending migration (a no-op when the database is current)."""
    try:
        if current_revision(engine) == head_revision():
            return
        from alembic import command  # only when there is something to migrate

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
