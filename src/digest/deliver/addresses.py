"""Internationalised addresses (RFC 6530-6532) in the form a transport can carry.

Subscriber addresses are stored as email-validator normalises them: a domain given as
`xn--bcher-kva.example` is kept as `bücher.example`. An SMTP relay that offers SMTPUTF8 takes
the address as it is (RFC 6531); otherwise the domain goes as IDNA A-labels (`xn--...`, IDNA
2008 with the UTS 46 mapping, as email-validator itself checks it), and an address whose local
part is not ASCII cannot travel at all: that recipient fails alone, with the reason (issue 12
row 2: it used to stop the whole send with UnicodeEncodeError and leave the row "unknown").
"""

import functools

import idna
from email_validator import EmailNotValidError, validate_email

from digest.deliver.headers import checked_address, clean
from digest.errors import DeliveryError, UnsendableAddress


@functools.lru_cache(maxsize=1024)
def ascii_domain(domain: str) -> str:
    """The domain as IDNA A-labels; UnsendableAddress when it has no such form."""
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError) as e:
        raise UnsendableAddress(f"domain {domain!r} has no IDNA form: {e}") from e


def relay_address(email: str, *, smtputf8: bool) -> tuple[str, bool]:
    """(the address to send, whether it needs SMTPUTF8); UnsendableAddress when neither works.

    `smtputf8`: the relay offers the extension (an outbox file is written as if it did).
    """
    checked_address(email)
    if email.isascii():  # nearly every address: no work
        return email, False
    if smtputf8:
        return email, True
    local, _, domain = email.rpartition("@")
    if not local.isascii():
        raise UnsendableAddress(
            f"{email}: the part before @ is not ASCII and the relay does not offer SMTPUTF8 "
            "(RFC 6531), so it cannot be sent through this relay"
        )
    return f"{local}@{ascii_domain(domain)}", False


def ascii_address(email: str) -> str:
    """The address in ASCII (IDNA domain); UnsendableAddress for a non-ASCII local part."""
    address, _ = relay_address(email, smtputf8=False)
    return address


def header_address(email: str) -> str:
    """The address for a header: ASCII where it has an ASCII form, else as it is (RFC 6532)."""
    try:
        return relay_address(email, smtputf8=False)[0]
    except UnsendableAddress:
        return relay_address(email, smtputf8=True)[0]


def address_list(text: str, *, what: str) -> tuple[str, ...]:
    """Comma-separated addresses typed by the operator (`--test a@x,b@y`), validated and
    normalised as subscribers' are, each once; DeliveryError names `what` and the bad one."""
    found: list[str] = []
    for i, raw in enumerate((a.strip() for a in text.split(",")), 1):
        if not raw:
            continue
        try:
            found.append(validate_email(raw, check_deliverability=False).normalized)
        except EmailNotValidError as e:
            raise DeliveryError(
                f"{what}: address {i} ({clean(raw, 80)!r}) is not an email address: {e}"
            ) from e
    if not found:
        raise DeliveryError(f"{what}: no address given (a comma-separated list, e.g. me@example.com)")
    return tuple(dict.fromkeys(found))
