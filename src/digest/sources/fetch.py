"""Fetch a source's bytes: http(s) through httpx (timeouts, size cap, conditional GET), or a file."""

from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from digest import __version__
from digest.errors import SourceError
from digest.sources.model import Fetched

USER_AGENT = f"digest/{__version__} (+https://github.com/digest-newsletter/digest; feed reader)"
MAX_BYTES = 10 * 1024 * 1024  # a real feed is well under this; more is a mistake or an attack
TIMEOUT = httpx.Timeout(connect=10.0, read=20.0, write=10.0, pool=30.0)
MAX_REDIRECTS = 5


def make_client(*, user_agent: str = USER_AGENT, timeout: httpx.Timeout = TIMEOUT) -> httpx.Client:
    """One HTTP client for a whole collection run (connections are reused per host)."""
    return httpx.Client(
        headers={"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"},
        timeout=timeout,
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
    )


def fetch(
    name: str,
    location: str,
    *,
    client: httpx.Client,
    etag: str | None = None,
    last_modified: str | None = None,
    max_bytes: int = MAX_BYTES,
) -> Fetched:
    """Fetch one source; raise SourceError naming the source on any expected failure."""
    scheme = urlsplit(location).scheme.lower()
    if scheme in ("http", "https"):
        return _fetch_http(name, location, client, etag, last_modified, max_bytes)
    if scheme == "file":
        return _read_file(name, Path(unquote(urlsplit(location).path)), max_bytes)
    if scheme and len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise SourceError(f"source {name!r}: unsupported URL scheme {scheme!r} in {location!r}")
    return _read_file(name, Path(location), max_bytes)


def _fetch_http(
    name: str,
    url: str,
    client: httpx.Client,
    etag: str | None,
    last_modified: str | None,
    max_bytes: int,
) -> Fetched:
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        with client.stream("GET", url, headers=headers) as response:
            if response.status_code == 304:
                return Fetched(url=str(response.url), body=None, etag=etag, last_modified=last_modified)
            if response.status_code >= 400:
                raise SourceError(f"source {name!r}: HTTP {response.status_code} from {url}")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise SourceError(
                    f"source {name!r}: response of {int(declared):,} bytes exceeds the "
                    f"{max_bytes:,}-byte limit ({url})"
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise SourceError(
                        f"source {name!r}: response cut off after {max_bytes:,} bytes (limit) ({url})"
                    )
                chunks.append(chunk)
            resp_headers = {k.lower(): v for k, v in response.headers.items()}
            return Fetched(
                url=str(response.url),
                body=b"".join(chunks),
                headers=resp_headers,
                etag=response.headers.get("etag"),
                last_modified=response.headers.get("last-modified"),
            )
    except httpx.TimeoutException as e:
        raise SourceError(f"source {name!r}: timed out fetching {url} ({type(e).__name__})") from e
    except httpx.TooManyRedirects as e:
        raise SourceError(f"source {name!r}: more than {MAX_REDIRECTS} redirects from {url}") from e
    except httpx.HTTPError as e:
        raise SourceError(f"source {name!r}: cannot fetch {url}: {e}") from e


def _read_file(name: str, path: Path, max_bytes: int) -> Fetched:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise SourceError(f"source {name!r}: file {path} is {size:,} bytes, over the limit")
        body = path.read_bytes()
    except OSError as e:
        raise SourceError(f"source {name!r}: cannot read {path}: {e.strerror or e}") from e
    return Fetched(url=path.resolve().as_uri(), body=body)
