"""A lease in the database: only the scheduler holding it acts, so two started by mistake send once.

APScheduler 3.x does not support two schedulers on one job store (they run jobs twice), so the
scheduler takes this lease before it starts APScheduler and renews it well before it runs out; a
crashed holder's lease expires and a standby takes over.
"""

import os
import secrets
import socket
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import col

from digest.db.engine import session_scope
from digest.db.models import SchedulerLease

SCHEDULER = "scheduler"


def new_owner() -> str:
    """A name for this scheduler instance: host, process and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Lease:
    """Acquire, renew and release one named lease; every call is one short transaction."""

    def __init__(self, engine: sa.Engine, owner: str, *, ttl: timedelta, name: str = SCHEDULER) -> None:
        self.engine, self.owner, self.ttl, self.name = engine, owner, ttl, name

    def acquire(self, now: datetime) -> bool:
        """Renew the lease if we hold it, take it if it is free or expired; True when we hold it."""
        table = SchedulerLease.__table__  # type: ignore[attr-defined]
        expires = now + self.ttl
        with session_scope(self.engine) as session:
            renewed = session.execute(
                sa.update(table)
                .where(table.c.name == self.name, table.c.owner == self.owner)
                .values(expires_at=expires)
            )
            if renewed.rowcount:  # type: ignore[attr-defined]
                return True
            # The WHERE is evaluated on the locked row (PostgreSQL re-checks it after waiting for
            # a concurrent UPDATE; SQLite serialises writers), so only one taker can win.
            taken = session.execute(
                sa.update(table)
                .where(table.c.name == self.name, table.c.expires_at < now)
                .values(owner=self.owner, acquired_at=now, expires_at=expires)
            )
            if taken.rowcount:  # type: ignore[attr-defined]
                return True
            if session.get(SchedulerLease, self.name) is not None:
                return False
        try:
            with session_scope(self.engine) as session:
                session.add(
                    SchedulerLease(name=self.name, owner=self.owner, acquired_at=now, expires_at=expires)
                )
        except sa.exc.IntegrityError:  # another process inserted it first
            return False
        return True

    def release(self) -> None:
        """Give the lease up at once (on a clean stop), so a standby need not wait for expiry."""
        with session_scope(self.engine) as session:
            session.execute(
                sa.delete(SchedulerLease).where(
                    col(SchedulerLease.name) == self.name, col(SchedulerLease.owner) == self.owner
                )
            )


def current_holder(engine: sa.Engine, now: datetime, *, name: str = SCHEDULER) -> SchedulerLease | None:
    """The lease if someone holds it and it has not expired."""
    with session_scope(engine) as session:
        row = session.get(SchedulerLease, name)
    return row if row is not None and row.expires_at >= now else None
