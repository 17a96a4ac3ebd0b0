"""Pick the transport named by DIGEST_TRANSPORT."""

from collections.abc import Callable
from datetime import datetime

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
