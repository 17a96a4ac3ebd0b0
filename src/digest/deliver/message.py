"""RFC 5322 bytes for outgoing messages, built once per distinct content and filled per reader.

`email.message.EmailMessage` costs ~4.5 ms a message for a 100 KB digest (STANDARDS.md), which
would dominate a 100,000-reader send. So the MIME structure and the quoted-printable bodies are
encoded once per content, split at the reader's slots; each reader then costs a few small
encodings and one `bytes.join`. Every slot value is encoded on its own line segment, between
quoted-printable soft line breaks (`=` CRLF, RFC 2045 §6.7 rule 5): folding can never cut a
value together with the text around it, and the decoded body is exactly `BodyTemplate.fill`.
"""

import binascii
import functools
import html
import itertools
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from digest.deliver.addresses import header_address
from digest.deliver.base import ONE_CLICK, MessageContent, OutgoingMessage
from digest.deliver.headers import MAX_SUBJECT, address_header, checked_address, clean
from digest.render.email import BodyTemplate

CRLF = b"\r\n"
_QP_LINE = 75  # characters of a quoted-printable line before its soft break "=" (RFC 2045 §6.7)
SOFT_BREAK = b"=\r\n"


def new_message_id(domain: str) -> str:
    """A unique Message-ID in angle brackets on our domain (Gmail rejects mail without one)."""
    return make_msgid(domain=domain)


class MessageIds:
    """Unique Message-IDs on one domain for the messages of a send: `<random.N@domain>`.

    A random 64-bit prefix per instance and a counter make them unique as make_msgid's are,
    for a fraction of its cost (it reads the clock, the process id and 64 random bits for each
    message: a system call per reader, issue 15).
    """

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self._prefix = f"<{secrets.token_hex(8)}."
        self._count = itertools.count(1)  # next() is atomic: lanes may share one instance

    def __call__(self) -> str:
        """The next Message-ID, in angle brackets."""
        return f"{self._prefix}{next(self._count)}@{self.domain}>"


def unsubscribe_mailto(address: str, token: str) -> str:
    """The mailto target of List-Unsubscribe: our mailbox, with the reader's token in the subject."""
    return f"mailto:{address}?subject=unsubscribe%20{token}"


def _qp(data: str) -> bytes:
    """Quoted-printable with CRLF line ends (binascii's C encoder; folds at 76 columns)."""
    text = data.replace("\r\n", "\n").replace("\r", "\n")
    return binascii.b2a_qp(text.encode("utf-8"), istext=True).replace(b"\n", CRLF)


def _header(name: str, value: str, limit: int | None = None) -> bytes:
    """One shared header, cleaned of line breaks, folded and RFC 2047-encoded as needed.

    The policy's folder keeps a CR or LF it is given as a line break of its own (a Subject
    "Hi\\r\\nBcc: x" came out as two headers), so values are cleaned first.
    """
    return SMTP.fold_binary(name, clean(value, limit))


@functools.lru_cache(maxsize=4)
def _date_of(seconds: int, offset: float) -> str:
    return format_datetime(datetime.fromtimestamp(seconds, timezone(timedelta(seconds=offset))))


@functools.lru_cache(maxsize=8)  # a call of many messages passes one `now` for all of them
def _date(now: datetime) -> str:
    """The Date header value (RFC 5322 has one-second resolution: format once a second)."""
    offset = now.utcoffset()
    return _date_of(int(now.timestamp()), offset.total_seconds() if offset else 0.0)


# Printable ASCII but "=": the bytes quoted-printable carries as they are (RFC 2045 §6.7 rule 2).
_AS_IS = bytes(c for c in range(0x20, 0x7F) if c != ord("="))


def _segment(value: str) -> bytes:
    """One slot value on its own soft-broken line segment (see the module docstring)."""
    data = value.encode("ascii") if value.isascii() else b""
    if data and not data.translate(None, _AS_IS):
        # Nothing to escape (the common case: a URL, an address, a plain name); only fold at 75
        # characters plus the "=" of the soft break. No space can end up trailing on a line:
        # every line of a segment ends with "=". (Deleting the plain bytes and finding nothing
        # left is one C pass; str.isprintable looked each character up in the Unicode tables.)
        if len(data) > _QP_LINE:
            data = SOFT_BREAK.join([data[i : i + _QP_LINE] for i in range(0, len(data), _QP_LINE)])
        return SOFT_BREAK + data + SOFT_BREAK
    value = value.replace("\r", " ").replace("\n", " ")
    data = binascii.b2a_qp(value.encode("utf-8"), istext=True).replace(b"\n", CRLF)
    return SOFT_BREAK + data + SOFT_BREAK


class _Body:
    """Both parts of a content, quoted-printable encoded between the readers' values, as one
    run of fixed pieces with a hole for a value between each two."""

    __slots__ = ("fixed", "holes")

    def __init__(self, opening: bytes, text: BodyTemplate, between: bytes, html_: BodyTemplate, end: bytes):
        fixed = [opening + _qp(text.chunks[0])]
        fixed.extend(_qp(c) for c in text.chunks[1:])
        fixed[-1] += between + _qp(html_.chunks[0])
        fixed.extend(_qp(c) for c in html_.chunks[1:])
        fixed[-1] += end
        self.fixed = fixed
        # (slot, HTML-escaped) for each hole: in the text part as they are, in the HTML part escaped
        self.holes = [(slot, text.escape) for slot in text.slots] + [
            (slot, html_.escape) for slot in html_.slots
        ]

    def pieces(self, values: Mapping[str, str], out: list[bytes]) -> None:
        """Append this reader's encoded parts to `out`."""
        fixed = iter(self.fixed)
        append = out.append
        append(next(fixed))
        encoded: dict[str, bytes] = {}  # a URL is the same in both parts: encode it once
        for (slot, escape), after in zip(self.holes, fixed, strict=True):
            value = values[slot]
            # Whether html.escape would change it: five scans at C speed, inline (no call per slot).
            if escape and ("&" in value or "<" in value or ">" in value or '"' in value or "'" in value):
                value = html.escape(value)
            piece = encoded.get(value)
            if piece is None:
                piece = encoded[value] = _segment(value)
            append(piece)
            append(after)


class EncodedContent:
    """A MessageContent encoded once: shared headers, MIME skeleton, both parts."""

    def __init__(self, content: MessageContent) -> None:
        # "=_" cannot occur in quoted-printable output, so the boundary never collides with a body.
        boundary = f"=_digest_{secrets.token_hex(12)}"
        from_line = address_header("From", content.from_name, header_address(content.from_email))
        shared = [from_line.encode()]
        if content.reply_to:
            shared.append(_header("Reply-To", header_address(content.reply_to)))
        shared.append(_header("Subject", content.subject, MAX_SUBJECT))
        if content.list_id is not None:
            shared.append(_header("List-Id", content.list_id))
            shared.append(b"List-Unsubscribe-Post: " + ONE_CLICK.encode() + CRLF)
        shared.extend(_header(name, value) for name, value in content.headers)
        self.head = b"".join(shared)
        mime = (
            b"MIME-Version: 1.0\r\n"
            + f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode()
            + f"--{boundary}\r\n".encode()
            + b'Content-Type: text/plain; charset="utf-8"\r\n'
            + b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        )
        between = (
            f"\r\n--{boundary}\r\n".encode()
            + b'Content-Type: text/html; charset="utf-8"\r\n'
            + b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        )
        self.body = _Body(mime, content.text, between, content.html, f"\r\n--{boundary}--\r\n".encode())
        self._stuffed: dict[int, bytes] | None = None  # see `wire`

    def render(self, message: OutgoingMessage, *, now: datetime, to_email: str | None = None) -> bytes:
        """The exact bytes an SMTP server receives for one reader (CRLF line ends).

        `to_email` is the address as the envelope carries it (IDNA or UTF-8, see addresses.py);
        by default the stored one, in ASCII where it has an ASCII form. UnsendableAddress when
        the address could break the header.
        """
        return b"".join(self.pieces(message, now=now, to_email=to_email))

    def wire(self, message: OutgoingMessage, *, now: datetime, to_email: str | None = None) -> bytes:
        """`render`'s bytes as an SMTP client sends them after DATA (RFC 5321 §4.5.2): a dot
        that begins a line doubled, and the end marked by a line holding only a dot.

        The content's own pieces are stuffed once, when first asked; a reader's values and
        headers (short) for each message. Stuffing the joined 35 KB per message, even with
        bytes.replace, was about 25 us a message (issue 15).
        """
        stuffed = self._stuffed
        if stuffed is None:
            # Keyed by identity: these pieces live as long as this object, so no other piece
            # can share an id with one of them.
            stuffed = self._stuffed = {
                id(p): p.replace(b"\n.", b"\n..") for p in (self.head, *self.body.fixed)
            }
        out = []
        last = b""  # the last piece that was not empty
        for piece in self.pieces(message, now=now, to_email=to_email):
            done = stuffed.get(id(piece))
            if done is None:
                done = piece.replace(b"\n.", b"\n..")
            if piece.startswith(b".") and (not last or last.endswith(b"\n")):
                done = b"." + done
            last = piece or last
            out.append(done)
        out.append(b".\r\n" if last.endswith(b"\r\n") else b"\r\n.\r\n")
        return b"".join(out)

    def pieces(self, message: OutgoingMessage, *, now: datetime, to_email: str | None = None) -> list[bytes]:
        """`render`'s bytes in pieces, for a writer that takes them as they are (os.writev)."""
        email = checked_address(to_email) if to_email is not None else header_address(message.to_email)
        to = address_header("To", message.to_name, email)
        if message.unsubscribe_url is None:
            unsubscribe = ""
        elif message.unsubscribe_mailto:
            # Folded between the two targets: a URL inside <> is never cut (RFC 2369 §2).
            unsubscribe = (
                f"List-Unsubscribe: <{message.unsubscribe_url}>,\r\n <{message.unsubscribe_mailto}>\r\n"
            )
        else:
            unsubscribe = f"List-Unsubscribe: <{message.unsubscribe_url}>\r\n"
        out = [
            self.head,
            f"{to}Date: {_date(now)}\r\nMessage-ID: {message.message_id}\r\n{unsubscribe}".encode(),
        ]
        self.body.pieces(message.values, out)
        return out


class MessageEncoder:
    """Turns OutgoingMessages into bytes, encoding each distinct content once (a small LRU)."""

    def __init__(self, max_contents: int = 256) -> None:
        self._cache: OrderedDict[str, EncodedContent] = OrderedDict()
        self._max = max_contents

    def encoded(self, content: MessageContent) -> EncodedContent:
        """The encoded form of a content, built on first use."""
        hit = self._cache.get(content.key)
        if hit is None:
            hit = self._cache[content.key] = EncodedContent(content)
            if len(self._cache) > self._max:
                self._cache.popitem(last=False)  # the content used longest ago
        else:
            self._cache.move_to_end(content.key)
        return hit

    def to_bytes(self, message: OutgoingMessage, *, now: datetime, to_email: str | None = None) -> bytes:
        """The exact bytes an SMTP server receives (CRLF line ends); `to_email` as in `render`."""
        return self.encoded(message.content).render(message, now=now, to_email=to_email)

    def to_wire(self, message: OutgoingMessage, *, now: datetime, to_email: str | None = None) -> bytes:
        """The content an SMTP client sends after DATA (EncodedContent.wire)."""
        return self.encoded(message.content).wire(message, now=now, to_email=to_email)

    def to_pieces(self, message: OutgoingMessage, *, now: datetime) -> list[bytes]:
        """`to_bytes` in pieces (EncodedContent.pieces)."""
        return self.encoded(message.content).pieces(message, now=now)


def to_bytes(message: OutgoingMessage, *, now: datetime) -> bytes:
    """One message's bytes without a shared cache (previews, tests)."""
    return EncodedContent(message.content).render(message, now=now)
