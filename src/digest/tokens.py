"""Signed link tokens: they carry (subscriber, edition) and keep working for months."""

from collections.abc import Sequence
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer

from digest.errors import TokenError


@dataclass(frozen=True, slots=True)
class LinkToken:
    """Who a link belongs to, and which edition carried it (None: not from an edition)."""

    subscriber_id: int
    edition_id: int | None


class TokenSigner:
    """Signs and checks tokens; older keys still verify, so keys can be rotated."""

    def __init__(self, keys: Sequence[str], *, purpose: str = "unsubscribe") -> None:
        if not keys:
            raise TokenError("no secret key to sign links with")
        # itsdangerous signs with the last key and accepts any of them.
        self._serializer = URLSafeSerializer(list(keys), salt=f"digest.{purpose}")

    def sign(self, token: LinkToken) -> str:
        """An URL-safe signed token (no expiry: CAN-SPAM wants opt-out links to keep working)."""
        return str(self._serializer.dumps([token.subscriber_id, token.edition_id]))

    def verify(self, value: str) -> LinkToken:
        """The token's content, or TokenError when it is forged, altered or malformed."""
        try:
            data = self._serializer.loads(value)
        except BadSignature as e:
            raise TokenError("this link is not valid (it may have been altered)") from e
        if (
            not isinstance(data, list)
            or len(data) != 2
            or not isinstance(data[0], int)
            or not (data[1] is None or isinstance(data[1], int))
        ):
            raise TokenError("this link is not valid (unexpected content)")
        return LinkToken(subscriber_id=data[0], edition_id=data[1])
