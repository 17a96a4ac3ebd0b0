"""The public archive: the list of sent editions and each one as a page (render/archive.py)."""

from datetime import date

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from digest.db.engine import session_scope
from digest.db.queries import sent_editions
from digest.render.archive import archive_html
from digest.web.deps import Site
from digest.web.guard import archive_response
from digest.web.landing import with_feed_link


def archive_pages(site: Site) -> APIRouter:
    """GET /archive/ and GET /archive/{day}."""
    router = APIRouter()

    @router.get("/archive/", response_class=HTMLResponse)
    def archive_index() -> HTMLResponse:
        with session_scope(site.engine) as session:
            editions = sent_editions(session=session)
        return site.page("web/archive.html.j2", editions=editions)

    @router.get("/archive/{day}", response_class=HTMLResponse)
    def archive_edition(day: str) -> HTMLResponse:
        try:
            parsed = date.fromisoformat(day)
        except ValueError:
            return site.message("Not found", f"{day!r} is not a date.", status=404)
        html = archive_html(site.settings, engine=site.engine, day=parsed, renderer=site.renderer)
        if html is None:
            return site.message("Not found", f"No edition was sent on {parsed}.", status=404)
        return archive_response(with_feed_link(html, site.newsletter.newsletter.title))

    return router
