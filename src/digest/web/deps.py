"""What the routes depend on: the site (settings, database, clock, renderer, page helpers) and a
FastAPI dependency that resolves a link token to its reader once (issue 13).

A token that does not verify, or whose subscriber is gone, raises BadLink wherever it is met;
the app answers every BadLink with the same "This link is not valid" page (web/app.py).
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from fastapi import Request
from fastapi.responses import HTMLResponse
from sqlmodel import Session

from digest.clock import Clock
from digest.config import Settings
from digest.db.engine import session_scope
from digest.db.models import Subscriber
from digest.db.queries import existing_edition_id
from digest.errors import TokenError
from digest.newsletter import Newsletter
from digest.render.copies import Renderer
from digest.subscribers.roster import Via
from digest.tokens import LinkToken, subscriber_for
from digest.web.guard import page_response


class BadLink(Exception):
    """Raised when a link token does not verify or names a subscriber who no longer exists."""


@dataclass(frozen=True)
class Site:
    """One newsletter's web app: what every router is built with."""

    settings: Settings
    newsletter: Newsletter
    engine: sa.Engine
    clock: Clock
    renderer: Renderer

    def page(self, template: str, status: int = 200, **context: object) -> HTMLResponse:
        """One of our pages, with the newsletter's details."""
        return page_response(
            self.renderer.env, template, status, newsletter=self.newsletter.newsletter, **context
        )

    def message(
        self, heading: str, text: str, *, status: int = 200, action: str = "", button: str = ""
    ) -> HTMLResponse:
        """A short page: a heading, a sentence, and maybe one button that posts to `action`."""
        return self.page(
            "web/message.html.j2", status, heading=heading, text=text, action=action, button=button
        )

    def bad_link(self) -> HTMLResponse:
        """The answer to every BadLink."""
        return self.message(
            "This link is not valid",
            "It may have been cut or altered. Use the unsubscribe link in the latest email, "
            "or reply to it and we will remove you by hand.",
            status=400,
        )


@dataclass(frozen=True)
class Reader:
    """The reader a verified link token names; `open()` looks them up in a transaction."""

    token: str
    link: LinkToken
    engine: sa.Engine

    @contextmanager
    def open(self) -> Iterator[tuple[Session, Subscriber]]:
        """A transaction with the link's subscriber in it; BadLink when they are gone."""
        with session_scope(self.engine) as session:
            subscriber = subscriber_for(self.link, session=session)
            if subscriber is None:
                raise BadLink
            yield session, subscriber

    def via(self, request: Request, *, session: Session) -> Via:
        """Where a change came from, for its event: the edition the link was in, the browser."""
        return Via(
            edition_id=existing_edition_id(self.link.edition_id, session=session),
            user_agent=request.headers.get("user-agent"),
            ip=request.client.host if request.client else None,
        )


def reader_of(site: Site) -> Callable[[str], Reader]:
    """The dependency: the path's `{token}` verified once, as a Reader (BadLink otherwise)."""

    def reader(token: str) -> Reader:
        try:
            link = site.renderer.signer.verify(token)
        except TokenError:
            raise BadLink from None
        return Reader(token, link, site.engine)

    return reader
