"""Before a send (issue 14): test sends and seed copies."""

from datetime import date

import sqlalchemy as sa
import typer

from digest.cli.common import current_clock, err, out
from digest.config import Newsletter, Settings
from digest.deliver.addresses import address_list
from digest.deliver.proofs import SeedReport, send_test
from digest.errors import DigestError
from digest.personalize import make_renderer


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


def print_seeds(seeds: SeedReport) -> None:
    """The seed copies a send made, when it made any."""
    if seeds.sent or seeds.failures:
        out.print(
            f"seed copies (not counted above): sent {seeds.sent}, failed {len(seeds.failures)}",
            highlight=False,
        )
    for line in seeds.failures:
        err.print(
            f"  seed failed: {line} (tried again by the next send)",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
