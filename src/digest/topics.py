"""Pure: put each story under its best topic, and say why."""

import re
from collections.abc import Sequence
from dataclasses import dataclass

from digest.newsletter import TopicConfig


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
    """The chosen topic (None: dropped), a human-readable reason, and the other topics that matched."""

    topic: str | None
    reason: str
    score: int = 0
    also_matched: tuple[tuple[str, int], ...] = ()  # (topic, score) of the runners-up, best first


def _phrase(keyword: str) -> str:
    """A keyword as a pattern: literal, except that any run of spaces matches any whitespace."""
    return r"\s+".join(re.escape(word) for word in keyword.split())


def compile_rules(topics: Sequence[TopicConfig]) -> tuple[TopicRule, ...]:
    """Compile keywords as case-insensitive whole-word patterns (`EV` matches "EV maker", not "every")."""
    return tuple(
        TopicRule(
            name=t.name,
            keywords=tuple((k, re.compile(rf"(?<!\w){_phrase(k)}(?!\w)", re.IGNORECASE)) for k in t.keywords),
            patterns=tuple((p, re.compile(p, re.IGNORECASE)) for p in t.patterns),
        )
        for t in topics
    )


# Where a hit counts most: a keyword in the title says more than one deep in the summary, and
# a feed's own category for the entry sits in between. A topic's score is the sum over its
# keywords and patterns of the places each one is found (title 3 + tags 2 + summary 1).
TITLE_WEIGHT, TAG_WEIGHT, SUMMARY_WEIGHT = 3, 2, 1


def _score(story: StoryText, rule: TopicRule, tags: str) -> tuple[int, list[str]]:
    score, hits = 0, []
    for label, rx in (*rule.keywords, *rule.patterns):
        places = []
        if rx.search(story.title):
            places.append(("title", TITLE_WEIGHT))
        if tags and rx.search(tags):
            places.append(("tags", TAG_WEIGHT))
        if story.summary and rx.search(story.summary):
            places.append(("summary", SUMMARY_WEIGHT))
        if places:
            score += sum(w for _, w in places)
            hits.append(f"{label!r} in {'+'.join(p for p, _ in places)}")
    return score, hits


def assign_topic(story: StoryText, rules: Sequence[TopicRule], *, catch_all: str | None) -> TopicMatch:
    """The best-scoring topic; with no match, the source's default topic, then the catch-all.

    A story matching several topics goes under the best one only; ties go to the source's own
    topic, then to the topic listed first. With no catch-all (`catch_all_topic = ""`) it is dropped.
    """
    tags = " \n ".join(story.tags)
    scored: list[tuple[int, int, str, list[str]]] = []
    for position, rule in enumerate(rules):
        score, hits = _score(story, rule, tags)
        if score:
            tie_break = position if rule.name == story.source_topic else len(rules) + position
            scored.append((score, tie_break, rule.name, hits))
    scored.sort(key=lambda s: (-s[0], s[1]))
    if scored:
        score, _, name, hits = scored[0]
        others = tuple((n, sc) for sc, _, n, _ in scored[1:])
        return TopicMatch(name, f"{'; '.join(hits)} (score {score})", score, others)
    if story.source_topic:
        return TopicMatch(story.source_topic, "no keyword matched: the source's default topic")
    if catch_all:
        return TopicMatch(catch_all, "no keyword matched: catch-all topic")
    return TopicMatch(None, "no keyword matched: dropped (no catch-all topic)")


@dataclass(frozen=True, slots=True)
class StoryPart:
    """Some articles of a story, under one topic: the story itself, or articles shown apart."""

    match: TopicMatch
    articles: tuple[int, ...]  # positions in the story's articles, lead first


def split_story(
    story: StoryText, articles: Sequence[StoryText], rules: Sequence[TopicRule], *, catch_all: str | None
) -> list[StoryPart]:
    """The story under its topic, then one part per other topic its articles go under on their own.

    A story is what the clusterer merged, and a merge can be wrong. Issue 11: when a story goes under
    a topic, no reader of another topic may lose a distinct event merged into it. So an article
    (other than the lead, `articles[0]`) whose own best topic, by keyword or by its source's topic,
    is another one is also shown under that topic, as it would have been unmerged. An article that
    matches no keyword, from a source without a topic, stays with the story: the catch-all is for
    stories that match nothing.
    """
    main = assign_topic(story, rules, catch_all=catch_all)
    parts: dict[str | None, list[int]] = {main.topic: [0] if articles else []}
    matches = {main.topic: main}
    for position, article in enumerate(articles[1:], start=1):
        own = assign_topic(article, rules, catch_all=None)
        topic = own.topic if own.topic is not None else main.topic
        parts.setdefault(topic, []).append(position)
        matches.setdefault(topic, own)
    return [StoryPart(matches[topic], tuple(found)) for topic, found in parts.items()]
