"""Parsing every feed format into clean entries: encodings, entities, sanitizing, links, dates."""

from datetime import UTC, datetime
from typing import Any

import pytest

from digest.errors import SourceError
from digest.sources.clean import canonical_url, sanitize_html
from digest.sources.parse import parse_feed, read_xml
from tests.feedbuilder import Item, atom, json_feed, rss

WHEN = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
ITEMS = [
    Item(
        "Robots learn to fold laundry",
        "https://example.com/a?utm_source=x",
        guid="a",
        summary="<p>Folding <b>works</b></p>",
        published=WHEN,
        tags=["Robotics"],
    )
]


@pytest.mark.parametrize("body", [rss(ITEMS), atom(ITEMS), json_feed(ITEMS)], ids=["rss2", "atom", "json"])
def test_each_format_gives_the_same_clean_entry(body: bytes) -> None:
    feed = parse_feed("F", body, url="https://example.com/feed")
    (entry,) = feed.entries
    assert entry.title == "Robots learn to fold laundry"
    assert entry.url == "https://example.com/a"
    assert entry.summary_html == "<p>Folding <b>works</b></p>"
    assert entry.published == WHEN
    assert entry.tags == ("Robotics",)
    assert feed.title == "Test feed"


def test_rss_091_and_rss_10_rdf() -> None:
    rss091 = b"""<?xml version="1.0"?><rss version="0.91"><channel><title>Old</title>
    <link>http://old.example/</link><description>d</description><item><title>Hello</title>
    <link>http://old.example/1</link><description>First</description></item></channel></rss>"""
    rdf = b"""<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
    xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">
    <channel rdf:about="http://rdf.example/"><title>RDF</title><link>http://rdf.example/</link>
    <description>d</description></channel><item rdf:about="http://rdf.example/1"><title>One</title>
    <link>http://rdf.example/1</link><dc:date>2026-11-24T09:30:00Z</dc:date></item></rdf:RDF>"""
    assert [e.url for e in parse_feed("A", rss091, url="http://old.example/f").entries] == [
        "http://old.example/1"
    ]
    (entry,) = parse_feed("B", rdf, url="http://rdf.example/f").entries
    assert (entry.title, entry.published) == ("One", WHEN)


@pytest.mark.parametrize("encoding", ["iso-8859-1", "windows-1252", "shift_jis", "koi8-r", "utf-16"])
def test_declared_encodings_are_decoded(encoding: str) -> None:
    title = {"shift_jis": "ロボットが来た", "koi8-r": "Роботы идут"}.get(encoding, "Café crème à Zürich")
    body = rss([Item(title, "https://example.com/x")], encoding=encoding)
    assert parse_feed("F", body, url="https://example.com/f").entries[0].title == title


def test_charset_from_the_http_header_wins_for_undeclared_bytes() -> None:
    body = rss([Item("Grüße aus Köln", "https://example.com/x")], encoding="iso-8859-1")
    body = body.replace(b' encoding="iso-8859-1"', b"")
    headers = {"content-type": "application/rss+xml; charset=iso-8859-1"}
    assert (
        parse_feed("F", body, url="https://e.example/f", headers=headers).entries[0].title == "Grüße aus Köln"
    )


def test_entities_cdata_and_html_in_titles_come_out_as_text() -> None:
    body = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>T</title><link>http://e.example/</link>
    <item><title><![CDATA[<b>Bold</b> &amp; brave: AT&amp;T&#8217;s <i>robots</i>]]></title>
    <link>http://e.example/1</link></item>
    <item><title>Caf&#233; &lt;script&gt;alert(1)&lt;/script&gt; open</title><link>http://e.example/2</link></item>
    </channel></rss>"""
    titles = [e.title for e in parse_feed("F", body, url="http://e.example/f").entries]
    # An escaped script in a title is markup once unescaped: dropped whole, never shown as code.
    assert titles == ["Bold & brave: AT&T\u2019s robots", "Café open"]


def test_summaries_lose_scripts_handlers_javascript_links_styles_and_pixels() -> None:
    dirty = (
        '<p onclick="steal()">Hi <script>alert(1)</script><a href="javascript:alert(2)">x</a>'
        '<img src="https://t.example/pixel.gif" width="1" height="1" onerror="steal()">'
        '<style>p{display:none}</style><a href="/story" onmouseover="x()">more</a>'
        '<iframe src="https://evil.example"></iframe></p>'
    )
    clean = sanitize_html(dirty, base_url="https://news.example/feed/item")
    for bad in (
        "script",
        "onclick",
        "onerror",
        "onmouseover",
        "javascript:",
        "img",
        "pixel",
        "style",
        "iframe",
        "alert(1)",
    ):
        assert bad not in clean, bad
    assert 'href="https://news.example/story"' in clean
    assert '<a rel="noopener noreferrer">x</a>' in clean  # the link text stays, the script URL goes


def test_relative_links_resolve_against_the_entry_url() -> None:
    items = [Item("T", "/2026/robots", summary='<a href="photos">photos</a>')]
    (entry,) = parse_feed(
        "F", rss(items, link="https://news.example/"), url="https://news.example/feed"
    ).entries
    assert entry.url == "https://news.example/2026/robots"
    assert 'href="https://news.example/2026/photos"' in entry.summary_html
    (item,) = parse_feed("J", json_feed(items, link="https://j.example/"), url="https://j.example/f").entries
    assert item.url == "https://j.example/2026/robots"
    assert 'href="https://j.example/2026/photos"' in item.summary_html  # JSON Feed: the item's URL


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        (
            "HTTPS://News.Example.COM/a?utm_source=rss&utm_medium=x&id=7#comments",
            "https://news.example.com/a?id=7",
        ),
        ("https://e.example/a?fbclid=1&gclid=2&mc_cid=3&mc_eid=4&b=2&a=1", "https://e.example/a?b=2&a=1"),
        ("http://e.example:80/a", "http://e.example/a"),
        ("https://e.example:8443/a", "https://e.example:8443/a"),
        ("https://e.example", "https://e.example/"),
    ],
)
def test_canonical_urls(url: str, canonical: str) -> None:
    assert canonical_url(url) == canonical


def test_entries_without_a_date_have_none_and_without_a_link_are_skipped() -> None:
    body = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>T</title><link>http://e.example/</link>
    <item><title>No date</title><link>http://e.example/1</link></item>
    <item><title>No link</title><description>x</description></item></channel></rss>"""
    entries = parse_feed("F", body, url="http://e.example/f").entries
    assert [(e.title, e.published) for e in entries] == [("No date", None)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html><body>Not a feed</body></html>", "not an RSS, Atom or JSON feed"),
        (b"{ not json", "invalid JSON"),
        (b'{"version": "https://jsonfeed.org/version/1.1", "title": "x"}', "not a JSON Feed"),
        (b'{"version": "2", "title": "x", "items": []}', "unknown JSON Feed version"),
    ],
)
def test_garbage_is_a_source_error_naming_the_source(body: bytes, message: str) -> None:
    with pytest.raises(SourceError, match=rf"source 'Broken'.*{message}"):
        parse_feed("Broken", body, url="https://e.example/f")


def test_the_fast_parser_reads_ordinary_feeds_and_feedparser_takes_over_where_it_cannot() -> None:
    assert read_xml(rss(ITEMS), "https://e.example/f", {})[1] == "feedparser-rs"
    broken = b"""<rss version="2.0"><channel><title>T</title><item><title>A <b>B</title>
    <link>http://e.example/1</link></item></channel></rss>"""  # unclosed <b>: not well-formed XML
    assert read_xml(broken, "https://e.example/f", {})[1] == "feedparser"
    assert [e.title for e in parse_feed("F", broken, url="http://e.example/f").entries] == ["A B"]
    latin = {"content-type": "text/xml; charset=iso-8859-1"}
    assert read_xml(rss(ITEMS), "https://e.example/f", latin)[1] == "feedparser"


def test_undefined_html_entities_in_titles_become_text() -> None:
    body = b"""<rss version="2.0"><channel><title>T</title><item><title>A&nbsp;B &amp;amp; C&hellip;</title>
    <link>http://e.example/1</link></item></channel></rss>"""
    assert parse_feed("F", body, url="http://e.example/f").entries[0].title == "A B & C\u2026"


@pytest.mark.parametrize("build", [rss, atom, json_feed], ids=["rss2", "atom", "json"])
def test_an_entry_whose_link_urllib_refuses_is_skipped_not_the_feed(build: Any) -> None:
    items = [Item("Broken", "http://[broken/", guid="b"), *ITEMS]
    feed = parse_feed("F", build(items), url="https://example.com/feed")
    assert [e.title for e in feed.entries] == ["Robots learn to fold laundry"]


# --- issue 11: broken documents are failures, broken feeds are "malformed" -----------------

TWO = [Item("Robot one", "https://e.example/1", guid="1"), Item("Robot two", "https://e.example/2", guid="2")]


@pytest.mark.parametrize(
    ("build", "charset", "problem"),
    [
        (rss, "utf-8", "Feed is truncated or has unclosed XML elements"),
        (atom, "utf-8", "Feed is truncated or has unclosed XML elements"),
        # a charset only the reference parser honours: its own words for the same thing
        (rss, "iso-8859-1", "not well-formed XML: no element found"),
    ],
    ids=["rss2", "atom", "rss2-reference-parser"],
)
def test_a_feed_cut_off_keeps_its_whole_entries_and_says_it_is_malformed(
    build: Any, charset: str, problem: str
) -> None:
    body = build([*TWO, Item("Robot three", "https://e.example/3", guid="3")])
    cut = body[: body.index(b"https://e.example/3") + len(b"https://e.ex")]
    headers = {"content-type": f"application/xml; charset={charset}"}
    feed = parse_feed("F", cut, url="https://e.example/feed", headers=headers)
    assert [e.url for e in feed.entries] == ["https://e.example/1", "https://e.example/2"]
    assert feed.problem == problem


def test_the_reference_parser_reports_broken_markup() -> None:
    body = b"""<rss version="2.0"><channel><title>T</title><item><title>A <b>B</title>
    <link>http://e.example/1</link></item></channel></rss>"""  # unclosed <b>
    feed = parse_feed("F", body, url="http://e.example/f")
    assert [e.title for e in feed.entries] == ["A B"]
    assert feed.problem == "not well-formed XML: mismatched tag"


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (rss(TWO), {"content-type": "text/html"}),  # a wrong Content-Type
        (rss(TWO).replace(b"Robot one", b"Robot&nbsp;one"), {}),  # an HTML entity XML lacks
        (rss(TWO), {}),
    ],
    ids=["content-type", "entity", "clean"],
)
def test_harmless_complaints_are_not_malformed(body: bytes, headers: dict[str, str]) -> None:
    feed = parse_feed("F", body, url="https://e.example/f", headers=headers)
    assert len(feed.entries) == 2 and feed.problem is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "an empty response (0 bytes)"),
        (b"  \r\n ", "an empty response (5 bytes)"),
        (
            b"<!-- moved -->\n<!DOCTYPE html><html><body>We moved</body></html>",
            "an HTML page (has the feed moved?)",
        ),
        (b"<HTML><p>Error 500</p></HTML>", "an HTML page (has the feed moved?)"),
        (
            b'<?xml version="1.0"?><config><debug>true</debug></config>',
            "no RSS, Atom or JSON Feed document in it",
        ),
        (b"<config><debug>true</config>", "not well-formed XML: mismatched tag"),
    ],
    ids=["empty", "blank", "html5", "html-upper", "other-xml", "broken-xml"],
)
def test_documents_that_are_not_feeds_fail_with_the_reason(body: bytes, reason: str) -> None:
    # An empty body is named as such even when its Content-Type promised JSON.
    content_type = "application/feed+json" if not body.strip() else "application/rss+xml"
    with pytest.raises(SourceError) as caught:
        parse_feed("Broken", body, url="https://e.example/f", headers={"content-type": content_type})
    assert (
        str(caught.value)
        == f"source 'Broken': not an RSS, Atom or JSON feed at https://e.example/f: {reason}"
    )


def test_an_empty_but_valid_feed_is_fine() -> None:
    feed = parse_feed("F", rss([]), url="https://e.example/f")
    assert feed.entries == () and feed.problem is None


def test_a_json_feed_item_that_breaks_the_format_is_skipped_and_reported() -> None:
    import json

    data = json.loads(json_feed(TWO))
    data["items"].insert(1, {"url": "https://e.example/no-id", "title": "Robot without an id"})
    data["items"].append({"id": "4", "url": "https://e.example/4", "date_published": "yesterday"})
    feed = parse_feed("F", json.dumps(data).encode(), url="https://e.example/f")
    assert [e.title for e in feed.entries] == ["Robot one", "Robot two"]
    assert feed.problem == "invalid item: items.1.id: Field required"


def test_json_nested_beyond_the_stack_is_a_source_error_not_a_crash() -> None:
    with pytest.raises(SourceError, match="nested too deeply"):
        parse_feed("Deep", b"[" * 100_000, url="https://e.example/f")


def test_json_content_text_is_escaped_not_read_as_markup() -> None:
    import json

    data = json.loads(json_feed(TWO[:1]))
    data["items"][0].pop("content_html")
    data["items"][0]["content_text"] = "Robots <script>x()</script> & <b>more</b>"
    (entry,) = parse_feed("F", json.dumps(data).encode(), url="https://e.example/f").entries
    assert entry.summary_html == "Robots &lt;script&gt;x()&lt;/script&gt; &amp; &lt;b&gt;more&lt;/b&gt;"


@pytest.mark.parametrize(
    "href",
    [
        "javascript:alert(1)",
        " JAVASCRIPT:alert(1)",
        "&#x6A;avascript:alert(1)",
        "java&#x09;script:alert(1)",
        "data:text/html,x",
        "vbscript:x",
        "mailto:someone@e.example",
        "file:///etc/passwd",
    ],
)
def test_summary_links_keep_only_http_and_https(href: str) -> None:
    clean = sanitize_html(f'<a href="{href}">x</a> <a href="/ok">ok</a>', base_url="https://e.example/a")
    assert clean == (
        '<a rel="noopener noreferrer">x</a> <a href="https://e.example/ok" rel="noopener noreferrer">ok</a>'
    )
    assert sanitize_html('<a href="/ok">ok</a>') == '<a rel="noopener noreferrer">ok</a>'  # no base: no link


def test_summary_links_are_read_as_a_browser_reads_them() -> None:
    """nh3 judges links with the WHATWG parser: a backslash is a slash in an http(s) URL."""
    rel = 'rel="noopener noreferrer"'
    clean = sanitize_html('<a href="\\\\evil.example\\x">x</a>', base_url="https://e.example/a/b")
    assert clean == f'<a href="https://evil.example/x" {rel}>x</a>'
    # A base the browser could not parse resolves nothing: relative links go, absolute ones stay.
    both = '<a href="/x">x</a> <a href="https://ok.example/">ok</a>'
    assert (
        sanitize_html(both, base_url="http://a b/")
        == f'<a {rel}>x</a> <a href="https://ok.example/" {rel}>ok</a>'
    )
