"""Bounces that arrive later: VERP return paths, reports in RFC 3464 and MTAs' own formats, and
`digest bounces` applying them from a Maildir (hard at once, soft after a run of editions)."""

import base64
import hmac
import mailbox
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email import message_from_bytes
from pathlib import Path

import pytest
from email_validator import validate_email
from sqlmodel import select

from digest.cli import app
from digest.config import Settings, load_settings
from digest.db.engine import session_scope
from digest.db.models import Delivery, DeliveryStatus, Edition, Subscriber, SubscriberEvent, SubscriberStatus
from digest.deliver.base import OutgoingMessage
from digest.deliver.memory import MemoryTransport
from digest.deliver.stats import edition_stats
from digest.errors import SettingsError, TokenError
from digest.subscribers.bounce_mail import BounceReport, process_bounces
from digest.subscribers.bounces import (
    MAX_BYTES,
    MAX_ID,
    Failure,
    Report,
    ReturnPathSigner,
    ReturnToken,
    Severity,
    classify,
    parse_report,
    return_path,
    status_code,
    verp_tokens,
)
from digest.subscribers.roster import remove_subscriber
from digest.subscribers.unsubscribe_mail import ImapMailbox, MaildirMailbox, MailRequest
from digest.tokens import LinkToken, TokenSigner
from tests.cli_helpers import ClockedRunner
from tests.world import SECRET, World

DATA = Path(__file__).parents[1] / "data" / "bounces"
BOUNCES = "bounces@news.example.com"
BOUNCE_SIGNER = ReturnPathSigner([SECRET])
KEY = "k3y0f7h3r34d3rn0b0dy3l53h4570ld"  # a subscriber's token_key, for the reports read alone


def report_file(name: str, *, rcpt: str, verp: str = "digest@news.example.com", unsub: str = "") -> bytes:
    """A sample report with its recipient, return path and returned unsubscribe link filled in."""
    text = (DATA / name).read_text()
    unsub = unsub or "https://elsewhere.example/leave?list=7"  # someone else's list
    return text.replace("%RCPT%", rcpt).replace("%VERP%", verp).replace("%UNSUB%", unsub).encode()


def verp_of(m: OutgoingMessage, edition_id: int | None = None) -> str:
    """The return path of `m` (or of the edition `edition_id` sent to the same reader)."""
    assert m.token_key is not None
    return return_path(
        BOUNCES,
        signer=BOUNCE_SIGNER,
        subscriber_id=m.subscriber_id,
        edition_id=m.edition_id if edition_id is None else edition_id,
        token_key=m.token_key,
    )


def settings(**more: object) -> Settings:
    return load_settings(secret_key=SECRET, bounce_address=BOUNCES, **more)


def maildir(tmp_path: Path, *reports: bytes) -> MaildirMailbox:
    tmp_path.mkdir(parents=True, exist_ok=True)
    box = mailbox.Maildir(tmp_path / "Bounces", create=True)
    for raw in reports:
        box.add(raw)
    return MaildirMailbox(tmp_path / "Bounces", setting="DIGEST_BOUNCE_MAILBOX")


def sent(world: World) -> list[OutgoingMessage]:
    """Send today's edition to the world's readers; the messages, in send order."""
    memory = MemoryTransport()
    world.send(memory)
    return memory.sent


def run(
    world: World, where: Path, *reports: bytes, now: datetime | None = None, **more: object
) -> BounceReport:
    """`digest bounces` over a Maildir holding `reports`."""
    box = maildir(where, *reports)
    return process_bounces(box, settings=settings(**more), engine=world.engine, now=now or world.now)


def status_of(world: World, email: str) -> SubscriberStatus:
    with session_scope(world.engine) as session:
        row = session.exec(select(Subscriber).where(Subscriber.email == email)).one()
        return row.status


def events(world: World, email: str) -> list[SubscriberEvent]:
    with session_scope(world.engine) as session:
        row = session.exec(select(Subscriber).where(Subscriber.email == email)).one()
        return list(
            session.exec(
                select(SubscriberEvent)
                .where(SubscriberEvent.subscriber_id == row.id, SubscriberEvent.kind != "subscribe")
                .order_by(SubscriberEvent.id)  # type: ignore[arg-type]
            )
        )


# --- VERP -----------------------------------------------------------------------------------------


def test_the_return_path_carries_a_token_bound_to_the_readers_key_in_a_valid_local_part() -> None:
    address = return_path(
        BOUNCES, signer=BOUNCE_SIGNER, subscriber_id=9_999_999, edition_id=36_500, token_key=KEY
    )
    local, domain = address.rsplit("@", 1)
    assert domain == "news.example.com" and local.startswith("bounces+")
    assert validate_email(address, check_deliverability=False).normalized == address
    report = message_from_bytes(f"Delivered-To: {address}\nTo: Sender <{address}>\n\nhi\n".encode())
    [token] = [BOUNCE_SIGNER.read(t) for t in verp_tokens(report, BOUNCES)]
    assert (token.subscriber_id, token.edition_id) == (9_999_999, 36_500)
    assert BOUNCE_SIGNER.verify(token, KEY)
    # Made for another reader's key (a deleted subscriber's, say), by another secret, or altered:
    assert not BOUNCE_SIGNER.verify(token, KEY.upper())
    assert not ReturnPathSigner(["someone else's key"]).verify(token, KEY)
    assert not BOUNCE_SIGNER.verify(ReturnToken(9_999_998, 36_500, token.mac), KEY)
    # An unsubscribe link's token is no return-path token.
    with pytest.raises(TokenError, match="malformed"):
        BOUNCE_SIGNER.read(TokenSigner([SECRET]).sign(LinkToken(1, 1, KEY)))


def test_the_mac_is_rfc_4648_base32_of_the_first_8_bytes_of_hmac_sha256() -> None:
    # Written out by hand for speed (a signature per message): it must stay the encoding that
    # tokens already in flight were made with.
    rng = random.Random(14)
    for _ in range(500):
        key = rng.randbytes(32)
        ids, token_key = (rng.randrange(MAX_ID), rng.randrange(MAX_ID)), rng.randbytes(8).hex()
        data = f"digest.bounce\0{ids[0]}\0{ids[1]}\0{token_key}".encode()
        expected = base64.b32encode(hmac.new(key, data, "sha256").digest()[:8]).decode().rstrip("=").lower()
        assert ReturnPathSigner._mac(key, *ids, token_key) == expected


def test_return_path_tokens_survive_key_rotation() -> None:
    old = ReturnPathSigner(["the key of last year"]).sign(5, 8, KEY)
    rotated = ReturnPathSigner(["the key of last year", SECRET])  # as config.signing_keys lists them
    assert rotated.verify(rotated.read(old), KEY)
    assert rotated.sign(5, 8, KEY) == BOUNCE_SIGNER.sign(5, 8, KEY) != old  # the newest key signs


def test_the_largest_ids_fit_the_64_octets_and_a_longer_base_is_refused_by_name() -> None:
    # The longest base DIGEST_BOUNCE_ADDRESS allows (12) and the largest ids (SQL BIGINT).
    address = return_path(
        "b23456789012@x.example", signer=BOUNCE_SIGNER, subscriber_id=MAX_ID, edition_id=MAX_ID, token_key=KEY
    )
    assert len(address.rsplit("@", 1)[0].encode()) <= 64
    assert BOUNCE_SIGNER.read(address.split("+")[1].split("@")[0]) == BOUNCE_SIGNER.read(
        BOUNCE_SIGNER.sign(MAX_ID, MAX_ID, KEY)
    )
    with pytest.raises(SettingsError, match=r"DIGEST_BOUNCE_ADDRESS: .* 64 octets"):
        return_path(
            "a-base-the-setting-would-refuse@x.example",
            signer=BOUNCE_SIGNER,
            subscriber_id=MAX_ID,
            edition_id=MAX_ID,
            token_key=KEY,
        )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "7-3",
        "7-3-abcdefghijklm-x",
        "7-3-abcdefghijkl",  # a MAC cut short
        "7-3-abcdefghijklm1",  # "1" is not base 32
        "07-3-abcdefghijklm",  # not canonical
        "1_0-3-abcdefghijklm",  # int() would take the underscore
        " 7-3-abcdefghijklm",
        "1y2p0ij32e8e8-3-abcdefghijklm",  # MAX_ID + 1
        "zzzzzzzzzzzzz-3-abcdefghijklm",
        "7-3-abcdefghijklm\n",
    ],
)
def test_a_malformed_return_path_token_is_refused_before_any_lookup(value: str) -> None:
    with pytest.raises(TokenError):
        BOUNCE_SIGNER.read(value)


@pytest.mark.parametrize(
    "value", ["bounces+x@news.example.com", "a-very-long-base@news.example.com", "bounces", ".b@x.example"]
)
def test_the_bounce_address_setting_is_checked(value: str) -> None:
    with pytest.raises(SettingsError, match=r"DIGEST_BOUNCE_ADDRESS: .*not like bounces@news\.example\.com"):
        load_settings(bounce_address=value)
    assert load_settings(bounce_address="bounces@news.example.com").bounce_address == BOUNCES


# --- reading reports --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "status", "diagnostic", "severity"),
    [
        ("failed", "5.1.1", "", Severity.HARD),
        ("failed", "5.1.10", "", Severity.HARD),  # Exchange's "recipient not found"
        ("Failed (permanent)", "5.1.1 (address rejected)", "", Severity.HARD),
        ("error", "5.0.0", "", Severity.HARD),  # opensmtpd's Action
        ("failed", "4.4.1", "", Severity.SOFT),  # given up after temporary failures
        ("failed", "5.2.2", "", Severity.SOFT),  # mailbox full
        ("failed", "5.3.4", "", Severity.SOFT),  # message too big: ours, not the reader's
        ("failed", "5.7.1", "", Severity.SOFT),  # policy: the sender or the content
        ("failed", "", "smtp; 550 no such user", Severity.HARD),
        ("failed", "", "smtp; 552 quota exceeded", Severity.SOFT),
        ("failed", "", "", Severity.SOFT),  # nothing to go on: the milder reading
        ("delayed", "4.4.7", "", Severity.DELAYED),
        ("delivered", "2.0.0", "", None),
        ("relayed", "2.0.0", "", None),
        ("expanded", "2.0.0", "", None),
    ],
)
def test_a_recipients_action_and_status_give_its_severity(
    action: str, status: str, diagnostic: str, severity: Severity | None
) -> None:
    assert classify(action, status, diagnostic) is severity


def test_status_codes_are_not_read_from_ip_addresses() -> None:
    assert status_code("host 10.2.5.4 [192.0.2.25] said: 550 5.1.1 gone") == "5.1.1"
    assert status_code("host 10.2.5.4 said: 452 try later") == "452"
    assert status_code("connected to 192.0.2.25 and 10.5.1.1") == ""


@dataclass(frozen=True)
class Sample:
    file: str
    severity: Severity
    status: str
    returns_copy: bool = True


SAMPLES = [
    Sample("rfc3464-hard.eml", Severity.HARD, "5.1.1"),
    Sample("rfc3464-delayed.eml", Severity.DELAYED, "4.4.1"),
    Sample("postfix-mailbox-full.eml", Severity.SOFT, "5.2.2"),
    Sample("exim-unknown-user.eml", Severity.HARD, "5.1.1"),
    Sample("exim-retry-timeout.eml", Severity.SOFT, "4.2.2"),
    Sample("office365-recipient-not-found.eml", Severity.HARD, "5.1.10"),
    Sample("qmail-no-mailbox.eml", Severity.HARD, "5.1.1"),
]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.file)
def test_each_format_names_the_reader_the_severity_and_the_tokens(sample: Sample) -> None:
    verp = return_path(BOUNCES, signer=BOUNCE_SIGNER, subscriber_id=7, edition_id=3, token_key=KEY)
    unsub = "https://digest.example/unsubscribe/" + TokenSigner([SECRET]).sign(LinkToken(7, 3, KEY))
    raw = report_file(sample.file, rcpt="Ana.Reader@Example.com", verp=verp, unsub=unsub)
    report = parse_report(raw, bounce_address=BOUNCES)
    assert [(f.address, f.severity, f.status) for f in report.failures] == [
        ("ana.reader@example.com", sample.severity, sample.status)
    ]
    assert report.failures[0].diagnostic  # the remote server's words, for the event
    [token] = [BOUNCE_SIGNER.read(t) for t in report.verp_tokens]
    assert (token.subscriber_id, token.edition_id) == (7, 3) and BOUNCE_SIGNER.verify(token, KEY)
    assert [TokenSigner([SECRET]).verify(t) for t in report.link_tokens] == [LinkToken(7, 3, KEY)]
    assert report.has_copy is sample.returns_copy


def test_a_report_on_several_recipients_keeps_each_ones_severity() -> None:
    report = parse_report(report_file("rfc3464-multi.eml", rcpt="x@example.com"), bounce_address=BOUNCES)
    assert report.failures == (
        Failure(
            "full.box@example.org", Severity.SOFT, "5.2.2", "552 5.2.2 the mailbox has used all of its space"
        ),
        Failure(
            "gone.user@example.org", Severity.HARD, "5.1.1", "550-5.1.1 nobody by this name 550 5.1.1 here"
        ),
        Failure(
            "slow.host@example.net", Severity.DELAYED, "4.4.7", "451 4.4.7 the remote side keeps timing out"
        ),
        Failure("tired.host@example.net", Severity.SOFT, "4.4.1", "no answer from the host for five days"),
    )
    assert report.reporter == "gateway.example.org" and not report.has_copy


def test_an_auto_reply_to_the_return_path_is_no_bounce() -> None:
    verp = return_path(BOUNCES, signer=BOUNCE_SIGNER, subscriber_id=7, edition_id=3, token_key=KEY)
    report = parse_report(
        report_file("autoreply.eml", rcpt="ana@example.com", verp=verp), bounce_address=BOUNCES
    )
    assert report.failures == () and report.verp_tokens


def test_a_report_is_read_only_to_its_size_bound() -> None:
    # The DSN fields come first; a returned copy far past the bound is cut, not read.
    raw = report_file("rfc3464-hard.eml", rcpt="ana@example.com").replace(
        b"--=_report_1--",
        b"X-Padding: " + b"x" * 900 + b"\n" + (b"more headers\n" * (MAX_BYTES // 13)) + b"--=_report_1--",
    )
    assert len(raw) > MAX_BYTES
    report = parse_report(raw, bounce_address=BOUNCES)
    assert [(f.address, f.severity) for f in report.failures] == [("ana@example.com", Severity.HARD)]


def test_the_heuristic_detectors_see_lines_cut_to_998_octets() -> None:
    # A Postfix-style notification whose one base64 line decodes to 20,000 "<" before the address:
    # read whole, the detector's regular expression takes time quadratic in the line's length.
    text = (
        b"  The Postfix program at relay.example.net\n\n" + b"<" * 20_000 + b"<far@example.com>: 550 5.1.1\n"
    )
    raw = (
        b"From: MAILER-DAEMON@relay.example.net\nSubject: Undelivered Mail Returned to Sender\n"
        b"Content-Type: multipart/report; boundary=b\n\n--b\nContent-Description: Notification\n"
        b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n"
        + base64.b64encode(text)
        + b"\n--b--\n"
    )
    assert parse_report(raw, bounce_address=BOUNCES).failures == ()
    near = raw.replace(base64.b64encode(text), base64.b64encode(text.replace(b"<" * 20_000, b"")))
    assert [f.address for f in parse_report(near, bounce_address=BOUNCES).failures] == ["far@example.com"]


@pytest.mark.parametrize(
    "sender",
    [
        b"",  # flufl.bounce 6.0.0's Yale detector raises IndexError when From holds no address
        "From: Système <mailer-daemon@mail.example.org>\n".encode(),  # 8-bit: its Sina detector raises
    ],
    ids=["no From", "8-bit From"],
)
def test_a_single_part_report_with_an_odd_from_is_still_read(sender: bytes) -> None:
    raw = report_file("qmail-no-mailbox.eml", rcpt="ana@example.com").replace(
        b"From: MAILER-DAEMON@mail.example.org\n", sender
    )
    report = parse_report(raw, bounce_address=BOUNCES)
    assert [(f.address, f.severity) for f in report.failures] == [("ana@example.com", Severity.HARD)]


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.eml")))
def test_damaged_reports_are_read_without_raising(name: str) -> None:
    # Cut short anywhere, or with bytes changed: still a Report (hostile input loses nothing else).
    raw = report_file(name, rcpt="ana@example.com", verp="bounces+x.y@news.example.com")
    rng = random.Random(name)
    damaged = [raw[: rng.randrange(len(raw))] for _ in range(15)]
    for _ in range(15):
        changed = bytearray(raw)
        for _ in range(20):
            changed[rng.randrange(len(changed))] = rng.choice(b'<>;:\n\r\x00\xff=-" \t@.')
        damaged.append(bytes(changed))
    for sample in damaged:
        assert isinstance(parse_report(sample, bounce_address=BOUNCES), Report)


# --- applying them ----------------------------------------------------------------------------------


def test_a_hard_bounce_suppresses_at_once_and_is_applied_once(world: World, tmp_path: Path) -> None:
    m = sent(world)[0]
    raw = report_file("exim-unknown-user.eml", rcpt=m.to_email, verp=verp_of(m))
    report = run(world, tmp_path, raw, raw)  # the relay reported it twice
    assert (report.read, report.hard, report.suppressed, report.duplicates) == (2, 1, 1, 1)
    assert status_of(world, m.to_email) == SubscriberStatus.BOUNCED
    [event] = events(world, m.to_email)
    assert (event.kind, event.method, event.edition_id) == ("bounce", "bounce", m.edition_id)
    assert event.detail is not None and event.detail.startswith("hard 5.1.1: ")
    assert event.user_agent == "bounce report from Mail Delivery System <Mailer-Daemon@mx.example.org>"
    with session_scope(world.engine) as session:
        delivery = session.get(Delivery, m.delivery_id)
        assert delivery is not None and delivery.status == DeliveryStatus.FAILED
        assert delivery.error is not None and delivery.error.startswith("bounced later: hard 5.1.1")
        edition = session.get(Edition, m.edition_id)
        assert edition is not None
        assert edition_stats(edition, session=session).bounces == 1
    # Everyone else is untouched, and a second pass reads nothing: every message is marked seen.
    assert [status_of(world, e) for e in world.emails].count(SubscriberStatus.BOUNCED) == 1
    assert run(world, tmp_path).read == 0
    assert all("S" in msg.get_flags() for msg in mailbox.Maildir(tmp_path / "Bounces").values())


def test_the_return_path_names_the_reader_even_when_the_report_names_a_forward(
    world: World, tmp_path: Path
) -> None:
    m = sent(world)[2]
    raw = report_file(
        "office365-recipient-not-found.eml", rcpt="forwarded@elsewhere.example", verp=verp_of(m)
    )
    report = run(world, tmp_path, raw)
    assert report.suppressed == 1
    assert status_of(world, m.to_email) == SubscriberStatus.BOUNCED


@pytest.mark.parametrize("case", [str.upper, str.lower, str.swapcase], ids=lambda f: f.__name__)
def test_a_relay_that_changes_the_case_of_the_return_path_does_not_break_its_token(
    world: World, tmp_path: Path, case: Callable[[str], str]
) -> None:
    # Some relays lower-case (or upper-case) the local part; the returned copy has no link of ours,
    # so the return path alone names the reader here.
    m = sent(world)[4]
    local, domain = verp_of(m).rsplit("@", 1)
    raw = report_file("rfc3464-hard.eml", rcpt=m.to_email, verp=f"{case(local)}@{domain}")
    report = run(world, tmp_path, raw)
    assert (report.hard, report.unmatched) == (1, [])
    assert status_of(world, m.to_email) == SubscriberStatus.BOUNCED


def test_a_damaged_return_path_token_leaves_the_returned_copys_link_to_decide(
    world: World, tmp_path: Path
) -> None:
    # A relay that rewrote the return path (one character of its MAC here): the copy's link holds.
    m = sent(world)[4]
    assert m.unsubscribe_url is not None
    local, domain = verp_of(m).rsplit("@", 1)
    damaged = local[:-1] + ("b" if local.endswith("a") else "a")
    raw = report_file(
        "rfc3464-hard.eml", rcpt=m.to_email, verp=f"{damaged}@{domain}", unsub=m.unsubscribe_url
    )
    assert parse_report(raw, bounce_address=BOUNCES).verp_tokens  # read, but it does not verify
    report = run(world, tmp_path, raw)
    assert (report.hard, report.unmatched) == (1, [])
    assert status_of(world, m.to_email) == SubscriberStatus.BOUNCED


def test_the_unsubscribe_link_in_the_returned_copy_names_the_reader_without_verp(
    world: World, tmp_path: Path
) -> None:
    m = sent(world)[1]
    assert m.unsubscribe_url is not None
    raw = report_file("qmail-no-mailbox.eml", rcpt=m.to_email, unsub=m.unsubscribe_url)
    report = run(world, tmp_path, raw)
    assert (report.hard, report.suppressed, report.unmatched) == (1, 1, [])
    assert status_of(world, m.to_email) == SubscriberStatus.BOUNCED


def _add_editions(world: World, email: str, days: int) -> list[int]:
    """`days` earlier editions, each sent to `email` (oldest first), plus today's."""
    with session_scope(world.engine) as session:
        reader = session.exec(select(Subscriber).where(Subscriber.email == email)).one()
        ids = []
        for back in range(days, 0, -1):
            day = world.now.date() - timedelta(days=back)
            edition = Edition(date=day, subject=f"digest {day}", content_json="{}", built_at=world.now)
            session.add(edition)
            session.flush()
            assert edition.id is not None and reader.id is not None
            session.add(
                Delivery(
                    edition_id=edition.id,
                    subscriber_id=reader.id,
                    status=DeliveryStatus.SENT,
                    sent_at=world.now,
                    updated_at=world.now,
                )
            )
            ids.append(edition.id)
        return ids


def test_soft_bounces_suppress_only_after_the_limit_of_editions_in_a_row(
    world: World, tmp_path: Path
) -> None:
    m = sent(world)[0]
    e1, e2, e3, e4 = _add_editions(world, m.to_email, 4)

    def soft(edition_id: int, name: str) -> None:
        verp = verp_of(m, edition_id)
        report = run(world, tmp_path / str(edition_id), report_file(name, rcpt=m.to_email, verp=verp))
        assert (report.soft, report.unmatched) == (1, [])

    soft(e1, "postfix-mailbox-full.eml")
    soft(e2, "exim-retry-timeout.eml")
    assert status_of(world, m.to_email) == SubscriberStatus.ACTIVE  # two in a row, the limit is 3
    soft(e4, "postfix-mailbox-full.eml")  # e3 arrived: the run was broken
    assert status_of(world, m.to_email) == SubscriberStatus.ACTIVE
    soft(e3, "exim-retry-timeout.eml")  # e3's report came late: e1..e4 bounced in a row
    assert status_of(world, m.to_email) == SubscriberStatus.BOUNCED
    kinds = [(e.kind, e.edition_id) for e in events(world, m.to_email)]
    assert kinds == [
        ("soft-bounce", e1),
        ("soft-bounce", e2),
        ("soft-bounce", e4),
        ("soft-bounce", e3),
        ("bounce", e3),
    ]
    assert events(world, m.to_email)[-1].detail == (
        "soft bounces in 4 editions in a row (DIGEST_SOFT_BOUNCE_LIMIT=3)"
    )
    # Today's edition (sent, no bounce) is the next in the row: it did not count.
    with session_scope(world.engine) as session:
        edition = session.get(Edition, e3)
        assert edition is not None
        stats = edition_stats(edition, session=session)
    assert (stats.bounces, stats.soft_bounces) == (1, 1)


def test_a_limit_of_one_suppresses_on_the_first_soft_bounce(world: World, tmp_path: Path) -> None:
    m = sent(world)[0]
    raw = report_file("postfix-mailbox-full.eml", rcpt=m.to_email, verp=verp_of(m))
    report = run(world, tmp_path, raw, soft_bounce_limit=1)
    assert (report.soft, report.suppressed) == (1, 1)


def test_what_cannot_be_tied_to_a_delivery_changes_nothing(world: World, tmp_path: Path) -> None:
    a, b, c = sent(world)[:3]
    assert a.token_key is not None
    forged = return_path(
        BOUNCES, signer=ReturnPathSigner(["someone else's key"]), subscriber_id=a.subscriber_id,
        edition_id=a.edition_id, token_key=a.token_key,
    )  # fmt: skip
    with session_scope(world.engine) as session:
        other = Edition(date=date(2026, 1, 1), subject="old", content_json="{}", built_at=world.now)
        session.add(other)
        session.flush()
        assert other.id is not None
        unsent = verp_of(b, other.id)
    copy_not_ours = report_file("rfc3464-hard.eml", rcpt=c.to_email)  # returned headers, no token of ours
    forged_link = "https://digest.example/unsubscribe/" + TokenSigner(["not ours"]).sign(LinkToken(1, 1, KEY))
    report = run(
        world,
        tmp_path,
        report_file("rfc3464-hard.eml", rcpt=a.to_email, verp=forged),
        report_file("exim-unknown-user.eml", rcpt=b.to_email, verp=unsent),
        copy_not_ours,
        report_file("rfc3464-hard.eml", rcpt=c.to_email, unsub=forged_link),
        report_file("rfc3464-multi.eml", rcpt="x"),  # addresses we never sent to, no token, no copy
        report_file("autoreply.eml", rcpt=a.to_email, verp=verp_of(a)),
        report_file("rfc3464-delayed.eml", rcpt=a.to_email, verp=verp_of(a)),
    )
    assert (report.read, report.hard, report.soft, report.suppressed, report.delayed) == (7, 0, 0, 0, 1)
    assert report.not_bounces == ["Ana Reader <reader001@example.com>: Away until Monday"]
    # In any order: a Maildir's keys do not keep the order messages were added in.
    assert sorted(line.rsplit(" (", 1)[1] for line in report.unmatched) == sorted(
        [
            "return-path token does not verify)",
            "return-path token names a delivery the ledger has not sent)",
            "the returned copy is not one of our messages)",
            "unsubscribe token of the returned copy does not verify)",
            "no token, and no address we sent to in the last 14 days)",
        ]
    )
    assert all(status_of(world, e) == SubscriberStatus.ACTIVE for e in world.emails)


def test_a_report_with_neither_token_nor_copy_matches_an_address_sent_to_lately(
    world: World, tmp_path: Path
) -> None:
    m = sent(world)[3]
    raw = report_file("rfc3464-multi.eml", rcpt="x").replace(
        b"Gone.User@Example.ORG", m.to_email.upper().encode()
    )
    report = run(world, tmp_path, raw)
    assert (report.hard, report.suppressed) == (1, 1)
    assert status_of(world, m.to_email) == SubscriberStatus.BOUNCED
    # The same report a month later is too late to trust an address alone.
    later = world.now + timedelta(days=30)
    again = raw.replace(b"Message-ID: <dsn-0002", b"Message-ID: <dsn-0003")
    with session_scope(world.engine) as session:
        row = session.exec(select(Subscriber).where(Subscriber.email == m.to_email)).one()
        row.status = SubscriberStatus.ACTIVE
    report = run(world, tmp_path / "later", again, now=later)
    assert report.hard == 0 and len(report.unmatched) == 1


def test_someone_who_left_meanwhile_keeps_their_status(world: World, tmp_path: Path) -> None:
    m = sent(world)[0]
    with session_scope(world.engine) as session:
        row = session.get(Subscriber, m.subscriber_id)
        assert row is not None
        row.status = SubscriberStatus.UNSUBSCRIBED
    raw = report_file("rfc3464-hard.eml", rcpt=m.to_email, verp=verp_of(m))
    report = run(world, tmp_path, raw)
    assert (report.hard, report.suppressed) == (1, 0)
    assert status_of(world, m.to_email) == SubscriberStatus.UNSUBSCRIBED
    assert [e.kind for e in events(world, m.to_email)] == ["bounce"]


@pytest.mark.parametrize("who", ["another address", "the same address"])
def test_a_bounce_of_a_deleted_subscriber_does_not_touch_the_next_one_with_its_id(
    world: World, tmp_path: Path, who: str
) -> None:
    gone = sent(world)[-1]
    assert gone.unsubscribe_url is not None
    old_verp = verp_of(gone)
    newcomer = "newcomer@example.org" if who == "another address" else gone.to_email
    with session_scope(world.engine) as session:
        remove_subscriber(gone.to_email, session=session)
    with session_scope(world.engine) as session:
        # SQLite gives a deleted last row's id to the next one (tests/hostile/test_web.py shows it
        # through add_subscriber); PostgreSQL only when told, as a restore or a reset sequence would.
        session.add(
            Subscriber(id=gone.subscriber_id, email=newcomer, created_at=world.now, updated_at=world.now)
        )
    # Today's edition goes to the newcomer too: the ledger holds (that id, that edition) again.
    [again] = sent(world)
    assert (again.subscriber_id, again.edition_id, again.to_email) == (
        gone.subscriber_id,
        gone.edition_id,
        newcomer,
    )
    report = run(
        world,
        tmp_path,
        # The return path alone (the returned copy carries someone else's link) ...
        report_file("exim-unknown-user.eml", rcpt=gone.to_email, verp=old_verp),
        # ... and the returned copy's unsubscribe link alone.
        report_file("qmail-no-mailbox.eml", rcpt=gone.to_email, unsub=gone.unsubscribe_url),
    )
    assert (report.read, report.hard, report.soft, report.suppressed) == (2, 0, 0, 0)
    assert sorted(line.rsplit(" (", 1)[1] for line in report.unmatched) == [
        "return-path token does not verify)",
        "unsubscribe token of the returned copy names no subscriber or edition we have)",
    ]
    assert status_of(world, newcomer) == SubscriberStatus.ACTIVE
    assert events(world, newcomer) == []
    # The newcomer's own bounce still counts.
    raw = report_file("exim-unknown-user.eml", rcpt=newcomer, verp=verp_of(again)).replace(
        b"Message-Id: <E1tQabc", b"Message-Id: <E1tQabd"
    )
    assert run(world, tmp_path / "own", raw).suppressed == 1
    assert status_of(world, newcomer) == SubscriberStatus.BOUNCED


# --- the command --------------------------------------------------------------------------------------


def test_digest_bounces_reads_the_maildir_and_stats_show_it(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = sent(world)[:2]
    maildir(
        tmp_path,
        report_file("qmail-no-mailbox.eml", rcpt=a.to_email, verp=verp_of(a)),
        report_file("postfix-mailbox-full.eml", rcpt=b.to_email, verp=verp_of(b)),
        report_file("autoreply.eml", rcpt=a.to_email, verp=verp_of(a)),
    )
    monkeypatch.setenv("DIGEST_DATABASE_URL", world.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    monkeypatch.setenv("DIGEST_BOUNCE_ADDRESS", BOUNCES)
    monkeypatch.setenv("DIGEST_BOUNCE_MAILBOX", f"maildir:{tmp_path / 'Bounces'}")
    runner = ClockedRunner()
    result = runner.invoke(app, ["bounces"])
    assert result.exit_code == 0, result.output
    assert "read 3: hard 1, soft 1, readers suppressed 1, delayed 0" in result.output
    assert "not a bounce: Ana Reader" in result.output
    assert status_of(world, a.to_email) == SubscriberStatus.BOUNCED
    assert status_of(world, b.to_email) == SubscriberStatus.ACTIVE
    stats = runner.invoke(app, ["stats", "--date", world.now.date().isoformat()])
    assert stats.exit_code == 0, stats.output
    assert f"Bounces, edition {world.now.date()}: 1 suppressed, 1 soft" in stats.output
    again = runner.invoke(app, ["bounces"])
    assert "read 0:" in again.output


def test_digest_bounces_without_a_mailbox_says_which_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DIGEST_DATABASE_URL", f"sqlite:///{tmp_path / 'd.db'}")
    result = ClockedRunner().invoke(app, ["bounces"])
    assert result.exit_code == 1
    assert "DIGEST_BOUNCE_MAILBOX: not set" in result.output
    monkeypatch.setenv("DIGEST_BOUNCE_MAILBOX", "imaps://me@mail.example/INBOX")
    result = ClockedRunner().invoke(app, ["bounces"])
    assert "DIGEST_BOUNCE_MAILBOX_PASSWORD: required" in result.output


class _FakeImap:
    """Answers UID FETCH as imaplib returns it: (envelope, literal) then a closing paren."""

    def __init__(self, message: bytes) -> None:
        self.message = message
        self.commands: list[tuple[str, ...]] = []

    def uid(self, *args: str) -> tuple[str, list[object]]:
        self.commands.append(args)
        return "OK", [(b"7 (UID 7 BODY[]<0> {%d}" % len(self.message), self.message), b")"]


def test_an_imap_report_is_fetched_partially_and_not_marked_seen() -> None:
    imap = ImapMailbox.__new__(ImapMailbox)
    fake = _FakeImap(b"From: a\n\nreport")
    imap.conn, imap.host = fake, "mail.example"  # type: ignore[assignment,unused-ignore]
    assert imap.raw(MailRequest("7", "", ""), limit=MAX_BYTES) == b"From: a\n\nreport"
    assert fake.commands == [("FETCH", "7", f"(BODY.PEEK[]<0.{MAX_BYTES}>)")]


def test_a_maildir_report_is_read_to_the_bound(tmp_path: Path) -> None:
    box = maildir(tmp_path, b"Subject: big\n\n" + b"x" * 5000)
    [request] = list(box.unread())
    assert len(box.raw(request, limit=1000)) == 1000
