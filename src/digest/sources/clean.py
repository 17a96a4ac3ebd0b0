"""Untrusted feed text made safe: sanitized HTML, plain-text titles, canonical URLs."""

import html
import re
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import nh3

# A digest card needs text structure and links, nothing that runs, styles or tracks.
ALLOWED_TAGS = frozenset(
    {"a", "b", "strong", "i", "em", "p", "br", "ul", "ol", "li", "blockquote", "code", "pre"}
)
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}}
URL_SCHEMES = frozenset({"http", "https", "mailto"})

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

_TAG = re.compile(r"<[^>]*>")
_ABSOLUTE = re.compile(r"^https?://", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def sanitize_html(fragment: str, *, base_url: str | None = None) -> str:
    """Reduce feed HTML to a safe subset; relative links resolve against `base_url`."""

    def rewrite(element: str, attribute: str, value: str) -> str | None:
        if element == "a" and attribute == "href":
            absolute = urljoin(base_url, value) if base_url else value
            return absolute if urlsplit(absolute).scheme in URL_SCHEMES else None
        return value

    cleaned = nh3.clean(
        fragment,
        tags=set(ALLOWED_TAGS),
        attributes={k: set(v) for k, v in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        attribute_filter=rewrite,
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
    return cleaned.strip()


def plain_text(fragment: str) -> str:
    """Text of an HTML-ish title: tags dropped, entities decoded, whitespace collapsed."""
    if "<" not in fragment and "&" not in fragment:  # most titles: nothing to drop or decode
        return _SPACE.sub(" ", fragment).strip()
    text = html.unescape(_TAG.sub(" ", nh3.clean(fragment, tags=set())))
    return _SPACE.sub(" ", text).strip()


def canonical_url(url: str, *, base_url: str | None = None) -> str:
    """The URL that identifies an article: absolute, lower-case host, no fragment or tracking."""
    url = url.strip()
    if base_url and not _ABSOLUTE.match(url):
        url = urljoin(base_url, url)
    parts = urlsplit(url)
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
    path = parts.path or ("/" if host else "")
    return urlunsplit((parts.scheme.lower(), host, path, query, ""))
