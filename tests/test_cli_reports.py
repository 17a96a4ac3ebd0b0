"""What `digest collect` prints: every source when there are few, those needing a look when many."""

import pytest

from digest.cli import common
from digest.cli.reports import LIST_EVERY_SOURCE_UP_TO, print_collect
from digest.sources.collect import SourceResult


def _printed(results: list[SourceResult], *, every: bool = False) -> str:
    with common.out.capture() as captured:
        print_collect(results, every=every)
    return captured.get()


def _results(count: int) -> list[SourceResult]:
    results = [SourceResult(f"Feed {i:04}", "new", new=3, entries=3) for i in range(count)]
    results[1] = SourceResult("Feed 0001", "failed", error="source 'Feed 0001': HTTP 500 from x")
    results[2] = SourceResult("Feed 0002", "malformed", new=1, entries=1, error="malformed feed: cut off")
    return results


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common.out, "width", 300)


def test_a_few_sources_are_all_listed() -> None:
    text = _printed(_results(LIST_EVERY_SOURCE_UP_TO))
    assert all(f"Feed {i:04}" in text for i in range(LIST_EVERY_SOURCE_UP_TO))
    assert "not listed" not in text


def test_many_sources_list_only_those_that_need_a_look_and_say_how_to_see_all() -> None:
    count = LIST_EVERY_SOURCE_UP_TO * 30
    text = _printed(_results(count))
    assert "Feed 0001" in text and "HTTP 500" in text and "Feed 0002" in text and "cut off" in text
    assert "Feed 0000" not in text and f"Feed {count - 1:04}" not in text
    assert f"{count} sources: {3 * (count - 2) + 1} new articles, 0 updated, 1 failed, 1 malformed" in text
    assert f"({count - 2} sources that answered well are not listed; --all lists every source" in text


def test_all_lists_every_source_however_many() -> None:
    count = LIST_EVERY_SOURCE_UP_TO + 5
    text = _printed(_results(count), every=True)
    assert all(f"Feed {i:04}" in text for i in range(count))
    assert "not listed" not in text


def test_many_sources_all_well_print_no_empty_table() -> None:
    count = LIST_EVERY_SOURCE_UP_TO + 1
    text = _printed([SourceResult(f"Feed {i}", "unchanged") for i in range(count)])
    assert "Collection" not in text
    assert text.startswith(f"{count} sources: 0 new articles")
