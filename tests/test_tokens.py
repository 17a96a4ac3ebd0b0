"""Link tokens keep their exact form: links in mail already sent must keep working."""

import pytest
from itsdangerous import URLSafeSerializer

from digest.tokens import LinkToken, TokenSigner

KEYS = ["old-key-0123456789abcdef0123456789", "new-key-0123456789abcdef0123456789"]
# itsdangerous URLSafeSerializer(KEYS, salt="digest.unsubscribe").dumps([42, 7, "k3y"]), the form
# every link sent so far carries; the signer builds it without a Signer per token (issue 15).
SENT = "WzQyLDcsImszeSJd.XbVuhFMCIG5lXS9mlue_2OD3zZ4"


def test_a_token_is_signed_byte_for_byte_as_links_already_sent_were() -> None:
    signer = TokenSigner(KEYS)
    assert signer.sign(LinkToken(42, 7, "k3y")) == SENT
    assert signer.sign(LinkToken(42, 7, "k3y")) == SENT  # the second token from the kept signer too
    assert signer.verify(SENT) == LinkToken(42, 7, "k3y")
    assert TokenSigner(KEYS[:1]).sign(LinkToken(42, 7, "k3y")) != SENT  # signed with the last key


@pytest.mark.parametrize("key", ["k3y", "a" * 40, "0123456789abcdef" * 2, "é-ü"])
def test_tokens_are_what_itsdangerous_would_sign(key: str) -> None:
    """A repetitive key compresses (itsdangerous then zlib-compresses the payload): same bytes."""
    for purpose in ("unsubscribe", "bounce"):
        reference = URLSafeSerializer(KEYS, salt=f"digest.{purpose}")
        for token in (LinkToken(1, None, key), LinkToken(2**40, 123456, key)):
            signed = TokenSigner(KEYS, purpose=purpose).sign(token)
            assert signed == reference.dumps([token.subscriber_id, token.edition_id, token.key])
