"""Pure: put each story under its best topic, and say why."""

import re
from collections.abc import Sequence
from dataclasses import dataclass

from digest.config import TopicConfig


@dataclass(frozen=True, slots=True)
class TopicRule:
    """A topic compiled for matching: whole-word keyword patterns and user regexes."""

    name: str
    keywords: tuple[tuple[str, re.Pattern[str]], ...]
    patterns: tuple[tuple[str, re.Pattern[str]], ...]


@dataclass(frozen=True, slots=True)
class StoryText:
    """What topic matching reads of a story."""

    title: str
    summary: str = ""
    tags: tuple[str, ...] = ()
    source_topic: str | None = None  # the topic of the source, for stories that match no rule


@dataclass(frozen=True, slots=True)
class TopicMatch:
    """The chosen topic (None: dropped) and a human-readable reason."""

    topic: str | None
    reason: str


def compile_rules(topics: Sequence[TopicConfig]) -> tuple[TopicRule, ...]:
    """Compile keywords as case-insensitive whole-word patterns (`EV` matches "EV maker", not "every")."""
    return tuple(
        TopicRule(
            name=t.name,
            keywords=tuple(
                (k, re.compile(rf"(?<!\w){re.escape(k)}(?!\w)", re.IGNORECASE)) for k in t.keywords
            ),
            patterns=tuple((p, re.compile(p, re.IGNORECASE)) for p in t.patterns),
        )
        for t in topics
    )


# Where a hit counts most: a keyword in the title says more than one deep in the summary.
TITLE_WEIGHT, TAG_WEIGHT, SUMMARY_WEIGHT = 3, 2, 1


def assign_topic(story: StoryText, rules: Sequence[TopicRule], *, catch_all: str | None) -> TopicMatch:
    """The best-scoring topic; with no match, the source's default topic, then the catch-all."""
    tags = " \n ".join(story.tags)
    best: tuple[int, str, list[str]] | None = None
    for rule in rules:
        score, hits = 0, []
        for label, rx in (*rule.keywords, *rule.patterns):
            weight = 0
            if rx.search(story.title):
                weight += TITLE_WEIGHT
            if tags and rx.search(tags):
                weight += TAG_WEIGHT
            if story.summary and rx.search(story.summary):
                weight += SUMMARY_WEIGHT
            if weight:
                score += weight
                hits.append(label)
        # Ties go to the source's own topic, then to the topic listed first.
        if score and (
            best is None
            or score > best[0]
            or (score == best[0] and rule.name == story.source_topic != best[1])
        ):
            best = (score, rule.name, hits)
    if best is not None:
        return TopicMatch(best[1], "matched " + ", ".join(repr(h) for h in best[2]))
    if story.source_topic:
        return TopicMatch(story.source_topic, "source default")
    if catch_all:
        return TopicMatch(catch_all, "no rule matched: catch-all")
    return TopicMatch(None, "no rule matched: dropped")
