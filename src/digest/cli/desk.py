"""Before a send (issue 14): test sends, seed copies and the editor's desk (`digest edition`)."""

from datetime import date
from typing import Annotated

import sqlalchemy as sa
import typer

from digest import desk
from digest.cli.common import (
    DateOpt,
    app,
    command_engine,
    current_clock,
    current_time,
    edition_date_option,
    err,
    friendly,
    out,
    settings_and_newsletter,
)
from digest.config import Settings
from digest.deliver.addresses import address_list
from digest.deliver.proofs import send_test
from digest.errors import DigestError
from digest.newsletter import Newsletter
from digest.render.copies import make_renderer


def test_send(
    settings: Settings,
    newsletter: Newsletter,
    engine: sa.Engine,
    edition_date: date,
    *,
    to: str | None,
    as_reader: str | None,
) -> None:
    """`digest send --test`: send, then one line per address; exit 3 when one was not reached."""
    if to is None:
        raise DigestError("--as: give the addresses to send the test to with --test ADDRESS[,ADDRESS]")
    result = send_test(
        settings,
        newsletter,
        engine=engine,
        renderer=make_renderer(settings, newsletter),
        edition_date=edition_date,
        to=address_list(to, what="--test"),
        clock=current_clock(),
        as_reader=as_reader,
    )
    whose = f"{result.reader}'s copy" if result.reader else "the generic copy"
    state = "frozen edition" if result.built else "draft (not frozen yet)"
    out.print(
        f"test send of {edition_date}, {state}, {whose}: {result.subject}", highlight=False, soft_wrap=True
    )
    for r in result.results:
        if r.ok:
            out.print(
                f"  sent to {r.address}" + (f" ({r.where})" if r.where else ""),
                highlight=False,
                soft_wrap=True,
            )
        else:
            err.print(f"  failed: {r.address}: {r.error}", highlight=False, markup=False, soft_wrap=True)
    out.print("nothing was recorded; the real send is unchanged", highlight=False)
    if result.failed:
        raise typer.Exit(3)


edition_app = typer.Typer(
    help="The editor's desk: change the day's draft before it is frozen, then approve it.",
    no_args_is_help=True,
)
app.add_typer(edition_app, name="edition")

StoryArg = Annotated[int, typer.Argument(help="The story's number, as `digest edition show` lists it.")]


def _decide(date_: str | None, action: str, **what: object) -> None:
    settings, newsletter = settings_and_newsletter()
    line = desk.decide(
        newsletter,
        engine=command_engine(settings),
        edition_date=edition_date_option(settings, date_),
        action=action,
        now=current_time(),
        zone=settings.zone,
        **what,  # type: ignore[arg-type]
    )
    out.print(line, highlight=False, soft_wrap=True)


@edition_app.command("show")
@friendly
def show(date_: DateOpt = None) -> None:
    """The day's draft as the desk sees it: each story's number, topic and why, what is left out,
    the note, and whether it is frozen or approved.

    Example: digest edition show
    """
    settings, newsletter = settings_and_newsletter()
    view = desk.show(
        newsletter,
        engine=command_engine(settings),
        edition_date=edition_date_option(settings, date_),
        now=current_time(),
        zone=settings.zone,
    )
    state = "sent" if view.sent else "frozen" if view.frozen else "draft"
    approved = f"approved {view.approved_at:%Y-%m-%d %H:%M} UTC" if view.approved_at else "not approved"
    out.print(
        f"edition {view.edition_date}: {state}, {view.edition.story_count} stories, {approved}, "
        f"{view.decisions} decision(s)",
        highlight=False,
    )
    if view.note:
        out.print(f"note: {view.note}", highlight=False, markup=False, soft_wrap=True)
    by_topic: dict[str, list[desk.DeskStory]] = {}
    for story in view.stories:
        key = story.topic if story.state in ("in", "pinned") else "left out"
        by_topic.setdefault(key, []).append(story)
    for topic, stories in by_topic.items():
        out.print(f"\n{topic.upper()}", highlight=False, markup=False)
        for s in stories:
            flag = "" if s.state == "in" else f" [{s.state}]"
            where = f" ({s.topic})" if topic == "left out" else ""
            out.print(f"  #{s.id}{flag} {s.title}{where}", highlight=False, markup=False, soft_wrap=True)
            out.print(
                f"      {', '.join(s.sources)}; {s.reason}", highlight=False, markup=False, soft_wrap=True
            )
    if not view.frozen:
        out.print(
            "\nchange it: digest edition drop|pin|split N, move N TOPIC, note TEXT; then approve",
            highlight=False,
        )


@edition_app.command("drop")
@friendly
def drop(story: StoryArg, date_: DateOpt = None) -> None:
    """Leave a story out of the day's edition (another one takes its place if the caps allow).

    Example: digest edition drop 42
    """
    _decide(date_, "drop", story_id=story)


@edition_app.command("pin")
@friendly
def pin(story: StoryArg, date_: DateOpt = None) -> None:
    """Put a story at the top of its topic, and keep it whatever the caps.

    Example: digest edition pin 42
    """
    _decide(date_, "pin", story_id=story)


@edition_app.command("move")
@friendly
def move(
    story: StoryArg,
    topic: Annotated[str, typer.Argument(help="The topic to move it to (as in digest.toml).")],
    date_: DateOpt = None,
) -> None:
    """Move a story to another topic.

    Example: digest edition move 42 "Charging"
    """
    _decide(date_, "move", story_id=story, topic=topic)


@edition_app.command("split")
@friendly
def split(story: StoryArg, date_: DateOpt = None) -> None:
    """Split a wrong merge: each outlet's article becomes a story of its own.

    Example: digest edition split 42
    """
    _decide(date_, "split", story_id=story)


@edition_app.command("note")
@friendly
def note(
    text: Annotated[str, typer.Argument(help='The note, shown at the top of the email; "" removes it.')],
    date_: DateOpt = None,
) -> None:
    """Write the editor's note shown at the top of the day's email (HTML and text).

    Example: digest edition note "No edition on Monday: we are off for the holiday."
    """
    _decide(date_, "note", note=text)


@edition_app.command("approve")
@friendly
def approve(date_: DateOpt = None) -> None:
    """Approve the day's edition: it is frozen as it stands, and with DIGEST_REQUIRE_APPROVAL=1 the
    scheduler sends it at its time.

    Example: digest edition approve
    """
    settings, newsletter = settings_and_newsletter()
    line = desk.approve(
        newsletter,
        engine=command_engine(settings),
        edition_date=edition_date_option(settings, date_),
        now=current_time(),
        zone=settings.zone,
        horizon_days=settings.thread_horizon_days,
    )
    out.print(line, highlight=False, soft_wrap=True)
