"""The web app's edge: request bodies bounded while they stream, and security headers on every answer.

Both are plain ASGI middleware around the FastAPI app, so they hold for every route, present and
future, before any route reads a byte (issue 12).
"""

import logging
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import jinja2
from fastapi.responses import HTMLResponse

from digest.subscribers.webhooks import MAX_BODY as WEBHOOK_MAX_BODY

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FORM_MAX_BODY = 64 * 1024  # sign-up, preferences, unsubscribe: a few hundred bytes in practice

# The pages digest renders itself: no script or style but their own (the nonce), no framing
# (clickjacking of the unsubscribe and confirm buttons), forms post only back here.
PAGE_POLICY = (
    "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# An archived edition is the email's HTML: styles live in style="" attributes (email clients
# ignore stylesheets), so inline styles are allowed there; scripts, forms and framing are not.
ARCHIVE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; font-src https:; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# JSON, plain text and anything else that did not set its own.
DEFAULT_POLICY = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
COMPANION_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    # Tokens are in our URLs: another site learns at most our origin, never a path.
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
    (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers that predate it
)


def body_limit(path: str) -> int:
    """The most bytes a request to `path` may carry."""
    return WEBHOOK_MAX_BODY if path.startswith("/webhooks/") else FORM_MAX_BODY


async def _answer(send: Send, status: int, text: str) -> None:
    # Connection: close makes the server stop reading what is left of the body and hang up.
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuses a body over its route's limit with 413: up front by Content-Length, else while it
    streams (chunked bodies declare no length). The body is read here, at most `limit` bytes,
    before the route runs, so no route ever sees (or acts on) a request that is too large."""

    def __init__(self, app: ASGIApp, limit: Callable[[str], int] = body_limit) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the body within the limit and hand it on, or answer 413 / 400."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, limit = scope["path"], self.limit(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and not declared.isdigit():
            await _answer(send, 400, "bad Content-Length")
            return
        if declared is not None and int(declared) > limit:
            log.info("request body refused path=%s declared=%s limit=%d", path, declared.decode(), limit)
            await _answer(send, 413, f"body too large (at most {limit} bytes)")
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: nothing to answer
            body += message.get("body", b"")
            if len(body) > limit:
                log.info("request body refused path=%s read=%d limit=%d", path, len(body), limit)
                await _answer(send, 413, f"body too large (at most {limit} bytes)")
                return
            if not message.get("more_body", False):
                break
        whole: Message | None = {"type": "http.request", "body": bytes(body), "more_body": False}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()  # after the body: a disconnect, when it comes

        await self.app(scope, replay, send)


class SecurityHeaders:
    """Adds nosniff, a referrer policy and no-framing to every answer, and a strict
    Content-Security-Policy to any answer that did not set its own (pages set theirs)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, adding the headers to the response start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in COMPANION_HEADERS if n not in names]
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", DEFAULT_POLICY.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def page_response(env: jinja2.Environment, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page of ours, rendered with a fresh CSP nonce that its <style> and <script> carry."""
    nonce = secrets.token_urlsafe(16)
    body = env.get_template(template).render(csp_nonce=nonce, **context)
    response = HTMLResponse(body, status_code=status)
    response.headers["Content-Security-Policy"] = PAGE_POLICY.format(nonce=nonce)
    return response


def archive_response(html: str) -> HTMLResponse:
    """An archived edition (the email's own HTML) under the archive policy."""
    response = HTMLResponse(html)
    response.headers["Content-Security-Policy"] = ARCHIVE_POLICY
    return response
