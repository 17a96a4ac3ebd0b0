"""Header values built from data: never a line break, always within RFC 5322 line limits.

A subscriber's name, a story title in the Subject and the newsletter's from_name all come from
outside. Whatever validation upstream did or missed, this is the last edge before the bytes:
control characters (CR and LF above all: issue 12 row 5, injected Bcc: headers) become spaces,
names are capped (row 6: a 5,000-character name made a 5,024-character To: line that the relay
refused), and every line is folded to 78 characters where it has a place to fold (RFC 5322
§2.1.1; 998 is the hard limit, which no line built here can reach).

The common To: value (a short plain name) takes one regular-expression match and one f-string:
this runs once per message of a send.
"""

import base64
import re

from digest.errors import UnsendableAddress

LINE = 78  # RFC 5322 §2.1.1: SHOULD be no more than 78 characters, excluding CRLF
MAX_DISPLAY_NAME = 64  # characters of a name in From/To; longer names are cut (issue 12 row 6)
MAX_SUBJECT = 200  # characters; inboxes show about 70, so a longer subject is noise or an attack
MAX_ADDRESS = 254  # RFC 5321 §4.5.3.1.3: a path is at most 256 octets with its angle brackets

# C0 controls (CR, LF, TAB, NUL...), DEL, C1 controls (NEL among them) and the Unicode line and
# paragraph separators: any of them can end a header line for some parser.
_NOT_IN_ADDRESS = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]")  # controls and the space
_CONTROL_RUNS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# atext and spaces (RFC 5322 §3.2.3): a phrase of these words needs no quoting or encoding
_PLAIN = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+$")
# An encoded word is at most 75 characters (RFC 2047 §2): "=?utf-8?b?" + 60 base64 + "?=" is 72.
_EW_BYTES = 45


def clean(value: str, limit: int | None = None) -> str:
    """A value fit for one header line: controls and runs of white space become one space, capped.

    Cut values end with an ellipsis, so a reader sees the cut.
    """
    value = " ".join(_CONTROL_RUNS.sub(" ", value).split())
    if limit is not None and len(value) > limit:
        value = value[: limit - 1].rstrip() + "…"
    return value


def checked_address(email: str) -> str:
    """The address itself, refused if it could break a header or a command line."""
    if len(email) > MAX_ADDRESS or _NOT_IN_ADDRESS.search(email) or "@" not in email:
        raise UnsendableAddress(f"{clean(email, 80)!r}: not a usable address (too long, no @, white space)")
    return email


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 B-encoded words of at most 75 characters, never cutting a UTF-8 sequence."""
    data = text.encode("utf-8")
    words = []
    start = 0
    while start < len(data):
        end = min(start + _EW_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a continuation byte: cut before it
            end -= 1
        words.append(f"=?utf-8?b?{base64.b64encode(data[start:end]).decode('ascii')}?=")
        start = end
    return words


def _quoted(word: str) -> str:
    return word if _ATOM.match(word) else '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def phrase(name: str) -> list[str]:
    """A cleaned display name as header words: atoms, quoted strings, or encoded words."""
    if not name.isascii() or "=?" in name:
        # "=?" could be read as the start of an encoded word: a name that looks like one is
        # encoded itself, so readers see its characters, not what they would decode to.
        # Spaces travel inside the encoded words: white space between two of them is dropped
        # by decoders (RFC 2047 §6.2), so the words may be folded apart freely.
        return _encoded_words(name)
    return [_quoted(word) for word in name.split(" ")]


def fold(field: str, words: list[str]) -> str:
    """`Field: w1 w2 ...` with CRLF, folded before a word that would pass 78 characters."""
    lines = []
    line = f"{field}:"
    for word in words:
        if len(line) + 1 + len(word) > LINE and line != f"{field}:":
            lines.append(line)
            line = ""
        line = f"{line} {word}"
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def display_name(name: str) -> str:
    """A name for a header or an API's name field: cleaned and capped (as `address_header` does)."""
    if len(name) <= MAX_DISPLAY_NAME and _PLAIN.match(name) and "=?" not in name:  # the common case
        return name
    return clean(name, MAX_DISPLAY_NAME)


def address_header(field: str, name: str, email: str) -> str:
    """`From:`/`To:` with a name from data: cleaned, capped, quoted or encoded, folded; with CRLF.

    `email` must already be checked (`checked_address`, or the transports' `relay_address`).
    """
    if name and len(name) <= MAX_DISPLAY_NAME and _PLAIN.match(name) and "=?" not in name:
        line = f"{field}: {name} <{email}>"
        return line + "\r\n" if len(line) <= LINE else f"{field}: {name}\r\n <{email}>\r\n"
    name = clean(name, MAX_DISPLAY_NAME)
    if not name:
        return f"{field}: {email}\r\n"
    return fold(field, [*phrase(name), f"<{email}>"])
