"""The rendered digest: golden files, structure, escaping, size, and the text twin."""

import re
from pathlib import Path

import jinja2
import pytest

from digest.compose import Edition, TopicSection, for_subscriber
from digest.render.email import SLOTS
from tests.render import samples
from tests.render.htmlscan import scan

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
URL = re.compile(r"https?://[^\s<>\"']+")


@pytest.mark.parametrize(("part", "name"), [("html", "digest.html"), ("text", "digest.txt")])
def test_golden_files(env: jinja2.Environment, update_golden: bool, part: str, name: str) -> None:
    html, text = samples.fill(samples.render_sample(env))
    body = html if part == "html" else text
    path = GOLDEN / name
    if update_golden:
        path.write_text(body, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run `pytest --update-golden` once and review the diff"
    assert body == path.read_text(encoding="utf-8"), (
        f"{name} changed; if on purpose, run `pytest --update-golden` and review the diff"
    )


def test_html_has_the_sections_in_order(env: jinja2.Environment) -> None:
    html, _ = samples.fill(samples.render_sample(env))
    page = scan(html)
    visible = page.visible
    headings = re.findall(r"<h2[^>]*>([^<]+)</h2>", html)
    assert headings == ["EV industry", "Robotics", "Smartphones"]
    # Masthead, greeting, table of contents with counts, footer: in reading order.
    markers = [
        "EV Brief",
        "Wednesday, November 25, 2026 · 6 stories",
        "Hi Ana, here are today's 6 stories.",
        "In this edition",
        "EV industry · 2",
        "Robotics · 2",
        "Smartphones · 2",
        "Story 1:",
        "You receive EV Brief because you subscribed with ana@example.com.",
        "Unsubscribe",
        "1 Example Street, Springfield",
    ]
    positions = [visible.find(m) for m in markers]
    assert -1 not in positions, [m for m, p in zip(markers, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    assert visible.count("Also reported by") == 2  # stories 3 and 6 have three sources


def test_html_links_are_absolute_and_complete(env: jinja2.Environment) -> None:
    html, _ = samples.fill(samples.render_sample(env))
    links = scan(html).links
    assert all(link.startswith(("https://", "http://", "mailto:")) for link in links), [
        link for link in links if not link.startswith(("https://", "http://", "mailto:"))
    ]
    assert samples.READER["unsubscribe_url"] in links
    assert samples.READER["preferences_url"] in links
    assert links.count(samples.ARCHIVE_URL) == 2  # "view in browser" at the top and in the footer
    for n in range(1, 7):
        assert samples.story(n).url in links


def test_html_meets_the_email_standards(env: jinja2.Environment) -> None:
    rendered = samples.render_sample(env)
    html, _ = samples.fill(rendered)
    page = scan(html)
    assert page.all("html")[0].get("lang") == "en"
    metas = {m.get("name"): m.get("content") for m in page.all("meta")}
    assert metas["color-scheme"] == "light dark"
    assert metas["viewport"] == "width=device-width, initial-scale=1"
    tables = page.all("table")
    assert tables
    assert all(t.get("role") == "presentation" for t in tables)
    assert all("alt" in img for img in page.all("img"))
    assert "max-width:600px" in html
    assert "fonts.googleapis.com" not in html  # no third-party request on open
    # The preheader is the first text in the body, hidden, without 1px or same-colour text.
    preheader = re.search(r"<div class=\"preheader\" style=\"([^\"]*)\">([^<]*)</div>", html)
    assert preheader is not None
    assert "display:none" in preheader.group(1)
    assert "font-size" not in preheader.group(1)
    assert "color" not in preheader.group(1)
    assert preheader.group(2).startswith(rendered.preheader)
    assert scan(html).visible.startswith(rendered.preheader)
    assert rendered.preheader == "6 stories today: EV industry (2), Robotics (2), Smartphones (2)"


def test_text_part_carries_the_same_stories_and_links(env: jinja2.Environment) -> None:
    html, text = samples.fill(samples.render_sample(env))
    html_links = {link.replace("&amp;", "&") for link in scan(html).links}
    # The summary's inline link is HTML-only; every story, source and reader link is in both.
    html_links.discard("https://news.example.com/more?id=1&src=x")
    assert html_links == set(URL.findall(text))
    for n in range(1, 7):
        assert samples.story(n).title in text
    assert "Unsubscribe: https://news.example.org/unsubscribe/TOKEN-ana" in text
    assert "<" not in text.replace("<https://", "")  # no markup in the text part


def test_forty_stories_stay_under_gmail_clipping(env: jinja2.Environment) -> None:
    big = samples.edition(40, topics=samples.TOPICS)
    html, _ = samples.fill(samples.render_sample(env, big))
    assert big.story_count == 40
    assert len(html.encode()) < 90 * 1024, len(html.encode())


def test_forty_stories_with_maximal_summaries_stay_under_gmail_clipping(env: jinja2.Environment) -> None:
    long = "<p>" + "word " * 2000 + "</p>"
    sections = tuple(
        TopicSection(t, tuple(samples.story(i * 8 + n, topic=t, summary=long, sources=3) for n in range(8)))
        for i, t in enumerate(samples.TOPICS)
    )
    html, text = samples.fill(samples.render_sample(env, Edition(samples.DAY, "EV Brief", sections)))
    assert len(html.encode()) < 90 * 1024, len(html.encode())
    assert " word...\n" in text  # cut at a word boundary, marked


def test_feed_text_is_escaped_everywhere(env: jinja2.Environment) -> None:
    html, text = samples.fill(samples.render_sample(env, samples.hostile_edition()))
    assert "<script" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; {{ 7*7 }}" in html
    assert "<img" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'href="https://evil.example/a?b=1&amp;c=&#34;2&#34;"' in html
    assert "Other &lt;i&gt;outlet&lt;/i&gt;" in html
    # The sanitized summary is the one piece of feed HTML that stays HTML.
    assert '<a href="https://evil.example/x" rel="noopener noreferrer">link</a>' in html
    # A forged slot marker is inert text (the real nonce is random), in both parts.
    assert "@@slot-0000000000000000:unsubscribe_url@@" in html
    assert samples.HOSTILE_TITLE in text
    assert html.count(samples.READER["unsubscribe_url"]) == 1


def test_summary_html_is_sanitized_again_at_render(env: jinja2.Environment) -> None:
    # Stored before a sanitizer change, or written to the database by hand: still cleaned.
    dirty = samples.story(
        1,
        summary='<p onclick="x()">Hi <script>alert(1)</script><img src=x><a href="javascript:y()">z</a>'
        '<a href="/relative/page">r</a></p>',
    )
    html, _ = samples.fill(
        samples.render_sample(env, Edition(samples.DAY, "EV Brief", (TopicSection("EV industry", (dirty,)),)))
    )
    assert "onclick" not in html
    assert "<script>alert" not in html
    assert "javascript:" not in html
    assert "<img" not in html
    assert "/relative/page" not in html  # links in an email must be absolute


def test_personal_values_are_escaped_in_html_not_in_text(env: jinja2.Environment) -> None:
    reader = {**samples.READER, "name": 'Eve <b>&</b> "Co"'}
    html, text = samples.fill(samples.render_sample(env), reader)
    assert "Hi Eve &lt;b&gt;&amp;&lt;/b&gt; &quot;Co&quot;, here" in html
    assert 'Hi Eve <b>&</b> "Co", here' in text


def test_each_reader_costs_a_join_not_a_render(env: jinja2.Environment) -> None:
    rendered = samples.render_sample(env)
    assert set(rendered.html.slots) == set(SLOTS)
    assert set(rendered.text.slots) == set(SLOTS)
    a, _ = samples.fill(rendered)
    b, _ = samples.fill(rendered, {**samples.READER, "email": "ben@example.com", "name": "Ben"})
    assert a != b
    assert a.replace("ana@example.com", "ben@example.com").replace("Hi Ana,", "Hi Ben,") == b


def test_chosen_topics_only(env: jinja2.Environment) -> None:
    copy = for_subscriber(samples.edition(), {"Robotics"})
    html, text = samples.fill(samples.render_sample(env, copy))
    assert "Robotics · 2" in scan(html).visible
    assert "EV industry" not in html
    assert "Smartphones" not in text
    assert "2 stories today: Robotics (2)" in html


def test_story_without_summary_or_second_source(env: jinja2.Environment) -> None:
    lone = samples.story(1, summary="")
    html, text = samples.fill(
        samples.render_sample(env, Edition(samples.DAY, "EV Brief", (TopicSection("EV industry", (lone,)),)))
    )
    assert "Also reported by" not in html
    assert "here is today's story." in text
    assert "1 story" in scan(html).visible
