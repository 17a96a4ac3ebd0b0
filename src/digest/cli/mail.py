"""The commands that read mail sent back to us: unsubscribe-mail and bounces (run from cron)."""

from digest.cli.common import app, command_engine, current_time, err, friendly, out
from digest.config import load_settings, signing_keys


@app.command("unsubscribe-mail")
@friendly
def unsubscribe_mail() -> None:
    """Process unsubscribe requests sent to DIGEST_UNSUBSCRIBE_MAILTO, read from
    DIGEST_UNSUBSCRIBE_MAILBOX (maildir:/path or imaps://user@host/INBOX). Run it from cron.

    Example: digest unsubscribe-mail
    """
    from digest.subscribers.unsubscribe_mail import open_mailbox, process_requests
    from digest.tokens import TokenSigner

    settings = load_settings()
    engine = command_engine(settings)
    password = settings.unsubscribe_mailbox_password
    box = open_mailbox(settings.unsubscribe_mailbox, password.get_secret_value() if password else None)
    try:
        report = process_requests(
            box,
            engine=engine,
            signer=TokenSigner(signing_keys(settings)),
            now=current_time(),
            authserv_id=settings.unsubscribe_authserv_id,
        )
    finally:
        box.close()
    out.print(
        f"read {report.read}, unsubscribed {report.unsubscribed}, already out {report.already}, "
        f"unmatched {len(report.unmatched)}, refused {len(report.refused)}"
    )
    for line in report.unmatched:
        err.print(f"  no subscriber for: {line}", highlight=False)
    for line in report.refused:
        err.print(f"  not acted on (failed authentication): {line}", highlight=False)


@app.command("bounces")
@friendly
def bounces() -> None:
    """Process the bounce reports relays mail back after a send (DSNs, and Exim's, qmail's and
    Exchange's own formats), read from DIGEST_BOUNCE_MAILBOX (maildir:/path or
    imaps://user@host/INBOX). A hard failure suppresses the reader at once; soft ones (a full
    mailbox, 4.x.x) after DIGEST_SOFT_BOUNCE_LIMIT editions in a row. Each message is marked seen
    once applied; reports we cannot tie to a delivery we sent change nothing and are listed.
    Run it from cron.

    Example: digest bounces
    """
    from digest.subscribers.bounce_mail import process_bounces
    from digest.subscribers.unsubscribe_mail import open_mailbox

    settings = load_settings()
    engine = command_engine(settings)
    password = settings.bounce_mailbox_password
    box = open_mailbox(
        settings.bounce_mailbox,
        password.get_secret_value() if password else None,
        setting="DIGEST_BOUNCE_MAILBOX",
    )
    try:
        report = process_bounces(box, settings=settings, engine=engine, now=current_time())
    finally:
        box.close()
    out.print(
        f"read {report.read}: hard {report.hard}, soft {report.soft}, readers suppressed "
        f"{report.suppressed}, delayed {report.delayed}, already applied {report.duplicates}, "
        f"not bounces {len(report.not_bounces)}, unmatched {len(report.unmatched)}",
        highlight=False,
    )
    for line in report.unmatched:
        err.print(f"  unmatched: {line}", highlight=False, markup=False)
    for line in report.not_bounces:
        err.print(f"  not a bounce: {line}", highlight=False, markup=False)
