"""One `digest send` per database (per schema on PostgreSQL) at a time, dropped when we die.

With the lock held, a row found `sending` can only come from a send that crashed, so it is
safely marked `unknown`. PostgreSQL: a session advisory lock on a connection held open for the
send. SQLite: an exclusive `flock` on a file beside the database. Both vanish with the process,
even after kill -9, so a crash never needs manual unlocking.
"""

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from digest.errors import DeliveryError

ADVISORY_KEY = 0x64696765  # "dige"; paired with the schema, so installs sharing a database in
# separate schemas (and parallel test runs) do not block each other's sends.


@contextmanager
def send_lock(engine: sa.Engine) -> Iterator[None]:
    """Hold the send lock for the duration of the block, or raise DeliveryError at once."""
    backend = engine.url.get_backend_name()
    if backend == "postgresql":
        with engine.connect() as conn:
            got = conn.execute(
                sa.text("SELECT pg_try_advisory_lock(:k, hashtext(current_schema()))"), {"k": ADVISORY_KEY}
            ).scalar()
            conn.commit()
            if not got:
                raise DeliveryError("another `digest send` is running on this database; try again later")
            try:
                yield
            finally:
                conn.execute(
                    sa.text("SELECT pg_advisory_unlock(:k, hashtext(current_schema()))"), {"k": ADVISORY_KEY}
                )
                conn.commit()
        return
    database = engine.url.database
    if backend != "sqlite" or not database or database == ":memory:":
        yield  # a private in-memory database cannot be shared
        return
    path = Path(database).with_name(Path(database).name + ".send-lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DeliveryError(
                f"another `digest send` is running on {database} (lock {path}); try again later"
            ) from None
        yield
    finally:
        os.close(fd)  # closing drops the flock
