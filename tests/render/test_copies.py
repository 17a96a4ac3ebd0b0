"""The renderer shared by the tasks of a threads-pool worker: one render and one content per copy,
and a bounded cache for a process that lives for months."""

import dataclasses
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from digest.config import load_settings
from digest.newsletter import Newsletter, TopicConfig
from digest.render import copies
from digest.render.copies import Renderer, make_renderer
from digest.render.email import RenderedDigest, render_digest
from tests.render import samples


def _renderer(tmp_path: Path) -> Renderer:
    settings = load_settings(
        secret_key="test-secret-key-long-enough-to-sign-links",
        base_url="https://news.example.org",
        var_dir=tmp_path,
    )
    newsletter = Newsletter(
        newsletter=samples.NEWSLETTER, topics=[TopicConfig(name=t) for t in samples.TOPICS[:4]]
    )
    return make_renderer(settings, newsletter)


def test_threads_asking_for_one_copy_at_once_render_it_once_and_share_its_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renderer = _renderer(tmp_path)
    edition = samples.edition(6, topics=samples.TOPICS)
    real_render = render_digest
    renders: list[int] = []
    other_got: list[object] = []

    def ask_from_another_thread() -> None:
        _, rendered = renderer.digest_for(edition, frozenset())
        other_got.append(renderer.content_for(rendered))

    other = threading.Thread(target=ask_from_another_thread)

    def render_while_another_task_asks(*args: object, **kwargs: object) -> RenderedDigest:
        renders.append(threading.get_ident())
        if len(renders) == 1:  # a second task wants the same copy while this one is rendering
            other.start()
            other.join(timeout=0.2)  # bounded: with the lock it waits for this render to finish
        return real_render(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(copies, "render_digest", render_while_another_task_asks)
    _, rendered = renderer.digest_for(edition, frozenset())
    mine = renderer.content_for(rendered)
    other.join(timeout=30)
    assert not other.is_alive()
    assert len(renders) == 1, "the copy was rendered twice"
    assert other_got == [mine]  # one MessageContent (one key) for the copy, whoever asked first


def test_only_the_latest_editions_copies_are_kept(tmp_path: Path) -> None:
    renderer = _renderer(tmp_path)
    first = samples.edition(6, topics=samples.TOPICS)
    days = [dataclasses.replace(first, date=first.date + timedelta(days=n)) for n in range(5)]
    contents = {}
    for edition in days:  # a worker running for five days, two copies a day
        for chosen in (frozenset(), frozenset(samples.TOPICS[:1])):
            _, rendered = renderer.digest_for(edition, chosen)
            contents[edition.date, chosen] = renderer.content_for(rendered)
    kept = {day for day, _, _ in renderer._cache}
    assert kept == {e.date for e in days[-copies.KEEP_EDITIONS :]}
    assert len(renderer._contents) == 2 * copies.KEEP_EDITIONS
    # a copy still in the cache keeps its content (one key per copy); a forgotten one renders again
    latest = days[-1]
    _, rendered = renderer.digest_for(latest, frozenset())
    assert renderer.content_for(rendered) is contents[latest.date, frozenset()]
    _, again = renderer.digest_for(days[0], frozenset())
    assert again.html == renderer.digest_for(days[0], frozenset())[1].html
    assert {day for day, _, _ in renderer._cache} == {days[0].date, *(e.date for e in days[-2:])}
