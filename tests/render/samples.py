"""Fixed inputs for render tests: a builder for editions of any size, and hostile feed text."""

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import jinja2

from digest.compose import Edition, SourceRef, StoryItem, ThreadRef, TopicSection
from digest.newsletter import NewsletterInfo
from digest.render.email import RenderedDigest, personal_values, render_digest

DAY = date(2026, 11, 25)
BASE_URL = "https://news.example.org"
ARCHIVE_URL = f"{BASE_URL}/archive/{DAY.isoformat()}"
TOPICS = ("EV industry", "Robotics", "Smartphones", "Space", "More news")

NEWSLETTER = NewsletterInfo(
    title="EV Brief",
    from_email="news@evbrief.example",
    from_name="EV Brief",
    postal_address="1 Example Street, Springfield",
    description="EVs, robots and phones: the day's news in five minutes.",
)

READER = {
    "email": "ana@example.com",
    "name": "Ana",
    "unsubscribe_url": f"{BASE_URL}/unsubscribe/TOKEN-ana",
    "preferences_url": f"{BASE_URL}/preferences/TOKEN-ana",
}

# A typical feed summary: a sentence or three, a little markup, a link.
SUMMARY = (
    "<p>Carmakers and suppliers said on Tuesday that the new <b>battery</b> lines will start "
    'small-batch production next year, with <a href="https://news.example.com/more?id=1&amp;src=x">'
    "details here</a>. Analysts expect costs to fall as volumes rise.</p>"
)


def story(
    n: int,
    *,
    topic: str = "EV industry",
    title: str | None = None,
    summary: str = SUMMARY,
    sources: int = 1,
    url: str | None = None,
) -> StoryItem:
    """Story number `n`, published n*40 minutes before 07:00 UTC on DAY."""
    link = url or f"https://news.example.com/2026/11/25/story-number-{n}-with-a-longish-slug-for-realism"
    refs = [SourceRef("Autowire", link)] + [
        SourceRef(f"Outlet {k}", f"https://outlet{k}.example.net/articles/2026/11/story-{n}")
        for k in range(1, sources)
    ]
    return StoryItem(
        id=n,
        title=title or f"Story {n}: makers race to ship the next generation of parts before the holidays",
        url=link,
        summary_html=summary,
        published=datetime(2026, 11, 25, 7, 0, tzinfo=UTC) - timedelta(minutes=40 * n),
        sources=tuple(refs),
        topic=topic,
    )


# Story 1 follows up two earlier stories (issue 16): its card ends with an "Earlier:" line.
EARLIER = (
    ThreadRef(901, DAY - timedelta(days=1), "Makers sign a deal on next-generation parts", "EV industry"),
    ThreadRef(802, DAY - timedelta(days=3), "Makers in talks over next-generation parts", "EV industry"),
)


def edition(count: int = 6, *, topics: tuple[str, ...] = TOPICS[:3]) -> Edition:
    """`count` stories spread over `topics` in order; every third story has three sources; the
    first follows up two earlier stories."""
    by_topic: dict[str, list[StoryItem]] = {t: [] for t in topics}
    for n in range(1, count + 1):
        topic = topics[(n - 1) % len(topics)]
        item = story(n, topic=topic, sources=3 if n % 3 == 0 else 1)
        by_topic[topic].append(replace(item, earlier=EARLIER) if n == 1 else item)
    return Edition(
        date=DAY,
        title=NEWSLETTER.title,
        topics=tuple(TopicSection(t, tuple(s)) for t, s in by_topic.items() if s),
    )


HOSTILE_TITLE = '<script>alert("x")</script> & {{ 7*7 }} @@slot-0000000000000000:unsubscribe_url@@'
HOSTILE_SOURCE = '<img src=x onerror=alert(1)> "Outlet"'


def hostile_edition() -> Edition:
    """Feed text that tries markup, Jinja syntax and slot-marker forgery."""
    evil = StoryItem(
        id=1,
        title=HOSTILE_TITLE,
        url='https://evil.example/a?b=1&c="2"',
        summary_html='<p>Fine &amp; dandy <a href="https://evil.example/x">link</a></p>',
        published=datetime(2026, 11, 25, 6, 0, tzinfo=UTC),
        sources=(
            SourceRef(HOSTILE_SOURCE, 'https://evil.example/a?b=1&c="2"'),
            SourceRef("Other <i>outlet</i>", "https://other.example/y"),
        ),
        topic="EV industry",
    )
    return Edition(date=DAY, title=NEWSLETTER.title, topics=(TopicSection("EV industry", (evil,)),))


def render_sample(env: jinja2.Environment, sample: Edition | None = None) -> RenderedDigest:
    """Render `sample` (default: the 6-story edition) with the sample newsletter."""
    return render_digest(env, NEWSLETTER, sample or edition(), archive_url=ARCHIVE_URL, zone=UTC)


def fill(rendered: RenderedDigest, reader: dict[str, str] | None = None) -> tuple[str, str]:
    """(html, text) filled for the sample reader."""
    values = personal_values(**(reader or READER))
    return rendered.html.fill(values), rendered.text.fill(values)
