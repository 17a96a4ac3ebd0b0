"""Grouping messages into transport calls: one content per call, and a bound on what waits."""

from collections.abc import Iterator

from digest.deliver.base import OutgoingMessage
from digest.deliver.sender import batches
from tests.deliver.builders import content, message


def readers(count: int, contents: int) -> list[OutgoingMessage]:
    """`count` readers spread round-robin over `contents` distinct contents (topic sets)."""
    shared = [content(f"k{i}") for i in range(contents)]
    return [message(n, of=shared[n % contents]) for n in range(1, count + 1)]


def test_calls_carry_one_content_and_at_most_size_messages() -> None:
    sent = readers(25, 2)
    calls = list(batches(sent, 10))
    assert all(len({m.content.key for m in call}) == 1 for call in calls)
    assert max(len(call) for call in calls) == 10
    assert sorted(m.delivery_id for call in calls for m in call) == list(range(1, 26))


def test_full_calls_are_not_cut_short_while_few_contents_wait() -> None:
    calls = list(batches(readers(4000, 4), 1000))
    assert sorted(len(call) for call in calls) == [1000] * 4


def test_messages_waiting_in_open_calls_stay_bounded_with_many_contents() -> None:
    # 50 contents and calls of up to 10: without the bound 50 * 9 messages would wait.
    held: list[int] = []

    def counted(messages: list[OutgoingMessage]) -> Iterator[OutgoingMessage]:
        for n, m in enumerate(messages, start=1):
            held.append(n - sum(len(call) for call in calls))
            yield m

    calls: list[list[OutgoingMessage]] = []
    for call in batches(counted(readers(1000, 50)), 10, max_held=40):
        calls.append(call)
    assert max(held) <= 40
    assert all(len({m.content.key for m in call}) == 1 and len(call) <= 10 for call in calls)
    assert sorted(m.delivery_id for call in calls for m in call) == list(range(1, 1001))
