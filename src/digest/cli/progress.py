"""Progress bars for the commands that wait: fetching sources, sending an edition (on a terminal
only; piped or from cron, nothing is drawn)."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from digest.cli.common import out
from digest.config import Settings
from digest.newsletter import Newsletter
from digest.runners.base import OnFetched


@contextmanager
def fetch_progress(newsletter: Newsletter) -> Iterator[tuple[OnFetched | None, Callable[[], None]]]:
    """A progress bar while fetching, when stdout is a terminal: (on_fetched, end the bar)."""
    if not out.is_terminal or not newsletter.sources:
        yield None, lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("fetching"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bar = Progress(*columns, TextColumn("{task.fields[last]}"), console=out, transient=True)
    task = bar.add_task("fetch", total=len(newsletter.sources), last="")

    def advance(name: str, error: str | None) -> None:
        # Started on the first fetched source, after collect has forked its workers: Rich's
        # refresh thread would otherwise make them spawned (see sources/workers.py).
        if not bar.live.is_started:
            bar.start()
        bar.update(task, advance=1, last=f"{name}: failed" if error else name)

    def end() -> None:
        if bar.live.is_started:
            bar.stop()

    try:
        yield advance, end
    finally:
        end()


@contextmanager
def send_progress(settings: Settings) -> Iterator[Callable[[int], None] | None]:
    """A progress bar while this process sends, on a terminal; None when piped, from cron, or
    when the workers send (distributed mode)."""
    if settings.broker_url is not None or not out.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    # The number to send is known only as the ledger is read, so the bar counts what is answered.
    columns = (TextColumn("sending"), BarColumn(), TextColumn("{task.completed:,} sent"), TimeElapsedColumn())
    bar = Progress(*columns, console=out, transient=True)
    task = bar.add_task("send", total=None)

    def advance(answered: int) -> None:
        if not bar.live.is_started:  # from the first answer: warnings before it stay readable
            bar.start()
        bar.update(task, advance=answered)

    try:
        yield advance
    finally:
        if bar.live.is_started:
            bar.stop()
