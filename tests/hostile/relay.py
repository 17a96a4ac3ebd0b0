"""A hostile SMTP relay on loopback: aiosmtpd answering whatever a test scripts, at any stage.

`Script` maps a stage to an answer. Stages: EHLO, HELO, STARTTLS, AUTH, MAIL, RCPT, DATA (the
command, before the content) and EOD (after the content); "RCPT addr" and "EOD addr" answer for
one recipient only. An answer is a reply line ("530 5.7.0 Authentication required"),
DISCONNECT (close the connection), STALL (never answer: the client's timeout must fire) or, for
DATA, DATA_ANYWAY (354 even without a recipient, as a non-compliant server might: the content up
to the lone dot is read and refused). A list is used up one answer per command, then the relay
behaves. Unscripted commands get aiosmtpd's own, standard behaviour (its TLS, AUTH and SMTPUTF8
handling included). With `pipelining` the relay offers PIPELINING (RFC 2920) in its EHLO reply;
aiosmtpd reads commands from a buffered stream, so it serves a pipelining client as it is.

`banner_server` is the other kind of wrong server: something listening that does not greet in
SMTP (an HTTP server, a silent one).
"""

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from tests.gc_pauses import no_gc_pauses

DISCONNECT = "<disconnect>"
STALL = "<stall>"
DATA_ANYWAY = "<354 without a recipient>"


@dataclass
class Received:
    """One message the relay accepted."""

    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    data: bytes


@dataclass
class Relay:
    """The relay's script and what it saw (the aiosmtpd handler)."""

    script: dict[str, str | list[str]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)  # "MAIL", "RCPT a@b", ... in order
    connections: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    pipelining: bool = False  # offer PIPELINING in the EHLO reply
    reads: list[bytes] = field(default_factory=list)  # each chunk as it came off the socket

    def take(self, stage: str, address: str | None = None) -> str | None:
        """The scripted answer for this stage (and recipient), or None: behave."""
        for key in (f"{stage} {address}", stage) if address else (stage,):
            answer = self.script.get(key)
            if isinstance(answer, list):
                if answer:
                    return answer.pop(0)
                continue
            if answer is not None:
                return answer
        return None

    def copies(self) -> dict[str, int]:
        """How many messages each address received."""
        counts: dict[str, int] = {}
        for message in self.received:
            for rcpt in message.rcpt_tos:
                counts[rcpt] = counts.get(rcpt, 0) + 1
        return counts

    async def stall(self) -> None:
        """Wait until the test ends (the relay is stopped or released)."""
        while not self.release.is_set():
            await asyncio.sleep(0.01)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # aiosmtpd leaves it to this hook
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")  # before the last line, "250 HELP"
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        rcpt = envelope.rcpt_tos[0] if envelope.rcpt_tos else None
        self.commands.append(f"EOD {rcpt}")
        answer = self.take("EOD", rcpt)
        if answer == DISCONNECT:
            server.transport.close()
            return "421 4.3.0 gone"
        if answer == STALL:
            await self.stall()
            return "451 4.3.0 stalled"
        if answer is not None:
            return answer
        self.received.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                list(envelope.mail_options),
                bytes(envelope.original_content),
            )
        )
        return "250 2.0.0 accepted"


def _address(arg: str | None) -> str | None:
    if not arg or "<" not in arg:
        return None
    return arg[arg.index("<") + 1 : arg.rindex(">")] if ">" in arg else None


class HostileSMTP(SMTP):
    """aiosmtpd's SMTP with every command's answer open to the script."""

    def __init__(self, relay: Relay, **kwargs: Any) -> None:
        super().__init__(relay, **kwargs)
        self.relay = relay

    def data_received(self, data: bytes) -> None:
        self.relay.reads.append(bytes(data))
        super().data_received(data)

    async def _scripted(self, stage: str, address: str | None = None) -> bool:
        self.relay.commands.append(f"{stage} {address}" if address else stage)
        answer = self.relay.take(stage, address)
        if answer is None:
            return False
        if answer == DISCONNECT:
            assert self.transport is not None
            self.transport.close()
        elif answer == STALL:
            await self.relay.stall()
        elif answer == DATA_ANYWAY:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            while await self._reader.readuntil(b"\r\n") != b".\r\n":
                pass
            await self.push("554 5.5.1 Error: no valid recipients")
        else:
            await self.push(answer)
        return True

    async def smtp_EHLO(self, hostname: str) -> None:
        self.relay.connections += 1
        if not await self._scripted("EHLO"):
            await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname: str) -> None:
        if not await self._scripted("HELO"):
            await super().smtp_HELO(hostname)

    async def smtp_STARTTLS(self, arg: str) -> None:
        if not await self._scripted("STARTTLS"):
            await super().smtp_STARTTLS(arg)

    async def smtp_AUTH(self, arg: str) -> None:
        if not await self._scripted("AUTH"):
            await super().smtp_AUTH(arg)

    async def smtp_MAIL(self, arg: str | None) -> None:
        if not await self._scripted("MAIL"):
            await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if not await self._scripted("RCPT", _address(arg)):
            await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg: str) -> None:
        if not await self._scripted("DATA"):
            await super().smtp_DATA(arg)


class _Controller(Controller):
    """aiosmtpd's Controller on 127.0.0.1, a port the kernel picks, serving HostileSMTP."""

    def __init__(self, relay: Relay, **kwargs: Any) -> None:
        super().__init__(relay, hostname="127.0.0.1", port=0, **kwargs)
        self.relay = relay

    def factory(self) -> SMTP:
        return HostileSMTP(self.relay, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@contextmanager
def hostile_relay(
    script: dict[str, str | list[str]] | None = None, *, pipelining: bool = False, **smtp_kwargs: Any
) -> Iterator[tuple[int, Relay]]:
    """A running relay; yields (port, relay). `smtp_kwargs` go to aiosmtpd's SMTP (TLS, AUTH...)."""
    relay = Relay(script=dict(script or {}), pipelining=pipelining)
    controller = _Controller(relay, **smtp_kwargs)
    with no_gc_pauses():  # a short client timeout must not be spent on a collection (gc_pauses.py)
        controller.start()
        relay.connections = 0  # the controller's own start-up probe does not count
        try:
            yield controller.port, relay
        finally:
            relay.release.set()
            controller.stop()


@contextmanager
def banner_server(greeting: bytes | None) -> Iterator[tuple[int, list[bytes]]]:
    """Something on a loopback port that is no SMTP server: it sends `greeting` (None: nothing)
    to each connection and keeps it open; yields (port, the bytes each client sent)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.05)  # so the accept loop sees `stop` (closing does not wake accept)
    heard: list[bytes] = []
    clients: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            clients.append(client)
            try:
                if greeting is not None:
                    client.sendall(greeting)
                client.settimeout(0.05)
                heard.append(client.recv(4096))
            except OSError:
                pass  # the client gave up first

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], heard
    finally:
        stop.set()
        listener.close()
        for client in clients:
            client.close()
        thread.join(timeout=5)
