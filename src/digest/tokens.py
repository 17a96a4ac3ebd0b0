"""Signed link tokens: they carry (subscriber, edition, subscriber's key) and keep working for months.

The key is the subscriber's random `token_key`: a row deleted and created again (SQLite reuses
the id of a deleted last row) has a new one, so a link never outlives the subscriber it was
made for (issue 12). Links from before keys existed carry none; they still work for the rows
that existed then (`legacy_links`), never for a row created since.
"""

import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer
from sqlmodel import Session

from digest.db.models import Subscriber
from digest.errors import TokenError

# A key json.dumps writes as it is, between quotes (what new_token_key makes: URL-safe base64).
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]*")


_URL_SAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> bytes:
    """URL-safe base64 without padding, as itsdangerous writes it (binascii, not base64's layers)."""
    return binascii.b2a_base64(data, newline=False).translate(_URL_SAFE).rstrip(b"=")


def _compact_json(value: object) -> bytes:
    """JSON as itsdangerous' URL-safe serializer writes it (compact, UTF-8)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _hmac_sha1_pads(key: bytes) -> tuple["hashlib._Hash", "hashlib._Hash"]:
    """SHA-1 states with HMAC's inner and outer padded keys hashed in (RFC 2104 §2), to copy per
    message: hmac.digest set the key up again for every token, twice the cost of the rest of the
    HMAC (issue 15)."""
    block = 64  # SHA-1's block size in bytes
    if len(key) > block:
        key = hashlib.sha1(key).digest()
    key = key.ljust(block, b"\0")
    return (
        hashlib.sha1(bytes(b ^ 0x36 for b in key)),
        hashlib.sha1(bytes(b ^ 0x5C for b in key)),
    )


@dataclass(frozen=True, slots=True)
class LinkToken:
    """Who a link belongs to, and which edition carried it (None: not from an edition)."""

    subscriber_id: int
    edition_id: int | None
    key: str | None  # the subscriber's token_key; None only in links made before issue 12


class TokenSigner:
    """Signs and checks tokens; older keys still verify, so keys can be rotated."""

    def __init__(self, keys: Sequence[str], *, purpose: str = "unsubscribe") -> None:
        if not keys:
            raise TokenError("no secret key to sign links with")
        # itsdangerous signs with the last key and accepts any of them.
        self._serializer = URLSafeSerializer(list(keys), salt=f"digest.{purpose}")
        # A send signs one token per reader: the signing key is derived once, and the signature
        # made as itsdangerous' Signer makes it (HMAC-SHA1 of the payload, URL-safe base64 without
        # padding, after a "."), without its layers of calls (tests check it byte for byte).
        signer = self._serializer.make_signer()
        if signer.key_derivation != "django-concat" or signer.sep != b".":  # not itsdangerous 2's
            raise TokenError("itsdangerous signs differently than this version of digest expects")
        self._inner, self._outer = _hmac_sha1_pads(signer.derive_key())

    def sign(self, token: LinkToken) -> str:
        """An URL-safe signed token (no expiry: CAN-SPAM wants opt-out links to keep working).

        The payload is the compact JSON itsdangerous writes, never zlib-compressed: trying the
        compression cost more than the rest of a token (a zlib stream per reader, issue 15), and
        it never shortens a real one (a random 16-character key). `verify` reads both forms, so
        the compressed tokens of repetitive keys signed before still work.
        """
        key, sid, eid = token.key, token.subscriber_id, token.edition_id
        if key is None:
            raise TokenError("a link needs its subscriber's token key")
        if type(sid) is int and (eid is None or type(eid) is int) and _PLAIN_KEY.fullmatch(key):
            # What json.dumps([sid, eid, key], separators=(",", ":")) writes, without the encoder.
            data = f'[{sid},{"null" if eid is None else eid},"{key}"]'.encode()
        else:
            data = _compact_json([sid, eid, key])
        payload = _b64(data)
        inner = self._inner.copy()
        inner.update(payload)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return (payload + b"." + _b64(outer.digest())).decode()  # HMAC-SHA1, as itsdangerous

    def verify(self, value: str) -> LinkToken:
        """The token's content, or TokenError when it is forged, altered or malformed."""
        try:
            data = self._serializer.loads(value)
        except BadSignature as e:
            raise TokenError("this link is not valid (it may have been altered)") from e
        if not (
            isinstance(data, list)
            and len(data) in (2, 3)  # 2: a link from before token keys
            and isinstance(data[0], int)
            and (data[1] is None or isinstance(data[1], int))
            and (len(data) == 2 or isinstance(data[2], str))
        ):
            raise TokenError("this link is not valid (unexpected content)")
        return LinkToken(subscriber_id=data[0], edition_id=data[1], key=data[2] if len(data) == 3 else None)


def key_matches(row: Subscriber, key: str | None) -> bool:
    """Whether a link carrying `key` was made for this very row (not a deleted one with its id)."""
    if key is None:
        return row.legacy_links
    return hmac.compare_digest(key.encode(), row.token_key.encode())


def subscriber_for(link: LinkToken, *, session: Session) -> Subscriber | None:
    """The subscriber a verified link belongs to; None when that subscriber no longer exists."""
    row = session.get(Subscriber, link.subscriber_id)
    if row is None or not key_matches(row, link.key):
        return None
    return row
