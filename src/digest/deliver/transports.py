"""Pick the transport named by DIGEST_TRANSPORT."""

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from digest.config import Settings
from digest.deliver.base import Transport
from digest.deliver.file import FileTransport


def make_transport(settings: Settings, *, clock: Callable[[], datetime]) -> Transport:
    """The configured transport, ready to send.

    SMTP and SendGrid are imported when chosen: a send through the outbox (the demo, the
    benchmark) does not load smtplib or the SendGrid client (issue 15).
    """
    if settings.transport == "smtp":
        from digest.deliver.smtp import SmtpTransport

        return SmtpTransport(
            settings.smtp_host,
            settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            timeout=settings.smtp_timeout,
            clock=clock,
        )
    if settings.transport == "sendgrid":
        from digest.deliver.sendgrid import SendGridTransport

        assert settings.sendgrid_api_key is not None  # Settings refuses sendgrid without a key
        return SendGridTransport(
            settings.sendgrid_api_key.get_secret_value(),
            host=settings.sendgrid_host,
            timeout=settings.sendgrid_timeout,
            # the door's clock, for X-RateLimit-Reset (a Unix time): real in production
            wall_clock=lambda: clock().timestamp(),
        )
    return FileTransport(settings.outbox_dir, clock=clock)


def make_lanes(settings: Settings, *, clock: Callable[[], datetime]) -> list[Transport]:
    """DIGEST_SEND_CONCURRENCY transports of the configured kind: one connection each."""
    return [make_transport(settings, clock=clock) for _ in range(settings.send_concurrency)]


def close_lanes(lanes: Sequence[Transport]) -> None:
    """Close every lane (an SMTP lane says QUIT)."""
    for lane in lanes:
        lane.close()


KEPT_FOR = timedelta(seconds=30)  # how long lanes wait open for the next batch of their edition


class KeptLanes:
    """A worker's lanes, kept open from one batch of an edition to the next (one batch at a time).

    Reusing the connections saves a connect, EHLO (TLS, AUTH) and QUIT a batch. A relay drops a
    connection left idle a few minutes (RFC 5321 §4.5.3.2.7), and the next edition comes hours
    later: those get new lanes. Lanes of a batch that raised are closed by the caller, not kept
    (a relay that stopped the send may have left them broken).
    """

    def __init__(self, make: Callable[[], list[Transport]], *, clock: Callable[[], datetime]) -> None:
        self.make, self.clock = make, clock
        self._kept: tuple[int, datetime, list[Transport]] | None = None

    def take(self, edition_id: int) -> list[Transport]:
        """The kept lanes if they served this edition moments ago, else new ones (the kept closed)."""
        kept, self._kept = self._kept, None
        if kept is not None:
            edition, idle_since, lanes = kept
            if edition == edition_id and self.clock() - idle_since < KEPT_FOR:
                return lanes
            close_lanes(lanes)
        return self.make()

    def keep(self, edition_id: int, lanes: list[Transport]) -> None:
        """Keep the lanes of a batch that went well, for the next batch of its edition."""
        self._kept = (edition_id, self.clock(), lanes)

    def close(self) -> None:
        """Close the kept lanes."""
        kept, self._kept = self._kept, None
        if kept is not None:
            close_lanes(kept[2])
