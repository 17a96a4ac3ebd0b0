"""Web routes of the double opt-in: the hosted sign-up page and the confirmation link. Thin."""

import logging
from collections.abc import Callable
from datetime import timedelta

import jinja2
import sqlalchemy as sa
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import HTMLResponse

from digest.clock import Clock
from digest.config import Settings, resolve_secret_key
from digest.db.engine import session_scope
from digest.db.models import Subscriber
from digest.deliver.base import Transport
from digest.errors import SubscriberError, TokenError
from digest.newsletter import Newsletter
from digest.subscribers import optin
from digest.web.guard import page_response

log = logging.getLogger(__name__)


def add_signup_routes(
    app: FastAPI,
    settings: Settings,
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    env: jinja2.Environment,
    clock: Clock,
    transport_factory: Callable[[], Transport],
) -> Callable[[Subscriber, BackgroundTasks], None]:
    """GET/POST /subscribe and GET/POST /confirm/{token} on `app`; returns the function that
    mails a pending subscriber their confirmation link (after the answer is sent)."""
    info = newsletter.newsletter
    signer = optin.ConfirmSigner([resolve_secret_key(settings)])
    limiter = optin.RateLimiter(settings.subscribe_rate_limit, timedelta(hours=1))
    max_age = timedelta(hours=settings.confirm_expiry_hours)

    def page(template: str, status: int = 200, **context: object) -> HTMLResponse:
        return page_response(env, template, status, newsletter=info, **context)

    def message(heading: str, text: str, *, status: int = 200) -> HTMLResponse:
        return page("web/message.html.j2", status, heading=heading, text=text, action="", button="")

    def form(
        *, status: int = 200, error: str = "", email: str = "", chosen: frozenset[str] = frozenset()
    ) -> HTMLResponse:
        return page(
            "web/subscribe.html.j2",
            status,
            topics=newsletter.topic_names,
            chosen=chosen,
            error=error,
            email=email,
            send_time=settings.send_time.strftime("%H:%M"),
        )

    def check_inbox() -> HTMLResponse:
        # The same answer whatever the address's state: the form must not reveal who subscribed.
        return message(
            "Check your inbox",
            f"If this address can be subscribed, a message to confirm it is on its way. "
            f"Open the link in it within {settings.confirm_expiry_hours} hours to start receiving "
            f"{info.title}.",
        )

    def confirm_by_email(pending: Subscriber, background: BackgroundTasks) -> None:
        token = signer.sign(pending)
        outgoing = optin.confirmation_message(
            env, settings, newsletter, pending, confirm_url=f"{settings.base_url}/confirm/{token}"
        )
        # After the answer: a slow mail server must not make the page (or its timing) differ.
        background.add_task(optin.send_confirmation, outgoing, transport_factory)

    def client_ip(request: Request) -> str | None:
        return request.client.host if request.client else None

    @app.get("/subscribe", response_class=HTMLResponse)
    def subscribe_page() -> HTMLResponse:
        return form()

    @app.post("/subscribe", response_class=HTMLResponse)
    async def subscribe_post(request: Request, background: BackgroundTasks) -> HTMLResponse:
        now = clock()
        ip = client_ip(request)
        if not limiter.allow(ip or "unknown", now):
            return message(
                "Too many sign-ups", "Too many sign-ups from your network: try again in an hour.", status=429
            )
        data = await request.form()
        email = str(data.get("email") or "")
        topics = [str(t) for t in data.getlist("topic")]
        if str(data.get("website") or ""):  # the honeypot: a person never sees this field
            log.info("sign-up ignored: honeypot filled ip=%s", ip)
            return check_inbox()
        try:
            with session_scope(engine) as session:
                pending = optin.sign_up(
                    email,
                    session=session,
                    now=now,
                    known_topics=newsletter.topic_names,
                    topics=topics,
                    timezone=str(data.get("timezone") or "") or None,
                    ip=ip,
                    user_agent=request.headers.get("user-agent"),
                )
                if pending is not None:
                    confirm_by_email(pending, background)
        except SubscriberError as e:
            return form(status=400, error=str(e), email=email, chosen=frozenset(topics))
        return check_inbox()

    def link_of(token: str) -> optin.ConfirmLink | None:
        try:
            return signer.verify(token)
        except TokenError:
            return None

    def not_confirmable(state: str) -> HTMLResponse:
        if state == "already":
            return message("You are subscribed", f"This address already receives {info.title}.")
        if state == "expired":
            return message(
                "This link has expired",
                "Confirmation links work for a limited time. Sign up again at /subscribe to get a new one.",
                status=410,
            )
        return message(
            "This link is not valid",
            "It may have been cut, altered or replaced by a newer one. Sign up again at /subscribe.",
            status=400,
        )

    @app.api_route("/confirm/{token}", methods=["GET", "HEAD"], response_class=HTMLResponse)
    def confirm_page(token: str) -> HTMLResponse:
        # GET changes nothing: mail scanners fetch every link. The page's form POSTs.
        link = link_of(token)
        if link is None:
            return not_confirmable("invalid")
        with session_scope(engine) as session:
            state = optin.check_link(link, session=session, now=clock(), max_age=max_age)
        if state.status != "pending":
            return not_confirmable(state.status)
        return page("web/confirm.html.j2", email=link.email, action=f"/confirm/{token}")

    @app.post("/confirm/{token}", response_class=HTMLResponse)
    def confirm_post(token: str, request: Request) -> HTMLResponse:
        link = link_of(token)
        if link is None:
            return not_confirmable("invalid")
        with session_scope(engine) as session:
            result = optin.confirm(
                link,
                session=session,
                now=clock(),
                max_age=max_age,
                ip=client_ip(request),
                user_agent=request.headers.get("user-agent"),
            )
        if result.status != "confirmed":
            return not_confirmable(result.status)
        return message(
            "You are subscribed",
            f"Thank you. {info.title} arrives every day at {settings.send_time:%H:%M} in your time zone.",
        )

    return confirm_by_email
