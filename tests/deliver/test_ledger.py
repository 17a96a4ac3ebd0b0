"""The ledger writer's step, the send loop's hot path: what it writes, and on PostgreSQL in how
many round trips (the protocol trace of libpq shows when the client waits for the server)."""

import itertools
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import select

from digest.db import queries
from digest.db.engine import session_scope
from digest.db.models import Delivery, DeliveryStatus, Edition
from digest.deliver import claims, ledger
from digest.deliver.base import SendResult
from tests.world import World, make_world

LEASE = timedelta(seconds=120)


@pytest.fixture
def world(engine: sa.Engine, demo_dir: Path, now: datetime) -> World:
    w = make_world(engine, demo_dir, now, 6)
    w.open_ledger()
    return w


def _edition_id(world: World) -> int:
    with session_scope(world.engine) as session:
        row = queries.edition_for(world.now.date(), session=session)
        assert row is not None and row.id is not None
        return row.id


def _statuses(engine: sa.Engine) -> dict[int, str]:
    with session_scope(engine) as session:
        return {
            i: str(s) for i, s in session.exec(select(Delivery.id, Delivery.status).order_by(Delivery.id))
        }


def test_a_step_records_the_answers_and_marks_the_next_call(world: World) -> None:
    writer = ledger.LedgerWriter(world.engine)
    first, second, third, *_ = _statuses(world.engine)
    writer.write([], [first, second], now=world.now)
    assert list(_statuses(world.engine).values())[:3] == ["sending", "sending", "pending"]
    writer.write(
        [SendResult(first, ok=True), SendResult(second, ok=False, error="451 later")], [third], now=world.now
    )
    writer.close()
    statuses = _statuses(world.engine)
    assert (statuses[first], statuses[second], statuses[third]) == ("sent", "retry", "sending")


def test_a_page_of_the_ledger_is_read_by_an_index_range_not_by_sorting_the_edition(world: World) -> None:
    # Through uq_delivery SQLite found every row of the edition and sorted them for each page of
    # a send: its reads grew with the square of its readers (issue 15). The plan is read for the
    # statement the send runs, as SQLAlchemy sent it.
    edition_id = _edition_id(world)
    statements: list[tuple[str, object]] = []

    def keep(conn: object, cursor: object, statement: str, parameters: object, *_: object) -> None:
        statements.append((statement, parameters))

    sa.event.listen(world.engine, "before_cursor_execute", keep)
    try:
        with session_scope(world.engine) as session:
            first_id = min(_statuses(world.engine))
            rows = ledger.sendable_rows(edition_id, session=session, after_id=first_id, size=2)
    finally:
        sa.event.remove(world.engine, "before_cursor_execute", keep)
    assert [r.delivery_id for r in rows] == [first_id + 1, first_id + 2]
    [(statement, parameters)] = [s for s in statements if "JOIN subscriber" in s[0]]
    with world.engine.connect() as conn:
        if world.engine.dialect.name == "sqlite":
            explain = f"EXPLAIN QUERY PLAN {statement}"
            index, sort = "ix_delivery_edition_page (edition_id=? AND id>?)", "TEMP B-TREE"
        else:  # six rows: without this PostgreSQL rightly reads the whole table
            conn.exec_driver_sql("SET enable_seqscan = off")
            explain, index, sort = f"EXPLAIN {statement}", "ix_delivery_edition_page", "Sort"
        plan = "\n".join(str(row[-1]) for row in conn.exec_driver_sql(explain, parameters))  # type: ignore[arg-type]
    assert index in plan and sort not in plan, plan


@pytest.fixture
def protocol(tmp_path: Path) -> Iterator[tuple[list[object], Path]]:
    """Where a test puts the libpq connection to trace; the trace file, read after the step."""
    traced: list[object] = []
    path = tmp_path / "libpq.trace"
    yield traced, path
    for pgconn in traced:
        pgconn.untrace()  # type: ignore[attr-defined]


def _second_step(
    writer: ledger.LedgerWriter, world: World, protocol: tuple[list[object], Path], size: int = 1
) -> tuple[int, list[str]]:
    """Mark the first row `sending`, then trace the step that answers it and marks the next
    `size` rows: how many times that step waited for the server (turns from client messages to
    replies), and the statuses of those rows after it."""
    turns, statuses, _ = _traced_second_step(writer, world, protocol, size)
    return turns, statuses


def _traced_second_step(
    writer: ledger.LedgerWriter, world: World, protocol: tuple[list[object], Path], size: int = 1
) -> tuple[int, list[str], list[str]]:
    """`_second_step`, and the statements the step sent (each Parse message's text)."""
    traced, path = protocol
    first, *rest = _statuses(world.engine)
    writer.write([], [first], now=world.now)
    dbapi = writer._conn.connection.dbapi_connection
    with path.open("w") as out:
        _trace(dbapi, out.fileno(), traced)
        writer.write([SendResult(first, ok=True)], rest[:size], now=world.now)
        dbapi.pgconn.untrace()
        traced.clear()
    writer.close()
    text = path.read_text()
    senders = [line.split("\t")[0] for line in text.splitlines() if line]
    assert senders, "nothing traced"
    turns = sum(1 for a, b in itertools.pairwise(senders) if a == "F" and b == "B")
    return turns, list(_statuses(world.engine).values())[: size + 1], _statements(text)


def _trace(dbapi: object, fileno: int, traced: list[object]) -> None:
    """Trace the libpq connection of `dbapi` into a file (the fixture stops it)."""
    import psycopg

    assert isinstance(dbapi, psycopg.Connection)
    dbapi.pgconn.trace(fileno)
    dbapi.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
    traced.append(dbapi.pgconn)


def _statements(trace: str) -> list[str]:
    """The text of each statement a libpq trace shows sent (psycopg sends every one as Parse)."""
    lines = (line.split("\t") for line in trace.splitlines() if line)
    parsed = (_PARSE.match(fields[-1]) for fields in lines if fields[0] == "F" and fields[2] == "Parse")
    return [m.group(1).replace('""', '"') for m in parsed if m]


_PARSE = re.compile(r' "[^"]*" "((?:[^"]|"")*)"')  # a Parse message: ' "name" "text" ...'


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_on_postgresql_a_step_is_one_round_trip(world: World, protocol: tuple[list[object], Path]) -> None:
    # BEGIN, the answer, the `sending` mark and COMMIT: one write, one read.
    assert _second_step(ledger.LedgerWriter(world.engine), world, protocol) == (1, ["sent", "sending"])


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_on_postgresql_the_common_step_is_one_statement(
    world: World, protocol: tuple[list[object], Path]
) -> None:
    # One answer and the next call's mark: one UPDATE inside the other, committed by itself, in
    # place of BEGIN, two UPDATEs and COMMIT (four statements for psycopg to build and read).
    turns, statuses, sent = _traced_second_step(ledger.LedgerWriter(world.engine), world, protocol)
    assert (turns, statuses) == (1, ["sent", "sending"])
    assert len(sent) == 1 and "WITH answered AS (UPDATE delivery" in sent[0], sent


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_on_postgresql_a_worker_whose_renewal_is_due_renews_in_the_same_transaction(
    world: World, protocol: tuple[list[object], Path]
) -> None:
    writer = _worker_writer(world)
    first, second, *_ = _statuses(world.engine)
    writer.write([], [first], now=world.now)  # the first step renews (no claim time was given)
    later = world.now + LEASE / 2  # a third of the lease on: the next step renews again
    traced, path = protocol
    dbapi = writer._conn.connection.dbapi_connection
    with path.open("w") as out:
        _trace(dbapi, out.fileno(), traced)
        writer.write([SendResult(first, ok=True)], [second], now=later)
    writer.close()
    sent = _statements(path.read_text())
    assert [s.split()[0].strip('"') for s in sent] == ["BEGIN", "UPDATE", "UPDATE", "UPDATE", "COMMIT"], sent
    with session_scope(world.engine) as session:
        claimed = session.exec(select(Delivery.claimed_at).where(Delivery.id == second)).one()
    assert claimed == later


def _worker_writer(world: World) -> claims.ClaimWriter:
    """A worker's writer, holding every row of today's edition."""
    edition_id = _edition_id(world)
    batch = claims.Batch(0, 10**9)
    with session_scope(world.engine) as session:
        claims.claim(edition_id, batch, session=session, owner="w:1", now=world.now, lease=LEASE)
    return claims.ClaimWriter(world.engine, owner="w:1", edition_id=edition_id, lease=LEASE)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize(("size", "turns"), [(1, 1), (3, 2)])
def test_on_postgresql_a_worker_reads_the_guard_of_several_rows_before_the_commit(
    world: World, protocol: tuple[list[object], Path], size: int, turns: int
) -> None:
    # One row's guarded mark is all or nothing by itself: it commits in the same round trip.
    # Several rows' mark is read first, then committed (or rolled back) in a second.
    expected = (turns, ["sent"] + ["sending"] * size)
    assert _second_step(_worker_writer(world), world, protocol, size) == expected


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("size", [1, 3])
def test_a_row_another_worker_took_leaves_the_whole_call_unmarked(world: World, size: int) -> None:
    writer = _worker_writer(world)
    first, *rest = _statuses(world.engine)
    writer.write([], [first], now=world.now)
    with session_scope(world.engine) as session:  # its lease ran out; another worker holds it now
        session.execute(sa.update(Delivery).where(Delivery.id == rest[size - 1]).values(claimed_by="w:2"))
    with pytest.raises(claims.LeaseLost):
        writer.write([SendResult(first, ok=True)], rest[:size], now=world.now)
    writer.close()
    # The answer is kept; none of the call's rows is marked, so none is handed to the transport.
    assert list(_statuses(world.engine).values())[: size + 1] == ["sent"] + ["pending"] * size


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_on_postgresql_a_messages_two_updates_write_no_index_entry(world: World) -> None:
    # HOT updates (heap-only tuples): no indexed column changes, so the new row version stays on
    # its page and no index gets an entry. An index on the status (or on anything else a step
    # writes) makes them ordinary updates, each a new entry in every index of the table.
    writer = ledger.LedgerWriter(world.engine)
    first, *_ = _statuses(world.engine)
    with writer.transaction() as conn:
        writer.mark_sending([first], conn=conn, now=world.now)
        writer.record(
            [SendResult(first, ok=True, provider_id="<1@digest.example>")], conn=conn, now=world.now
        )
        counts = conn.execute(
            sa.text(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables "
                "WHERE relid = 'delivery'::regclass"
            )
        ).one()
    writer.close()
    assert tuple(counts) == (2, 2)
    assert _statuses(world.engine)[first] == "sent"


def _sending_since(engine: sa.Engine, edition_id: int) -> datetime | None:
    with session_scope(engine) as session:
        edition = session.get(Edition, edition_id)
        assert edition is not None
        return edition.sending_since


def test_a_crash_sweep_finds_the_rows_in_flight_and_closes_the_edition_once_all_are_answered(
    world: World,
) -> None:
    edition_id = _edition_id(world)
    assert _sending_since(world.engine, edition_id) == world.now  # opened with its ledger rows
    first, second, *_ = _statuses(world.engine)
    writer = ledger.LedgerWriter(world.engine)
    writer.write([], [first, second], now=world.now)  # then the process dies
    writer.close()
    later = world.now + timedelta(hours=1)
    with session_scope(world.engine) as session:
        assert ledger.mark_interrupted(session=session, now=later) == 2
    assert list(_statuses(world.engine).values())[:3] == ["unknown", "unknown", "pending"]
    assert _sending_since(world.engine, edition_id) == world.now  # rows still to send: left open
    with session_scope(world.engine) as session:
        session.execute(
            sa.update(Delivery).where(Delivery.status == DeliveryStatus.PENDING).values(status="sent")
        )
        assert ledger.mark_interrupted(session=session, now=later) == 0
    assert _sending_since(world.engine, edition_id) is None  # every row answered: closed


def test_a_coordinators_sweep_leaves_open_an_edition_a_live_worker_is_sending(world: World) -> None:
    edition_id = _edition_id(world)
    writer = _worker_writer(world)
    first, *_ = _statuses(world.engine)
    with session_scope(world.engine) as session:  # every other row is answered
        session.execute(sa.update(Delivery).where(Delivery.id != first).values(status="sent"))
    writer.write([], [first], now=world.now)  # in flight; its lease has not run out
    writer.close()
    with session_scope(world.engine) as session:
        assert claims.expire_sending(None, session=session, now=world.now, lease=LEASE) == 0
    assert _sending_since(world.engine, edition_id) == world.now
    later = world.now + 2 * LEASE  # the worker died: its row is found, then the edition closed
    with session_scope(world.engine) as session:
        assert claims.expire_sending(None, session=session, now=later, lease=LEASE) == 1
    assert _statuses(world.engine)[first] == "unknown"
    assert _sending_since(world.engine, edition_id) is None
