"""Pure: decide which new articles report the same event, as each other or as a recent story.

Similarity is TF-IDF cosine (scikit-learn) over an article's title and the start of its summary:
words that many articles share ("new", "says", "2026") weigh little, names and numbers that
only reports of one event share weigh much. The clustering is greedy single-link: a new article
joins the story of its most similar earlier article when the cosine reaches THRESHOLD.
"""

import functools
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_WORD = re.compile(r"[^\W_]+")

# Measured on tests/data/story_pairs.toml (86 reports of 39 invented events: 55 same-event pairs,
# 3,600 different-event pairs, many about the same company), by benchmarks/bench_clustering.py:
#   threshold   pairwise precision / recall   clustering precision / recall
#   0.25        0.98 / 0.98                   1.00 / 0.98
#   0.30        0.98 / 0.96                   1.00 / 0.96
#   0.40        1.00 / 0.84                   1.00 / 0.87
# The different-event pairs that come closest are two product recalls "over fire risk" (0.30) and a
# robot maker's funding round against its big order (0.24); the same-event pairs furthest apart
# are paraphrases sharing only a name and a number (0.24-0.27). Lower thresholds merge different
# news about one company; higher ones split one event worded differently. The threshold was
# chosen on this same set: expect somewhat lower figures on real feeds.
THRESHOLD = 0.30
COMMON_WORD_DOCS = 50
BLOCK = 2000
SUMMARY_CHARS = 300  # the lede says what happened; the rest of a summary is mostly noise


# Function words: they say nothing about which event an article reports. (digest's own list, so
# that computing terms does not need scikit-learn: it runs in the parse workers.)
STOP_WORDS = frozenset(
    """a about above after again against all almost also although am among an and another any are
    around as at be became because been before being below between both but by can could did do
    does doing down during each either else ever every few for from further had has have having he
    her here hers herself him himself his how however i if in into is it its itself just last least
    less like many may me might more most much must my myself near neither never next no nor not
    now of off often on once one only or other others our ours ourselves out over own per perhaps
    quite rather really said same say says several she should since so some still such than that
    the their theirs them themselves then there these they this those though through thus to too
    toward towards under until up upon us very via was we well were what whatever when where
    whether which while who whom whose why will with within without would yet you your yours
    yourself yourselves""".split()  # noqa: SIM905 (a word list reads best as text)
)


@dataclass(frozen=True, slots=True)
class StoryDoc:
    """What story matching reads of an article: title, plain summary text, source, and maybe its terms."""

    title: str
    text: str = ""
    source: str = ""
    terms: tuple[str, ...] | None = None  # terms(doc) computed ahead (in a parse worker), or None


@dataclass(frozen=True, slots=True)
class KnownArticle:
    """An article already stored under a recent story."""

    story_id: int
    doc: StoryDoc


def normalize_title(title: str) -> str:
    """Lower-case words of a title, accents and punctuation dropped."""
    folded = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return " ".join(_WORD.findall(folded.lower()))


@functools.lru_cache(maxsize=200_000)  # news reuses its words: most calls are cache hits
def _stem(word: str) -> str:
    """Strip the commonest English inflections: enough to match headline wordings, no more."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)]
    return word


def terms(doc: StoryDoc) -> tuple[str, ...]:
    """The words similarity compares: title (twice) and lede, stop words dropped, lightly stemmed.

    The title counts twice: it is written to say what happened; summaries wander. Short tokens
    ("5g", "3", "ai") are often the point, so every word counts; a light stem makes "recall",
    "recalls" and "recalled" one word, as outlets word one event differently.
    """
    text = f"{doc.title} {doc.title} {doc.text[:SUMMARY_CHARS]}"
    return tuple(_stem(w) for w in _WORD.findall(normalize_title(text)) if w not in STOP_WORDS)


def warm_up() -> None:
    """Import scikit-learn ahead of need (in a worker process, while the network is waited for)."""
    import sklearn.feature_extraction.text  # noqa: F401


def _terms_of(doc: StoryDoc) -> tuple[str, ...]:
    return doc.terms if doc.terms is not None else terms(doc)


@dataclass(frozen=True, slots=True)
class TermCounts:
    """Which terms each doc has, as a sparse matrix's raw arrays (cheap to send to a process)."""

    indices: list[int]  # term numbers, doc after doc
    indptr: list[int]  # doc i's terms are indices[indptr[i]:indptr[i + 1]]
    terms: int  # how many distinct terms


@dataclass(frozen=True, slots=True)
class Similar:
    """Similarities of some docs to all docs, as a sparse matrix's raw arrays (row r is doc first_row+r)."""

    indptr: list[int]
    indices: list[int]
    values: list[float]


def count_terms(docs: Sequence[StoryDoc]) -> TermCounts:
    """Number the terms of every doc (plain Python: no scientific library needed)."""
    vocabulary: dict[str, int] = {}
    indices: list[int] = []
    indptr = [0]
    for doc in docs:
        indices.extend(vocabulary.setdefault(t, len(vocabulary)) for t in _terms_of(doc))
        indptr.append(len(indices))
    return TermCounts(indices, indptr, len(vocabulary))


def tfidf_similarities(counts: TermCounts, *, first_row: int = 0, floor: float = 0.0) -> Similar:
    """TF-IDF cosine similarities of docs[first_row:] to all docs, those >= `floor` (and > 0) only.

    All docs weigh the words (IDF); only the rows asked for are computed, so an hourly run with a
    few new articles against thousands of recent ones costs a few thousand products, not millions.
    """
    # scikit-learn takes ~0.9 s to import: only runs with new articles pay, in a worker if they can.
    import numpy as np
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import TfidfTransformer

    docs = len(counts.indptr) - 1
    if not counts.terms:  # every doc is empty or only stop words: nothing to compare
        return Similar([0] * (docs - first_row + 1), [], [])
    matrix = csr_matrix(
        (np.ones(len(counts.indices)), np.array(counts.indices), np.array(counts.indptr)),
        shape=(docs, counts.terms),
    )
    matrix.sum_duplicates()  # the same term twice in a doc: one entry, counted twice
    # A word in more than one article in twenty of a large batch tells stories apart little better
    # than "the", and comparing every pair of articles that share it costs (its count) squared:
    # for 10,000 articles, 16 million products instead of 34 million at one in ten.
    max_df = max(COMMON_WORD_DOCS, docs // 20)
    common = np.bincount(matrix.indices, minlength=counts.terms) > max_df
    matrix.data[common[matrix.indices]] = 0.0
    matrix.eliminate_zeros()
    weighted = TfidfTransformer(sublinear_tf=True).fit_transform(matrix)  # smooth IDF, unit rows
    transposed = weighted.T.tocsc()
    indptr, indices, values = [0], [], []
    for first in range(first_row, docs, BLOCK):  # row blocks bound the memory of the product
        block = (weighted[first : first + BLOCK] @ transposed).tocsr()
        if floor > 0:
            block.data[block.data < floor] = 0.0
            block.eliminate_zeros()
        indices.extend(block.indices.tolist())
        values.extend(block.data.tolist())
        indptr.extend((block.indptr[1:] + indptr[-1]).tolist())
    return Similar(indptr, indices, values)


Compute = Callable[[TermCounts, int, float], Similar]


def _compute_here(counts: TermCounts, first_row: int, floor: float) -> Similar:
    return tfidf_similarities(counts, first_row=first_row, floor=floor)


def similarities(
    docs: Sequence[StoryDoc], *, floor: float = 0.0, first_row: int = 0, compute: Compute = _compute_here
) -> list[dict[int, float]]:
    """For docs[first_row:], the cosine similarity to every other doc where above zero and `floor`."""
    found = compute(count_terms(docs), first_row, floor)
    rows = []
    for r in range(len(found.indptr) - 1):
        start, end = found.indptr[r], found.indptr[r + 1]
        me = first_row + r
        rows.append(
            {j: v for j, v in zip(found.indices[start:end], found.values[start:end], strict=True) if j != me}
        )
    return rows


def cluster(
    new: Sequence[StoryDoc],
    known: Sequence[KnownArticle],
    *,
    threshold: float = THRESHOLD,
    compute: Compute = _compute_here,
) -> list[int]:
    """For each new doc, the known story id it joins (>= 0), or -k for "new story number k"."""
    docs = [k.doc for k in known] + list(new)
    titles = [normalize_title(d.title) for d in docs]
    offset = len(known)
    sims = similarities(docs, floor=threshold, first_row=offset, compute=compute)
    keys: list[int] = [k.story_id for k in known]  # the story of each doc, as above
    members: dict[int, list[int]] = {}
    by_title: dict[str, int] = {}
    for j, k in enumerate(known):
        members.setdefault(k.story_id, []).append(j)
        by_title.setdefault(titles[j], k.story_id)
    next_group = 1
    for i, doc in enumerate(new):
        me = offset + i
        candidates = sorted(
            ((sim, j) for j, sim in sims[i].items() if j < me and sim >= threshold), reverse=True
        )
        chosen: int | None = None
        for _, j in candidates:
            key = keys[j]
            # One outlet rarely reports one event twice: two articles of a source are one story
            # only when their titles are the same (a feed that changed an entry's URL and ID).
            if any(docs[m].source == doc.source and titles[m] != titles[me] for m in members[key]):
                continue
            chosen = key
            break
        if chosen is None and titles[me]:
            chosen = by_title.get(titles[me])
        if chosen is None:
            chosen = -next_group
            next_group += 1
        keys.append(chosen)
        members.setdefault(chosen, []).append(me)
        by_title.setdefault(titles[me], chosen)
    return keys[offset:]
