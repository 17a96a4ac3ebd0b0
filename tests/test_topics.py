"""Topic matching: whole words, patterns, tags as evidence, best topic, catch-all or drop."""

from pathlib import Path

import pytest

from digest.errors import ConfigError
from digest.newsletter import TopicConfig, load_newsletter
from digest.topics import StoryText, TopicMatch, assign_topic, compile_rules, split_story

RULES = compile_rules(
    [
        TopicConfig(name="EV", keywords=["EV", "electric vehicle", "battery"]),
        TopicConfig(name="Phones", keywords=["phone", "USB-C", "C++"], patterns=[r"\biPhone ?\d+\b"]),
        TopicConfig(name="Robots", keywords=["robot", "Optimus"]),
    ]
)


def _topic(title: str, **kw: object) -> TopicMatch:
    catch_all = kw.pop("catch_all", "More news")
    return assign_topic(StoryText(title, **kw), RULES, catch_all=catch_all)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("title", "topic"),
    [
        ("EV maker cuts prices", "EV"),
        ("ev sales rise", "EV"),  # case-insensitive
        ("Every maker cuts prices", "More news"),  # not inside a word
        ("EVs are selling", "More news"),  # whole words only: the plural is another word
        ("New USB-C rules", "Phones"),
        ("USB-Connected gadgets", "More news"),
        ("C++ turns 45", "Phones"),
        ("The iPhone 17 is out", "Phones"),  # a pattern
        ("Robot, meet electric-vehicle", "Robots"),  # "electric vehicle" needs the space
        ("Electric\n  Vehicle makers", "EV"),  # any whitespace between a phrase's words
    ],
)
def test_keywords_match_whole_words_case_insensitively(title: str, topic: str) -> None:
    assert _topic(title).topic == topic


def test_the_best_topic_wins_and_the_others_are_reported() -> None:
    match = _topic("Robot swaps a phone battery", summary="The battery swap robot is an Optimus.")
    # Robots: robot in title 3 + summary 1, Optimus in summary 1 = 5; EV: battery 3 + 1 = 4; Phones 3
    assert match.topic == "Robots"
    assert match.also_matched == (("EV", 4), ("Phones", 3))
    assert match.reason == "'robot' in title+summary; 'Optimus' in summary (score 5)"


def test_ties_go_to_the_sources_topic_then_to_the_first_listed() -> None:
    assert _topic("Robot phone").topic == "Phones"
    assert _topic("Robot phone", source_topic="Robots").topic == "Robots"


def test_tags_count_as_evidence() -> None:
    match = _topic("A quiet week", tags=("Electric Vehicle",))
    assert match.topic == "EV" and "in tags" in match.reason


def test_unmatched_stories_go_to_the_source_default_then_the_catch_all_or_are_dropped() -> None:
    assert _topic("Weather", source_topic="Robots").topic == "Robots"
    assert _topic("Weather").topic == "More news"
    dropped = _topic("Weather", catch_all="")
    assert dropped.topic is None and "dropped" in dropped.reason


def test_an_empty_keyword_is_refused_with_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "digest.toml"
    path.write_text(
        '[newsletter]\ntitle = "T"\nfrom_email = "a@b.example"\npostal_address = "x"\n'
        '[[topics]]\nname = "EV"\nkeywords = ["EV", " "]\n'
    )
    with pytest.raises(ConfigError, match=r"digest.toml:\d+: topics #1 keywords: a keyword is empty"):
        load_newsletter(path)


SPLIT_RULES = compile_rules(
    [
        TopicConfig(name="Cities", keywords=["bike", "bus"]),
        TopicConfig(name="Energy", keywords=["solar", "wind"]),
    ]
)


def test_a_merged_article_of_another_topic_is_also_shown_under_its_own() -> None:
    # Issue 11: a clusterer merged two different events; the solar one must still reach Energy.
    bike = StoryText("Bike share hits record", "Riders took more trips than ever.", source_topic="Cities")
    solar = StoryText("Solar output hits record in October", "Panels made more power.", source_topic="Energy")
    quiet = StoryText("Record month for the city", "No keyword here.")  # no topic of its own: stays
    parts = split_story(bike, [bike, solar, quiet], SPLIT_RULES, catch_all="More news")
    assert [(p.match.topic, p.articles) for p in parts] == [("Cities", (0, 2)), ("Energy", (1,))]
    assert "'solar' in title" in parts[1].match.reason


def test_a_story_whose_articles_agree_is_one_part() -> None:
    first = StoryText("Solar output hits record", "Panels made more power.")
    second = StoryText("Record month for solar farms", "Solar parks beat their best.", source_topic="Cities")
    # The second article's source is a Cities outlet, but its own keywords say Energy: no split.
    parts = split_story(first, [first, second], SPLIT_RULES, catch_all=None)
    assert [(p.match.topic, p.articles) for p in parts] == [("Energy", (0, 1))]


def test_an_article_keeps_its_topic_when_the_story_is_dropped() -> None:
    lead = StoryText("Council meets on Tuesday")  # no topic, no catch-all: dropped
    wind = StoryText("Wind farm approved by the council")
    parts = split_story(lead, [lead, wind], SPLIT_RULES, catch_all=None)
    assert [(p.match.topic, p.articles) for p in parts] == [(None, (0,)), ("Energy", (1,))]
