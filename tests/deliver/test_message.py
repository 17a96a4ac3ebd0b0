"""The pre-encoded message builder: valid MIME, every header, both parts exactly as filled."""

import smtplib
from datetime import datetime

import pytest

from digest.deliver.message import EncodedContent, MessageEncoder, MessageIds, to_bytes
from tests.deliver.builders import content, message, parse, parts


def test_headers_are_all_there_and_exact(now: datetime) -> None:
    msg = parse(to_bytes(message(), now=now))
    assert msg["From"] == "Daily Digest <news@digest.example>"
    assert msg["To"] == "Ana <reader1@example.com>"
    assert msg["Reply-To"] == "editor@digest.example"
    assert msg["Subject"] == "Daily, Nov 25: Robots win + 3 more"
    assert msg["Date"].datetime == now
    assert msg["Message-ID"] == "<1.test@digest.example>"
    assert msg["List-Id"] == "Daily Digest <daily-digest.digest.example>"
    token = f"WzEsN10.{'x' * 40}1"
    assert msg["List-Unsubscribe"] == (
        f"<https://digest.example/unsubscribe/{token}>, "
        f"<mailto:unsubscribe@digest.example?subject=unsubscribe%20{token}>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg.defects == []
    assert all(not p.defects for p in msg.walk())


def test_without_mailto_list_unsubscribe_has_only_the_https_url(now: datetime) -> None:
    msg = parse(to_bytes(message(mailto=False), now=now))
    assert msg["List-Unsubscribe"] == f"<https://digest.example/unsubscribe/WzEsN10.{'x' * 40}1>"


def test_parts_decode_to_exactly_the_filled_bodies(now: datetime) -> None:
    m = message()
    text, html = parts(to_bytes(m, now=now))
    assert text == m.text.replace("\r\n", "\n")
    assert html == m.html
    assert "Hi Ana," in text
    assert "1 Example Street, Springfield" in text
    assert m.unsubscribe_url in text
    assert f'href="{m.unsubscribe_url}"' in html
    assert "1 Example Street, Springfield" in html


def test_html_values_are_escaped_and_text_values_are_not(now: datetime) -> None:
    m = message(name="Tom & <Jerry>")
    text, html = parts(to_bytes(m, now=now))
    assert "Hi Tom & <Jerry>," in text
    assert "Hi Tom &amp; &lt;Jerry&gt;," in html
    assert parse(to_bytes(m, now=now))["To"].addresses[0].display_name == "Tom & <Jerry>"


def test_non_ascii_name_is_encoded_in_to_and_survives(now: datetime) -> None:
    m = message(name="Zoë Ångström")
    data = to_bytes(m, now=now)
    assert data.isascii()
    msg = parse(data)
    assert msg["To"].addresses[0].display_name == "Zoë Ångström"
    assert parts(data)[0].startswith("Hi Zoë Ångström,")


def test_every_line_is_short_and_crlf_terminated(now: datetime) -> None:
    data = to_bytes(message(), now=now)
    assert data.endswith(b"\r\n")
    lines = data.split(b"\r\n")
    assert b"\n" not in b"".join(lines)
    body = data.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76  # RFC 2045 §6.7 rule 5
    assert max(len(line) for line in lines) <= 998  # RFC 5322 §2.1.1


def test_readers_of_one_content_differ_only_in_their_values(now: datetime) -> None:
    encoder = MessageEncoder()
    shared = content()
    a, b = message(1, of=shared), message(2, of=shared, name="Ben")
    text_a, _ = parts(encoder.to_bytes(a, now=now))
    text_b, _ = parts(encoder.to_bytes(b, now=now))
    assert text_a == a.text
    assert text_b == b.text
    assert len(encoder._cache) == 1


@pytest.mark.parametrize(
    "value", ["", " ", "x" * 300, "a=b", "tab\there", "line\nbreak", "word " * 40, ".", "ü" * 50, "x" * 75]
)
def test_awkward_values_round_trip(now: datetime, value: str) -> None:
    m = message()
    m = type(m)(**{**{f: getattr(m, f) for f in m.__slots__}, "values": {**m.values, "email": value}})
    data = EncodedContent(m.content).render(m, now=now)
    text, _html = parts(data)
    expected = value.replace("\n", " ")
    assert f"You subscribed with {expected}." in text
    body = data.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 76  # RFC 2045 §6.7 rule 5
    assert not any(line.endswith((b" ", b"\t")) for line in body.split(b"\r\n"))  # rule 3
    assert text.endswith("1 Example Street, Springfield\n")


def test_message_ids_are_unique_valid_and_on_the_domain() -> None:
    from email.headerregistry import HeaderRegistry

    first, second = MessageIds("digest.example"), MessageIds("digest.example")
    ids = [first() for _ in range(1000)] + [second() for _ in range(1000)]
    assert len(set(ids)) == 2000  # two sends (two processes) never share one either
    parsed = HeaderRegistry()("Message-ID", ids[0])
    assert not parsed.defects
    assert all(i.startswith("<") and i.endswith("@digest.example>") for i in ids)


class _Wire(smtplib.SMTP):
    """smtplib with no socket: records what it would send, DATA always answered 354."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes | str] = []

    def send(self, s: bytes | str) -> None:
        self.sent.append(s)

    def getreply(self) -> tuple[int, bytes]:
        return 354, b"go ahead"


@pytest.mark.parametrize("name", ["Ana", ".dot", ".", "..", "line\n.break"])
@pytest.mark.parametrize("email", ["reader1@example.com", ".reader@example.com"])
def test_wire_is_what_smtplib_sends_after_data(now: datetime, name: str, email: str) -> None:
    # The content has lines that begin with a dot, in its own text and right after a value.
    m = message(name=name, email=email)
    encoded = EncodedContent(m.content)
    for _ in range(2):  # the second time from the content's stuffed pieces
        wire = _Wire()
        wire.data(encoded.render(m, now=now))
        assert wire.sent == ["data\r\n", encoded.wire(m, now=now)]
