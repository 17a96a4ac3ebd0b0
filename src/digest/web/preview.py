"""`digest preview --serve`: a local admin page showing recent editions as subscribers get them.

Each edition is shown at phone (375 px) and desktop (700 px) widths with its text part beside
them. Every request renders afresh from the template files, and the page polls a fingerprint of
those files, so editing a template reloads the page. Nothing here sends or saves anything.
"""

import hashlib
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from digest import editions, pipeline
from digest.clock import Clock, local_date, system_clock
from digest.config import Settings
from digest.db import queries
from digest.db.engine import session_scope
from digest.errors import DigestError
from digest.newsletter import Newsletter
from digest.render.email import bundled_templates_dir, make_environment, subject_for
from digest.web.desk import AdminGate, desk_router

RECENT = 14
WIDTHS = (375, 700)


@dataclass(frozen=True, slots=True)
class ListedEdition:
    """One line of the preview index."""

    date: date
    subject: str
    story_count: int
    state: str  # sent, built or draft


def templates_fingerprint(user_dir: Path | None) -> str:
    """Changes whenever a template file is added, removed or edited."""
    digest = hashlib.sha256()
    for folder in (user_dir, bundled_templates_dir()):
        if folder is None or not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path}\0{stat.st_mtime_ns}\0{stat.st_size}\n".encode())
    return digest.hexdigest()[:16]


def recent_editions(
    settings: Settings, newsletter: Newsletter, *, engine: sa.Engine, clock: Clock
) -> list[ListedEdition]:
    """Today's edition (built or a draft) and the most recent ones before it, newest first."""
    now = clock()
    today = local_date(settings.zone, now)
    with session_scope(engine) as session:
        rows = [
            ListedEdition(e.date, e.subject, e.story_count, "sent" if e.sent_at else "built")
            for e in queries.recent_editions(session=session, limit=RECENT)
        ]
        if all(r.date != today for r in rows):
            draft = editions.compose_draft(
                newsletter, session=session, edition_date=today, now=now, zone=settings.zone
            )
            subject = subject_for(newsletter.newsletter, draft)
            rows.insert(0, ListedEdition(today, subject, draft.story_count, "draft"))
    return sorted(rows, key=lambda r: r.date, reverse=True)


def create_preview_app(
    settings: Settings,
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    clock: Clock = system_clock,
) -> FastAPI:
    """The preview web app for one newsletter and database (bind it to localhost only)."""
    app = FastAPI(title=f"{newsletter.newsletter.title} (preview)", docs_url=None, redoc_url=None)
    info = newsletter.newsletter

    def page(template: str, status: int = 200, **context: object) -> HTMLResponse:
        env = make_environment(settings.templates_dir)
        body = env.get_template(template).render(
            newsletter=info, version=templates_fingerprint(settings.templates_dir), **context
        )
        return HTMLResponse(body, status_code=status)

    def build(day: str, subscriber: str | None) -> pipeline.Preview:
        try:
            edition_date = date.fromisoformat(day)
        except ValueError:
            raise DigestError(f"{day!r} is not a date like 2026-11-25") from None
        return pipeline.preview(
            settings,
            newsletter,
            engine=engine,
            edition_date=edition_date,
            now=clock(),
            subscriber_email=subscriber or None,
        )

    def problem(error: DigestError, status: int = 500) -> HTMLResponse:
        # Shown in the frame; the page keeps polling, so fixing the template brings the email back.
        return page("web/preview_error.html.j2", status, error=str(error))

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        editions = recent_editions(settings, newsletter, engine=engine, clock=clock)
        return page("web/preview_index.html.j2", editions=editions)

    @app.get("/edition/{day}", response_class=HTMLResponse)
    def edition(day: str, subscriber: str = "") -> HTMLResponse:
        query = f"?subscriber={quote(subscriber)}" if subscriber else ""
        framed = partial(
            page, "web/preview_edition.html.j2", day=day, subscriber=subscriber, query=query, widths=WIDTHS
        )
        try:
            result = build(day, subscriber)
        except DigestError as e:
            return framed(subject="", text="", error=str(e))
        return framed(
            subject=result.message.subject,
            text=result.message.text,
            error="",
            draft=not result.built,
            size=len(result.message.html.encode()),
        )

    @app.get("/render/{day}.html", response_class=HTMLResponse)
    def html_part(day: str, subscriber: str = "") -> HTMLResponse:
        try:
            return HTMLResponse(build(day, subscriber).message.html)
        except DigestError as e:
            return problem(e)

    @app.get("/render/{day}.txt", response_class=PlainTextResponse)
    def text_part(day: str, subscriber: str = "") -> Response:
        try:
            return PlainTextResponse(build(day, subscriber).message.text)
        except DigestError as e:
            return PlainTextResponse(str(e), status_code=500)

    @app.get("/render/{day}.mjml", response_class=PlainTextResponse)
    def mjml_source(day: str, subscriber: str = "") -> Response:
        try:
            return PlainTextResponse(build(day, subscriber).rendered.mjml)
        except DigestError as e:
            return PlainTextResponse(str(e), status_code=500)

    @app.get("/render/{day}.eml")
    def eml(day: str, subscriber: str = "") -> Response:
        try:
            data = build(day, subscriber).eml(clock())
        except DigestError as e:
            return PlainTextResponse(str(e), status_code=500)
        return Response(data, media_type="message/rfc822")

    app.include_router(desk_router(settings, newsletter, engine=engine, clock=clock))
    if settings.admin_token is not None:
        app.add_middleware(AdminGate, token=settings.admin_token.get_secret_value())

    @app.get("/version")
    def version() -> JSONResponse:
        return JSONResponse({"templates": templates_fingerprint(settings.templates_dir)})

    return app
