"""The SMTP transport against a real SMTP server (aiosmtpd on loopback)."""

import random
import smtplib
import socket
from datetime import datetime
from pathlib import Path

import pytest

from digest.deliver.smtp import SmtpTransport, envelope_address
from digest.errors import TransportUnavailable
from tests.deliver.builders import (
    EphemeralController,
    Handler,
    content,
    message,
    parse,
    parts,
    self_signed,
    smtp_server,
)


@pytest.mark.parametrize(
    "address",
    [
        "reader@example.com",
        "first.last+tag@mail.example.co.uk",
        "o'brien{x}|y~z@sub-domain.example",
        "bounces+aGVsbG8td29ybGQ@digest.example",
        '"two words"@example.com',  # quoted local part: smtplib's parser decides
        "a..b@example.com",
        ".lead@example.com",
        "trail.@example.com",
        "Name <name@example.com>",
        "a b@example.com",
        # Where smtplib's parser changes the address: comments, spaces and specials go.
        "x(comment)@example.com",
        " lead-space@example.com",
        "a,b@example.com",
        "a:b@example.com",
        "a<b@example.com",
        "a@ example.com",
        "bücher@bücher.example",
        "user@[192.0.2.1]",
        "",
    ],
)
def test_an_envelope_address_is_what_smtplib_would_write(address: str) -> None:
    assert envelope_address(address) == smtplib.quoteaddr(address)


def test_every_dot_atom_address_goes_between_brackets_as_smtplib_would() -> None:
    # Random addresses over every character a Dot-string may hold, and dots in every place.
    rng = random.Random(15)
    local = "aZ09!#$%&'*+/=?^_`{|}~-."
    for _ in range(20_000):
        address = "".join(rng.choice(local) for _ in range(rng.randint(1, 9))) + "@"
        address += "".join(rng.choice("ab9-.") for _ in range(rng.randint(1, 9)))
        assert envelope_address(address) == smtplib.quoteaddr(address), address


def transport(port: int, now: datetime, sleeps: list[float]) -> SmtpTransport:
    return SmtpTransport("127.0.0.1", port, clock=lambda: now, sleep=sleeps.append, timeout=5)


def test_every_header_and_both_parts_arrive(now: datetime, pipelining: bool) -> None:
    sleeps: list[float] = []
    m = message()
    with smtp_server(Handler(pipelining=pipelining)) as (server, handler):
        t = transport(server.port, now, sleeps)
        [result] = t.send([m])
        t.close()
    assert result.ok
    assert result.attempts == 1
    [(rcpts, data)] = handler.received
    assert rcpts == ["reader1@example.com"]
    msg = parse(data)
    for name in ("From", "To", "Reply-To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe"):
        assert msg[name], name
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Unsubscribe"].startswith(f"<{m.unsubscribe_url}>, <mailto:")
    assert msg["Message-ID"] == m.message_id
    assert parts(data) == (m.text, m.html)  # ".leading dot" survived dot-stuffing too
    assert sleeps == []


def test_one_connection_for_many_messages(now: datetime, pipelining: bool) -> None:
    shared = content()
    with smtp_server(Handler(pipelining=pipelining)) as (server, handler):
        t = transport(server.port, now, [])
        results = t.send([message(i, of=shared) for i in range(1, 6)])
        t.close()
    assert all(r.ok for r in results)
    assert len(handler.received) == 5
    assert handler.connections == 1
    assert t.connections == 1


def test_a_451_is_retried_after_a_backoff(now: datetime, pipelining: bool) -> None:
    sleeps: list[float] = []
    handler = Handler(defer_once={"reader1@example.com": "451 4.3.0 try again later"}, pipelining=pipelining)
    with smtp_server(handler) as (server, _):
        t = transport(server.port, now, sleeps)
        [result] = t.send([message(1)])
        t.close()
    assert result.ok
    assert result.attempts == 2
    assert len(sleeps) == 1
    assert 0.5 <= sleeps[0] <= 1.5
    assert handler.copies() == {"reader1@example.com": 1}


def test_a_dropped_connection_is_reopened_and_the_message_retried(now: datetime, pipelining: bool) -> None:
    sleeps: list[float] = []
    handler = Handler(drop_once={"reader2@example.com"}, pipelining=pipelining)
    shared = content()
    with smtp_server(handler) as (server, _):
        t = transport(server.port, now, sleeps)
        results = t.send([message(i, of=shared) for i in (1, 2, 3)])
        t.close()
    assert [r.ok for r in results] == [True, True, True]
    assert results[1].attempts == 2
    assert t.connections == 2
    assert handler.copies() == {f"reader{i}@example.com": 1 for i in (1, 2, 3)}


def test_a_550_fails_that_address_only_as_a_bounce(now: datetime, pipelining: bool) -> None:
    handler = Handler(refuse={"reader2@example.com": "550 5.1.1 no such user"}, pipelining=pipelining)
    shared = content()
    with smtp_server(handler) as (server, _):
        t = transport(server.port, now, [])
        results = t.send([message(i, of=shared) for i in (1, 2, 3)])
        t.close()
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].permanent
    assert results[1].bounce
    assert results[1].attempts == 1
    assert results[1].error == "550 5.1.1 no such user"
    assert set(handler.copies()) == {"reader1@example.com", "reader3@example.com"}


def test_a_4xx_that_persists_is_a_transient_failure(now: datetime, pipelining: bool) -> None:
    sleeps: list[float] = []
    handler = Handler(refuse={"reader1@example.com": "450 4.2.1 mailbox busy"}, pipelining=pipelining)
    with smtp_server(handler) as (server, _):
        t = transport(server.port, now, sleeps)
        [result] = t.send([message(1)])
        t.close()
    assert not result.ok
    assert not result.permanent
    assert not result.bounce
    assert result.error == "450 4.2.1 mailbox busy (after 3 attempts)"
    assert len(sleeps) == 2
    assert sleeps[1] > sleeps[0] * 0.5


def test_an_unreachable_server_raises_transport_unavailable(now: datetime) -> None:
    with socket.socket() as s:  # a port that is certainly closed: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        sleeps: list[float] = []
        t = transport(port, now, sleeps)
        with pytest.raises(TransportUnavailable, match="connection refused: nothing listens"):
            t.send([message(1)])
    assert sleeps == []  # a wrong port is a setting to fix, not a reason to wait and retry


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_tls_modes_with_login(now: datetime, tmp_path: Path, security: str, pipelining: bool) -> None:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def authenticator(
        server: object, session: object, envelope: object, mechanism: str, auth_data: object
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            b"digest",
            b"s3cret",
        )
        return AuthResult(success=ok)

    server_ctx, client_ctx = self_signed(tmp_path)
    handler = Handler(pipelining=pipelining)
    tls = {"tls_context": server_ctx, "require_starttls": True} if security == "starttls" else {}
    controller = EphemeralController(
        handler,
        hostname="127.0.0.1",
        port=0,
        ssl_context=server_ctx if security == "ssl" else None,
        authenticator=authenticator,
        # aiosmtpd only counts STARTTLS as TLS for AUTH; implicit TLS is encrypted all the same.
        auth_require_tls=security == "starttls",
        **tls,
    )
    controller.start()
    try:
        t = SmtpTransport(
            "127.0.0.1",
            controller.port,
            security=security,
            username="digest",
            password="s3cret",
            ssl_context=client_ctx,
            clock=lambda: now,
            sleep=[].append,
            timeout=5,
        )
        [result] = t.send([message(1)])
        t.close()
    finally:
        controller.stop()
    assert result.ok, result.error
    assert handler.copies() == {"reader1@example.com": 1}
