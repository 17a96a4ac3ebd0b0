"""The reader's pages behind the links in every email: unsubscribe (RFC 8058 one-click), subscribe
again, and preferences. Thin: each route reads its input, calls one function of
subscribers/status.py or subscribers/optin.py, and answers with a page."""

from collections.abc import Callable, Collection
from typing import Annotated
from zoneinfo import available_timezones

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.responses import HTMLResponse

from digest.db.models import Subscriber, SubscriberStatus
from digest.errors import SubscriberError
from digest.subscribers import optin
from digest.subscribers.roster import check_timezone, check_topics, topics_of
from digest.subscribers.status import PAUSE_CHOICES_WEEKS, PreferenceChange, apply_preferences, unsubscribe
from digest.web.deps import Reader, Site, reader_of


def reader_pages(site: Site, *, confirm_by_email: Callable[[Subscriber, BackgroundTasks], None]) -> APIRouter:
    """GET/POST /unsubscribe/{token}, POST /resubscribe/{token}, GET/POST /preferences/{token},
    and the tokenless help pages."""
    router = APIRouter()
    info = site.newsletter.newsletter
    linked = Annotated[Reader, Depends(reader_of(site))]
    zones = sorted(available_timezones())  # for the time zone choice on the preferences page

    def preferences_form(
        token: str, subscriber: Subscriber, chosen: Collection[str], *, saved: bool
    ) -> HTMLResponse:
        paused = subscriber.status == SubscriberStatus.PAUSED
        return site.page(
            "web/preferences.html.j2",
            token=token,
            topics=site.newsletter.topic_names,
            chosen=chosen,
            saved=saved,
            zones=zones,
            zone=subscriber.timezone or "",
            default_zone=site.settings.timezone,
            pause_weeks=PAUSE_CHOICES_WEEKS,
            paused_until=subscriber.paused_until if paused else None,
        )

    @router.get("/unsubscribe", response_class=HTMLResponse)
    def unsubscribe_help() -> HTMLResponse:
        return site.message(
            "Unsubscribe",
            "To unsubscribe, use the unsubscribe link at the bottom of any email you received from us.",
        )

    @router.get("/preferences", response_class=HTMLResponse)
    def preferences_help() -> HTMLResponse:
        # Where the archive's tokenless "change your topics" link leads (issue 4).
        return site.message(
            "Your topics",
            "To change your topics or pause, use the link at the bottom of any email you received from us.",
        )

    @router.get("/unsubscribe/{token}", response_class=HTMLResponse)
    def unsubscribe_page(reader: linked) -> HTMLResponse:
        # GET changes nothing: link scanners fetch every link in a message (RFC 8058 §3.2).
        with reader.open():
            pass
        return site.message(
            "Unsubscribe?",
            f"Press the button to stop receiving {info.title}.",
            action=f"/unsubscribe/{reader.token}",
            button="Unsubscribe",
        )

    @router.post("/unsubscribe/{token}", response_class=HTMLResponse)
    async def unsubscribe_post(reader: linked, request: Request) -> HTMLResponse:
        form = await request.form()
        one_click = form.get("List-Unsubscribe") == "One-Click"
        with reader.open() as (session, subscriber):
            unsubscribe(
                subscriber,
                session=session,
                now=site.clock(),
                method="one-click" if one_click else "link",
                **reader.via(request, session=session),
            )
        # 200 with a short body, never a redirect (RFC 8058 §3.2).
        return site.message(
            "You are unsubscribed",
            f"You will not receive {info.title} any more. Changed your mind?",
            action=f"/resubscribe/{reader.token}",
            button="Subscribe again",
        )

    @router.post("/resubscribe/{token}", response_class=HTMLResponse)
    async def resubscribe_post(reader: linked, request: Request, background: BackgroundTasks) -> HTMLResponse:
        with reader.open() as (session, subscriber):
            outcome = optin.subscribe_again(
                subscriber, session=session, now=site.clock(), **reader.via(request, session=session)
            )
        if outcome.to_confirm is not None:
            confirm_by_email(outcome.to_confirm, background)
        if outcome.status == "confirm":
            return site.message(
                "Check your inbox",
                f"You once marked {info.title} as spam, so we need your confirmation by email "
                "before sending again: open the link in the message we sent you.",
            )
        return site.message("Welcome back", f"You will receive {info.title} again.")

    @router.get("/preferences/{token}", response_class=HTMLResponse)
    def preferences_page(reader: linked) -> HTMLResponse:
        with reader.open() as (_, subscriber):
            pass
        return preferences_form(reader.token, subscriber, topics_of(subscriber), saved=False)

    @router.post("/preferences/{token}", response_class=HTMLResponse)
    async def preferences_post(reader: linked, request: Request) -> HTMLResponse:
        form = await request.form()
        try:
            chosen = check_topics([str(v) for v in form.getlist("topic")], site.newsletter.topic_names)
            zone = str(form.get("timezone") or "")
            change = PreferenceChange(
                topics=chosen,
                timezone=check_timezone(zone) if zone else None,
                set_timezone="timezone" in form,  # the edition arrives at DIGEST_SEND_TIME there
                pause_weeks=int(str(form.get("pause_weeks") or 0)),
                resume=form.get("resume") == "1",
            )
        except (SubscriberError, ValueError) as e:
            return site.message("Could not save", str(e), status=400)
        with reader.open() as (session, subscriber):
            try:
                apply_preferences(
                    subscriber,
                    change,
                    session=session,
                    now=site.clock(),
                    **reader.via(request, session=session),
                )
            except SubscriberError as e:
                return site.message("Could not save", str(e), status=400)
        return preferences_form(reader.token, subscriber, set(chosen), saved=True)

    return router
