"""Story clustering quality and speed: precision/recall on tests/data/story_pairs.toml, and 10,000 titles.

Pairwise figures: every pair of reports is "same story" or not, by the labels and by digest.
Usage: python benchmarks/bench_clustering.py
"""

import itertools
import json
import random
import sys
import time
import tomllib
from pathlib import Path

from digest.stories import THRESHOLD, KnownArticle, StoryDoc, cluster, similarities

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "story_pairs.toml"


def bench(metric: str, value: float, unit: str = "", note: str = "") -> None:
    """Print one BENCH line."""
    row = {"benchmark": "clustering", "metric": metric, "value": value, "unit": unit, "note": note}
    print("BENCH " + json.dumps(row))


def main() -> int:
    events = tomllib.loads(DATA.read_text())["event"]
    docs = [StoryDoc(r["title"], r["summary"], r["source"]) for e in events for r in e["reports"]]
    labels = [e["id"] for e in events for _ in e["reports"]]
    pairs = list(itertools.combinations(range(len(docs)), 2))
    truth = [labels[i] == labels[j] for i, j in pairs]
    sims = similarities(docs)
    print(
        f"{len(docs)} reports, {len(events)} events: {sum(truth)} same-story pairs, "
        f"{len(pairs) - sum(truth)} different-story pairs"
    )
    print("threshold  pairwise P/R    clustering P/R")
    for threshold in (0.2, 0.25, 0.3, 0.35, 0.4):
        same = [sims[i].get(j, 0.0) >= threshold for i, j in pairs]
        keys = cluster(docs, [], threshold=threshold)
        grouped = [keys[i] == keys[j] for i, j in pairs]
        rows = []
        for decided in (same, grouped):
            tp = sum(d and t for d, t in zip(decided, truth, strict=True))
            rows.append((tp / max(sum(decided), 1), tp / sum(truth)))
        mark = "  <- THRESHOLD" if threshold == THRESHOLD else ""
        (p1, r1), (p2, r2) = rows
        print(f"  {threshold:.2f}     {p1:.2f} / {r1:.2f}     {p2:.2f} / {r2:.2f}{mark}")
        if threshold == THRESHOLD:
            note = f"threshold {THRESHOLD}, {len(pairs)} labelled pairs"
            bench("pairwise precision", round(rows[0][0], 3), note=note)
            bench("pairwise recall", round(rows[0][1], 3), note=note)
            bench("clustering precision", round(rows[1][0], 3), note=note)
            bench("clustering recall", round(rows[1][1], 3), note=note)
    rnd = random.Random(1)
    vocab = [f"w{n}" for n in range(20000)]
    big = [
        StoryDoc(" ".join(rnd.choices(vocab, k=9)), " ".join(rnd.choices(vocab, k=30)), str(n % 200))
        for n in range(10000)
    ]
    started = time.perf_counter()
    cluster(big, [])
    bench(
        "10,000 new articles", round(time.perf_counter() - started, 2), "s", "after scikit-learn is imported"
    )
    known = [KnownArticle(n, doc) for n, doc in enumerate(big)]
    started = time.perf_counter()
    cluster(big[:100], known)
    bench("100 new against 10,000 recent", round(time.perf_counter() - started, 2), "s", "an hourly collect")
    return 0


if __name__ == "__main__":
    sys.exit(main())
