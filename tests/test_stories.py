"""Story clustering: measured against the labelled set in tests/data, and its edge cases."""

import itertools
import tomllib
from pathlib import Path

from digest.stories import THRESHOLD, KnownArticle, StoryDoc, cluster, similarities

DATA = Path(__file__).parent / "data" / "story_pairs.toml"


def _labelled() -> tuple[list[StoryDoc], list[str]]:
    events = tomllib.loads(DATA.read_text())["event"]
    docs = [StoryDoc(r["title"], r["summary"], r["source"]) for e in events for r in e["reports"]]
    labels = [e["id"] for e in events for _ in e["reports"]]
    return docs, labels


def precision_recall(same: list[bool], truth: list[bool]) -> tuple[float, float]:
    """Pairwise precision and recall of "same story" decisions."""
    tp = sum(s and t for s, t in zip(same, truth, strict=True))
    return tp / max(sum(same), 1), tp / max(sum(truth), 1)


def test_the_labelled_set_is_big_enough_to_mean_something() -> None:
    docs, labels = _labelled()
    pairs = list(itertools.combinations(range(len(docs)), 2))
    positives = sum(labels[i] == labels[j] for i, j in pairs)
    assert len(set(labels)) >= 39 and positives >= 50 and len(pairs) - positives >= 3000


def test_pairwise_precision_and_recall_at_the_threshold() -> None:
    docs, labels = _labelled()
    sims = similarities(docs)
    pairs = list(itertools.combinations(range(len(docs)), 2))
    precision, recall = precision_recall(
        [sims[i].get(j, 0.0) >= THRESHOLD for i, j in pairs], [labels[i] == labels[j] for i, j in pairs]
    )
    assert precision >= 0.98 and recall >= 0.93, (precision, recall)


def test_clustering_precision_and_recall() -> None:
    docs, labels = _labelled()
    keys = cluster(docs, [])
    pairs = list(itertools.combinations(range(len(docs)), 2))
    precision, recall = precision_recall(
        [keys[i] == keys[j] for i, j in pairs], [labels[i] == labels[j] for i, j in pairs]
    )
    assert precision >= 0.98 and recall >= 0.93, (precision, recall)


def test_new_articles_join_known_stories_or_form_new_ones() -> None:
    known = [KnownArticle(7, StoryDoc("Voltra recalls 120,000 sedans over brake sensor", source="Wire"))]
    new = [
        StoryDoc("Brake sensor flaw forces Voltra to recall 120k sedans", source="Daily"),
        StoryDoc("Kessler workers strike at two plants", source="Daily"),
        StoryDoc("Strike halts Kessler plants as workers walk out", source="Herald"),
    ]
    assert cluster(new, known) == [7, -1, -1]


def test_one_source_never_merges_two_of_its_own_different_articles() -> None:
    known = [KnownArticle(1, StoryDoc("Voltra recalls 120,000 sedans over brake sensor", source="Wire"))]
    new = [
        StoryDoc("Voltra recalls 120,000 sedans over brake sensor, update", source="Wire"),
        StoryDoc("Voltra recalls 120,000 sedans over brake sensor", source="Wire"),  # same title
    ]
    assert cluster(new, known) == [-1, 1]


def test_empty_and_stop_word_titles_do_not_crash_or_merge() -> None:
    assert cluster([StoryDoc(""), StoryDoc("the of and"), StoryDoc("")], []) == [-1, -2, -3]
