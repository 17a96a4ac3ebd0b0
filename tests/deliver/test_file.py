"""The file transport: one .eml per message."""

from datetime import UTC, datetime
from pathlib import Path

from digest.deliver.file import FileTransport
from digest.deliver.message import to_bytes
from tests.deliver.builders import content, message, parse

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)


def test_a_call_mixing_contents_writes_each_message_with_its_own(tmp_path: Path) -> None:
    """The transport looks a content's encoded form up once per run of messages sharing it;
    a call that switches between contents still writes each one's own bytes."""
    first, second = content("aaaa", subject="First digest"), content("bbbb", subject="Second digest")
    messages = [message(1, of=first), message(2, of=first), message(3, of=second), message(4, of=first)]
    transport = FileTransport(tmp_path / "outbox", clock=lambda: NOW)

    results = transport.send(messages)

    assert [r.ok for r in results] == [True] * 4
    subjects = [parse(transport.path_for(m).read_bytes())["Subject"] for m in messages]
    assert subjects == ["First digest", "First digest", "Second digest", "First digest"]
    # Byte for byte what the shared-nothing encoder makes, but the boundary (random per content).
    for m in messages:
        written = parse(transport.path_for(m).read_bytes())
        alone = parse(to_bytes(m, now=NOW))
        assert written.get_body(("plain",)).get_content() == alone.get_body(("plain",)).get_content()
        assert written.get_body(("html",)).get_content() == alone.get_body(("html",)).get_content()
        assert written["To"] == alone["To"] and written["Message-ID"] == alone["Message-ID"]
