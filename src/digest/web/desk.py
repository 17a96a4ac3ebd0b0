"""The editor's page (issue 14): the desk of `digest preview --serve`, in a browser.

For the selected day it shows the draft by topic with each story's topic reason (what `digest
topics` prints) and buttons to drop, pin, move or split it, the editor's note, the approve button,
the sources' health and the last editions' sent and unsubscribe counts. Every button is a POST
form carrying a CSRF token (made per server start, compared in constant time), answered with a
303 back to the page; the pages carry the web app's strict Content-Security-Policy (web/guard.py:
no script or style but their own, forms post only here, no framing).

The preview server listens on 127.0.0.1 unless DIGEST_ADMIN_TOKEN is set; with the token set,
every request must carry it: the /login form puts it in an HttpOnly, SameSite=Strict cookie, or
a script sends `Authorization: Bearer TOKEN` (AdminGate, around the whole preview app).
"""

import hmac
import logging
import secrets
from datetime import date
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from digest import desk
from digest.clock import Clock, local_date
from digest.config import Settings
from digest.db import queries
from digest.db.engine import session_scope
from digest.deliver.stats import edition_stats
from digest.errors import DigestError, EditorError
from digest.newsletter import Newsletter
from digest.render.email import make_environment
from digest.schedule import approval
from digest.sources.health import source_health
from digest.web.guard import ASGIApp, Receive, Scope, Send, page_response

log = logging.getLogger(__name__)

COOKIE = "digest_admin"
RECENT_STATS = 5  # editions whose counts the page shows


def _equal(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class AdminGate:
    """Lets a request through only with the admin token (cookie or bearer header), except the
    login form itself; ASGI middleware, so it holds for every route of the preview app."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass an authenticated request on; answer anything else with the login form (401)."""
        if scope["type"] != "http" or scope["path"] == "/login" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        response = HTMLResponse(_LOGIN, status_code=401)
        response.headers["Content-Security-Policy"] = "default-src 'none'; form-action 'self'"
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        headers = dict(scope["headers"])
        bearer = headers.get(b"authorization", b"").decode("latin-1")
        if bearer.startswith("Bearer ") and _equal(bearer[7:].strip(), self.token):
            return True
        for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and _equal(value, self.token):
                return True
        return False


_LOGIN = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Editor's page: sign in</title></head>
<body><form method="post" action="/login"><p><label>Admin token (DIGEST_ADMIN_TOKEN)<br>
<input type="password" name="token" autocomplete="current-password" required></label></p>
<p><button type="submit">Sign in</button></p></form></body></html>"""


def desk_router(settings: Settings, newsletter: Newsletter, *, engine: sa.Engine, clock: Clock) -> APIRouter:
    """The editor's routes, to include in the preview app."""
    router = APIRouter()
    csrf = secrets.token_urlsafe(32)  # per server start: a page from before a restart asks again
    admin = settings.admin_token.get_secret_value() if settings.admin_token else None

    def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        env = make_environment(settings.templates_dir)
        return page_response(env, template, status, newsletter=newsletter.newsletter, **context)

    def day_of(value: str) -> date:
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise EditorError(f"{value[:40]!r} is not a date like 2026-11-25") from None

    def view(day: date, *, done: str = "", error: str = "", status: int = 200) -> HTMLResponse:
        now = clock()
        state = desk.show(newsletter, engine=engine, edition_date=day, now=now, zone=settings.zone)
        with session_scope(engine) as session:
            health = source_health(newsletter, session=session, alert=settings.source_failure_alert)
            stats = [
                edition_stats(e, session=session)
                for e in queries.recent_editions(session=session, limit=RECENT_STATS)
            ]
            gate = (
                approval.verdict(settings, day, session=session, now=now)
                if settings.require_approval
                else None
            )
        by_topic: dict[str, list[desk.DeskStory]] = {name: [] for name in newsletter.topic_names}
        left_out = []
        for story in state.stories:
            if story.state in ("in", "pinned"):
                by_topic.setdefault(story.topic, []).append(story)
            else:
                left_out.append(story)
        return page(
            "web/desk.html.j2",
            status,
            desk=state,
            day=day,
            today=local_date(settings.zone, now),
            topics=[(name, stories) for name, stories in by_topic.items() if stories],
            topic_names=newsletter.topic_names,
            left_out=left_out,
            health=health,
            stats=stats,
            gate=gate,
            fallback=settings.approval_fallback,
            csrf=csrf,
            done=done,
            error=error,
        )

    async def checked_form(request: Request) -> dict[str, str]:
        form = await request.form()
        if not _equal(str(form.get("csrf") or ""), csrf):
            raise _Forbidden
        return {k: str(v) for k, v in form.items()}

    @router.get("/desk")
    def desk_today() -> Response:
        return RedirectResponse(f"/desk/{local_date(settings.zone, clock())}", status_code=303)

    @router.get("/desk/{day}", response_class=HTMLResponse)
    def desk_page(day: str, done: str = "") -> HTMLResponse:
        try:
            return view(day_of(day), done=done[:200])
        except DigestError as e:
            return page("web/message.html.j2", 400, heading="Editor's page", action="", text=str(e))

    @router.post("/desk/{day}")
    async def desk_action(day: str, request: Request) -> Response:
        try:
            form = await checked_form(request)
        except _Forbidden:
            return page(
                "web/message.html.j2",
                403,
                heading="Editor's page",
                action="",
                text="This form has expired: reload the page and try again.",
            )
        try:
            edition_date = day_of(day)
            action = form.get("action", "")
            now = clock()
            if action == "approve":
                line = desk.approve(
                    newsletter,
                    engine=engine,
                    edition_date=edition_date,
                    now=now,
                    zone=settings.zone,
                    horizon_days=settings.thread_horizon_days,
                    actor="web",
                )
            else:
                story = form.get("story", "")
                line = desk.decide(
                    newsletter,
                    engine=engine,
                    edition_date=edition_date,
                    action=action,
                    now=now,
                    zone=settings.zone,
                    story_id=int(story) if story.isdigit() else None,
                    topic=form.get("topic"),
                    note=form.get("note"),
                    actor="web",
                )
        except DigestError as e:
            try:
                return view(day_of(day), error=str(e), status=409)
            except DigestError:
                return page("web/message.html.j2", 400, heading="Editor's page", action="", text=str(e))
        return RedirectResponse(f"/desk/{edition_date}?done={quote(line)}", status_code=303)

    @router.get("/login", response_class=HTMLResponse)
    def login_form() -> HTMLResponse:
        return HTMLResponse(_LOGIN)

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        if admin is None or not _equal(str(form.get("token") or ""), admin):
            log.warning(
                "editor's page: wrong admin token from %s", request.client.host if request.client else "?"
            )
            return HTMLResponse(_LOGIN, status_code=401)
        response = RedirectResponse("/desk", status_code=303)
        response.set_cookie(
            COOKIE, admin, httponly=True, samesite="strict", secure=request.url.scheme == "https"
        )
        return response

    return router


class _Forbidden(Exception):
    """A POST without the page's CSRF token."""


def check_bind(host: str, settings: Settings) -> None:
    """Refuse to serve the editor's page beyond this machine without DIGEST_ADMIN_TOKEN."""
    if settings.admin_token is None and host not in ("127.0.0.1", "localhost", "::1"):
        raise EditorError(
            f"--host {host}: the editor's page changes editions, so without DIGEST_ADMIN_TOKEN it listens "
            "on 127.0.0.1 only (set the token, 32+ random characters, to serve it on another interface)"
        )
