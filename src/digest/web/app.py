"""The web app factory: middleware, then the routers (web/pages.py: unsubscribe and preferences;
web/signup.py; web/landing.py; web/archive.py; web/webhooks.py), health and robots.txt."""

from collections.abc import Callable

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

from digest.clock import Clock, system_clock
from digest.config import Settings
from digest.deliver.base import Transport
from digest.deliver.transports import make_transport
from digest.newsletter import Newsletter
from digest.render.copies import make_renderer
from digest.schedule.status import health as scheduler_health
from digest.web.archive import archive_pages
from digest.web.deps import BadLink, Site
from digest.web.guard import BodyLimit, SecurityHeaders
from digest.web.landing import add_landing_routes
from digest.web.pages import reader_pages
from digest.web.signup import add_signup_routes
from digest.web.webhooks import webhook_routes


def create_app(
    settings: Settings,
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    clock: Clock = system_clock,
    transport_factory: Callable[[], Transport] | None = None,
) -> FastAPI:
    """The web app for one newsletter and database."""
    app = FastAPI(title=f"{newsletter.newsletter.title} (digest)", docs_url=None, redoc_url=None)
    # The last added is outermost: SecurityHeaders wraps BodyLimit, so even a 413 carries them;
    # BodyLimit wraps every route, so no route reads more than its limit.
    app.add_middleware(BodyLimit)
    app.add_middleware(SecurityHeaders)
    site = Site(settings, newsletter, engine, clock, make_renderer(settings, newsletter))
    confirm_by_email = add_signup_routes(
        app,
        settings,
        newsletter,
        engine=engine,
        env=site.renderer.env,
        clock=clock,
        transport_factory=transport_factory or (lambda: make_transport(settings, clock=clock)),
    )

    add_landing_routes(app, settings, newsletter, engine=engine, env=site.renderer.env, clock=clock)

    @app.exception_handler(BadLink)
    def bad_link(request: Request, error: BadLink) -> HTMLResponse:
        return site.bad_link()

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        try:
            body = scheduler_health(engine, now=clock())
        except sa.exc.SQLAlchemyError as e:  # monitoring wants a status, not a stack trace
            return JSONResponse({"status": "error", "database": str(getattr(e, "orig", e))}, status_code=503)
        return JSONResponse({"status": "ok", **body})

    app.include_router(reader_pages(site, confirm_by_email=confirm_by_email))
    app.include_router(webhook_routes(site))
    app.include_router(archive_pages(site))

    @app.get("/robots.txt", response_class=PlainTextResponse)
    def robots() -> str:
        return "User-agent: *\nDisallow: /unsubscribe/\nDisallow: /preferences/\nDisallow: /confirm/\n"

    return app
