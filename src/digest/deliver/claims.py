"""Ledger claims for the distributed send (issue 7): workers share an edition's rows safely.

A worker claims rows of a batch with `SELECT ... FOR UPDATE SKIP LOCKED` and stamps them
`claimed_by`/`claimed_at`; a claim lives for the lease and is renewed while the worker sends.
The single-process rule still holds inside a claim: a row becomes `sending` right before its
transport call and gets its answer right after. A worker that dies leaves its claimed rows to be
claimed again once the lease runs out, and its `sending` rows (at most the call in flight) are
marked `unknown`. PostgreSQL only (SQLite has no row locks).
"""

import os
import socket
import threading
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlmodel import Session, col

from digest.db.models import Delivery, DeliveryStatus
from digest.db.queries import SENDABLE
from digest.deliver.ledger import LedgerWriter
from digest.deliver.open_sends import close_finished_sends, opened
from digest.errors import DeliveryError

_SENDABLE = tuple(s.value for s in SENDABLE)
PENDING = DeliveryStatus.PENDING.value
_SENDABLE_SQL = ", ".join(f"'{s}'" for s in _SENDABLE)  # constants, not input: inlined in ClaimWriter's SQL


class LeaseLost(DeliveryError):
    """Raised when a worker's claim expired and another worker took its rows: it stops at once."""


def worker_name() -> str:
    """This process (and thread, off the main one) as a claimant: what `digest stats` shows."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    if threading.current_thread() is not threading.main_thread():  # a threads pool: one claimant each
        name += f"/{threading.get_ident()}"
    return name


class Batch(NamedTuple):
    """A range of ledger ids of one edition, sent by one task."""

    first_id: int
    last_id: int


def claim(
    edition_id: int, batch: Batch, *, session: Session, owner: str, now: datetime, lease: timedelta
) -> int:
    """Claim the batch's rows still to send that nobody holds (or whose holder's lease ran out)."""
    free = sa.or_(col(Delivery.claimed_at).is_(None), col(Delivery.claimed_at) < now - lease)
    # One statement, locking and stamping the rows in the database: a SELECT of the ids, then an
    # UPDATE with them bound one by one, was two round trips and 500 parameters a batch (issue 15).
    takeable = (
        sa.select(col(Delivery.id))
        .where(
            col(Delivery.edition_id) == edition_id,
            col(Delivery.id).between(batch.first_id, batch.last_id),
            col(Delivery.status).in_(_SENDABLE),
            free,
        )
        .with_for_update(skip_locked=True)  # two workers never wait on, or take, the same row
    )
    # updated_at is left alone: it tells the coordinator which rows were answered in this run.
    result = session.execute(
        sa.update(Delivery)
        .where(col(Delivery.id).in_(takeable))
        .values(claimed_by=owner, claimed_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def claim_last(
    edition_id: int, *, session: Session, owner: str, now: datetime, lease: timedelta, size: int
) -> tuple[Batch, int] | None:
    """Claim up to `size` of the edition's last pending rows that nobody holds: their id range
    and number, or None when there are none.

    A worker with no batch of its own left takes these from the end of the queue, where the
    other workers' batches get to last: the send ends when its last batch does, so the workers
    finish together instead of one of them still holding several batches (issue 15). Only
    `pending` rows: a `retry` row answered in this run is not sent again by it. The batch that
    held them finds them claimed or sent and sends nothing.
    """
    free = sa.or_(col(Delivery.claimed_at).is_(None), col(Delivery.claimed_at) < now - lease)
    takeable = (
        sa.select(col(Delivery.id))
        .where(col(Delivery.edition_id) == edition_id, col(Delivery.status) == PENDING, free)
        .order_by(col(Delivery.id).desc())
        .limit(size)
        .with_for_update(skip_locked=True)
    )
    ids = (
        session.execute(
            sa.update(Delivery)
            .where(col(Delivery.id).in_(takeable))
            .values(claimed_by=owner, claimed_at=now)
            .returning(col(Delivery.id))
            .execution_options(synchronize_session=False)
        )
        .scalars()
        .all()
    )
    return (Batch(min(ids), max(ids)), len(ids)) if ids else None


def expire_sending(
    edition_id: int | None,
    *,
    session: Session,
    now: datetime,
    lease: timedelta,
    batch: Batch | None = None,
) -> int:
    """Rows left `sending` by a worker whose lease ran out: maybe delivered, maybe not. `unknown`.

    `edition_id` None: in every edition a send opened (the coordinator's start, under the send
    lock), whose finished ones are then closed (open_sends.close_finished_sends). `batch`: only
    its rows (a worker's sweep before it claims them). The status has no index (HOT updates), so
    a sweep of the whole edition reads all its rows: done by every batch of a worker, that grew
    with the square of the list (100,000 rows: ~8 ms a sweep, 200 batches). The coordinator
    sweeps the whole edition once a lease, which finds a dead worker's rows in other batches.
    """
    rows = [
        col(Delivery.edition_id).in_(opened())
        if edition_id is None
        else col(Delivery.edition_id) == edition_id
    ]
    if batch is not None:
        rows.append(col(Delivery.id).between(batch.first_id, batch.last_id))
    result = session.execute(
        sa.update(Delivery)
        .where(
            *rows,
            col(Delivery.status) == DeliveryStatus.SENDING.value,
            col(Delivery.claimed_at) < now - lease,
        )
        .values(
            status=DeliveryStatus.UNKNOWN.value,
            updated_at=now,
            error="in flight when its worker stopped (lease expired)",
        )
        .execution_options(synchronize_session=False)
    )
    if edition_id is None:
        close_finished_sends(session=session)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def release(edition_id: int, batch: Batch, *, session: Session, owner: str) -> int:
    """Give back this worker's unsent claimed rows of a batch (others may take them at once)."""
    result = session.execute(
        sa.update(Delivery)
        .where(
            col(Delivery.edition_id) == edition_id,
            col(Delivery.id).between(batch.first_id, batch.last_id),
            col(Delivery.claimed_by) == owner,
            col(Delivery.status).in_(_SENDABLE),
            col(Delivery.claimed_at).is_not(None),
        )
        .values(claimed_at=None)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def mine(owner: str, batch: Batch) -> sa.ColumnElement[bool]:
    """The rows of a batch this worker holds, as a send loop `audience`."""
    return sa.and_(
        col(Delivery.claimed_by) == owner,
        col(Delivery.claimed_at).is_not(None),
        col(Delivery.id).between(batch.first_id, batch.last_id),
    )


def per_worker(edition_id: int, *, session: Session) -> dict[str, dict[str, int]]:
    """Rows of an edition by claiming worker and status (empty for a single-process send)."""
    rows = session.execute(
        sa.select(col(Delivery.claimed_by), col(Delivery.status), sa.func.count())
        .where(col(Delivery.edition_id) == edition_id, col(Delivery.claimed_by).is_not(None))
        .group_by(col(Delivery.claimed_by), col(Delivery.status))
    )
    out: dict[str, dict[str, int]] = {}
    for owner, status, n in rows:
        out.setdefault(str(owner), {})[str(status)] = int(n)
    return out


class ClaimWriter(LedgerWriter):
    """The send loop's ledger writes for a worker: only rows it still holds become `sending`.

    Each step also renews the worker's claims (every third of the lease), and an answer clears
    the row's claim time, so a transient failure (`retry`) can be claimed by a later run. If a
    row of the next call is no longer ours (our lease ran out and another worker took it), the
    answers are committed alone and LeaseLost stops this worker.
    """

    record_also = ", claimed_at = NULL"

    def __init__(
        self,
        engine: sa.Engine,
        *,
        owner: str,
        edition_id: int,
        lease: timedelta,
        claimed_at: datetime | None = None,
    ) -> None:
        """`claimed_at`: when (or a moment after) the caller claimed its rows, which counts as
        their first renewal; the next comes a third of a lease later, long before any expires.
        Without it the first step renewed a batch just claimed: a second update of every row of
        the batch, a quarter of a worker's ledger writes (issue 15)."""
        self.owner, self.edition_id, self.lease = owner, edition_id, lease
        self._renewed: datetime | None = claimed_at
        super().__init__(engine)
        m = self._mark
        self._renew_sql = (
            f"UPDATE {self._table} SET claimed_at = {m} WHERE edition_id = {m} AND claimed_by = {m} "
            f"AND claimed_at IS NOT NULL AND status IN ({_SENDABLE_SQL}, '{DeliveryStatus.SENDING.value}')"
        )

    def _sending_guard(self) -> tuple[str, tuple[object, ...]]:
        return f"claimed_by = {self._mark} AND status IN ({_SENDABLE_SQL}) AND ", (self.owner,)

    def _refused(self) -> DeliveryError:
        return LeaseLost(f"worker {self.owner}: its claim on edition {self.edition_id} ran out")

    def _on_step_due(self, now: datetime) -> bool:
        return self._renewed is None or now - self._renewed >= self.lease / 3

    def _on_step(self, cursor: Any, now: datetime, stamp: object) -> None:
        if self._on_step_due(now):
            cursor.execute(self._renew_sql, (stamp, self.edition_id, self.owner))
            self._renewed = now
