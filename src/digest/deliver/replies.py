"""What a relay's answer means for a send (pure: no network, no clock, no settings).

Read by the stage that gave it, as Postfix and listmonk read RFC 5321 §4.2, with the enhanced
status code of RFC 3463 where the reply starts with one: only a refusal of RCPT TO is about the
reader (a bounce, except a full mailbox or a policy refusal); a 5xx to MAIL FROM, to DATA or
after the content is about the sender, the session or the message (issue 12 row 1); a 4xx is
transient and never a bounce.
"""

import re
from dataclasses import dataclass
from enum import Enum

from digest.deliver.headers import clean

MAX_REPLY = 300  # characters of a relay's reply kept in errors and the ledger: it is outside text
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")  # RFC 3463 class.subject.detail


class Verdict(Enum):
    """What a relay's reply means for the send."""

    DEFER = "defer"  # transient: try again (4xx)
    BOUNCE = "bounce"  # the address is refused: suppress the reader
    FAIL = "fail"  # this edition fails for this reader, who stays subscribed (mailbox full)
    POLICY = "policy"  # refused by the relay's policy: not the reader's fault, try a later run
    STOP = "stop"  # about the sender, session or message: stop the send, bounce nobody


def classify(stage: str, code: int, reply: str) -> Verdict:
    """The meaning of a refusal (`code` not 2xx) at `stage`: MAIL, RCPT, DATA or EOD (end of data).

    Pure: RFC 5321 §4.2 for the code, RFC 3463 for the enhanced status code that starts `reply`.
    """
    if not 400 <= code < 600:
        return Verdict.STOP  # 1xx/3xx where a final answer belongs, or no SMTP reply at all
    enhanced = _ENHANCED.match(reply)
    subject_detail = f"{enhanced[2]}.{enhanced[3]}" if enhanced else ""
    if code < 500:
        return Verdict.DEFER
    if stage == "RCPT":
        if code == 530 or (subject_detail.startswith("7.") and "relay" in reply.lower()):
            # "Authentication required", "Relay access denied": the relay will not take mail
            # from us for anyone; a setting is wrong, not 200 readers' addresses.
            return Verdict.STOP
        if code in (500, 502, 503, 504):  # syntax, not implemented, bad sequence: the dialogue
            return Verdict.STOP
        if subject_detail == "2.2" or (code == 552 and not enhanced):  # mailbox full (§4.5.3.1.10)
            return Verdict.FAIL
        if subject_detail.startswith("7."):
            return Verdict.POLICY
        return Verdict.BOUNCE
    if stage == "EOD" and (subject_detail.startswith("1.") or subject_detail in ("2.1", "2.2")):
        # Some relays check the recipient only after the content. We send one recipient per
        # transaction, so this answer is about that reader, but it is no RCPT refusal: the
        # reader fails this edition without being suppressed, and the send goes on.
        return Verdict.FAIL
    return Verdict.STOP


@dataclass(frozen=True, slots=True)
class Reply:
    """A relay's answer to one stage of the dialogue, its text cleaned to one short line."""

    stage: str
    code: int
    text: str

    @classmethod
    def of(cls, stage: str, code: int, raw: bytes | str) -> "Reply":
        """A Reply from what smtplib returns (the text as bytes)."""
        return cls(stage, code, reply_text(raw))

    def __str__(self) -> str:
        return f"{self.code} {self.text}" if self.code >= 0 else f"not an SMTP reply: {self.text!r}"


def reply_text(reply: bytes | str) -> str:
    """A relay's text, as it may go into an error, a log line and the ledger."""
    raw = reply.decode("utf-8", errors="replace") if isinstance(reply, bytes) else reply
    return clean(raw, MAX_REPLY)  # multi-line replies and a hostile relay's bytes: one short line
