"""Untrusted feed text made safe: sanitized HTML, plain-text titles, canonical http(s) URLs, bounded.

Everything a feed says passes through here before it is stored (issue 12): control characters
are dropped (PostgreSQL text cannot hold NUL; the others have no business in a headline), every
field has a length bound, and only http(s) links survive, in an entry's own link and in its summary.
"""

import functools
import html
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import nh3

if TYPE_CHECKING:
    import regex

# A digest card needs text structure and links, nothing that runs, styles or tracks.
ALLOWED_TAGS = frozenset(
    {"a", "b", "strong", "i", "em", "p", "br", "ul", "ol", "li", "blockquote", "code", "pre"}
)
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}}
# Only web links reach an email or a page: javascript:, data:, vbscript:, file:, mailto: and the
# rest are dropped, however they are spelled (issue 12 row 7).
URL_SCHEMES = frozenset({"http", "https"})

# Bounds at the edge (issue 12 row 18): longer text is cut with an ellipsis. A headline past
# 300 characters is no headline; a summary is shortened again when rendered (render/email.py).
TITLE_MAX = 300
AUTHOR_MAX = 200
TAG_MAX = 100
TAGS_MAX = 30  # categories kept per entry
SUMMARY_MAX = 20_000  # characters of feed HTML read per entry (story matching reads 2,000)
GUID_MAX = 1_000  # longer IDs are dropped: PostgreSQL cannot index a value of ~2,700 bytes
URL_MAX = 2_000  # longer links are refused: browsers and mail clients cut them anyway
ELLIPSIS = "…"

# Query parameters that only identify a campaign or a click, never the page itself.
TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "mc_cid",
        "mc_eid",
        "igshid",
        "yclid",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "oly_anon_id",
        "oly_enc_id",
        "vero_id",
        "ref_src",
    }
)

# nh3.clean's options for a summary, but for relative links (which depend on the entry).
_CLEAN: dict[str, Any] = {
    "tags": set(ALLOWED_TAGS),
    "attributes": {k: set(v) for k, v in ALLOWED_ATTRIBUTES.items()},
    "url_schemes": set(URL_SCHEMES),
    "link_rel": "noopener noreferrer",
    "strip_comments": True,
}
_TAG = re.compile(r"<[^>]*>")
_ABSOLUTE = re.compile(r"^https?://", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
# C0 controls but tab, LF and CR; DEL and the C1 controls; lone surrogates (a JSON "\ud800" decodes
# to one, and neither UTF-8 nor nh3 can carry it); the two non-characters U+FFFE and U+FFFF.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


@functools.cache
def _graphemes() -> "regex.Pattern[str]":
    """One user-perceived character (UAX #29 extended grapheme cluster). `regex` is loaded on the
    first text to shorten: the collect stage, which imports this module, never shortens."""
    import regex

    return regex.compile(r"\X")


def strip_controls(text: str) -> str:
    """The text without control characters (tab and line breaks are kept)."""
    return _CONTROL.sub("", text)


def shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters with an ellipsis, between whole graphemes.

    A flag, an emoji family or a letter with its accents is never split; a cut falls at a space
    when there is one in the last fifth, so words stay whole.
    """
    if len(text) <= limit:
        return text
    room = limit - len(ELLIPSIS)
    end = 0
    for match in _graphemes().finditer(text):
        if match.end() > room:
            break
        end = match.end()
    if end == 0:  # a single "character" longer than the limit (a base with 1,000 accents)
        end = room
    space = text.rfind(" ", room * 4 // 5, end + 1)
    return text[: space if space > 0 else end].rstrip() + ELLIPSIS


def sanitize_html(fragment: str, *, base_url: str | None = None, limit: int = SUMMARY_MAX) -> str:
    """Reduce feed HTML to a safe subset with http(s) links only; read at most `limit` chars.

    Relative links resolve against `base_url`; without one (or with one a browser could not
    parse) they are dropped (an email has no base). The links are judged inside nh3, by the
    WHATWG URL parser browsers use: " JaVa\\tScRiPt:..." is the javascript: link a browser would
    follow, and is dropped; no Python callback runs per attribute (issue 15: that callback was
    two thirds of a summary's cost).
    """
    relative: nh3.UrlRelative = ("rewrite_with_base", base_url) if base_url else "deny"
    text = strip_controls(fragment)
    read = min(len(text), limit)
    while True:
        try:
            cleaned = nh3.clean(text[:read], url_relative=relative, **_CLEAN).strip()
        except ValueError:
            if relative == "deny":
                raise
            relative = "deny"  # nh3 could not parse the base: no relative link survives
            continue
        cut = read < len(text)
        over = len(cleaned) + (len(ELLIPSIS) if cut else 0) - limit
        if over <= 0 or read == 0:
            return cleaned + ELLIPSIS if cut else cleaned
        # Escaping ("&" -> "&amp;") and closing tags make the output longer than what was read.
        read = max(0, read - over - 16)


def plain_text(fragment: str, *, limit: int | None = None) -> str:
    """Text of an HTML-ish title: tags dropped, entities decoded, controls and runs of spaces gone."""
    fragment = strip_controls(fragment)
    if "<" in fragment or "&" in fragment:  # most titles have nothing to drop or decode
        fragment = strip_controls(html.unescape(_TAG.sub(" ", nh3.clean(fragment, tags=set()))))
    text = _SPACE.sub(" ", fragment).strip()
    return shorten(text, limit) if limit is not None else text


def web_url(url: str) -> str | None:
    """The URL if it is an absolute http(s) link with a host, else None.

    Python's urlsplit drops leading controls and spaces and tabs/line breaks inside, and lowers
    the scheme, as browsers do: " JaVa\\tScRiPt:..." is seen as the javascript: link it is.
    """
    return url if _web_parts(url) is not None else None


def _web_parts(url: str) -> SplitResult | None:
    """urlsplit(url) when the URL is an absolute http(s) link with a host, else None."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. "http://[broken/"
        return None
    if parts.scheme.lower() not in URL_SCHEMES or not host or _CONTROL.search(url):
        return None
    return parts


def canonical_url(url: str, *, base_url: str | None = None) -> str:
    """The URL that identifies an article: absolute http(s), lower-case host, no fragment or tracking.

    Raises ValueError for anything else (another scheme, no host, a control character, too long):
    an entry whose own link is not a web page is not stored.
    """
    url = url.strip()
    if base_url and not _ABSOLUTE.match(url):
        url = urljoin(base_url, url)
    if len(url) > URL_MAX:
        raise ValueError(f"link longer than {URL_MAX:,} characters")
    parts = _web_parts(url)
    if parts is None:
        raise ValueError(f"not an http(s) link: {url[:80]!r}")
    host = (parts.hostname or "").lower()
    if parts.port and not (
        (parts.scheme == "http" and parts.port == 80) or (parts.scheme == "https" and parts.port == 443)
    ):
        host = f"{host}:{parts.port}"
    query = ""
    if parts.query:
        query = urlencode(
            [
                (k, v)
                for k, v in parse_qsl(parts.query, keep_blank_values=True)
                if not k.lower().startswith("utm_") and k.lower() not in TRACKING_PARAMS
            ]
        )
    path = parts.path or "/"
    return urlunsplit((parts.scheme.lower(), host, path, query, ""))
