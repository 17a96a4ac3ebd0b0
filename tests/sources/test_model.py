"""The parsed feed's JSON form: what a distributed collect's workers hand to the coordinator."""

from datetime import UTC, datetime, timedelta, timezone

from digest.sources.model import FeedEntry, ParsedFeed
from digest.sources.parse import parse_feed
from digest.sources.workers import parse_with_terms
from tests.feedbuilder import Item, atom, rss


def test_a_parsed_feed_survives_the_json_round_trip_unchanged() -> None:
    feed = ParsedFeed(
        title="Zürich \u2014 news",
        link=None,
        entries=(
            FeedEntry(
                url="https://a.example/1",
                title="Robots «rise»",
                guid="tag:a,2026:1",
                summary_html="<p>One &amp; two</p>",
                author="Ann",
                published=datetime(2026, 11, 25, 7, 0, 0, 123456, tzinfo=UTC),
                tags=("robot", "news"),
                terms=b"\x00\x01robot rise\xff",
            ),
            FeedEntry(url="https://a.example/2", title="No date, no terms"),
            FeedEntry(url="https://a.example/3", title="Empty terms", terms=b""),
        ),
        problem="Feed is truncated or has unclosed XML elements",  # a malformed feed stays malformed
    )
    back = ParsedFeed.from_json(feed.to_json())
    assert back == feed
    assert back.entries[0].published is not None and back.entries[0].published.tzinfo is UTC
    assert back.entries[1].terms is None and back.entries[2].terms == b""  # None and empty stay apart
    assert isinstance(back.entries[0].tags, tuple) and isinstance(back.entries, tuple)


def test_an_offset_date_comes_back_as_the_same_instant_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    feed = ParsedFeed(
        "t",
        "https://a.example/",
        (FeedEntry("https://a.example/1", "x", published=datetime(2026, 1, 1, 8, tzinfo=paris)),),
    )
    published = ParsedFeed.from_json(feed.to_json()).entries[0].published
    assert published == datetime(2026, 1, 1, 7, tzinfo=UTC) and published.tzinfo is UTC


def test_real_parses_round_trip() -> None:
    items = [
        Item(
            "Robot news",
            "https://g.example/1",
            guid="g1",
            summary="<b>hi</b>",
            tags=["a"],
            published=datetime(2026, 11, 24, 9, 30, tzinfo=UTC),
        ),
        Item("Second", "https://g.example/2"),
    ]
    for body in (rss(items), atom(items)):
        for feed in (
            parse_feed("s", body, url="https://g.example/feed"),
            parse_with_terms("s", body, "https://g.example/feed", {}),
        ):
            assert feed.entries and ParsedFeed.from_json(feed.to_json()) == feed
