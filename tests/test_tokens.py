"""Link tokens keep their exact form: links in mail already sent must keep working."""

import pytest
from itsdangerous import URLSafeSerializer

from digest.errors import TokenError
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


@pytest.mark.parametrize("key", ["k3y", "Xq3_-rT9aZ0bYc1d", "é-ü", 'a "quoted" \\ key'])
def test_tokens_are_what_itsdangerous_would_sign(key: str) -> None:
    for purpose in ("unsubscribe", "bounce"):
        reference = URLSafeSerializer(KEYS, salt=f"digest.{purpose}")
        for token in (LinkToken(1, None, key), LinkToken(2**40, 123456, key)):
            signed = TokenSigner(KEYS, purpose=purpose).sign(token)
            assert signed == reference.dumps([token.subscriber_id, token.edition_id, token.key])
            assert reference.loads(signed) == [token.subscriber_id, token.edition_id, token.key]


@pytest.mark.parametrize("key", ["a" * 40, "0123456789abcdef" * 2])
def test_compressed_tokens_signed_before_still_verify(key: str) -> None:
    """itsdangerous zlib-compresses a repetitive payload; the signer no longer tries (issue 15):
    the links it made that way keep working, and the uncompressed form verifies too."""
    signer = TokenSigner(KEYS)
    before = URLSafeSerializer(KEYS, salt="digest.unsubscribe").dumps([7, 3, key])
    assert before.startswith(".")  # compressed
    now = signer.sign(LinkToken(7, 3, key))
    assert not now.startswith(".")
    assert signer.verify(before) == signer.verify(now) == LinkToken(7, 3, key)


def test_an_altered_or_foreign_token_is_refused() -> None:
    signer = TokenSigner(KEYS)
    token = signer.sign(LinkToken(42, 7, "Xq3_-rT9aZ0bYc1d"))
    payload, signature = token.split(".")
    other = signer.sign(LinkToken(43, 7, "Xq3_-rT9aZ0bYc1d")).split(".")[0]
    altered = signature[:-1] + ("B" if signature.endswith("A") else "A")
    for forged in (f"{other}.{signature}", f"{payload}.{altered}", payload):
        with pytest.raises(TokenError):
            signer.verify(forged)
    with pytest.raises(TokenError):  # another purpose's signature
        TokenSigner(KEYS, purpose="bounce").verify(token)
    with pytest.raises(TokenError):  # another secret
        TokenSigner(["another-key-0123456789abcdef0123"]).verify(token)
