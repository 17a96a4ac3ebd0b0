"""The editor's desk (issue 14): decisions as plain data in compose, and `digest edition ...` on the
demo newsletter, checked in the frozen edition and the sent email (SQLite and PostgreSQL)."""

from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlmodel import select

from digest import compose, desk
from digest.cli import app
from digest.db.engine import session_scope
from digest.db.models import Article, EditionDecision
from digest.errors import EditorError
from tests.cli_helpers import ClockedRunner
from tests.world import World, use_in_cli

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)


def item(story_id: int, topic: str, *, hours_old: float = 1.0, sources: int = 1) -> compose.StoryItem:
    return compose.StoryItem(
        id=story_id,
        title=f"story {story_id}",
        url=f"https://news.example/{story_id}",
        summary_html="",
        published=NOW - timedelta(hours=hours_old),
        sources=tuple(
            compose.SourceRef(f"outlet {i}", f"https://o{i}.example/{story_id}") for i in range(sources)
        ),
        topic=topic,
        reason="keyword",
    )


def composed(stories: list[compose.StoryItem], decisions: compose.Decisions, cap: int = 2) -> compose.Edition:
    return compose.compose_edition(
        edition_date=NOW.date(),
        title="T",
        stories=stories,
        topic_order=["A", "B"],
        now=NOW,
        max_per_topic=cap,
        max_total=10,
        decisions=decisions,
    )


def ids(edition: compose.Edition) -> dict[str, list[int]]:
    return {t.name: [s.id for s in t.stories] for t in edition.topics}


# --- pure ------------------------------------------------------------------------------------------


def test_decisions_drop_pin_move_and_note_as_plain_data() -> None:
    # Fresher ranks first: 1 (newest), 2, 3 in A; 4 in B.
    stories = [item(1, "A", hours_old=1), item(2, "A", hours_old=2), item(3, "A", hours_old=3), item(4, "B")]
    assert ids(composed(stories, compose.NO_DECISIONS)) == {"A": [1, 2], "B": [4]}
    # Dropping 1 lets 3 in under the cap of two.
    assert ids(composed(stories, compose.Decisions(dropped=frozenset({1})))) == {"A": [2, 3], "B": [4]}
    # Pinning 3 puts it first (it counts in the cap, and the lowest-ranked other one gives way);
    # pins are kept even past the cap, the latest pin (first in the tuple) leading.
    assert ids(composed(stories, compose.Decisions(pinned=(3,)))) == {"A": [3, 1], "B": [4]}
    assert ids(composed(stories, compose.Decisions(pinned=(2, 3)))) == {"A": [2, 3], "B": [4]}
    assert ids(composed(stories, compose.Decisions(pinned=(3, 2, 1)))) == {"A": [3, 2, 1], "B": [4]}
    # Moving 1 to B changes its topic and says why.
    moved = composed(stories, compose.Decisions(moved=((1, "B"),)))
    assert ids(moved) == {"A": [2, 3], "B": [1, 4]}
    assert moved.topics[1].stories[0].reason == "moved here by the editor (was A)"
    noted = composed(stories, compose.Decisions(note="Back on Monday."))
    assert noted.note == "Back on Monday."
    assert compose.Edition.from_json(noted.to_json()).note == "Back on Monday."
    assert '"note"' not in composed(stories, compose.NO_DECISIONS).to_json()  # old JSON unchanged


def test_the_decision_log_folds_later_over_earlier() -> None:
    from digest.editions import editor_decisions
    from digest.newsletter import load_newsletter
    from tests.conftest import DEMO

    newsletter = load_newsletter(DEMO / "digest.toml")

    def d(
        action: str, story: int | None = None, topic: str | None = None, note: str | None = None
    ) -> EditionDecision:
        return EditionDecision(
            edition_date=NOW.date(), action=action, story_id=story, topic=topic, note=note, created_at=NOW
        )

    folded = editor_decisions(
        newsletter,
        [
            d("drop", 1),
            d("pin", 1),  # pinned after all: no longer dropped
            d("pin", 2),
            d("move", 3, "Robotics"),
            d("move", 4, "Gone topic"),  # not configured (any more): ignored
            d("note", note="first"),
            d("note", note="second"),
            d("drop", 2),  # dropped after its pin
        ],
    )
    assert folded == compose.Decisions(frozenset({2}), (1,), ((3, "Robotics"),), "second")


# --- the CLI on the demo newsletter -------------------------------------------------------------------


def cli(world: World, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    use_in_cli(world, monkeypatch)
    result = ClockedRunner().invoke(app, [*args])
    assert result.exit_code == 0, result.output
    return result.output


def refused(world: World, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    use_in_cli(world, monkeypatch)
    result = ClockedRunner().invoke(app, [*args])
    assert result.exit_code == 1, result.output
    return result.output


def test_the_desk_changes_the_draft_and_the_frozen_edition_and_the_email_show_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = desk.show(world.newsletter, engine=world.engine, edition_date=NOW.date(), now=NOW, zone=UTC)
    assert not before.frozen and before.approved_at is None
    ev = [s for s in before.stories if s.topic == "EV industry"]
    merged = next(s for s in before.stories if s.splittable)  # two outlets' articles as one story
    last_ev, dropped = ev[-1], ev[1]
    robot = next(s for s in before.stories if s.topic == "Robotics")
    shown = cli(world, monkeypatch, "edition", "show")
    assert f"#{merged.id} {merged.title}" in shown and merged.reason in shown

    assert "dropped" in cli(world, monkeypatch, "edition", "drop", str(dropped.id))
    assert "pinned" in cli(world, monkeypatch, "edition", "pin", str(last_ev.id))
    assert "moved to Smartphones" in cli(world, monkeypatch, "edition", "move", str(robot.id), "smartphones")
    split = cli(world, monkeypatch, "edition", "split", str(merged.id))
    assert f"story {merged.id} split into 2 stories" in split
    cli(world, monkeypatch, "edition", "note", "Line one of the note.\nA <b>second</b> line.")

    after = desk.show(world.newsletter, engine=world.engine, edition_date=NOW.date(), now=NOW, zone=UTC)
    assert after.decisions == 5
    states = {s.id: s.state for s in after.stories}
    assert states[dropped.id] == "dropped" and states[last_ev.id] == "pinned"
    assert "[dropped]" in cli(world, monkeypatch, "edition", "show")

    # The real send freezes the draft as the desk left it.
    from digest.deliver.memory import MemoryTransport

    memory = MemoryTransport()
    world.send(memory)
    frozen = desk.show(world.newsletter, engine=world.engine, edition_date=NOW.date(), now=NOW, zone=UTC)
    assert frozen.frozen and frozen.sent
    layout = ids(frozen.edition)
    assert dropped.id not in [i for t in layout.values() for i in t]
    assert layout["EV industry"][0] == last_ev.id
    assert robot.id in layout["Smartphones"] and robot.id not in layout.get("Robotics", [])
    # The split: the merged story keeps its lead article, the other outlet's is a story of its own.
    new_id = int(split.rsplit(",", 1)[1])
    carried = {s.id: s for t in frozen.edition.topics for s in t.stories}
    assert [s.name for s in carried[merged.id].sources] == [merged.sources[0]]
    assert [s.name for s in carried[new_id].sources] == [merged.sources[1]]
    with session_scope(world.engine) as session:
        moved_article = session.exec(select(Article).where(Article.story_id == new_id)).one()
    assert moved_article.url == carried[new_id].url
    assert frozen.edition.note == "Line one of the note.\nA <b>second</b> line."

    message = memory.sent[0]
    assert "Line one of the note." in message.text and "A <b>second</b> line." in message.text
    assert "A &lt;b&gt;second&lt;/b&gt; line." in message.html  # escaped in HTML
    assert message.html.index("Line one of the note.") < message.html.index(
        last_ev.title.replace("'", "&#39;")[:20]
    )

    # Frozen: the desk is closed, with the reason.
    closed = refused(world, monkeypatch, "edition", "drop", str(last_ev.id))
    assert f"edition {NOW.date()} is frozen" in closed and "the desk changes only a draft" in closed


def test_the_desk_refuses_unknown_stories_topics_and_long_notes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "story 999 is not waiting for the edition" in refused(world, monkeypatch, "edition", "pin", "999")
    assert "unknown topic 'Gardening'" in refused(world, monkeypatch, "edition", "move", "1", "Gardening")
    with pytest.raises(EditorError, match="at most 1000"):
        desk.clean_note("x" * 1001)
    assert desk.clean_note(" a\x00b\r\nc ") == "a b\nc"
    single = next(
        s
        for s in desk.show(
            world.newsletter, engine=world.engine, edition_date=NOW.date(), now=NOW, zone=UTC
        ).stories
        if not s.splittable
    )
    assert "has a single article" in refused(world, monkeypatch, "edition", "split", str(single.id))


def test_approve_freezes_the_draft_once(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    cli(world, monkeypatch, "edition", "note", "Approved note")
    first = cli(world, monkeypatch, "edition", "approve")
    assert f"edition {NOW.date()} approved and frozen" in first
    assert "already approved" in cli(world, monkeypatch, "edition", "approve")
    view = desk.show(world.newsletter, engine=world.engine, edition_date=NOW.date(), now=NOW, zone=UTC)
    assert view.frozen and not view.sent and view.approved_at == NOW and view.note == "Approved note"
    assert "approved 2026-11-25 07:00 UTC" in cli(world, monkeypatch, "edition", "show")
    # Another day is untouched.
    other = desk.show(
        world.newsletter, engine=world.engine, edition_date=date(2026, 11, 26), now=NOW, zone=UTC
    )
    assert not other.frozen and other.approved_at is None


def test_a_test_send_shows_the_desks_draft(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cli(world, monkeypatch, "edition", "note", "Seen in the test copy")
    out = cli(world, monkeypatch, "send", "--test", "editor@example.org")
    assert "draft (not frozen yet)" in out
    (path,) = (world.settings.outbox_dir / "test").glob("edition-*/*.eml")
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert "Seen in the test copy" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_the_readme_first_screen_shows_the_operators_day_with_commands_that_exist() -> None:
    from tests.conftest import ROOT

    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:25])
    day = [
        "digest preview --serve",
        "digest send --test",
        "digest edition approve",
        "digest send",
        "digest stats",
    ]
    for command in day:
        assert command in first_screen, command
        words = command.split()[1:]
        result = ClockedRunner().invoke(app, [w for w in words if not w.startswith("--")] + ["--help"])
        assert result.exit_code == 0, command
        for flag in (w for w in words if w.startswith("--")):
            assert flag in result.output, command


@pytest.mark.parametrize("command", ["show", "drop", "pin", "move", "split", "note", "approve"])
def test_each_desk_command_has_help_with_an_example(command: str) -> None:
    result = ClockedRunner().invoke(app, ["edition", command, "--help"])
    assert result.exit_code == 0
    assert f"Example: digest edition {command}" in " ".join(result.output.split())
