"""Link tokens keep their exact form: links in mail already sent must keep working."""

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
