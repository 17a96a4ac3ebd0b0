"""Bounces that arrive later: VERP return paths, and what the reports relays mail back say.

Relays other than SendGrid (SES, Postmark, Mailgun, a company's own Postfix) accept a message and
report a failed delivery afterwards, by mail to the message's envelope sender: a DSN (RFC 3464,
`multipart/report; report-type=delivery-status`) or an MTA's own text (Exim, qmail). VERP puts a
short token naming (subscriber, edition) in that sender, `bounces+TOKEN@domain`, with a MAC over
them and the subscriber's token_key, so a report names its reader even when its body is odd or
names a forwarding address.

Pure: bytes in, a Report out. Reports are hostile: read bounded in size, and every line cut to
RFC 5322's 998 octets before flufl.bounce's heuristic detectors see it (their regular expressions
go quadratic on long lines). Hard or soft comes from the DSN's per-recipient Action and Status
(RFC 3464, RFC 3463), else from the code the MTA's text gives after the address. bounce_mail.py
applies a Report to the subscribers.

Long: the VERP token and the report reader are one contract (what we put in the return path
is what we read back), and the DSN rules (RFC 3464, RFC 3463) read best beside the fallbacks.
"""

import enum
import hashlib
import hmac
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.utils import getaddresses

import flufl.bounce

from digest.config import Settings, signing_keys
from digest.errors import SettingsError, TokenError

log = logging.getLogger(__name__)

MAX_BYTES = 256 * 1024  # of one report: the DSN fields and the returned headers come first
MAX_LINE = 998  # RFC 5322 §2.1.1
MAX_DEPTH = 8  # MIME nesting followed; a report is two or three levels deep
LOCAL_PART_MAX = 64  # octets, RFC 5321 §4.5.3.1.1

# RFC 3463 enhanced status code; not inside a dotted number such as an IP address.
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_REPLY = re.compile(r"(?<![\d.])([45]\d\d)(?=[ -])")  # a basic SMTP reply code (RFC 5321 §4.2)
_UNSUBSCRIBE = re.compile(
    r"^List-Unsubscribe:[ \t]*<[^>\s]*/unsubscribe/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)>", re.I | re.M
)
_COPY_HEADER = re.compile(r"^(Message-ID|List-Id|List-Unsubscribe|Subject|Date):", re.I | re.M)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")


# --- VERP ----------------------------------------------------------------------------------------


# The token is `<subscriber id>-<edition id>-<MAC>`: ids in base 36, the MAC in base 32, all in
# lower case, so a relay that changes the case of the local part (RFC 5321 §2.4 lets only the
# receiving host interpret it, but some do) does not break it: it is read lower-cased. The MAC
# covers the ids and the subscriber's token_key (issue 12), so a bounce of a deleted subscriber
# never suppresses a new one under the reused row id; an itsdangerous-signed JSON with the
# 32-character key would not fit the 64 octets. 64 bits of MAC: each guess costs a forger a mail.
MAX_ID = 2**63 - 1  # SQL's BIGINT: a token claiming a larger id is not even looked up
_ID = r"(0|[1-9a-z][0-9a-z]{0,12})"  # base 36, canonical; 13 digits hold MAX_ID
MAC_BYTES = 8
MAC_CHARS = 13  # base 32 of 8 bytes, padding dropped
_RETURN_TOKEN = re.compile(rf"{_ID}-{_ID}-([a-z2-7]{{{MAC_CHARS}}})")
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648 base 32, lower-cased
_SHIFTS = tuple(range(5 * (MAC_CHARS - 1), -1, -5))


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = _BASE36[digit] + digits
        if not number:
            return digits


@dataclass(frozen=True, slots=True)
class ReturnToken:
    """What a return-path token claims; it proves nothing until checked against the subscriber's row."""

    subscriber_id: int
    edition_id: int
    mac: str


class ReturnPathSigner:
    """Makes and checks return-path tokens; the last key signs and any key verifies (rotation)."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise TokenError("no secret key to sign return paths with")
        self._keys = [k.encode() for k in keys]

    @staticmethod
    def _mac(secret: bytes, subscriber_id: int, edition_id: int, token_key: str) -> str:
        # "digest.bounce" keeps these MACs apart from any other use of the secret key.
        data = f"digest.bounce\0{subscriber_id}\0{edition_id}\0{token_key}".encode()
        # One signature per message of a send: the one-shot hmac.digest, and the 8 bytes as 13
        # lower-case base-32 digits written directly (RFC 4648 §6, padding dropped; the 65th bit
        # is the encoder's zero pad). base64.b32encode spends several microseconds in Python.
        number = int.from_bytes(hmac.digest(secret, data, "sha256")[:MAC_BYTES], "big") << 1
        return "".join(_BASE32[(number >> shift) & 31] for shift in _SHIFTS)

    def sign(self, subscriber_id: int, edition_id: int, token_key: str) -> str:
        """The token for one message: `<base36 subscriber>-<base36 edition>-<mac>`."""
        if not (0 <= subscriber_id <= MAX_ID and 0 <= edition_id <= MAX_ID):
            raise TokenError(f"ids out of range for a return path: {subscriber_id}, {edition_id}")
        mac = self._mac(self._keys[-1], subscriber_id, edition_id, token_key)
        return f"{_base36(subscriber_id)}-{_base36(edition_id)}-{mac}"

    @staticmethod
    def read(value: str) -> ReturnToken:
        """The ids a token claims (any case), or TokenError when it is not shaped like one."""
        match = _RETURN_TOKEN.fullmatch(value.lower())
        if match is None:
            raise TokenError("this return-path token is malformed")
        subscriber_id, edition_id = int(match.group(1), 36), int(match.group(2), 36)
        if subscriber_id > MAX_ID or edition_id > MAX_ID:
            raise TokenError("this return-path token names an id out of range")
        return ReturnToken(subscriber_id, edition_id, match.group(3))

    def verify(self, token: ReturnToken, token_key: str) -> bool:
        """Whether `token` was made by one of our keys for the subscriber whose key is `token_key`."""
        # Every key is tried, so the time taken says nothing about which one failed.
        found = False
        for secret in self._keys:
            expected = self._mac(secret, token.subscriber_id, token.edition_id, token_key)
            found |= hmac.compare_digest(expected, token.mac)
        return found


def bounce_signer(settings: Settings) -> ReturnPathSigner:
    """The signer of return-path tokens, with the keys that sign and verify links."""
    return ReturnPathSigner(signing_keys(settings))


def return_path(
    bounce_address: str, *, signer: ReturnPathSigner, subscriber_id: int, edition_id: int, token_key: str
) -> str:
    """The VERP envelope sender of one message: `bounces+TOKEN@domain` for DIGEST_BOUNCE_ADDRESS."""
    local, domain = bounce_address.rsplit("@", 1)
    # Letters, digits and "-": a valid dot-atom. At most 13+1+13+1+13 = 41 characters (ids up to
    # MAX_ID), so the 12-character base the setting allows always fits 64 octets.
    local_part = f"{local}+{signer.sign(subscriber_id, edition_id, token_key)}"
    if len(local_part.encode()) > LOCAL_PART_MAX:
        raise SettingsError(
            f"DIGEST_BOUNCE_ADDRESS: {local_part!r} is longer than the {LOCAL_PART_MAX} octets "
            "RFC 5321 allows a local part: use a shorter base address"
        )
    return f"{local_part}@{domain}"


def verp_tokens(msg: Message, bounce_address: str) -> list[str]:
    """Tokens found in the addresses a report was delivered to (Delivered-To, To, ...)."""
    local, domain = bounce_address.lower().rsplit("@", 1)
    found: list[str] = []
    for header in _RECIPIENT_HEADERS:
        values = [str(v)[:MAX_LINE] for v in (msg.get_all(header) or [])[:10]]
        for _, address in getaddresses(values):
            user, _, host = address.rpartition("@")
            # Lower-cased: a relay may have changed its case, and the token is made in lower case.
            if host.lower() == domain and user.lower().startswith(local + "+"):
                token = user[len(local) + 1 :].lower()
                if token and token not in found:
                    found.append(token)
    return found


# --- what a report says -------------------------------------------------------------------------


class Severity(enum.StrEnum):
    """What one failure means for its reader."""

    HARD = "hard"  # the address is gone: suppress at once
    SOFT = "soft"  # may pass: suppress after DIGEST_SOFT_BOUNCE_LIMIT editions in a row
    DELAYED = "delayed"  # still being retried (Action: delayed): not a failure yet


# 5.x.x codes that are not the address being gone (RFC 3463): a full mailbox, a message too big,
# and policy refusals (5.7.x) that blame the sender or the content, not the reader.
_SOFT_PERMANENT = ("5.2.2", "5.2.3", "5.3.4")
_HARD_REPLIES = ("550", "551", "553")  # mailbox unavailable, not local, name not allowed


def status_code(text: str) -> str:
    """The first RFC 3463 status code in `text` ("5.1.1"), else its first SMTP reply code, else ""."""
    match = _STATUS.search(text)
    if match:
        return ".".join(str(int(g)) for g in match.groups())
    reply = _REPLY.search(text)
    return reply.group(1) if reply else ""


def severity_of(code: str) -> Severity:
    """Hard or soft from a status or reply code; unknown counts as soft (the milder reading:
    a soft failure still suppresses, after a few editions, while a wrong hard one loses a reader)."""
    if code.startswith("5.") and code not in _SOFT_PERMANENT and not code.startswith("5.7."):
        return Severity.HARD
    return Severity.HARD if code in _HARD_REPLIES else Severity.SOFT


def classify(action: str, status: str, diagnostic: str = "") -> Severity | None:
    """A DSN recipient's Action and Status (RFC 3464 §2.3.3, §2.3.4) as a severity; None for
    `delivered`, `relayed` and `expanded`, which are no failure."""
    action = action.strip().lower()
    if action.startswith("delayed"):
        return Severity.DELAYED
    if not action.startswith(("failed", "error")):  # opensmtpd writes "error"
        return None
    return severity_of(status_code(status) or status_code(diagnostic))


@dataclass(frozen=True, slots=True)
class Failure:
    """One recipient a report says failed."""

    address: str  # as the report names it, lower-cased ("" when it named none we could read)
    severity: Severity
    status: str = ""  # "5.1.1", or a reply code such as "550"
    diagnostic: str = ""  # the remote server's words, cleaned and cut
    original: str = ""  # DSN Original-Recipient, when it differs


@dataclass(frozen=True, slots=True)
class Report:
    """What one message in the bounce mailbox says."""

    failures: tuple[Failure, ...]
    verp_tokens: tuple[str, ...]  # from the addresses it was delivered to
    link_tokens: tuple[str, ...]  # unsubscribe tokens in the returned copy's List-Unsubscribe
    has_copy: bool  # it returns the original's headers (so it can be checked against them)
    reporter: str  # Reporting-MTA, else From
    summary: str  # "From: Subject", for the operator
    fingerprint: str  # sha256 of the bytes read: the same report is applied once


def _clean(text: str, limit: int = 300) -> str:
    return " ".join(_CONTROL.sub(" ", text).split())[:limit]


def _cap_lines(data: bytes) -> bytes:
    return b"\n".join(line[:MAX_LINE] for line in data.split(b"\n"))


def _parts(msg: Message, depth: int = 0, copy: bool = False) -> Iterator[tuple[Message, bool]]:
    """Every part to MAX_DEPTH, with whether it lies inside a returned copy (message/rfc822)."""
    yield msg, copy
    if depth >= MAX_DEPTH or msg.get_content_type() == "message/delivery-status":
        return
    payload = msg.get_payload()
    if isinstance(payload, list):
        inner = copy or msg.get_content_type() == "message/rfc822"
        for sub in payload:
            if isinstance(sub, Message):
                yield from _parts(sub, depth + 1, inner)


def _text(part: Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return ""
    data = _cap_lines(data[:MAX_BYTES])
    try:
        return data.decode(part.get_content_charset() or "us-ascii", errors="replace")
    except LookupError:  # a charset Python does not know
        return data.decode("utf-8", errors="replace")


def _recipient(value: object) -> str:
    """`rfc822; user@example.com` -> `user@example.com` (RFC 3464 §2.3.2 address-type; address)."""
    address = str(value or "").partition(";")[2] or str(value or "")
    return _clean(address, 320).strip("<> ").lower()


def _dsn_failures(part: Message) -> tuple[list[Failure], str]:
    """The failures of one message/delivery-status part, and its Reporting-MTA."""
    blocks = part.get_payload()
    if not isinstance(blocks, list):
        return [], ""
    failures, reporter = [], ""
    for block in blocks[:100]:
        if not isinstance(block, Message):
            continue
        if block.get("Reporting-MTA"):
            reporter = _clean(_recipient(block["Reporting-MTA"]) or str(block["Reporting-MTA"]), 100)
        if not block.get("Action"):
            continue  # the per-message block
        status = _clean(str(block.get("Status", "")), 40)
        diagnostic = _clean(str(block.get("Diagnostic-Code", "")).partition(";")[2])
        severity = classify(str(block["Action"]), status, diagnostic)
        if severity is None:
            continue
        final, original = (
            _recipient(block.get("Final-Recipient")),
            _recipient(block.get("Original-Recipient")),
        )
        failures.append(
            Failure(
                address=final or original,
                severity=severity,
                status=status_code(status) or status_code(diagnostic),
                diagnostic=diagnostic,
                original=original if original != final else "",
            )
        )
    return failures, reporter


def _cap_headers(part: Message) -> None:
    # Also plain str for a value with 8-bit bytes, which the parser hands out as an email.header
    # Header: flufl.bounce 6.0.0's Sina detector calls .lower() on From and raises on it.
    if any(type(v) is not str or len(v) > MAX_LINE for v in part.values()):
        items = [(k, str(v)[:MAX_LINE]) for k, v in part.items()]
        for k in {k for k, _ in items}:
            del part[k]
        for k, v in items:
            part[k] = v


def _for_detectors(capped: bytes) -> Message:
    """A copy of the message safe for flufl.bounce's heuristics: every header and every line of
    a decoded text part cut to MAX_LINE (measured: 256 KiB of "<" on one base64-encoded line of a
    Postfix-looking notification kept its detector busy for over 6 minutes), non-text parts emptied."""
    msg = message_from_bytes(capped)
    for part, _ in _parts(msg):
        _cap_headers(part)
        if part.get_content_type() == "message/delivery-status":
            # Its blocks are header sections: a folded field unfolds into one long line.
            blocks = part.get_payload()
            for block in blocks if isinstance(blocks, list) else []:
                if isinstance(block, Message):
                    _cap_headers(block)
            continue
        if part.is_multipart():
            continue
        data = part.get_payload(decode=True) if part.get_content_maintype() == "text" else b""
        data = _cap_lines(data) if isinstance(data, bytes) else b""
        # As the parser keeps 8-bit bodies: bytes smuggled through str, charset unchanged.
        part.set_payload(data.decode("ascii", errors="surrogateescape"))
        del part["Content-Transfer-Encoding"]
        part["Content-Transfer-Encoding"] = "8bit"
    if not msg.is_multipart() and not getaddresses([str(msg.get("From", ""))[:MAX_LINE]]):
        # flufl.bounce 6.0's Yale detector raises IndexError on a single-part message whose From
        # holds no address; "<>" (the null sender) parses to an empty one, which it skips.
        del msg["From"]
        msg["From"] = "<>"
    return msg


def _detected(capped: bytes) -> tuple[set[str], set[str]]:
    """flufl.bounce's (temporary, permanent) addresses, lower-cased; empty if it cannot read it."""
    try:
        temporary, permanent = flufl.bounce.all_failures(_for_detectors(capped))
    # Heuristics over hostile text (one raised IndexError on a report without From): their
    # failure is this one message's, and it must not stop the rest of the mailbox.
    except Exception:
        log.warning("bounce detectors failed on one report; its DSN fields are still read", exc_info=True)
        return set(), set()
    return _addresses(temporary), _addresses(permanent)


def _addresses(found: frozenset[bytes]) -> set[str]:
    return {_clean(a.decode("ascii", "replace"), 320).strip("<> ").lower() for a in found}


def _near(text: str, address: str, others: Sequence[str]) -> str:
    """What the report says right after naming `address`, up to the next failed address."""
    lower = text.lower()
    start = lower.find(address)
    if start < 0:
        return ""
    # The recipient's paragraph: Exim and qmail end it with a blank line.
    end = min(start + 600, lower.find("\n\n", start) % (len(lower) + 1))
    for other in others:
        at = lower.find(other, start + len(address))
        if other != address and 0 <= at < end:
            end = at
    return text[start + len(address) : end]


def parse_report(raw: bytes, *, bounce_address: str | None) -> Report:
    """Read one message from the bounce mailbox (at most MAX_BYTES of it): who failed and how,
    the tokens that may name the reader, and whether it returns the original's headers."""
    raw = raw[:MAX_BYTES]
    capped = _cap_lines(raw)
    msg = message_from_bytes(capped)
    failures: list[Failure] = []
    reporter = ""
    texts: list[str] = []
    copies: list[str] = []
    for part, in_copy in _parts(msg):
        ctype = part.get_content_type()
        if ctype == "message/delivery-status" and not in_copy:
            found, mta = _dsn_failures(part)
            failures += found
            reporter = reporter or mta
        elif ctype == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                copies.append("".join(f"{k}: {v}\n" for k, v in inner[0].items()))
        elif ctype in ("text/rfc822-headers", "message/rfc822-headers"):
            copies.append(_text(part))
        elif part.get_content_maintype() == "text" and not in_copy:
            texts.append(_text(part))
    text = "\n".join(texts)
    temporary, permanent = _detected(capped)
    named = {f.address for f in failures} | {f.original for f in failures}
    others = sorted(temporary | permanent)
    for address in others:  # formats without DSN fields: Exim, qmail, old Exchange, ...
        if address in named:
            continue
        if address in temporary:
            failures.append(Failure(address, Severity.DELAYED))
            continue
        near = _near(text, address, others)
        code = status_code(near)
        failures.append(Failure(address, severity_of(code), code, _clean(near.lstrip(">: \n"))))
    # An MTA's text format carries the original inline, after a line of its own.
    inline = [t for t in texts if _COPY_HEADER.search(t)]
    tokens = verp_tokens(msg, bounce_address) if bounce_address else []
    link_tokens = list(dict.fromkeys(m for c in copies + inline for m in _UNSUBSCRIBE.findall(c)))
    sender = _clean(str(msg.get("From", "")), 100)
    return Report(
        failures=tuple(failures),
        verp_tokens=tuple(tokens),
        link_tokens=tuple(link_tokens),
        has_copy=bool(copies or inline),
        reporter=reporter or sender,
        summary=f"{sender or '?'}: {_clean(str(msg.get('Subject', '')), 120)}",
        fingerprint=hashlib.sha256(raw).hexdigest()[:32],
    )
