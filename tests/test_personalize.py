"""The renderer shared by the tasks of a threads-pool worker: one render and one content per copy."""

import threading
from pathlib import Path

import pytest

from digest import render
from digest.config import Newsletter, TopicConfig, load_settings
from digest.personalize import make_renderer
from tests.render import samples


def test_threads_asking_for_one_copy_at_once_render_it_once_and_share_its_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(
        secret_key="test-secret-key-long-enough-to-sign-links",
        base_url="https://news.example.org",
        var_dir=tmp_path,
    )
    newsletter = Newsletter(
        newsletter=samples.NEWSLETTER, topics=[TopicConfig(name=t) for t in samples.TOPICS[:4]]
    )
    renderer = make_renderer(settings, newsletter)
    edition = samples.edition(6, topics=samples.TOPICS)
    real_render = render.render_digest
    renders: list[int] = []
    other_got: list[object] = []

    def ask_from_another_thread() -> None:
        _, rendered = renderer.digest_for(edition, frozenset())
        other_got.append(renderer.content_for(rendered))

    other = threading.Thread(target=ask_from_another_thread)

    def render_while_another_task_asks(*args: object, **kwargs: object) -> render.RenderedDigest:
        renders.append(threading.get_ident())
        if len(renders) == 1:  # a second task wants the same copy while this one is rendering
            other.start()
            other.join(timeout=0.2)  # bounded: with the lock it waits for this render to finish
        return real_render(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(render, "render_digest", render_while_another_task_asks)
    _, rendered = renderer.digest_for(edition, frozenset())
    mine = renderer.content_for(rendered)
    other.join(timeout=30)
    assert not other.is_alive()
    assert len(renders) == 1, "the copy was rendered twice"
    assert other_got == [mine]  # one MessageContent (one key) for the copy, whoever asked first
