"""The collect's worker processes: the clustering worker starts no thread in the collect's process."""

import threading
from multiprocessing import get_context

from digest.sources.workers import Workers, _Scientist
from digest.stories import KnownArticle, StoryDoc, cluster

DOCS = [
    StoryDoc("Voltra recalls 120,000 sedans over faulty brake sensor", "The recall covers 2024 models.", "A"),
    StoryDoc("Brake sensor flaw forces Voltra to recall 120k sedans", "Owners will be told by mail.", "B"),
    StoryDoc("Kessler workers strike at two plants", "The union wants a raise.", "C"),
]
KNOWN = [KnownArticle(7, StoryDoc("Kessler staff walk out at two plants over pay", "", "D"))]


def test_the_clustering_worker_starts_no_thread_here_and_clusters_as_this_process_does() -> None:
    # A thread here when the parse workers are forked could leave a lock held in them for ever.
    before = threading.active_count()
    scientist = _Scientist(get_context("fork"))
    scientist.warm()
    assert threading.active_count() == before
    try:
        assert cluster(DOCS, KNOWN, compute=scientist.score) == cluster(DOCS, KNOWN)
    finally:
        scientist.close()
    assert not scientist.process.is_alive()


def test_workers_cluster_through_the_worker_and_stop_it() -> None:
    workers = Workers(1)
    workers.start()
    try:
        assert workers.cluster(DOCS, KNOWN) == cluster(DOCS, KNOWN)
        assert workers.scientist is not None and workers.scientist.process.is_alive()
    finally:
        workers.close()
    assert workers.scientist is not None and not workers.scientist.process.is_alive()
