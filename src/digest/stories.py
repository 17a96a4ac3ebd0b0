"""Pure: decide which new articles report the same event, as each other or as a recent story.

An article is read as its title and the start of its summary (the lede), cut into terms: lightly
stemmed words without stop words, and numbers written one way ("$50m", "$50 million" and
"50,000,000" are one term). Two articles report the same event when (issue 11, point 3):

1. their subjects agree. An *anchor* is a name or a number; a name is a word the articles write
   capitalized mid-sentence (or as an acronym) more often than in lower case, or never in lower
   case; months and weekdays are not names. Two articles that both name something but share no
   anchor are about different subjects: template headlines ("Bike share hits record" from a
   bike-share operator's news, "Solar output hits record in October" from a grid operator's)
   share words but not the event, however alike they read;
2. their TF-IDF cosine, weighed by the evidence, reaches THRESHOLD: in full when they share two
   anchors or more, times SINGLE_ANCHOR when they share one (one shared name is the subject, and a
   subject makes news more than once: "Voltra recalls sedans", "Voltra profit falls"), times
   NO_ANCHOR when they share none and one of them names nothing (a study, the weather);
3. their numbers do not disagree: when both titles carry numbers and neither title's numbers
   appear anywhere in the other article ("Atlas 2 released" against "Atlas 3 released", a $3bn
   plant against a $2bn bond), they are different events.

Pairs are then merged most similar first (single link, so the result does not depend on the order
articles arrive in), except that a story never holds two different articles of one outlet (an
outlet rarely reports one event twice) and two stories already stored apart are never merged.

Scale (issue 15): no step compares every pair of articles. The terms of an article are hashed once
(`terms`, in a parse worker, stored with the article) and the matrix work (similar.py, numpy and
scipy.sparse) scores only pairs that share a rare term; a run with a few new articles computes
corpus statistics only for the terms of those articles and of their candidates.
"""

import functools
import re
import struct
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import compress
from operator import attrgetter
from typing import cast

from digest.story_terms import (
    CAPITALIZED,
    IN_TITLE,
    LOWER,
    NUMBER,
    TF_MASK,
    Batch,
    Pairs,
    term_hash,
)

# Measured on tests/data/story_pairs.toml by benchmarks/bench_clustering.py, on the 127 events the
# rule was designed on (pairwise and clustering precision / recall):
#   threshold   pairwise      clustering
#   0.16        0.70 / 0.95   0.95 / 0.94
#   0.18        0.75 / 0.95   0.99 / 0.94
#   0.20        0.79 / 0.92   0.99 / 0.91
#   0.24        0.85 / 0.86   0.99 / 0.85
#   0.28        0.90 / 0.79   0.99 / 0.79
# Clustering precision holds from 0.18 up and recall falls from there: 0.20 keeps a margin below
# the precision cliff. On the 23 events written after these values were fixed (held out):
# pairwise 1.00 / 0.78, clustering 1.00 / 0.78. The different events that come closest are one
# subject's follow-ups (a chip plant announced, then delayed); the same events furthest apart are
# paraphrases sharing only the subject ("Storm Lena cuts power to 200,000 homes", "Hundreds of
# thousands without electricity as Lena batters the coast").
THRESHOLD = 0.18
SUMMARY_CHARS = 300  # the lede says what happened; the rest of a summary is mostly noise

# Function words: they say nothing about which event an article reports. (digest's own list, so
# that computing terms needs no library: it runs in the parse workers.)
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
_UNIT_WORDS = frozenset({"percent", "cent"})  # "30 percent" is "30%": the number says it all
# "$50m", "$50 million": a scale glued to a number, or the word after it.
_SCALES = {"k": 1e3, "m": 1e6, "b": 1e9, "bn": 1e9, "tn": 1e12}
_SCALE_WORDS = {"thousand": 1e3, "million": 1e6, "billion": 1e9, "bn": 1e9, "trillion": 1e12}
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*[^\W_]*|[^\W\d_][^\W_]*|[.!?:;](?=\s|$)")
_NUMBER = re.compile(r"(\d+(?:[.,]\d+)*)([^\W_]*)")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_LONG_WORD = re.compile(r"[^\W\d_]{4,}")
_WORD = re.compile(r"[^\W_]+")
_PACK = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class StoryDoc:
    """What story matching reads of an article: title, plain summary text, source, and maybe its terms."""

    title: str
    text: str = ""
    source: str = ""
    terms: bytes | None = None  # terms(doc) computed ahead (in a parse worker, or stored), or None


@dataclass(frozen=True, slots=True)
class KnownArticle:
    """An article already stored under a recent story."""

    story_id: int
    doc: StoryDoc


def _fold(text: str) -> str:
    """Accents dropped ("São" -> "Sao"), other scripts kept."""
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def normalize_title(title: str) -> str:
    """Lower-case words of a title, accents and punctuation dropped."""
    return " ".join(_WORD.findall(_fold(title).lower()))


@functools.lru_cache(maxsize=200_000)  # news reuses its words: most calls are cache hits
def _stem(word: str) -> str:
    """Strip the commonest English inflections: enough to match headline wordings, no more."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)]
    return word


def _number(digits: str, scale: float) -> str:
    """One spelling per number: "120,000", "120k" -> "120000"; "1.3m" -> "1300000"."""
    # "1,5" is a decimal comma
    digits = digits.replace(",", "") if _THOUSANDS.fullmatch(digits) else digits.replace(",", ".")
    try:
        value = float(digits) * scale
    except ValueError:  # "3.2.1": a version, not a number
        return digits
    return str(int(value)) if value.is_integer() and value < 1e18 else f"{value:.6g}"


def _title_case(text: str) -> bool:
    """Whether capitals say nothing here ("Voltra Recalls 120,000 Sedans", or all in capitals)."""
    initials = "".join([w[0] for w in _LONG_WORD.findall(text)])
    return len(initials) >= 2 and 5 * sum(map(str.isupper, initials)) >= 3 * len(initials)


# What a word token says, whatever its place: (its term's hash shifted left by 8 bits, or None for
# a stop word or a single letter; whether it starts in lower case; whether it is all capitals).
# Cached: news reuses its words, and looking one up costs a tenth of working it out (issue 15).
_WordInfo = tuple[int | None, bool, bool]
_WORDS: dict[str, _WordInfo] = {}
_WORDS_MAX = 200_000


def _word(token: str) -> _WordInfo:
    lower = token.lower()
    is_term = len(token) > 1 and lower not in STOP_WORDS and lower not in _UNIT_WORDS
    info = (term_hash(_stem(lower)) << 8 if is_term else None, token[0].islower(), token.isupper())
    if len(_WORDS) >= _WORDS_MAX:
        _WORDS.clear()
    _WORDS[token] = info
    return info


def _count_terms(text: str, where: int, counts: dict[int, int]) -> None:
    """Add every term of a text to `counts`: the term's shifted hash -> its low byte (see terms)."""
    text = _fold(text)
    informative = not _title_case(text)
    shouting = text.isupper()
    tokens = _TOKEN.findall(text)
    words = _WORDS
    start = True  # at the start of a sentence a capital says nothing
    skip = False
    for i, token in enumerate(tokens):
        if skip:
            skip = False
            continue
        info = words.get(token)
        if info is None:
            if token in ".!?:;":
                start = True
                continue
            if token[0].isdigit():
                digits, suffix = _NUMBER.fullmatch(token).groups()  # type: ignore[union-attr]
                scale = _SCALES.get(suffix.lower(), 0.0) if suffix else 1.0
                following = tokens[i + 1].lower() if i + 1 < len(tokens) else ""
                if not scale:  # "200MP", "5G", "44.6C": a model or a unit, not a count
                    key, flag = term_hash(token.lower()) << 8, 0
                else:
                    if not suffix and following in _SCALE_WORDS:
                        scale, skip = _SCALE_WORDS[following], True
                    key, flag = term_hash(_number(digits, scale)) << 8, NUMBER
                old = counts.get(key, 0) | flag | where
                counts[key] = old + 1 if old & TF_MASK != TF_MASK else old
                start = False
                continue
            info = _word(token)
        key_, lower_start, capitals = info
        if key_ is not None:
            if lower_start:
                flag = LOWER
            elif informative and (not start or (capitals and not shouting)):
                flag = CAPITALIZED
            else:
                flag = 0
            old = counts.get(key_, 0) | flag | where
            counts[key_] = old + 1 if old & TF_MASK != TF_MASK else old  # up to 15
        start = False


def terms(doc: StoryDoc) -> bytes:
    """The article's terms, packed: its normalized title's hash, then one number per distinct term.

    Each number is the term's hash shifted left by 8 bits, its low byte says how often the title
    and lede use the term (up to 15) and how they write it (the flags above). Costs ~40 us an
    article, so parse workers compute it and the database keeps it with the article.
    """
    counts: dict[int, int] = {}
    _count_terms(doc.title, IN_TITLE, counts)
    _count_terms(doc.text[:SUMMARY_CHARS], 0, counts)
    title = normalize_title(doc.title)
    packed = [term_hash("\x00" + title) << 8 if title else 0]
    packed.extend([key | low for key, low in counts.items()])
    return struct.pack(f"<{len(packed)}Q", *packed)


def warm_up() -> None:
    """Import numpy and scipy.sparse ahead of need (in a worker process, while the network is waited for)."""
    import digest.similar  # noqa: F401


def score_batch(batch: Batch) -> Pairs:
    """The matrix work of clustering (similar.py), importing numpy and scipy.sparse on first use."""
    from digest.similar import score_pairs

    return score_pairs(batch)


Compute = Callable[[Batch], Pairs]


def _packed(docs: Sequence[StoryDoc]) -> list[bytes]:
    return [d.terms if d.terms is not None else terms(d) for d in docs]


def _batch(packed: Sequence[bytes], first_new: int, floor: float) -> Batch:
    return Batch(b"".join(packed), list(map(len, packed)), first_new, floor)


def similarities(
    docs: Sequence[StoryDoc], *, floor: float = 0.0, compute: Compute = score_batch
) -> list[dict[int, float]]:
    """For each doc, its score with every other doc where above zero and `floor` (for measuring)."""
    found = compute(_batch(_packed(docs), 0, floor))
    rows: list[dict[int, float]] = [{} for _ in docs]
    for i, j, score in zip(found.first, found.second, found.score, strict=True):
        rows[i][j] = rows[j][i] = score
    return rows


class _Stories:
    """Union-find over the articles that some pair touches; a stored story is one node.

    Article i < len(known) is known[i], the others new[i - len(known)]; packed[i] its terms.
    """

    def __init__(self, known: Sequence[KnownArticle], new: Sequence[StoryDoc], packed: Sequence[bytes]):
        self.known, self.new, self.packed = known, new, packed
        self.parent: dict[object, object] = {}
        self._outlets: dict[object, dict[str, bytes]] = {}

    def node(self, i: int) -> object:
        """An article's node: a stored story for a known article, the article itself for a new one."""
        return ("story", self.known[i].story_id) if i < len(self.known) else i

    def find(self, node: object) -> object:
        """The root of a node's story."""
        path = []
        while (up := self.parent.get(node, node)) != node:
            path.append(node)
            node = up
        for step in path:
            self.parent[step] = node
        return node

    def touch(self, pairs: Pairs) -> None:
        """Gather the outlets of every stored story a pair touches.

        One pass over the known articles' story ids, in C (map, compress): a few hundred stories
        are touched among 50,000 articles, and a Python loop over them all cost more than the
        rest of the merging (issue 15).
        """
        known = self.known
        stories = {known[i].story_id for i in (*pairs.first, *pairs.second) if i < len(known)}
        if not stories:
            return
        ids = map(attrgetter("story_id"), known)
        for j in compress(range(len(known)), map(stories.__contains__, ids)):
            k = known[j]
            self._outlets.setdefault(("story", k.story_id), {})[k.doc.source] = self.packed[j][:8]

    def outlets(self, root: object) -> dict[str, bytes]:
        """Each outlet of a story, with its article's title there (one title per outlet)."""
        if root not in self._outlets:
            assert isinstance(root, int)
            self._outlets[root] = {self.new[root - len(self.known)].source: self.packed[root][:8]}
        return self._outlets[root]

    def merge(self, i: int, j: int) -> None:
        """One story for i and j, unless that would join two stored stories or split an outlet."""
        a, b = self.find(self.node(i)), self.find(self.node(j))
        if a == b or (isinstance(a, tuple) and isinstance(b, tuple)):
            return
        small, big = sorted((self.outlets(a), self.outlets(b)), key=len)
        if any(big.get(source, title) != title for source, title in small.items()):
            return  # one outlet, two different articles: two events
        if isinstance(b, tuple) or (not isinstance(a, tuple) and len(self.outlets(b)) > len(self.outlets(a))):
            a, b = b, a  # the stored story (or the bigger one) stays the root
        self.parent[b] = a
        self._outlets[a] = {**self._outlets.pop(b), **self._outlets[a]}


def cluster(
    new: Sequence[StoryDoc],
    known: Sequence[KnownArticle],
    *,
    threshold: float = THRESHOLD,
    compute: Compute = score_batch,
) -> list[int]:
    """For each new doc, the known story id it joins (>= 0), or -k for "new story number k"."""
    stored = [k.doc.terms for k in known]
    # Terms missing only where stored before they were kept (migration 0006): computed here.
    packed = cast(list[bytes], stored) if None not in stored else _packed([k.doc for k in known])
    packed += _packed(new)
    found = compute(_batch(packed, len(known), threshold))
    stories = _Stories(known, new, packed)
    stories.touch(found)
    for i, j in zip(found.first, found.second, strict=True):  # best first
        stories.merge(i, j)
    labels: dict[object, int] = {}
    keys = []
    for i in range(len(known), len(packed)):
        root = stories.find(i)
        keys.append(root[1] if isinstance(root, tuple) else labels.setdefault(root, -len(labels) - 1))
    return keys
