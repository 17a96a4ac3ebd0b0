"""Collecting into the database: health per source, one article per URL, stories across feeds."""

import logging
import threading
from datetime import datetime, timedelta
from multiprocessing import get_all_start_methods
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, col, select

from digest import pipeline
from digest.clock import FixedClock
from digest.db.models import Article, Source, Story
from digest.newsletter import Newsletter, load_newsletter
from digest.sources import workers as workers_module
from digest.stories import StoryDoc, terms
from tests.feedbuilder import Item, atom, json_feed, newsletter_toml, rss, write


def _newsletter(tmp_path: Path, *names: str) -> Newsletter:
    path = tmp_path / "digest.toml"
    path.write_text(newsletter_toml({n: f"feeds/{n}.xml" for n in names}))
    return load_newsletter(path)


def _feed(tmp_path: Path, name: str, body: bytes) -> None:
    write(tmp_path / "feeds" / f"{name}.xml", body)


def _rows(engine: sa.Engine) -> tuple[list[Article], list[Story], dict[str, Source]]:
    with Session(engine) as s:
        articles = list(s.exec(select(Article).order_by(col(Article.id))))
        stories = list(s.exec(select(Story).order_by(col(Story.id))))
        sources = {r.name: r for r in s.exec(select(Source))}
    return articles, stories, sources


def test_a_broken_feed_is_recorded_and_the_others_collected(
    tmp_path: Path, engine: sa.Engine, now: datetime
) -> None:
    newsletter = _newsletter(tmp_path, "good", "broken", "missing")
    _feed(tmp_path, "good", rss([Item("Robot news", "https://g.example/1")]))
    _feed(tmp_path, "broken", b"<html>this is not a feed</html>")
    results = {r.name: r for r in pipeline.collect(newsletter, engine=engine, clock=FixedClock(now))}
    assert (results["good"].status, results["good"].new) == ("new", 1)
    assert results["broken"].status == "failed" and "source 'broken'" in (results["broken"].error or "")
    assert results["missing"].status == "failed" and "cannot read" in (results["missing"].error or "")
    for _ in range(2):
        pipeline.collect(newsletter, engine=engine, clock=FixedClock(now))
    _, _, sources = _rows(engine)
    assert sources["broken"].failure_streak == 3 and sources["good"].failure_streak == 0
    assert sources["broken"].last_error_at == now and sources["good"].last_success_at == now
    _feed(tmp_path, "broken", rss([Item("Fixed", "https://b.example/1")]))
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(now + timedelta(hours=1)))
    _, _, sources = _rows(engine)
    assert sources["broken"].failure_streak == 0
    assert sources["broken"].last_error  # the last error stays visible after recovery


def test_recollecting_never_duplicates_and_tracking_variants_are_one_article(
    tmp_path: Path, engine: sa.Engine, now: datetime
) -> None:
    newsletter = _newsletter(tmp_path, "a", "b")
    _feed(tmp_path, "a", rss([Item("Robot one", "https://e.example/1?utm_source=a", guid="x1")]))
    _feed(tmp_path, "b", atom([Item("Robot one", "https://E.example/1#top", guid="y1")]))
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(now))
    # The same entry again, now with a new ID but the same canonical URL, and an edited title.
    _feed(tmp_path, "a", rss([Item("Robot one (updated)", "https://e.example/1?fbclid=9", guid="x2")]))
    results = pipeline.collect(newsletter, engine=engine, clock=FixedClock(now + timedelta(hours=1)))
    articles, stories, _ = _rows(engine)
    assert [a.url for a in articles] == ["https://e.example/1"]
    assert len(stories) == 1
    assert articles[0].title == "Robot one (updated)"
    assert [(r.name, r.status) for r in results] == [("a", "updated"), ("b", "unchanged")]


def test_an_entry_that_moved_to_a_new_url_but_kept_its_id_is_the_same_article(
    tmp_path: Path, engine: sa.Engine, now: datetime
) -> None:
    newsletter = _newsletter(tmp_path, "a")
    _feed(tmp_path, "a", rss([Item("Robot", "https://e.example/old/1", guid="id-1")]))
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(now))
    _feed(tmp_path, "a", rss([Item("Robot", "https://e.example/new/1", guid="id-1")]))
    assert pipeline.collect(newsletter, engine=engine, clock=FixedClock(now))[0].new == 0
    assert len(_rows(engine)[0]) == 1


def test_the_same_event_from_three_feeds_becomes_one_story_with_three_sources(
    tmp_path: Path, engine: sa.Engine, now: datetime
) -> None:
    newsletter = _newsletter(tmp_path, "wire", "daily", "herald")
    _feed(
        tmp_path,
        "wire",
        rss(
            [
                Item(
                    "Voltra recalls 120,000 sedans over faulty brake sensor",
                    "https://wire.example/1",
                    summary="The carmaker said a brake sensor can fail in cold weather.",
                ),
                Item(
                    "Kessler workers strike at two German plants",
                    "https://wire.example/2",
                    summary="Union members walked out over pay.",
                ),
            ]
        ),
    )
    _feed(
        tmp_path,
        "daily",
        atom(
            [
                Item(
                    "Brake sensor flaw forces Voltra to recall 120k cars",
                    "https://daily.example/a",
                    summary="Voltra is recalling about 120,000 sedans because a brake sensor may fail.",
                ),
            ]
        ),
    )
    _feed(
        tmp_path,
        "herald",
        json_feed(
            [
                Item(
                    "Voltra quarterly profit falls 30% as price cuts bite",
                    "https://herald.example/x",
                    summary="Voltra reported third-quarter profit down 30 percent.",
                ),
            ]
        ),
    )
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(now))
    # A later run: one more outlet reports the recall; it joins the existing story.
    write(
        tmp_path / "feeds" / "herald.xml",
        json_feed(
            [
                Item(
                    "Voltra sedan recall: what owners need to know",
                    "https://herald.example/y",
                    summary="A faulty brake sensor is behind Voltra's recall of 120,000 vehicles.",
                ),
            ]
        ),
    )
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(now + timedelta(hours=2)))
    articles, stories, sources = _rows(engine)
    by_story: dict[int | None, set[str]] = {}
    names = {s.id: n for n, s in sources.items()}
    for a in articles:
        by_story.setdefault(a.story_id, set()).add(names[a.source_id])
    assert sorted(map(sorted, by_story.values())) == [["daily", "herald", "wire"], ["herald"], ["wire"]]
    assert len(stories) == 3


def test_dates_in_the_future_are_clamped_and_missing_dates_take_first_seen(
    tmp_path: Path, engine: sa.Engine, now: datetime
) -> None:
    newsletter = _newsletter(tmp_path, "a")
    _feed(
        tmp_path,
        "a",
        rss(
            [
                Item("From the future", "https://e.example/1", published=now + timedelta(days=30)),
                Item("Undated", "https://e.example/2"),
                Item("Yesterday", "https://e.example/3", published=now - timedelta(days=1)),
            ]
        ),
    )
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(now))
    articles, _, _ = _rows(engine)
    assert [a.published_at for a in articles] == [now, now, now - timedelta(days=1)]


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_parsing_in_worker_processes_gives_the_same_result(
    tmp_path: Path, engine: sa.Engine, now: datetime, start_method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers_module, "start_method", lambda: start_method)
    names = [f"f{i}" for i in range(4)]
    newsletter = _newsletter(tmp_path, *names, "bad")
    events = [
        ("Voltra recalls 120,000 sedans over faulty brake sensor", "Kessler workers strike at two plants"),
        ("Brake sensor flaw forces Voltra to recall 120k sedans", "Orbix Fold 3 review: the crease is gone"),
        ("Lumacell shows a solid-state battery cell", "Cartly data breach exposes 8 million shoppers"),
        ("Siliq to build a chip plant in Arizona", "Rovers win the cup final with a late header"),
    ]
    for name, titles in zip(names, events, strict=True):
        _feed(tmp_path, name, rss([Item(t, f"https://{name}.example/{j}") for j, t in enumerate(titles)]))
    _feed(tmp_path, "bad", b"garbage")
    results = pipeline.collect(newsletter, engine=engine, clock=FixedClock(now), parse_workers=2)
    assert [(r.name, r.status, r.new) for r in results] == [
        *((n, "new", 2) for n in names),
        ("bad", "failed", 0),
    ]
    articles, stories, _ = _rows(engine)
    assert len(articles) == 8 and len(stories) == 7  # the two Voltra recall reports are one story
    recall = {a.story_id for a in articles if "Voltra" in a.title}
    assert len(recall) == 1


def test_workers_are_forked_before_a_progress_bar_starts_its_thread(
    tmp_path: Path, engine: sa.Engine, now: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    """Rich's bar starts a refresh thread from the first `on_fetched`; the workers came before it
    (forked, not spawned: a spawned worker imports everything again), even when the first source
    to answer brings nothing to parse (file sources answer in order: the missing one first)."""
    if "fork" not in get_all_start_methods():
        pytest.skip("no fork on this platform")
    names = [f"f{i}" for i in range(3)]
    newsletter = _newsletter(tmp_path, "missing", *names)
    for name in names:
        _feed(tmp_path, name, rss([Item(f"{name} news", f"https://{name}.example/1")]))
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def on_fetched(name: str, error: str | None) -> None:
        if not threads:  # as Rich's Progress.start() does
            threads.append(threading.Thread(target=stop.wait, daemon=True))
            threads[0].start()

    caplog.set_level(logging.INFO, logger="digest.sources.collect")
    try:
        results = pipeline.collect(
            newsletter, engine=engine, clock=FixedClock(now), parse_workers=2, on_fetched=on_fetched
        )
    finally:
        stop.set()
    assert [r.status for r in results] == ["failed", "new", "new", "new"] and threads
    assert "workers=2 started_by=fork" in caplog.text


def test_articles_keep_their_story_terms_and_older_rows_without_them_still_match(
    tmp_path: Path, engine: sa.Engine, now: datetime
) -> None:
    newsletter = _newsletter(tmp_path, "wire", "post")
    recall = Item(
        "Voltra recalls 120,000 sedans over faulty brake sensor",
        "https://wire.example/1",
        summary="Voltra said a brake sensor can fail in the cold.",
    )
    _feed(tmp_path, "wire", rss([recall]))
    _feed(tmp_path, "post", rss([]))
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(now))
    articles, _, _ = _rows(engine)
    assert articles[0].story_terms == terms(
        StoryDoc(recall.title, "Voltra said a brake sensor can fail in the cold.")
    )
    # An article stored before terms were kept (migration 0006) has none: its title and summary
    # are read instead, and the same event from another outlet still joins its story.
    with Session(engine) as s:
        s.execute(sa.update(Article).values(story_terms=None))
        s.commit()
    _feed(
        tmp_path,
        "post",
        rss([Item("Brake flaw forces Voltra to recall 120k sedans", "https://post.example/1")]),
    )
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(now + timedelta(hours=1)))
    articles, stories, _ = _rows(engine)
    assert len(articles) == 2 and len(stories) == 1 and articles[1].story_terms
    # An entry edited in place gets new terms with its new title.
    _feed(tmp_path, "post", rss([Item("Voltra widens sedan recall", "https://post.example/1")]))
    pipeline.collect(newsletter, engine=engine, clock=FixedClock(now + timedelta(hours=2)))
    articles, _, _ = _rows(engine)
    assert articles[1].story_terms == terms(StoryDoc("Voltra widens sedan recall"))
