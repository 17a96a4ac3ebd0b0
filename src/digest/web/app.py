"""The FastAPI app: unsubscribe (RFC 8058 one-click), preferences, archive, webhooks, health. Thin routes."""

import logging
from collections.abc import Callable, Collection
from datetime import date
from zoneinfo import available_timezones

import sqlalchemy as sa
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

from digest.clock import Clock, system_clock
from digest.config import Newsletter, Settings
from digest.db.engine import session_scope
from digest.db.models import Subscriber, SubscriberStatus
from digest.db.queries import existing_edition_id, sent_editions
from digest.deliver.base import Transport
from digest.deliver.transports import make_transport
from digest.errors import SubscriberError, TokenError, WebhookError
from digest.render.archive import archive_html
from digest.render.copies import make_renderer
from digest.schedule.scheduler import health as scheduler_health
from digest.subscribers import optin, webhooks
from digest.subscribers.roster import check_timezone, check_topics, topics_of
from digest.subscribers.status import PAUSE_CHOICES_WEEKS, PreferenceChange, apply_preferences, unsubscribe
from digest.tokens import LinkToken, subscriber_for
from digest.web.guard import BodyLimit, SecurityHeaders, archive_response, page_response
from digest.web.landing import add_landing_routes, with_feed_link
from digest.web.signup import add_signup_routes

log = logging.getLogger(__name__)


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
    renderer = make_renderer(settings, newsletter)
    info = newsletter.newsletter
    confirm_by_email = add_signup_routes(
        app,
        settings,
        newsletter,
        engine=engine,
        env=renderer.env,
        clock=clock,
        transport_factory=transport_factory or (lambda: make_transport(settings, clock=clock)),
    )
    add_landing_routes(app, settings, newsletter, engine=engine, env=renderer.env, clock=clock)
    key_text = settings.sendgrid_webhook_public_key
    webhook_key = webhooks.load_public_key(key_text) if key_text else None

    def page(template: str, status: int = 200, **context: object) -> HTMLResponse:
        return page_response(renderer.env, template, status, newsletter=info, **context)

    def message(
        heading: str, text: str, *, status: int = 200, action: str = "", button: str = ""
    ) -> HTMLResponse:
        return page("web/message.html.j2", status, heading=heading, text=text, action=action, button=button)

    def bad_link() -> HTMLResponse:
        return message(
            "This link is not valid",
            "It may have been cut or altered. Use the unsubscribe link in the latest email, "
            "or reply to it and we will remove you by hand.",
            status=400,
        )

    zones = sorted(available_timezones())  # for the time zone choice on the preferences page

    def preferences_form(
        token: str, subscriber: Subscriber, chosen: Collection[str], *, saved: bool
    ) -> HTMLResponse:
        paused = subscriber.status == SubscriberStatus.PAUSED
        return page(
            "web/preferences.html.j2",
            token=token,
            topics=newsletter.topic_names,
            chosen=chosen,
            saved=saved,
            zones=zones,
            zone=subscriber.timezone or "",
            default_zone=settings.timezone,
            pause_weeks=PAUSE_CHOICES_WEEKS,
            paused_until=subscriber.paused_until if paused else None,
        )

    def verify(token: str) -> LinkToken | None:
        try:
            return renderer.signer.verify(token)
        except TokenError:
            return None

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        try:
            body = scheduler_health(engine, now=clock())
        except sa.exc.SQLAlchemyError as e:  # monitoring wants a status, not a stack trace
            return JSONResponse({"status": "error", "database": str(getattr(e, "orig", e))}, status_code=503)
        return JSONResponse({"status": "ok", **body})

    @app.get("/unsubscribe", response_class=HTMLResponse)
    def unsubscribe_help() -> HTMLResponse:
        return message(
            "Unsubscribe",
            "To unsubscribe, use the unsubscribe link at the bottom of any email you received from us.",
        )

    @app.get("/preferences", response_class=HTMLResponse)
    def preferences_help() -> HTMLResponse:
        # Where the archive's tokenless "change your topics" link leads (issue 4).
        return message(
            "Your topics",
            "To change your topics or pause, use the link at the bottom of any email you received from us.",
        )

    @app.get("/unsubscribe/{token}", response_class=HTMLResponse)
    def unsubscribe_page(token: str) -> HTMLResponse:
        # GET changes nothing: link scanners fetch every link in a message (RFC 8058 §3.2).
        link = verify(token)
        if link is None:
            return bad_link()
        with session_scope(engine) as session:
            if subscriber_for(link, session=session) is None:
                return bad_link()
        return message(
            "Unsubscribe?",
            f"Press the button to stop receiving {info.title}.",
            action=f"/unsubscribe/{token}",
            button="Unsubscribe",
        )

    @app.post("/unsubscribe/{token}", response_class=HTMLResponse)
    async def unsubscribe_post(token: str, request: Request) -> HTMLResponse:
        link = verify(token)
        if link is None:
            return bad_link()
        form = await request.form()
        one_click = form.get("List-Unsubscribe") == "One-Click"
        with session_scope(engine) as session:
            subscriber = subscriber_for(link, session=session)
            if subscriber is None:
                return bad_link()
            unsubscribe(
                subscriber,
                session=session,
                now=clock(),
                method="one-click" if one_click else "link",
                edition_id=existing_edition_id(link.edition_id, session=session),
                user_agent=request.headers.get("user-agent"),
                ip=request.client.host if request.client else None,
            )
        # 200 with a short body, never a redirect (RFC 8058 §3.2).
        return message(
            "You are unsubscribed",
            f"You will not receive {info.title} any more. Changed your mind?",
            action=f"/resubscribe/{token}",
            button="Subscribe again",
        )

    @app.post("/resubscribe/{token}", response_class=HTMLResponse)
    async def resubscribe_post(token: str, request: Request, background: BackgroundTasks) -> HTMLResponse:
        link = verify(token)
        if link is None:
            return bad_link()
        with session_scope(engine) as session:
            subscriber = subscriber_for(link, session=session)
            if subscriber is None:
                return bad_link()
            outcome = optin.subscribe_again(
                subscriber,
                session=session,
                now=clock(),
                edition_id=existing_edition_id(link.edition_id, session=session),
                user_agent=request.headers.get("user-agent"),
                ip=request.client.host if request.client else None,
            )
        if outcome.to_confirm is not None:
            confirm_by_email(outcome.to_confirm, background)
        if outcome.status == "confirm":
            return message(
                "Check your inbox",
                f"You once marked {info.title} as spam, so we need your confirmation by email "
                "before sending again: open the link in the message we sent you.",
            )
        return message("Welcome back", f"You will receive {info.title} again.")

    @app.get("/preferences/{token}", response_class=HTMLResponse)
    def preferences_page(token: str) -> HTMLResponse:
        link = verify(token)
        if link is None:
            return bad_link()
        with session_scope(engine) as session:
            subscriber = subscriber_for(link, session=session)
        if subscriber is None:
            return bad_link()
        return preferences_form(token, subscriber, topics_of(subscriber), saved=False)

    @app.post("/preferences/{token}", response_class=HTMLResponse)
    async def preferences_post(token: str, request: Request) -> HTMLResponse:
        link = verify(token)
        if link is None:
            return bad_link()
        form = await request.form()
        try:
            chosen = check_topics([str(v) for v in form.getlist("topic")], newsletter.topic_names)
            zone = str(form.get("timezone") or "")
            change = PreferenceChange(
                topics=chosen,
                timezone=check_timezone(zone) if zone else None,
                set_timezone="timezone" in form,  # the edition arrives at DIGEST_SEND_TIME there
                pause_weeks=int(str(form.get("pause_weeks") or 0)),
                resume=form.get("resume") == "1",
            )
        except (SubscriberError, ValueError) as e:
            return message("Could not save", str(e), status=400)
        with session_scope(engine) as session:
            subscriber = subscriber_for(link, session=session)
            if subscriber is None:
                return bad_link()
            try:
                apply_preferences(
                    subscriber,
                    change,
                    session=session,
                    now=clock(),
                    edition_id=existing_edition_id(link.edition_id, session=session),
                    user_agent=request.headers.get("user-agent"),
                    ip=request.client.host if request.client else None,
                )
            except SubscriberError as e:
                return message("Could not save", str(e), status=400)
        return preferences_form(token, subscriber, set(chosen), saved=True)

    @app.post("/webhooks/sendgrid")
    async def sendgrid_webhook(request: Request) -> JSONResponse:
        # Unsigned, badly signed or replayed requests get 403 and change nothing.
        if webhook_key is None:
            return JSONResponse({"error": "webhook not configured"}, status_code=403)
        payload = await request.body()  # at most webhooks.MAX_BODY: BodyLimit stops more as it streams
        try:
            webhooks.verify_signature(
                webhook_key,
                payload=payload,
                signature=request.headers.get(webhooks.SIGNATURE_HEADER),
                timestamp=request.headers.get(webhooks.TIMESTAMP_HEADER),
                now=clock(),
                max_age=settings.sendgrid_webhook_max_age,
            )
        except WebhookError as e:
            return JSONResponse({"error": str(e)}, status_code=403)
        try:
            events = webhooks.parse_events(payload)
        except WebhookError as e:
            log.warning("sendgrid webhook refused: %s", e)
            return JSONResponse({"error": str(e)}, status_code=400)
        with session_scope(engine) as session:
            outcome = webhooks.apply_events(events, session=session, now=clock())
        return JSONResponse(outcome)

    @app.get("/archive/", response_class=HTMLResponse)
    def archive_index() -> HTMLResponse:
        with session_scope(engine) as session:
            editions = sent_editions(session=session)
        return page("web/archive.html.j2", editions=editions)

    @app.get("/archive/{day}", response_class=HTMLResponse)
    def archive_edition(day: str) -> HTMLResponse:
        try:
            parsed = date.fromisoformat(day)
        except ValueError:
            return message("Not found", f"{day!r} is not a date.", status=404)
        html = archive_html(settings, engine=engine, day=parsed, renderer=renderer)
        if html is None:
            return message("Not found", f"No edition was sent on {parsed}.", status=404)
        return archive_response(with_feed_link(html, info.title))

    @app.get("/robots.txt", response_class=PlainTextResponse)
    def robots() -> str:
        return "User-agent: *\nDisallow: /unsubscribe/\nDisallow: /preferences/\nDisallow: /confirm/\n"

    return app
