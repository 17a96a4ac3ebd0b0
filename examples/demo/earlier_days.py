"""Run the demo's daily job for the two days before today, as it would have run then.

The demo feeds hold a story thread over three days (issue 16: talks, a deal, a factory plan);
one `digest run` today builds only today's edition, so this builds and sends the two earlier
editions first, each with the clock set to the same time of its own day. Today's email then
shows the factory story with "Earlier:" links to the deal and the talks on their archive pages.
Run it after `digest collect` and before `digest run`. Idempotent: an edition already sent is
not sent again. Settings come from the environment, as for `digest` (the Makefile's DEMO_ENV).

Usage: python examples/demo/earlier_days.py [--days 2]
"""

import argparse
from datetime import datetime, timedelta

import sqlalchemy as sa

from digest import pipeline
from digest.clock import FixedClock, local_date, system_clock
from digest.config import Settings, load_settings
from digest.db.engine import open_database
from digest.deliver.base import Transport
from digest.deliver.journal import SendReport
from digest.newsletter import Newsletter, load_newsletter
from digest.runners.base import make_runner


def send_earlier_days(
    settings: Settings,
    newsletter: Newsletter,
    *,
    engine: sa.Engine,
    now: datetime,
    days: int = 2,
    transport: Transport | None = None,
) -> list[SendReport]:
    """Send the editions of the `days` days before `now`'s, oldest first, each at its own day's time."""
    reports = []
    for back in range(days, 0, -1):
        then = now - timedelta(days=back)
        reports.append(
            pipeline.send(
                settings,
                newsletter,
                engine=engine,
                edition_date=local_date(settings.zone, then),
                clock=FixedClock(then),
                runner=make_runner(settings, transport_factory=(lambda: transport) if transport else None),
            )
        )
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=2)
    args = parser.parse_args()
    settings = load_settings()
    newsletter = load_newsletter(settings.config)
    engine = open_database(settings.database_url)
    for report in send_earlier_days(settings, newsletter, engine=engine, now=system_clock(), days=args.days):
        if report.nothing_new:
            print(f"edition {report.edition_date}: already sent; nothing left to send")
        else:
            print(f"edition {report.edition_date}: {report.story_count} stories; sent {report.sent}")


if __name__ == "__main__":
    main()
