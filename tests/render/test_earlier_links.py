"""Story continuity in the email (issue 16): "Earlier:" lines, their archive anchors and topic choice."""

import re
from dataclasses import replace
from datetime import timedelta

import jinja2

from digest.compose import Edition, ThreadRef, TopicSection, for_subscriber, with_later
from digest.config import load_settings
from digest.newsletter import Newsletter, TopicConfig
from digest.render.copies import Renderer, make_renderer
from digest.render.email import personal_values
from tests.render import samples
from tests.render.htmlscan import scan


def _follow_up(earlier: tuple[ThreadRef, ...]) -> Edition:
    lead = replace(samples.story(1, title="Makers pick Ohio for the new parts plant"), earlier=earlier)
    other = samples.story(2, topic="Robotics")
    return Edition(
        samples.DAY,
        "EV Brief",
        (TopicSection("EV industry", (lead,)), TopicSection("Robotics", (other,))),
    )


def test_a_follow_up_shows_its_earlier_stories_newest_first_in_both_parts(env: jinja2.Environment) -> None:
    html, text = samples.fill(samples.render_sample(env, _follow_up(samples.EARLIER)))
    deal = f"{samples.BASE_URL}/archive/2026-11-24#story-901"
    talks = f"{samples.BASE_URL}/archive/2026-11-22#story-802"
    visible = scan(html).visible
    assert "Earlier: Makers sign a deal on next-generation parts (Nov 24); " in visible
    assert visible.index("Makers sign a deal") < visible.index("Makers in talks")
    assert f'href="{deal}"' in html and f'href="{talks}"' in html
    assert f"  Earlier: Makers sign a deal on next-generation parts (Nov 24) <{deal}>" in text
    assert f"  Earlier: Makers in talks over next-generation parts (Nov 22) <{talks}>" in text
    # under its own story, not another one
    card = text.split("* Makers pick Ohio")[1].split("\n* ")[0]
    assert card.count("Earlier:") == 2
    assert "Later:" not in html and "Later:" not in text  # an email never shows later stories


def test_every_story_card_has_a_stable_anchor_once(env: jinja2.Environment) -> None:
    lead = samples.story(7, topic="EV industry")
    split = replace(lead, title="The robotics side of story 7", topic="Robotics")  # split by topic
    edition = Edition(
        samples.DAY, "EV Brief", (TopicSection("EV industry", (lead,)), TopicSection("Robotics", (split,)))
    )
    html, _ = samples.fill(samples.render_sample(env, edition))
    assert re.findall(r'id="(story-\d+)"', html) == ["story-7"]


def test_no_earlier_line_without_earlier_stories(env: jinja2.Environment) -> None:
    html, text = samples.fill(samples.render_sample(env, _follow_up(())))
    assert "Earlier:" not in html and "Earlier:" not in text


def test_an_earlier_link_never_brings_a_topic_the_reader_did_not_choose() -> None:
    robotics = ThreadRef(903, samples.DAY - timedelta(days=2), "Robot arms for the parts plant", "Robotics")
    edition = _follow_up((samples.EARLIER[0], robotics))
    ev_only = for_subscriber(edition, {"EV industry"})
    assert [r.story_id for r in ev_only.topics[0].stories[0].earlier] == [901]
    both = for_subscriber(edition, {"EV industry", "Robotics"})
    assert [r.story_id for r in both.topics[0].stories[0].earlier] == [901, 903]
    assert for_subscriber(edition, frozenset()) is edition  # all topics: every link
    assert for_subscriber(edition, {"Robotics"}).topics[0].stories[0].earlier == ()  # no follow-up


def test_readers_whose_topics_keep_different_links_get_different_copies() -> None:
    renderer = _renderer()
    robotics = ThreadRef(903, samples.DAY - timedelta(days=2), "Robot arms for the parts plant", "Robotics")
    edition = Edition(samples.DAY, "EV Brief", _follow_up((robotics,)).topics[:1])  # no Robotics story today
    # Both copies show the same one topic; only one reader chose Robotics, so only theirs links to it.
    _, with_link = renderer.digest_for(edition, frozenset({"EV industry", "Robotics"}))
    _, without = renderer.digest_for(edition, frozenset({"EV industry"}))
    assert "Robot arms for the parts plant" in with_link.text.fill(_values())
    assert "Robot arms for the parts plant" not in without.text.fill(_values())
    assert renderer.digest_for(edition, frozenset({"EV industry"}))[1] is without  # cached


def test_the_archive_page_shows_later_follow_ups() -> None:
    renderer = _renderer()
    edition = _follow_up(())
    later = ThreadRef(1200, samples.DAY + timedelta(days=2), "Parts plant in Ohio opens", "EV industry")
    page = renderer.archive_for(with_later(edition, {1: (later,)})).html.fill(_values())
    assert "Later: Parts plant in Ohio opens (Nov 27)" in scan(page).visible
    assert f'href="{samples.BASE_URL}/archive/2026-11-27#story-1200"' in page
    assert renderer.archive_for(with_later(edition, {1: (later,)})).html.fill(_values()) == page
    # the emails of that edition stay as they were
    _, email = renderer.digest_for(edition, frozenset())
    assert "Later:" not in email.html.fill(_values())


def _renderer() -> Renderer:
    key = "test-secret-key-long-enough-to-sign-links"
    settings = load_settings(secret_key=key, base_url=samples.BASE_URL)
    topics = [TopicConfig(name=t) for t in samples.TOPICS]
    return make_renderer(settings, Newsletter(newsletter=samples.NEWSLETTER, topics=topics))


def _values() -> dict[str, str]:
    return personal_values(**samples.READER)
