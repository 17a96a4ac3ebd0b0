"""Story continuity (issue 16): the follow-up rule on plain values, and on the labelled set."""

import tomllib
from datetime import date, timedelta
from pathlib import Path

import pytest

from digest.threads import (
    Corpus,
    Profile,
    Relation,
    ThreadStory,
    link_earlier,
    profile,
    relate,
)

DATA = Path(__file__).parent / "data" / "thread_pairs.toml"
DAY = date(2026, 11, 25)

# A three-day thread, and stories that look like it but are not of it.
TALKS = (
    "Halden Motors in talks with Qinbo over electric van",
    "The carmaker and the battery group Qinbo are discussing a jointly built delivery van, two people "
    "familiar with the talks said.",
)
DEAL = (
    "Halden and Qinbo sign deal to build electric delivery van",
    "Qinbo will supply the battery packs and Halden will design and assemble the van, the companies said.",
)
FACTORY = (
    "Halden-Qinbo van venture picks Ohio for $1.5bn factory",
    "The partners will assemble their electric delivery van near Toledo from 2028, hiring 2,500 workers.",
)
DEAL_AGAIN = (
    "Qinbo and Halden agree to develop electric van together, with $900m budget",
    "Halden will build the delivery van and Qinbo supplies batteries under the $900m agreement.",
)
DEAL_WITH_FIGURE = (
    "Halden and Qinbo sign $900m deal to build electric delivery van",
    "Qinbo will supply the battery packs and Halden will assemble the van.",
)
OTHER_COMPANY = (
    "Marrow Trucks in talks with Qinbo-rival Celdra over electric van",
    "The truck maker is discussing a delivery van with the battery company Celdra, people briefed said.",
)
SAME_COMPANY_OTHER_MATTER = (
    "Halden Motors recalls 9,000 pickups over faulty wipers",
    "Wiper motors may stop in heavy rain, the carmaker told regulators.",
)
TEMPLATE = (
    "Kessler workers strike at two German plants over pay",
    "Union members walked out at the Zwickau and Emden factories of the carmaker Kessler.",
)
TEMPLATE_OTHER_ACTOR = (
    "Brenner workers strike at three German plants over pay",
    "The union called the walkout at the parts supplier Brenner after pay talks failed.",
)
FILLER = [
    ("Storm Brisa brings heavy rain to Portugal", "Rivers rose in the north and schools were shut."),
    ("Central bank leaves rates unchanged", "Policymakers said inflation was easing slowly."),
    ("Football club sacks its manager", "The club is second from bottom after ten games."),
    ("New telescope images show a distant galaxy", "Astronomers said the galaxy formed early."),
]


def verdict(earlier: tuple[str, str], later: tuple[str, str]) -> Relation:
    """relate() for two (title, text) stories, in a corpus of them and some unrelated news."""
    profiles = [profile(*s) for s in (earlier, later, *FILLER)]
    corpus = Corpus.of(profiles)
    return relate(corpus.resolve(profiles[0]), corpus.resolve(profiles[1]), corpus).relation


def story(n: int, days_ago: int, title_text: tuple[str, str], topic: str = "business") -> ThreadStory:
    """A ThreadStory carried `days_ago` days before DAY."""
    return ThreadStory(n, DAY - timedelta(days=days_ago), *title_text, topic=topic)


def test_a_follow_up_continues_the_earlier_story() -> None:
    assert verdict(TALKS, DEAL) is Relation.CONTINUES
    assert verdict(DEAL, FACTORY) is Relation.CONTINUES
    assert verdict(TALKS, FACTORY) is Relation.CONTINUES


def test_a_follow_up_is_not_same_event_but_two_reports_of_one_fact_are() -> None:
    # The deal follows the talks: a different event of one thread, not the same event again.
    assert verdict(TALKS, DEAL) is not Relation.SAME_EVENT
    # Two outlets giving the same figure for the same deal: clustering's job, not a follow-up.
    assert verdict(DEAL_WITH_FIGURE, DEAL_AGAIN) is Relation.SAME_EVENT


def test_an_unrelated_similar_headline_is_not_a_follow_up() -> None:
    assert verdict(TEMPLATE, TEMPLATE_OTHER_ACTOR) is Relation.UNRELATED  # same template, other company
    assert verdict(TALKS, OTHER_COMPANY) is Relation.UNRELATED  # same topic, other actors
    assert verdict(TALKS, SAME_COMPANY_OTHER_MATTER) is Relation.UNRELATED  # same company, other matter


def test_a_new_headline_must_carry_the_thread_not_only_its_name() -> None:
    # Shares Halden, Qinbo's partner, and "electric van" words in the lede, but the headline
    # speaks of another matter: the same company, not the same thread.
    results = (
        "Halden Motors posts record profit as pickup sales climb",
        "The carmaker, which is also working on an electric van with Qinbo, beat forecasts.",
    )
    assert verdict(TALKS, results) is Relation.UNRELATED
    assert verdict(DEAL, FACTORY) is Relation.CONTINUES  # "van" and "venture" carry the thread


def test_an_acronym_in_the_plural_is_the_same_name() -> None:
    assert profile("Makers ship more EVs").codes == profile("Makers ship more EV").codes == {"ev"}
    assert "evs" not in profile("Makers ship more EVs").caps


def test_a_three_day_thread_links_each_story_to_the_earlier_ones_newest_first() -> None:
    talks, deal, factory = story(1, 2, TALKS), story(2, 1, DEAL), story(3, 0, FACTORY)
    fillers = [story(10 + n, 1 + n % 2, s, "other") for n, s in enumerate(FILLER)]
    (link,) = link_earlier([deal], [talks, *fillers])[2]
    assert (link.story_id, link.day, link.title, link.topic) == (1, talks.day, talks.title, "business")
    assert link.score > 0
    links = link_earlier([factory, story(4, 0, OTHER_COMPANY)], [talks, deal, *fillers])
    assert [(link.story_id, link.day) for link in links[3]] == [(2, deal.day), (1, talks.day)]
    assert 4 not in links  # the similar headline about other companies gets no earlier link


def test_at_most_two_links_newest_first() -> None:
    olds = [story(n, days_ago, DEAL if n % 2 else TALKS) for n, days_ago in ((1, 9), (2, 7), (3, 5), (4, 3))]
    new = story(9, 0, FACTORY)
    links = link_earlier([new], olds)[9]
    assert [link.story_id for link in links] == [4, 3]
    assert links[0].day > links[1].day
    assert [link.story_id for link in link_earlier([new], olds, max_links=3)[9]] == [4, 3, 2]
    assert link_earlier([new], olds, max_links=0) == {}


def test_the_horizon_is_respected() -> None:
    new = story(9, 0, DEAL)
    at_horizon, past_horizon = story(1, 14, TALKS), story(2, 15, TALKS)
    assert [link.story_id for link in link_earlier([new], [at_horizon, past_horizon])[9]] == [1]
    assert link_earlier([new], [past_horizon]) == {}
    assert [link.story_id for link in link_earlier([new], [past_horizon], horizon_days=15)[9]] == [2]
    # Only earlier editions: a story of the same day (or a later one) is not earlier coverage.
    assert link_earlier([new], [story(3, 0, TALKS), story(4, -1, TALKS)]) == {}


def test_links_carry_the_earlier_topic_so_a_reader_copy_can_drop_other_topics() -> None:
    links = link_earlier([story(9, 0, DEAL, "business")], [story(1, 2, TALKS, "cars")])
    assert [(link.story_id, link.topic) for link in links[9]] == [(1, "cars")]


def test_stored_profiles_give_the_same_links_as_text() -> None:
    olds = [story(1, 2, TALKS), story(2, 1, DEAL), *(story(10 + n, 1, s) for n, s in enumerate(FILLER))]
    stored = [
        ThreadStory(
            s.id, s.day, s.title, s.text, s.topic, Profile.from_json(profile(s.title, s.text).to_json())
        )
        for s in olds
    ]
    new = [story(3, 0, FACTORY)]
    assert link_earlier(new, stored) == link_earlier(new, olds) != {}


def test_nothing_to_link() -> None:
    assert link_earlier([], [story(1, 1, TALKS)]) == {}
    assert link_earlier([story(1, 0, TALKS)], []) == {}
    assert (
        link_earlier([story(1, 0, ("", "")), story(2, 0, ("the of and", ""))], [story(3, 1, ("", ""))]) == {}
    )


def test_capitals_that_only_start_a_sentence_are_not_names() -> None:
    # "Regulators" starts a headline; the other story writes "regulators": a common word, so the
    # two stories share no name and are not one thread.
    a = ("Regulators approve new rules for drones", "The rules take effect in March.")
    b = ("Airline fined by regulators over delays", "Regulators said the airline broke compensation rules.")
    assert verdict(a, b) is Relation.UNRELATED
    # Inside a sentence, a capitalised word is a name: it anchors the thread.
    c = (
        "Drone rules approved, Skyward says",
        "Skyward, the drone maker, welcomed the approval of new rules.",
    )
    d = ("Skyward drone deliveries start under new rules", "Skyward began flights in three towns.")
    assert verdict(c, d) is Relation.CONTINUES


def test_title_case_headlines_do_not_make_every_word_a_name() -> None:
    p = profile(
        "Halden Cancels Van Launch After Battery Fire",
        "Halden said a battery fire at its plant delayed the van.",
    )
    corpus = Corpus.of([p, profile(*DEAL)])
    assert corpus.resolve(p).names == {"halden"}


def test_figures_are_normalised() -> None:
    assert (
        profile("Deal worth $6.2bn", "").figures == profile("A $6.2 billion deal", "").figures == {"$6.2e+09"}
    )
    assert profile("Shares fall 30%", "").figures == profile("Shares fall 30 percent", "").figures
    assert profile("Plan for 2028", "").figures == set()  # a year dates a story; it is not its fact


def _labelled() -> tuple[dict[str, dict[str, object]], list[dict[str, str]]]:
    data = tomllib.loads(DATA.read_text())
    return data["story"], data["pair"] + data["fresh"]["pair"]


def test_the_labelled_set_is_big_varied_and_consistent() -> None:
    stories, pairs = _labelled()
    labels = [p["label"] for p in pairs]
    assert len(pairs) >= 80 and labels.count("continues") >= 40 and labels.count("unrelated") >= 30
    assert labels.count("same_event") >= 5
    for p in pairs:
        earlier, later = stories[p["earlier"]], stories[p["later"]]
        assert earlier["day"] < later["day"], p  # type: ignore[operator]
        assert (earlier["thread"] == later["thread"]) == (p["label"] != "unrelated"), p
        assert all(
            stories[k]["title"] and stories[k]["summary"] and stories[k]["source"]
            for k in p.values()
            if k in stories
        )


@pytest.mark.parametrize("part", ["pair", "fresh"])
def test_precision_and_recall_on_the_labelled_set(part: str) -> None:
    data = tomllib.loads(DATA.read_text())
    stories = data["story"]
    pairs = data["pair"] if part == "pair" else data["fresh"]["pair"]
    corpus = Corpus.of(profile(s["title"], s["summary"]) for s in stories.values())
    resolved = {k: corpus.resolve(profile(s["title"], s["summary"])) for k, s in stories.items()}
    said = [relate(resolved[p["earlier"]], resolved[p["later"]], corpus).relation for p in pairs]
    labels = [p["label"] for p in pairs]
    tp = sum(s is Relation.CONTINUES and lab == "continues" for s, lab in zip(said, labels, strict=True))
    fp = sum(s is Relation.CONTINUES and lab == "unrelated" for s, lab in zip(said, labels, strict=True))
    precision, recall = tp / (tp + fp), tp / labels.count("continues")
    # Measured 0.96 / 0.77 on the design part, 0.94 / 0.81 on the held-out part (bench_threads.py)
    assert precision >= 0.9 and recall >= 0.7, (precision, recall)
