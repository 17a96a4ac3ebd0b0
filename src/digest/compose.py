"""Pure: pick and order what one edition, and one subscriber's copy of it, contains."""

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime
from typing import Any

RECENCY_HALF_LIFE_HOURS = 12.0


@dataclass(frozen=True, slots=True)
class SourceRef:
    """An outlet that reported a story, with its own link to it."""

    name: str
    url: str


@dataclass(frozen=True, slots=True)
class ThreadRef:
    """Another edition's story of the same thread, for an "Earlier:" or "Later:" line (issue 16)."""

    story_id: int
    day: date  # the date of the edition that carried it: its archive page
    title: str
    topic: str  # the topic it was carried under

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ThreadRef":
        """Inverse of `asdict`."""
        day = date.fromisoformat(data["day"])
        return cls(int(data["story_id"]), day, str(data["title"]), str(data["topic"]))


@dataclass(frozen=True, slots=True)
class StoryItem:
    """A story as the digest shows it."""

    id: int
    title: str
    url: str
    summary_html: str
    published: datetime
    sources: tuple[SourceRef, ...]
    topic: str
    reason: str = ""
    weight: float = 1.0  # the best weight among the sources that reported it
    # Earlier stories of its thread, newest first (frozen with the edition); later ones are only
    # known once they exist and are added for the archive page, never stored with the edition.
    earlier: tuple[ThreadRef, ...] = ()
    later: tuple[ThreadRef, ...] = ()


@dataclass(frozen=True, slots=True)
class TopicSection:
    """One topic heading and its stories, best first."""

    name: str
    stories: tuple[StoryItem, ...]


@dataclass(frozen=True, slots=True)
class Edition:
    """One day's digest: the topics in newsletter order, each with its stories."""

    date: date
    title: str
    topics: tuple[TopicSection, ...]
    note: str = ""  # the editor's note, shown at the top (issue 14)

    @property
    def story_count(self) -> int:
        """Number of stories across all topics."""
        return sum(len(t.stories) for t in self.topics)

    @property
    def topic_names(self) -> frozenset[str]:
        """Names of the topics that have stories."""
        return frozenset(t.name for t in self.topics)

    def to_json(self) -> str:
        """Serialize (the `digest preview --format json` shape plus summaries and reasons)."""
        data = asdict(self)
        if not self.note:
            del data["note"]  # editions without one keep the JSON they always had
        return json.dumps(data, default=_json_default, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Edition":
        """Inverse of `to_json`."""
        data = json.loads(text)
        return cls(
            date=date.fromisoformat(data["date"]),
            title=data["title"],
            topics=tuple(
                TopicSection(
                    name=t["name"],
                    stories=tuple(
                        StoryItem(
                            **{
                                **s,
                                "published": datetime.fromisoformat(s["published"]),
                                "sources": tuple(SourceRef(**r) for r in s["sources"]),
                                # editions frozen before issue 16 have no links
                                "earlier": tuple(ThreadRef.from_json(r) for r in s.get("earlier", ())),
                                "later": tuple(ThreadRef.from_json(r) for r in s.get("later", ())),
                            }
                        )
                        for s in t["stories"]
                    ),
                )
                for t in data["topics"]
            ),
            note=data.get("note", ""),
        )


def _json_default(value: Any) -> str:
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(f"cannot serialize {type(value).__name__}")


def score(story: StoryItem, *, now: datetime) -> float:
    """Ranking within a topic: more outlets and heavier sources first, fresher first.

    score = (1 + number of sources) * source weight * 0.5 ** (age in hours / 12)
    """
    age_hours = max((now - story.published).total_seconds() / 3600, 0.0)
    decay: float = 0.5 ** (age_hours / RECENCY_HALF_LIFE_HOURS)
    return (1 + len(story.sources)) * story.weight * decay


@dataclass(frozen=True, slots=True)
class Decisions:
    """What the editor decided about one draft (issue 14), as plain data.

    `dropped` stories are left out; `moved` ones go under another topic; `pinned` ones come first
    in their topic (the latest pin first) and are kept whatever the caps; `note` is shown at the top.
    """

    dropped: frozenset[int] = frozenset()
    pinned: tuple[int, ...] = ()
    moved: tuple[tuple[int, str], ...] = ()
    note: str = ""


NO_DECISIONS = Decisions()


def apply_decisions(stories: Sequence[StoryItem], decisions: Decisions) -> list[StoryItem]:
    """The candidate stories with the editor's drops and moves applied."""
    moved = dict(decisions.moved)
    kept = []
    for story in stories:
        if story.id in decisions.dropped:
            continue
        topic = moved.get(story.id)
        if topic is not None and topic != story.topic:
            story = replace(story, topic=topic, reason=f"moved here by the editor (was {story.topic})")
        kept.append(story)
    return kept


def compose_edition(
    *,
    edition_date: date,
    title: str,
    stories: Sequence[StoryItem],
    topic_order: Sequence[str],
    now: datetime,
    max_per_topic: int,
    max_total: int,
    decisions: Decisions = NO_DECISIONS,
) -> Edition:
    """Group stories by topic (in `topic_order`), rank them, and apply the caps; the editor's
    `decisions` first (pinned stories lead their topic and are kept over the caps)."""
    stories = apply_decisions(stories, decisions)
    pins = {story_id: rank for rank, story_id in enumerate(decisions.pinned)}
    ranked = sorted(stories, key=lambda s: (pins.get(s.id, len(pins)), -score(s, now=now), s.id))
    by_topic: dict[str, list[StoryItem]] = {name: [] for name in topic_order}
    total = 0
    for story in ranked:
        bucket = by_topic.get(story.topic)
        pinned = story.id in pins
        if bucket is None or (not pinned and (len(bucket) >= max_per_topic or total >= max_total)):
            continue
        bucket.append(story)
        total += 1
    sections = tuple(TopicSection(name, tuple(items)) for name, items in by_topic.items() if items)
    return Edition(date=edition_date, title=title, topics=sections, note=decisions.note)


def for_subscriber(edition: Edition, topics: Collection[str]) -> Edition:
    """The subscriber's copy: only their chosen topics (all when they chose none).

    An "Earlier:" link to a story of a topic they did not choose is dropped too (issue 16): a
    link never brings a topic they left out into their email, not even as one line.
    """
    if not topics:
        return edition
    return replace(
        edition,
        topics=tuple(
            replace(t, stories=tuple(_links_within(s, topics) for s in t.stories))
            for t in edition.topics
            if t.name in topics
        ),
    )


def _links_within(story: StoryItem, topics: Collection[str]) -> StoryItem:
    if all(link.topic in topics for link in story.earlier):
        return story
    return replace(story, earlier=tuple(link for link in story.earlier if link.topic in topics))


def with_later(edition: Edition, later: Mapping[int, Sequence[ThreadRef]]) -> Edition:
    """The edition with each story's later follow-ups, for its archive page (issue 16)."""
    if not later:
        return edition
    return replace(
        edition,
        topics=tuple(
            replace(t, stories=tuple(replace(s, later=tuple(later.get(s.id, ()))) for s in t.stories))
            for t in edition.topics
        ),
    )
