"""Story clustering: measured against the labelled set in tests/data, and its edge cases."""

import itertools
import random
import tomllib
from pathlib import Path
from typing import Any

from digest.stories import THRESHOLD, KnownArticle, StoryDoc, cluster, normalize_title, similarities, terms

DATA = Path(__file__).parent / "data" / "story_pairs.toml"


def _events() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = tomllib.loads(DATA.read_text())["event"]
    return events


def _labelled() -> tuple[list[StoryDoc], list[str]]:
    events = _events()
    docs = [StoryDoc(r["title"], r["summary"], r["source"]) for e in events for r in e["reports"]]
    labels = [e["id"] for e in events for _ in e["reports"]]
    return docs, labels


def precision_recall(same: list[bool], truth: list[bool]) -> tuple[float, float]:
    """Pairwise precision and recall of "same story" decisions."""
    tp = sum(s and t for s, t in zip(same, truth, strict=True))
    return tp / max(sum(same), 1), tp / max(sum(truth), 1)


def _words(title: str) -> set[str]:
    return set(normalize_title(title).split())


def test_the_labelled_set_has_the_hard_pairs_issue_11_asks_for() -> None:
    events = _events()
    reports = [(e, r) for e in events for r in e["reports"]]
    template_negatives = hard_positives = 0
    for (e1, r1), (e2, r2) in itertools.combinations(reports, 2):
        if e1 is not e2 and e1["family"] == e2["family"] and e1.get("subject") != e2.get("subject"):
            template_negatives += 1  # one headline pattern, two subjects
        if e1 is e2 and r1["source"] != r2["source"]:
            a, b = _words(r1["title"]), _words(r2["title"])
            hard_positives += 4 * len(a & b) <= len(a | b)  # one event, worded apart
    assert template_negatives >= 150 and hard_positives >= 50, (template_negatives, hard_positives)
    assert sum(e.get("held_out", False) for e in events) >= 20


def test_pairwise_precision_and_recall_at_the_threshold() -> None:
    docs, labels = _labelled()
    sims = similarities(docs)
    pairs = list(itertools.combinations(range(len(docs)), 2))
    precision, recall = precision_recall(
        [sims[i].get(j, 0.0) >= THRESHOLD for i, j in pairs], [labels[i] == labels[j] for i, j in pairs]
    )
    assert precision >= 0.75 and recall >= 0.88, (precision, recall)


def test_clustering_precision_and_recall() -> None:
    docs, labels = _labelled()
    keys = cluster(docs, [])
    pairs = list(itertools.combinations(range(len(docs)), 2))
    precision, recall = precision_recall(
        [keys[i] == keys[j] for i, j in pairs], [labels[i] == labels[j] for i, j in pairs]
    )
    assert precision >= 0.99 and recall >= 0.90, (precision, recall)  # issue 11's target


def test_no_two_subjects_of_one_headline_pattern_are_merged() -> None:
    events = _events()
    docs, _ = _labelled()
    keys = cluster(docs, [])
    event_of = [e for e in events for _ in e["reports"]]
    merged = [
        (docs[i].title, docs[j].title)
        for i, j in itertools.combinations(range(len(docs)), 2)
        if keys[i] == keys[j]
        and event_of[i] is not event_of[j]
        and event_of[i]["family"] == event_of[j]["family"]
        and event_of[i].get("subject") != event_of[j].get("subject")
    ]
    assert merged == []


def test_the_order_articles_arrive_in_does_not_change_the_stories() -> None:
    docs, _ = _labelled()
    expected = cluster(docs, [])
    groups = {frozenset(i for i, k in enumerate(expected) if k == key) for key in expected}
    for seed in range(3):
        order = list(range(len(docs)))
        random.Random(seed).shuffle(order)
        keys = cluster([docs[i] for i in order], [])
        shuffled = {frozenset(order[p] for p, k in enumerate(keys) if k == key) for key in keys}
        assert shuffled == groups


BIKE = StoryDoc(
    "Bike share hits record", "Riders made more trips on shared bikes than ever in October.", "Bike Daily"
)
SOLAR = StoryDoc(
    "Solar output hits record in October",
    "Solar panels made more power than in any month before, the grid operator said.",
    "Green Power Wire",
)
EVERYDAY = [  # the rest of the day's news, which makes "hits" and "record" look rare
    StoryDoc(
        "Council approves new library for the east side", "It opens in 2028 with a cafe.", "City Ledger"
    ),
    StoryDoc(
        "Museum reopens after roof repairs", "The dinosaur hall is open again from Saturday.", "City Ledger"
    ),
    StoryDoc("Ferry timetable changes for winter", "Fewer crossings will run on weekdays.", "Coastal Times"),
    StoryDoc(
        "School meals to include more vegetables", "A new menu starts after the holidays.", "City Ledger"
    ),
]


def test_two_records_of_different_things_stay_two_stories() -> None:
    keys = cluster([*EVERYDAY, BIKE, SOLAR], [])
    assert keys[-1] != keys[-2]


def test_template_headlines_need_their_subjects_to_agree() -> None:
    docs = [
        StoryDoc("Marun recalls 80,000 SUVs over airbag fault", "Dealers will replace a sensor.", "Autowire"),
        StoryDoc(
            "Kessler recalls 80,000 vans over seat belts", "The belts may not lock in a crash.", "Daily Drive"
        ),
        StoryDoc("Airbag flaw: Marun calls back 80k SUVs", "Marun owners should visit a dealer.", "Herald"),
    ]
    assert cluster([*EVERYDAY, *docs], [])[-3:] == [-5, -6, -5]


def test_a_headline_pattern_with_two_names_in_its_titles_tells_two_events() -> None:
    # "X fined 40 million euros": the same figure and words, but neither article mentions the other's
    # subject, so they are two events however close their scores (issue 11).
    cartly = StoryDoc("Cartly fined 40 million euros over data breach", "No password was set.", "Herald")
    streamly = StoryDoc("Streamly fined 40 million euros over cancellation", "Nobody could quit.", "Screen")
    again = StoryDoc("Watchdog hits Cartly with a 40m euro penalty", "Cartly kept records unlocked.", "Tech")
    # At a threshold far below the rule's, so that only the subject rule keeps them apart.
    keys = cluster([*EVERYDAY, cartly, streamly, again], [], threshold=0.05)[-3:]
    assert keys[0] == keys[2] != keys[1]


def test_numbers_are_compared_as_numbers_and_must_agree() -> None:
    def packed(title: str) -> set[bytes]:
        blob = terms(StoryDoc(title))
        return {blob[i : i + 8] for i in range(8, len(blob), 8)}  # the terms, without the title's hash

    assert packed("Gridlink raises $50m") == packed("Gridlink raises $50 million")
    assert packed("Voltra recalls 120,000 cars") == packed("Voltra recalls 120k cars")
    two = StoryDoc("Mindset releases Atlas 2 language model", "Mindset published the model on Monday.", "A")
    three = StoryDoc("Mindset releases Atlas 3 language model", "Mindset published the model on Monday.", "B")
    again = StoryDoc("Atlas 2 is out: Mindset's new model", "The model Mindset published is free.", "C")
    assert cluster([*EVERYDAY, two, three, again], [])[-3:] == [-5, -6, -5]


def test_new_articles_join_known_stories_or_form_new_ones() -> None:
    known = [KnownArticle(7, StoryDoc("Voltra recalls 120,000 sedans over brake sensor", source="Wire"))]
    new = [
        StoryDoc("Brake sensor flaw forces Voltra to recall 120k sedans", source="Daily"),
        StoryDoc("Kessler workers strike at two plants", source="Daily"),
        StoryDoc("Strike halts Kessler plants as workers walk out", source="Herald"),
    ]
    assert cluster(new, known) == [7, -1, -1]
    # A new report close to two stored stories joins one of them; it never merges the two.
    known.append(
        KnownArticle(8, StoryDoc("Voltra recalls 120,000 sedans over a brake sensor fault", source="Post"))
    )
    assert cluster([StoryDoc("Brake sensor: Voltra recalls 120,000 sedans", source="Herald")], known) in (
        [7],
        [8],
    )


def test_new_reports_join_the_recent_stories_of_their_events() -> None:
    # The hourly case: the last report of each event arrives after the others are stored.
    docs, labels = _labelled()
    last = {label: i for i, label in enumerate(labels)}
    stored = [i for i in range(len(docs)) if last[labels[i]] != i]
    arriving = sorted(last.values())
    known = [KnownArticle(sorted(set(labels)).index(labels[i]), docs[i]) for i in stored]
    keys = cluster([docs[i] for i in arriving], known)
    joined = [k for i, k in zip(arriving, keys, strict=True) if k >= 0]
    right = [k for i, k in zip(arriving, keys, strict=True) if k == sorted(set(labels)).index(labels[i])]
    alone = sum(labels.count(labels[i]) == 1 for i in arriving)
    assert len(right) == len(joined) and len(joined) >= 0.85 * (len(arriving) - alone)


def test_one_source_never_merges_two_of_its_own_different_articles() -> None:
    known = [KnownArticle(1, StoryDoc("Voltra recalls 120,000 sedans over brake sensor", source="Wire"))]
    new = [
        StoryDoc("Voltra recalls 120,000 sedans over brake sensor, update", source="Wire"),
        StoryDoc("Voltra recalls 120,000 sedans over brake sensor", source="Wire"),  # same title
    ]
    assert cluster(new, known) == [-1, 1]


def test_empty_and_stop_word_titles_do_not_crash_or_merge() -> None:
    assert cluster([StoryDoc(""), StoryDoc("the of and"), StoryDoc("")], []) == [-1, -2, -3]
    assert cluster([], [KnownArticle(1, StoryDoc("Voltra"))]) == []
    assert cluster([StoryDoc("Voltra recalls sedans")], []) == [-1]
