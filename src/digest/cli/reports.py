"""What the daily commands print when they end: the collect's table and the send's summary."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from digest.cli.common import err, out

if TYPE_CHECKING:  # for annotations only: printing a collect must not load the delivery stage
    from digest.deliver.journal import SendReport
    from digest.deliver.proofs import SeedReport
    from digest.sources.collect import SourceResult

# Above this many sources the table lists only those that need a look (failed, malformed): a
# table of a thousand "new" rows is not read, and Rich takes about a second to draw it.
LIST_EVERY_SOURCE_UP_TO = 30


def print_collect(results: list[SourceResult], *, every: bool = False) -> None:
    """The collect's table (only sources that need a look, when there are many) and its summary."""
    many = not every and len(results) > LIST_EVERY_SOURCE_UP_TO
    shown = [r for r in results if r.status in ("failed", "malformed")] if many else results
    if shown:
        table = Table("source", "result", "entries", "new", "updated", "error", title="Collection")
        for r in shown:
            style = {"failed": "red", "malformed": "yellow"}.get(r.status)
            table.add_row(
                r.name, r.status, str(r.entries), str(r.new), str(r.updated), r.error or "", style=style
            )
        out.print(table)
    failed = sum(r.status == "failed" for r in results)
    malformed = sum(r.status == "malformed" for r in results)
    out.print(
        f"{len(results)} sources: {sum(r.new for r in results)} new articles, "
        f"{sum(r.updated for r in results)} updated, {failed} failed"
        + (f", {malformed} malformed" if malformed else ""),
        highlight=False,
    )
    if many:
        out.print(
            f"({len(results) - len(shown)} sources that answered well are not listed; "
            "--all lists every source, `digest sources list` shows their health)",
            highlight=False,
        )


def print_send(report: SendReport) -> None:
    """One line on the send, then the failures a relay gave (its words, as they came)."""
    if report.nothing_new:  # run again: say so, rather than "sent 0"
        out.print(
            f"edition {report.edition_date}: already sent to {report.already}; nothing left to send"
            + (f" (unknown {report.unknown}: see --resend-unknown)" if report.unknown else ""),
            soft_wrap=True,
        )
        return
    out.print(
        f"edition {report.edition_date}: {report.story_count} stories; sent {report.sent}, "
        f"failed {report.failed}, to retry {report.retry}, skipped {report.skipped}, "
        f"unknown {report.unknown}"
        + (f"; already sent to {report.already} before" if report.already else ""),
        soft_wrap=True,
    )
    for line in report.failures:
        err.print(f"  failed: {line}", highlight=False, markup=False, soft_wrap=True)  # a relay's words
    more = report.failed + report.retry - len(report.failures)
    if more > 0:
        err.print(f"  ... and {more} more (each error is kept in the ledger)", highlight=False)


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
