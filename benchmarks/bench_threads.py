"""Story continuity (issue 16): the follow-up rule on tests/data/thread_pairs.toml, and its cost per edition.

Pair figures: each labelled pair (earlier, later) is "continues" or not, by the labels and by
digest.threads.relate. Precision and recall count "continues" against "unrelated" (the issue's
measure); a stricter precision also counts the "same_event" pairs as negatives. The rule was
designed on the first 112 pairs; the 39 pairs of the file's [fresh] table were written before that
design and are the held-out part. In context: every story of the set runs on its day against the
stories of the 14 days before it, as link_earlier does for an edition; a link is right when the
two stories are of one thread and not a labelled same-event pair.
Usage: python benchmarks/bench_threads.py [--editions N]
"""

import argparse
import json
import random
import statistics
import sys
import time
import tomllib
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from digest.threads import (
    EVIDENCE,
    HORIZON_DAYS,
    Corpus,
    Relation,
    ThreadStory,
    link_earlier,
    profile,
    relate,
)

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "thread_pairs.toml"
DAY0 = date(2026, 11, 2)


def bench(metric: str, value: float, unit: str = "", note: str = "") -> None:
    """Print one BENCH line."""
    row = {"benchmark": "threads", "metric": metric, "value": value, "unit": unit, "note": note}
    print("BENCH " + json.dumps(row))


def score(pairs: list[dict[str, Any]], verdicts: dict[tuple[str, str], Relation]) -> dict[str, float]:
    """Precision, recall and strict precision of the "continues" verdicts on these pairs."""
    said = [verdicts[p["earlier"], p["later"]] is Relation.CONTINUES for p in pairs]
    labels = [p["label"] for p in pairs]
    tp = sum(s and lab == "continues" for s, lab in zip(said, labels, strict=True))
    fp_unrelated = sum(s and lab == "unrelated" for s, lab in zip(said, labels, strict=True))
    fp_same = sum(s and lab == "same_event" for s, lab in zip(said, labels, strict=True))
    return {
        "precision": tp / max(tp + fp_unrelated, 1),
        "recall": tp / max(labels.count("continues"), 1),
        "strict": tp / max(tp + fp_unrelated + fp_same, 1),
        "pairs": len(pairs),
    }


def in_context(
    stories: dict[str, dict[str, Any]], same_event: set[tuple[str, str]], evidence: float = EVIDENCE
) -> tuple[float, float, int]:
    """Link every day's stories to the 14 days before; (link precision, recall of continues pairs, links)."""
    keys = list(stories)
    ids = {k: n for n, k in enumerate(keys)}
    as_story = {
        k: ThreadStory(ids[k], DAY0 + timedelta(days=s["day"]), s["title"], s["summary"])
        for k, s in stories.items()
    }
    found: set[tuple[str, str]] = set()
    for day in sorted({s["day"] for s in stories.values()}):
        today = [as_story[k] for k, s in stories.items() if s["day"] == day]
        earlier = [as_story[k] for k, s in stories.items() if day - HORIZON_DAYS <= s["day"] < day]
        for new_id, links in link_earlier(today, earlier, evidence=evidence).items():
            found.update((keys[link.story_id], keys[new_id]) for link in links)
    right = sum(stories[a]["thread"] == stories[b]["thread"] and (a, b) not in same_event for a, b in found)
    expected = {
        (a, b)
        for a in stories
        for b in stories
        if stories[a]["thread"] == stories[b]["thread"]
        and 0 < stories[b]["day"] - stories[a]["day"] <= HORIZON_DAYS
        and (a, b) not in same_event
    }
    # At most two links per story: a story with more earlier coverage can show only its two newest.
    reachable = {
        (a, b)
        for a, b in expected
        if sum(1 for x, y in expected if y == b and stories[x]["day"] > stories[a]["day"]) < 2
    }
    return right / max(len(found), 1), len(found & reachable) / max(len(reachable), 1), len(found)


def synthetic_edition(
    rnd: random.Random, new: int, earlier: int
) -> tuple[list[ThreadStory], list[ThreadStory]]:
    """Stories shaped like news (names, words, a figure) for timing: `new` today, `earlier` before."""

    def letters(n: int) -> str:  # digits would make every word a model number ("A321")
        return "".join("abcdefghijklmnopqrstuvwxyz"[int(d)] for d in str(n))

    names = [f"Kor{letters(n)}" for n in range(150)]
    words = [f"wa{letters(n)}" for n in range(3000)]
    today = DAY0 + timedelta(days=HORIZON_DAYS)

    def story(n: int, day: date) -> ThreadStory:
        a, b = rnd.sample(names, 2)
        title = f"{a} {' '.join(rnd.sample(words, 4))} {b} {rnd.choice(words)}"
        text = (
            f"The {rnd.choice(words)} of {a} said {' '.join(rnd.sample(words, 12))}, about "
            f"${rnd.randint(1, 900)}m. {b} {' '.join(rnd.sample(words, 14))}."
        )
        return ThreadStory(n, day, title, text)

    old = [story(n, today - timedelta(days=1 + n % HORIZON_DAYS)) for n in range(earlier)]
    return [story(earlier + n, today) for n in range(new)], old


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--editions", type=int, default=20, help="timed runs of one edition")
    args = parser.parse_args(argv)
    data = tomllib.loads(DATA.read_text())
    stories: dict[str, dict[str, Any]] = data["story"]
    design, held_out = data["pair"], data["fresh"]["pair"]
    every = design + held_out
    corpus = Corpus.of(profile(s["title"], s["summary"]) for s in stories.values())
    resolved = {k: corpus.resolve(profile(s["title"], s["summary"])) for k, s in stories.items()}
    verdicts = {
        (p["earlier"], p["later"]): relate(resolved[p["earlier"]], resolved[p["later"]], corpus)
        for p in every
    }
    relations = {key: v.relation for key, v in verdicts.items()}
    counts = {lab: sum(p["label"] == lab for p in every) for lab in ("continues", "unrelated", "same_event")}
    print(
        f"{len(stories)} stories, {len(every)} pairs ({counts['continues']} continues, "
        f"{counts['unrelated']} unrelated, {counts['same_event']} same event); EVIDENCE = {EVIDENCE}"
    )
    print("part        pairs  precision  recall  precision with same-event pairs as negatives")
    figures = {}
    for name, pairs in (("design", design), ("held-out", held_out), ("all", every)):
        figures[name] = f = score(pairs, relations)
        print(f"{name:<10}  {f['pairs']:>5}  {f['precision']:>9.2f}  {f['recall']:>6.2f}  {f['strict']:.2f}")
    wrong = [
        f"  {p['label']:<10} said {relations[p['earlier'], p['later']].value:<10} "
        f"{p['earlier']} > {p['later']} (score {verdicts[p['earlier'], p['later']].score})"
        for p in every
        if (relations[p["earlier"], p["later"]] is Relation.CONTINUES) != (p["label"] == "continues")
    ]
    print("pairs the rule gets wrong:\n" + "\n".join(wrong))
    same_pairs = [p for p in every if p["label"] == "same_event"]
    told_apart = sum(relations[p["earlier"], p["later"]] is not Relation.CONTINUES for p in same_pairs)
    note = f"{len(held_out)} pairs written before the rule was designed"
    bench("held-out precision", round(figures["held-out"]["precision"], 3), note=note)
    bench("held-out recall", round(figures["held-out"]["recall"], 3), note=note)
    note = f"{len(every)} pairs, continues against unrelated; target 0.95 at recall 0.70"
    bench("precision, all pairs", round(figures["all"]["precision"], 3), note=note)
    bench("recall, all pairs", round(figures["all"]["recall"], 3), note=note)
    bench(
        "precision, same-event pairs as negatives",
        round(figures["all"]["strict"], 3),
        note=f"same-event pairs not called follow-ups: {told_apart} of {len(same_pairs)}",
    )
    same_event = {(p["earlier"], p["later"]) for p in same_pairs}
    print("in context (each story against the 14 days before it):")
    print("EVIDENCE  links  link precision  link recall")
    for evidence in sorted({EVIDENCE, 1.5, 2.0}):
        precision, recall, links = in_context(stories, same_event, evidence)
        mark = "  <- EVIDENCE" if evidence == EVIDENCE else ""
        print(f"{evidence:>8}  {links:>5}  {precision:>14.2f}  {recall:>11.2f}{mark}")
        if evidence == EVIDENCE:
            note = f"every story against its 14 days before: {links} links"
            bench("link precision in context", round(precision, 3), note=note)
            bench("link recall in context", round(recall, 3), note="of thread pairs a two-link line can show")
    rnd = random.Random(16)
    today, earlier = synthetic_edition(rnd, 40, HORIZON_DAYS * 40)
    stored = [replace(s, profile=profile(s.title, s.text)) for s in earlier]
    for label, olds, note in (
        ("one edition: 40 new against 560 earlier", earlier, "profiles computed from the text"),
        ("the same, earlier profiles stored", stored, "Profile.to_json kept with each carried story"),
    ):
        times = []
        for _ in range(args.editions):
            started = time.perf_counter()
            link_earlier(today, olds)
            times.append(time.perf_counter() - started)
        bench(label, round(statistics.median(times) * 1000, 1), "ms", f"median of {args.editions}; {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
