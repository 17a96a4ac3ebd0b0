"""A sent edition as a public web page (the archive): every topic, no personal data, no working token."""

from datetime import date

import sqlalchemy as sa

from digest import compose, followups
from digest.config import Settings
from digest.db import queries
from digest.db.engine import session_scope
from digest.render.copies import Renderer
from digest.render.email import archive_values


def archive_html(settings: Settings, *, engine: sa.Engine, day: date, renderer: Renderer) -> str | None:
    """A sent edition as a public web page: every topic, no personal data, no working token, and
    under each story the later follow-ups sent since (issue 16)."""
    with session_scope(engine) as session:
        sent = queries.edition_for(day, session=session)
        if sent is None or sent.sent_at is None or sent.story_count == 0:
            return None  # an edition with no stories was sent to nobody
        edition = compose.Edition.from_json(sent.content_json)
        edition = compose.with_later(edition, followups.later_refs(edition, session=session))
    return renderer.archive_for(edition).html.fill(archive_values(settings.base_url))
