"""Small builders for delivery tests: contents, messages, an SMTP server with scripted faults."""

import asyncio
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from digest.deliver.base import MessageContent, OutgoingMessage
from digest.render.email import BodyTemplate, personal_values
from tests.gc_pauses import no_gc_pauses

LONG_LINE = "A line far longer than seventy-six characters, so quoted-printable has to fold it " * 3


def content(key: str = "c0ffee", *, subject: str = "Daily, Nov 25: Robots win + 3 more") -> MessageContent:
    """A content whose parts use every slot, with long lines, non-ASCII and trailing spaces."""
    html = BodyTemplate(
        chunks=(
            "<html><body><p>",
            f"</p><p>{LONG_LINE}</p><p>Zoë's café = 5 € </p><p>You subscribed with ",
            '.</p><a href="',
            '">Unsubscribe</a> <a href="',
            '">Preferences</a><p>1 Example Street, Springfield</p></body></html>\n',
        ),
        slots=("greeting", "email", "unsubscribe_url", "preferences_url"),
        escape=True,
    )
    text = BodyTemplate(
        chunks=(
            "",
            f"\n\n{LONG_LINE}\nZoë's café = 5 € \n.leading dot\nYou subscribed with ",
            ".\nUnsubscribe: ",
            "\nPreferences: ",
            "\n1 Example Street, Springfield\n",
        ),
        slots=("greeting", "email", "unsubscribe_url", "preferences_url"),
        escape=False,
    )
    return MessageContent(
        key=key,
        from_email="news@digest.example",
        from_name="Daily Digest",
        subject=subject,
        list_id="Daily Digest <daily-digest.digest.example>",
        html=html,
        text=text,
        reply_to="editor@digest.example",
    )


def message(
    n: int = 1,
    *,
    email: str | None = None,
    name: str = "Ana",
    of: MessageContent | None = None,
    mailto: bool = True,
    edition_id: int = 7,
) -> OutgoingMessage:
    """Reader number `n` of a content, with a long signed-looking token in their links."""
    token = f"WzEsN10.{'x' * 40}{n}"
    url = f"https://digest.example/unsubscribe/{token}"
    return OutgoingMessage(
        delivery_id=n,
        subscriber_id=100 + n,
        edition_id=edition_id,
        to_email=email or f"reader{n}@example.com",
        to_name=name,
        content=of or content(),
        values=personal_values(
            email=email or f"reader{n}@example.com",
            name=name,
            unsubscribe_url=url,
            preferences_url=f"https://digest.example/preferences/{token}",
        ),
        message_id=f"<{n}.test@digest.example>",
        unsubscribe_url=url,
        unsubscribe_mailto=f"mailto:unsubscribe@digest.example?subject=unsubscribe%20{token}"
        if mailto
        else None,
    )


def parse(data: bytes) -> EmailMessage:
    """Parse message bytes the way a receiving client would."""
    parsed = message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def parts(data: bytes) -> tuple[str, str]:
    """(text, html) decoded from a multipart/alternative message, line ends as in the source."""
    msg = parse(data)
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    # Quoted-printable hard line breaks are CRLF on the wire; readers see plain line ends.
    return text.get_content().replace("\r\n", "\n"), html.get_content().replace("\r\n", "\n")


# --- a real SMTP server (aiosmtpd) with scripted faults -----------------------------------


@dataclass
class Handler:
    """aiosmtpd handler: records messages; scripted 4xx/5xx replies and dropped connections."""

    received: list[tuple[list[str], bytes]] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # address -> reply at RCPT, every time
    defer_once: dict[str, str] = field(default_factory=dict)  # address -> reply at DATA, once
    drop_once: set[str] = field(default_factory=set)  # close the connection at DATA, once
    block_at: int | None = None  # hold the Nth message (1-based) in DATA until released
    in_data: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    delay: float = 0.0  # seconds before answering each DATA: a slow server
    reach_at: int | None = None  # set `reached` when this many messages have arrived
    reached: threading.Event = field(default_factory=threading.Event)
    connections: int = 0
    pipelining: bool = False  # offer PIPELINING (RFC 2920); aiosmtpd's buffered reader serves it

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: Any
    ) -> Any:
        self.connections += 1
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")  # before the last line, "250 HELP"
        return responses

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        rcpt = envelope.rcpt_tos[0]
        if rcpt in self.defer_once:
            return self.defer_once.pop(rcpt)
        if rcpt in self.drop_once:
            self.drop_once.discard(rcpt)
            server.transport.close()
            return "421 gone"
        self.received.append((list(envelope.rcpt_tos), bytes(envelope.original_content)))
        if self.reach_at is not None and len(self.received) >= self.reach_at:
            self.reached.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.block_at is not None and len(self.received) == self.block_at:
            self.in_data.set()
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        return "250 Message accepted"

    def copies(self) -> dict[str, int]:
        """How many messages each address received."""
        counts: dict[str, int] = {}
        for rcpts, _ in self.received:
            for r in rcpts:
                counts[r] = counts.get(r, 0) + 1
        return counts


class EphemeralController(Controller):
    """aiosmtpd's Controller on 127.0.0.1 port 0: the kernel picks a free port."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@contextmanager
def smtp_server(handler: Handler | None = None) -> Iterator[tuple[EphemeralController, Handler]]:
    """A running SMTP server on loopback; yields (controller, handler)."""
    handler = handler or Handler()
    controller = EphemeralController(handler, hostname="127.0.0.1", port=0)
    with no_gc_pauses():  # a short client timeout must not be spent on a collection (gc_pauses.py)
        controller.start()
        try:
            yield controller, handler
        finally:
            handler.release.set()
            controller.stop()


def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: (server context, client context trusting it)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    return server, ssl.create_default_context(cafile=str(cert_path))
