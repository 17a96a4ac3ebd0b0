"""The delivery ledger: one row per (edition, subscriber); claims and results are written in bulk."""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest.db.models import Delivery, DeliveryStatus, Subscriber, SubscriberStatus
from digest.db.queries import SENDABLE
from digest.deliver.base import SendResult
from digest.deliver.open_sends import close_finished_sends, opened
from digest.errors import DeliveryError


def ensure_deliveries(
    edition_id: int, *, session: Session, now: datetime, audience: sa.ColumnElement[bool] | None = None
) -> int:
    """Add a pending row for every active subscriber (of `audience`) without one (INSERT ... SELECT)."""
    has_row = sa.exists().where(
        col(Delivery.edition_id) == edition_id, col(Delivery.subscriber_id) == col(Subscriber.id)
    )
    source = sa.select(
        sa.literal(edition_id),
        col(Subscriber.id),
        sa.literal(DeliveryStatus.PENDING.value),
        sa.literal(0),
        sa.literal(now, type_=Delivery.__table__.c.updated_at.type),  # type: ignore[attr-defined]
    ).where(col(Subscriber.status) == SubscriberStatus.ACTIVE.value, ~has_row)
    if audience is not None:  # e.g. the subscribers of one time zone (scheduler)
        source = source.where(audience)
    insert = sa.insert(Delivery).from_select(
        ["edition_id", "subscriber_id", "status", "attempts", "updated_at"], source
    )
    result = session.execute(insert)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def mark_interrupted(*, session: Session, now: datetime) -> int:
    """Rows left `sending` by a crash: maybe delivered, maybe not. Mark them `unknown`.

    Only call it holding the send lock: then every `sending` row, of any edition (a crash
    yesterday, a send for another date today), belongs to a process that is gone. Such rows are
    looked for in the editions a send opened (deliver/open_sends.py) and has not closed since.
    """
    result = session.execute(
        sa.update(Delivery)
        .where(col(Delivery.edition_id).in_(opened()), col(Delivery.status) == DeliveryStatus.SENDING.value)
        .values(status=DeliveryStatus.UNKNOWN.value, updated_at=now, error="interrupted while sending")
        .execution_options(synchronize_session=False)
    )
    close_finished_sends(session=session)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def requeue_unknown(edition_id: int, *, session: Session, now: datetime) -> int:
    """`--resend-unknown`: put the unknown rows back in the queue."""
    result = session.execute(
        sa.update(Delivery)
        .where(
            col(Delivery.edition_id) == edition_id,
            col(Delivery.status) == DeliveryStatus.UNKNOWN.value,
        )
        .values(status=DeliveryStatus.RETRY.value, updated_at=now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


class PendingRow(NamedTuple):
    """A ledger row still to send, with what building its message needs (plain values)."""

    delivery_id: int
    id: int  # the subscriber's
    email: str
    name: str
    topics: str
    status: str
    token_key: str  # signed into the reader's links (issue 12)
    timezone: str | None  # the reader's, for the story times (None: the newsletter's)


def sendable_rows(
    edition_id: int,
    *,
    session: Session,
    after_id: int,
    size: int,
    audience: sa.ColumnElement[bool] | None = None,
) -> list[PendingRow]:
    """The next `size` rows still to send (pending or retry), in id order after `after_id`.

    Reading marks nothing: a row becomes `sending` only when its message is handed to the
    transport (`LedgerWriter.mark_sending`), so a crash leaves exactly the in-flight rows unknown. Plain
    columns, not ORM objects: this runs once per message of a send.
    """
    rows = session.execute(
        sa.select(
            col(Delivery.id),
            col(Subscriber.id),
            col(Subscriber.email),
            col(Subscriber.name),
            col(Subscriber.topics),
            col(Subscriber.status),
            col(Subscriber.token_key),
            col(Subscriber.timezone),
        )
        .join(Subscriber, col(Delivery.subscriber_id) == col(Subscriber.id))
        .where(col(Delivery.edition_id) == edition_id, col(Delivery.status).in_(SENDABLE))
        .where(col(Delivery.id) > after_id)
        .where(audience if audience is not None else sa.true())  # e.g. one time zone (scheduler)
        .order_by(col(Delivery.id))
        .limit(size)
    )
    return [PendingRow(*row) for row in rows]


def status_for(result: SendResult) -> DeliveryStatus:
    """The ledger status a transport answer leads to."""
    if result.ok:
        return DeliveryStatus.SENT
    return DeliveryStatus.FAILED if result.permanent else DeliveryStatus.RETRY


class _Step(NamedTuple):
    """One step's writes: the answers to record, the rows to mark `sending`, and when."""

    answers: list[tuple[object, ...]]
    claim_ids: Sequence[int]
    now: datetime
    stamp: object  # `now` as the driver takes it


class LedgerWriter:
    """The send loop's writes, on one held connection with SQL prepared once.

    This is the hot path of a send: for every transport call one transaction records the
    previous call's answers and marks the next call `sending`. Through an ORM session that
    costs about a millisecond a step, through Core statements about 0.2 ms; plain DBAPI
    statements on the held connection (inside the same SQLAlchemy transaction, so an ORM
    session can join it for the rare bounce) cost the database's own time and little more.

    A distributed worker's ClaimWriter (deliver/claims.py) is this writer with a guard on the
    `sending` mark and a claim renewal per step; the statements are built here for both.

    On PostgreSQL (psycopg) a step's statements go in one pipeline: BEGIN, the answers, the
    renewal, the `sending` mark and, when no guard has to be read first, the COMMIT leave in one
    write and their results come back in one read. Sent one by one they were four or five round
    trips a message (issue 15), each a wait on the server and two context switches, on loopback,
    and a network latency each with a database on another host.

    The commonest step (one answer, the next call's rows, no renewal due) is one statement in
    autocommit mode: the answer as a data-modifying WITH, the mark as the statement itself. It
    commits as one transaction, as the pipeline's BEGIN ... COMMIT does, so what is durable when
    the transport is called is the same; the client builds and reads one statement instead of
    four, ~90 us of psycopg's CPU a message instead of ~245 us here (issue 15).
    """

    # What an answer also resets, after its own columns (ClaimWriter: the claim time).
    record_also = ""

    def __init__(self, engine: sa.Engine) -> None:
        table: Any = Delivery.__table__  # type: ignore[attr-defined]
        dialect = engine.dialect
        # The dialect's own converter, as a compiled statement uses it: on SQLite, text in the
        # form the ORM writes, made once a step (the bare type's converter left a datetime,
        # which sqlite3 turned into text of another form, for each of two parameters of every
        # row: issue 15).
        self._stamp = table.c.updated_at.type.dialect_impl(dialect).bind_processor(dialect) or (lambda v: v)
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self._mark = mark
        self._table = table.name
        self._record_sql = (
            f"UPDATE {table.name} SET status = {mark}, error = {mark}, message_id = {mark}, "
            f"sent_at = {mark}, updated_at = {mark}{self.record_also} WHERE id = {mark}"
        )
        guard, self._guard_params = self._sending_guard()
        self._sending_sql = (
            f"UPDATE {table.name} SET status = '{DeliveryStatus.SENDING.value}', claimed_at = {mark}, "
            f"updated_at = {mark}, attempts = attempts + 1 WHERE {guard}id IN "
        )
        # PostgreSQL's WITH runs a data-modifying statement to completion whether or not the
        # main statement reads it (SQLite has no such WITH: its steps are not round trips).
        self._answer_then_mark_sql = f"WITH answered AS ({self._record_sql}) {self._sending_sql}"
        self._conn = engine.connect()
        # psycopg 3's pipeline mode (libpq >= 14); sqlite3 has no round trips to save.
        self._pipelined = engine.dialect.driver == "psycopg" and _pipeline_supported()

    def _sending_guard(self) -> tuple[str, tuple[object, ...]]:
        """SQL conditions (ending in AND) a row must meet to be marked `sending`, and their values."""
        return "", ()

    def _refused(self) -> DeliveryError:
        """The error when a row of the next call fails the guard (see ClaimWriter)."""
        return DeliveryError("ledger: a row to send is no longer sendable")

    def _on_step(self, cursor: Any, now: datetime, stamp: object) -> None:
        """Extra writes in every step's transaction, before the `sending` mark (ClaimWriter renews)."""

    def _on_step_due(self, now: datetime) -> bool:
        """Whether `_on_step` writes anything at `now`."""
        return False

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """One committed transaction on the held connection."""
        with self._conn.begin():
            yield self._conn

    def _cursor(self, conn: sa.Connection) -> Any:
        return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]

    def _answers(self, results: Sequence[SendResult], stamp: object) -> list[tuple[object, ...]]:
        sent = DeliveryStatus.SENT.value
        return [
            (sent, r.error, r.provider_id, stamp, stamp, r.delivery_id)
            if r.ok
            else (status_for(r).value, r.error, r.provider_id, None, stamp, r.delivery_id)
            for r in results
        ]

    def _execute_mark(
        self, cursor: Any, delivery_ids: Sequence[int], stamp: object, answer: tuple[object, ...] = ()
    ) -> None:
        """The `sending` mark; with `answer` (one row's), that answer first in the same statement."""
        sql = self._answer_then_mark_sql if answer else self._sending_sql
        marks = ", ".join([self._mark] * len(delivery_ids))
        cursor.execute(f"{sql}({marks})", (*answer, stamp, stamp, *self._guard_params, *delivery_ids))

    def _mark_sending(self, cursor: Any, delivery_ids: Sequence[int], stamp: object) -> bool:
        """Mark rows `sending`; False when the guard left some of them out."""
        self._execute_mark(cursor, delivery_ids, stamp)
        return not self._guard_params or int(cursor.rowcount) == len(delivery_ids)

    def record(self, results: Sequence[SendResult], *, conn: sa.Connection, now: datetime) -> None:
        """Write transport answers inside the caller's transaction."""
        if not results:
            return
        cursor = self._cursor(conn)
        try:
            cursor.executemany(self._record_sql, self._answers(results, self._stamp(now)))
        finally:
            cursor.close()

    def mark_sending(self, delivery_ids: Sequence[int], *, conn: sa.Connection, now: datetime) -> None:
        """Mark rows handed to the transport, inside the caller's transaction."""
        if not delivery_ids:
            return
        cursor = self._cursor(conn)
        try:
            if not self._mark_sending(cursor, delivery_ids, self._stamp(now)):
                raise self._refused()
        finally:
            cursor.close()

    def write(self, results: Sequence[SendResult], claim_ids: Sequence[int], *, now: datetime) -> None:
        """`record` then `mark_sending` and commit, straight on the DBAPI connection.

        The common step (no bounce to suppress), about 20 us on SQLite: SQLAlchemy's own
        transaction bookkeeping would triple that, and it runs once per message. If a row of
        the next call fails the guard, nothing is marked: the answers are committed alone and
        the guard's error is raised.
        """
        dbapi: Any = self._conn.connection.dbapi_connection
        assert dbapi is not None
        stamp = self._stamp(now)
        answers = self._answers(results, stamp)
        cursor = dbapi.cursor()
        try:
            run = self._piped_step if self._pipelined else self._plain_step
            if not run(dbapi, cursor, _Step(answers, claim_ids, now, stamp)):
                if answers:
                    cursor.executemany(self._record_sql, answers)
                dbapi.commit()
                raise self._refused()
        except BaseException:
            dbapi.rollback()
            raise
        finally:
            cursor.close()

    def _plain_step(self, dbapi: Any, cursor: Any, step: _Step) -> bool:
        """The step as one statement after another (sqlite3 begins the transaction implicitly);
        False, rolled back, when the guard refused a row."""
        if step.answers:
            cursor.executemany(self._record_sql, step.answers)
        self._on_step(cursor, step.now, step.stamp)
        if step.claim_ids and not self._mark_sending(cursor, step.claim_ids, step.stamp):
            dbapi.rollback()
            return False
        dbapi.commit()
        return True

    def _piped_step(self, dbapi: Any, cursor: Any, step: _Step) -> bool:
        """The step in one round trip, in autocommit mode; False when the guard refused a row,
        with nothing marked.

        The common step is one statement (`_one_statement`), which commits by itself. Any other
        goes in psycopg's pipeline:
        BEGIN and COMMIT are statements in the pipeline, sent in autocommit mode: psycopg's own
        transaction start waits for the server's answer to BEGIN before anything else is sent.
        A guarded mark of several rows is read before the COMMIT (a second round trip), so that
        a refused row leaves none of the others marked; a guarded mark of one row (an SMTP
        call) is all or nothing by itself, and is read after the COMMIT (the caller then
        records the answers again: the same values).
        """
        marks = len(step.claim_ids)
        guarded = bool(marks and self._guard_params)
        dbapi.autocommit = True
        try:
            if self._one_statement(step, guarded):
                self._execute_mark(cursor, step.claim_ids, step.stamp, answer=step.answers[0])
                return not guarded or int(cursor.rowcount) == marks
            with dbapi.pipeline() as pipeline:
                cursor.execute("BEGIN")
                if step.answers:
                    cursor.executemany(self._record_sql, step.answers)
                self._on_step(cursor, step.now, step.stamp)
                if marks:
                    self._execute_mark(cursor, step.claim_ids, step.stamp)
                if guarded and marks > 1:
                    pipeline.sync()
                    if int(cursor.rowcount) != marks:
                        dbapi.execute("ROLLBACK")
                        return False
                # On a cursor of its own: `cursor` keeps the mark's row count.
                dbapi.execute("COMMIT")
            return not guarded or int(cursor.rowcount) == marks
        except BaseException:
            dbapi.rollback()  # a failed statement left the transaction aborted: end it first
            raise
        finally:
            dbapi.autocommit = False

    def _one_statement(self, step: _Step, guarded: bool) -> bool:
        """Whether the step can be `_answer_then_mark_sql`: one answer, rows to mark that are all
        or nothing by themselves (unguarded, or one row), none of them the answered row (one
        statement must not change a row twice), and nothing else to write."""
        if len(step.answers) != 1 or not step.claim_ids or (guarded and len(step.claim_ids) > 1):
            return False
        return step.answers[0][-1] not in step.claim_ids and not self._on_step_due(step.now)

    def close(self) -> None:
        """Return the connection to the pool."""
        self._conn.close()


def _pipeline_supported() -> bool:
    import psycopg  # only asked when psycopg is the driver

    return bool(psycopg.Pipeline.is_supported())


def skip(delivery_ids: Sequence[int], reason: str, *, session: Session, now: datetime) -> None:
    """Mark rows skipped on purpose, with the reason (e.g. nothing new for their topics)."""
    if delivery_ids:
        session.execute(
            sa.update(Delivery)
            .where(col(Delivery.id).in_(list(delivery_ids)))
            .values(status=DeliveryStatus.SKIPPED.value, error=reason, updated_at=now)
        )


@dataclass(frozen=True, slots=True)
class LedgerCounts:
    """How many rows of an edition are in each status."""

    by_status: dict[str, int]

    @property
    def recipients(self) -> int:
        """All rows."""
        return sum(self.by_status.values())

    def __getitem__(self, status: DeliveryStatus) -> int:
        return self.by_status.get(status.value, 0)


def counts(
    edition_id: int, *, session: Session, audience: sa.ColumnElement[bool] | None = None
) -> LedgerCounts:
    """Rows of an edition by status (of the readers in `audience`, e.g. one time zone, if given)."""
    query = select(Delivery.status, sa.func.count()).where(Delivery.edition_id == edition_id)
    if audience is not None:
        query = query.join(Subscriber, col(Delivery.subscriber_id) == col(Subscriber.id)).where(audience)
    rows = session.exec(query.group_by(Delivery.status)).all()
    return LedgerCounts({str(status): int(n) for status, n in rows})
