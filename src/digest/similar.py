"""Pure, numeric: score the pairs of articles that may report one event (numpy and scipy.sparse).

The rule is stories.py's; this is its matrix work, and no step of it is quadratic in the number of
articles (issue 15):
- only pairs sharing a *rare* term are scored: the rarest terms nominate candidate pairs, level by
  level, until PAIRS_PER_ARTICLE pairs per new article;
- when some articles are already known (an hourly collect: 100 new against 50,000 recent), the
  statistics of terms (document frequency, how they are written) are computed only for the terms
  of the new articles and of their candidates, each in one gather over all articles' terms
  through a table of hash buckets; the rest of the work is only for those articles.
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse

from digest.story_terms import (
    CALENDAR,
    CAPITALIZED,
    IN_TITLE,
    LOWER,
    NO_ANCHOR,
    NUMBER,
    SAME_TITLE,
    SINGLE_ANCHOR,
    TF_MASK,
    Batch,
    Pairs,
    term_hash,
)

# Candidate pairs allowed per new article: the rarest terms nominate pairs until this many.
# A term in more articles than that (say "new", "record", "shares" in a day of news) still counts
# in the score of a pair, but cannot make two articles candidates on its own.
PAIRS_PER_ARTICLE = 40
CHUNK = 20_000  # pairs whose rows are gathered at once: bounds memory
BLOCK = 5_000  # new articles whose candidates are found at once: bounds memory
_BUCKETS = 1 << 18  # 1 MiB of int32: the table stays in cache (and is quick to allocate)

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Hashes = npt.NDArray[np.uint64]

_CALENDAR = np.array(sorted(term_hash(w) for w in CALENDAR), dtype=np.uint64)
_MASK = np.uint64(_BUCKETS - 1)
# The three flags that say how an article writes a term are adjacent bits: (entry >> 4) & 7 is
# one of 8 ways, and each flag is set in four of them.
_WRITTEN_SHIFT = 4
assert (CAPITALIZED, LOWER, NUMBER) == (1 << _WRITTEN_SHIFT, 2 << _WRITTEN_SHIFT, 4 << _WRITTEN_SHIFT)
_CAPITALIZED_WAYS = [w for w in range(8) if w & 1]
_LOWER_WAYS = [w for w in range(8) if w & 2]
_NUMBER_WAYS = [w for w in range(8) if w & 4]


def _unique_inverse(values: Hashes) -> tuple[Hashes, Ints]:
    """np.unique(values, return_inverse=True), sorted by a stable argsort: on 64-bit hashes numpy's
    stable sort is two to three times quicker than the introsort np.unique uses."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    first = np.empty(ordered.size, dtype=np.bool_)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    inverse = np.empty(values.size, dtype=np.int64)
    inverse[order] = np.cumsum(first) - 1
    return ordered[first], inverse


def _rare(df: Ints, in_new: Ints, budget: int) -> Bools:
    """Terms rare enough to nominate candidates: the rarest, level by level, within the budget."""
    cost = df * in_new  # pairs (in both orders) the term would nominate
    levels, where = np.unique(df, return_inverse=True)
    spent = np.cumsum(np.bincount(where, weights=cost))
    affordable = levels[spent <= budget]
    cutoff = max(int(affordable.max()) if affordable.size else 0, 2)  # a term in two articles: always
    result: Bools = df <= cutoff
    return result


def _matrix(rows: Ints, cols: Ints, values: Floats, shape: tuple[int, int]) -> sparse.csr_array:
    """The CSR matrix of (row, column, value) entries whose rows ascend and never repeat a column.

    Built from its parts: going through COO (sorting rows, summing duplicates) cost as much as
    all the scoring of a run with a few new articles (issue 15).
    """
    indptr = np.zeros(shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
    matrix = sparse.csr_array((values, cols, indptr), shape=shape)
    matrix.sort_indices()
    return matrix


def _dots(left: sparse.csr_array, a: Ints, right: sparse.csr_array, b: Ints) -> Floats:
    """left[a[k]] . right[b[k]] for every k, in chunks."""
    out = np.empty(a.size, dtype=np.float64)
    for start in range(0, a.size, CHUNK):
        end = start + CHUNK
        out[start:end] = np.asarray(left[a[start:end]].multiply(right[b[start:end]]).sum(axis=1)).ravel()
    return out


def _ranges(starts: Ints, ends: Ints) -> Ints:
    """The concatenation of range(s, e) for each pair."""
    lengths = ends - starts
    positions: Ints = np.arange(int(lengths.sum()), dtype=np.int64)
    positions += np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return positions


@dataclass(frozen=True, slots=True)
class _Scope:
    """The articles and terms that are scored, and every entry (term of an article) of theirs."""

    articles: Ints  # article numbers, ascending; row r of the matrices is article articles[r]
    rows: Ints  # per entry
    cols: Ints  # per entry: the term's column
    flags: Ints  # per entry
    df: Ints  # per column: in how many articles (of all) the term is
    name: Bools  # per column: written as a name (see stories.py)
    calendar: Bools  # per column: a month or a weekday
    rare: Bools  # per column: may nominate candidates
    same_title: tuple[Ints, Ints]  # (earlier, later) article pairs with one normalized title


def _same_titles(doc: Ints, hashes: Hashes, first_new: int) -> tuple[Ints, Ints]:
    """(first article with the title, later article) for every later new article with that title."""
    order = np.lexsort((doc, hashes))
    doc, hashes = doc[order], hashes[order]
    starts = np.flatnonzero(np.r_[True, hashes[1:] != hashes[:-1]])
    first = np.repeat(doc[starts], np.diff(np.r_[starts, doc.size]))
    later = (doc != first) & (doc >= first_new) & (hashes != 0)
    return first[later], doc[later]


def _lookup(hashes: Hashes, buckets: Ints, keys: Hashes) -> tuple[Ints, Ints]:
    """(positions, key numbers) of the entries whose hash is one of `keys` (sorted, unique).

    One gather over all entries through a table of hash buckets, exact: the few buckets that two
    keys share are settled by a binary search.
    """
    table = np.full(_BUCKETS, -1, dtype=np.int32)
    slots = (keys & _MASK).view(np.int64)
    table[slots] = np.arange(keys.size, dtype=np.int32)
    distinct, counts = np.unique(slots, return_counts=True)
    table[distinct[counts > 1]] = -2
    found = np.take(table, buckets)  # take, not table[buckets]: a third faster on a million entries
    where = np.flatnonzero(found != -1)
    key = np.take(found, where).astype(np.int64)
    unsure = np.flatnonzero(key == -2)
    key[unsure] = np.minimum(np.searchsorted(keys, hashes[where[unsure]]), keys.size - 1)
    exact = np.take(keys, key) == np.take(hashes, where)
    return where[exact], key[exact]


def _scope(batch: Batch) -> _Scope:
    """Unpack the batch; gather the articles to score and the statistics of their terms."""
    sizes = np.asarray(batch.lengths, dtype=np.int64) // 8
    n, first_new = sizes.size, batch.first_new
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    packed = np.frombuffer(batch.entries, dtype="<u8")
    hashes: Hashes = packed >> np.uint64(8)
    is_term = np.ones(hashes.size, dtype=np.bool_)
    is_term[offsets[:-1]] = False  # each article's first entry is its title's hash, not a term

    def statistics(where: Ints, term: Ints, size: int) -> tuple[Ints, Bools]:
        """Per term: in how many articles, and whether it is written as a name."""
        # One count per (term, how an article writes it): a single pass over the entries.
        written = (np.take(packed, where) >> np.uint64(_WRITTEN_SHIFT)).view(np.int64) & 7
        counts = np.bincount(term * 8 + written, minlength=size * 8).reshape(size, 8)
        capitalized = counts[:, _CAPITALIZED_WAYS].sum(axis=1)
        lower = counts[:, _LOWER_WAYS].sum(axis=1)
        number = counts[:, _NUMBER_WAYS].sum(axis=1) > 0
        return counts.sum(axis=1), ~number & ((lower == 0) | (capitalized > lower))

    # The new articles' terms, exactly over all articles: which are rare, so which are candidates.
    if first_new == 0:
        where = np.flatnonzero(is_term)
        new_terms, term = _unique_inverse(hashes[where])
        buckets = np.empty(0, dtype=np.int64)
    else:
        mine = offsets[first_new] + np.flatnonzero(is_term[offsets[first_new] :])
        new_terms = np.unique(hashes[mine])
        buckets = (hashes & _MASK).view(np.int64)
        where, term = _lookup(hashes, buckets, new_terms)
    df_new, name_new = statistics(where, term, new_terms.size)
    in_new = np.bincount(term[where >= offsets[first_new]], minlength=new_terms.size)
    rare_new = _rare(df_new, in_new, PAIRS_PER_ARTICLE * (n - first_new))

    # The scope: the new articles and every article sharing a rare term with one. (The article of
    # an entry is found by a binary search, only for the entries that need it.)
    in_scope = np.zeros(n, dtype=np.bool_)
    in_scope[np.searchsorted(offsets, where[rare_new[term]], side="right") - 1] = True
    in_scope[first_new:] = True
    articles = np.flatnonzero(in_scope)
    if first_new == 0:
        positions, cols, vocabulary = where, term, new_terms
        rows = np.repeat(np.arange(n, dtype=np.int64), sizes)[where]
        df, name, rare = df_new, name_new, rare_new
    else:
        positions = _ranges(offsets[articles] + 1, offsets[articles + 1])  # without the title slot
        rows = np.repeat(np.arange(articles.size, dtype=np.int64), sizes[articles] - 1)
        vocabulary, cols = _unique_inverse(hashes[positions])
        known_term = np.minimum(np.searchsorted(new_terms, vocabulary), new_terms.size - 1)
        is_new = new_terms[known_term] == vocabulary
        # The candidates' other terms only weigh in their length (norm): counted the same way.
        others = vocabulary[~is_new]
        df_other, name_other = statistics(*_lookup(hashes, buckets, others), others.size)
        df, name = np.empty(vocabulary.size, dtype=np.int64), np.empty(vocabulary.size, dtype=np.bool_)
        df[is_new], name[is_new] = df_new[known_term[is_new]], name_new[known_term[is_new]]
        df[~is_new], name[~is_new] = df_other, name_other
        rare = is_new & rare_new[known_term]
    calendar = np.isin(vocabulary, _CALENDAR)
    titles = hashes[offsets[:-1]]
    # The articles with a new article's title: a binary search among the few new titles.
    new_titles = np.sort(titles[first_new:])
    nearest = new_titles[np.minimum(np.searchsorted(new_titles, titles), new_titles.size - 1)]
    with_title = np.flatnonzero((nearest == titles) & (titles != 0))
    same_title = _same_titles(with_title, titles[with_title], first_new)
    flags = (packed[positions] & np.uint64(0xFF)).astype(np.int64)
    return _Scope(articles, rows, cols, flags, df, name & ~calendar, calendar, rare, same_title)


def score_pairs(batch: Batch) -> Pairs:
    """Score every pair of a new article with another article that shares a rare term with it.

    Pairs of articles with one normalized title come first, scored SAME_TITLE.
    """
    n = len(batch.lengths)
    if batch.first_new == n or not batch.entries:
        return Pairs([], [], [])
    s = _scope(batch)
    rows, cols, flags = s.rows, s.cols, s.flags
    shape = (s.articles.size, s.df.size)

    # Unit-length TF-IDF rows (sublinear term frequency, smooth IDF as scikit-learn's).
    idf = np.log((1 + n) / (1 + s.df)) + 1.0
    weight = (1.0 + np.log(flags & TF_MASK)) * idf[cols]
    weight /= np.sqrt(np.bincount(rows, weights=weight * weight, minlength=shape[0]))[rows]
    rare = s.rare[cols]
    by_rare = _matrix(rows[rare], cols[rare], weight[rare], shape)
    by_common = _matrix(rows[~rare], cols[~rare], weight[~rare], shape)

    # The matrices the rule reads: shared names and numbers, whether an article names anything,
    # the common terms' share of each row's length, and the numbers of titles.
    ones = np.ones(rows.size)
    is_anchor = s.name[cols] | ((flags & NUMBER) > 0)
    anchors_of = _matrix(rows[is_anchor], cols[is_anchor], ones[is_anchor], shape)
    names = ((flags & CAPITALIZED) > 0) & ~s.calendar[cols]
    named = np.bincount(rows[names], minlength=shape[0]) > 0
    common_norm = np.sqrt(np.bincount(rows[~rare], weights=weight[~rare] ** 2, minlength=shape[0]))
    is_number = (flags & NUMBER) > 0
    numbers = _matrix(rows[is_number], cols[is_number], ones[is_number], shape)
    titled = is_number & ((flags & IN_TITLE) > 0)
    title_numbers = _matrix(rows[titled], cols[titled], ones[titled], shape)
    has_title_numbers = np.diff(title_numbers.indptr) > 0
    # The names of titles ("Streamly fined ..." / "Cartly fined ..."): the subject of a template headline.
    title_named = s.name[cols] & ~s.calendar[cols] & ((flags & IN_TITLE) > 0)
    title_names = _matrix(rows[title_named], cols[title_named], ones[title_named], shape)
    has_title_names = np.diff(title_names.indptr) > 0
    # Where each article mentions any title's name, anywhere (a mention in the lede counts).
    mentions = np.zeros(shape[1], dtype=np.bool_)
    mentions[cols[title_named]] = True
    mentioned = mentions[cols]
    name_mentions = _matrix(rows[mentioned], cols[mentioned], ones[mentioned], shape)

    def score_block(new_rows: Ints) -> tuple[Ints, Ints, Floats]:
        # Candidates: pairs sharing a rare term, each once (a new article with an earlier one).
        product = (by_rare[new_rows] @ by_rare.T).tocoo()
        a, b = new_rows[product.row], product.col.astype(np.int64)
        keep = s.articles[b] < s.articles[a]
        a, b, score = a[keep], b[keep], product.data[keep]
        # Two shared names or numbers make an event, one a subject; none is a different subject
        # when both articles name something, else it takes a higher cosine.
        anchors = _dots(anchors_of, a, anchors_of, b)
        unnamed = np.where(named[a] & named[b], 0.0, NO_ANCHOR)
        factor = np.where(anchors >= 2, 1.0, np.where(anchors >= 1, SINGLE_ANCHOR, unnamed))
        # The common terms' share, only where it could lift the pair to the floor (Cauchy-Schwarz).
        keep = (factor > 0) & ((score + common_norm[a] * common_norm[b]) * factor >= batch.floor)
        a, b, score, factor = a[keep], b[keep], score[keep], factor[keep]
        score = (score + _dots(by_common, a, by_common, b)) * factor
        keep = score >= max(batch.floor, 1e-12)
        a, b, score = a[keep], b[keep], score[keep]
        # Numbers must agree: both titles have numbers, and neither title's are in the other article.
        both = np.flatnonzero(has_title_numbers[a] & has_title_numbers[b])
        disagree = (_dots(title_numbers, a[both], numbers, b[both]) == 0) & (
            _dots(title_numbers, b[both], numbers, a[both]) == 0
        )
        keep = np.ones(a.size, dtype=np.bool_)
        keep[both[disagree]] = False
        # Subjects must agree too: where both titles name something and neither article mentions
        # a name of the other's title, one headline pattern tells two subjects' events (issue 11).
        both = np.flatnonzero(has_title_names[a] & has_title_names[b])
        strangers = (_dots(title_names, a[both], name_mentions, b[both]) == 0) & (
            _dots(title_names, b[both], name_mentions, a[both]) == 0
        )
        keep[both[strangers]] = False
        return s.articles[b[keep]], s.articles[a[keep]], score[keep]

    new_rows = np.searchsorted(s.articles, np.arange(batch.first_new, n))
    blocks = [score_block(new_rows[i : i + BLOCK]) for i in range(0, new_rows.size, BLOCK)]
    first = np.concatenate([b[0] for b in blocks])
    second = np.concatenate([b[1] for b in blocks])
    score = np.concatenate([b[2] for b in blocks])

    # Best first, so the caller can merge in this order.
    same_first, same_second = s.same_title
    first = np.r_[same_first, first]
    second = np.r_[same_second, second]
    score = np.r_[np.full(same_first.size, SAME_TITLE), score]
    order = np.lexsort((second, first, -score))
    return Pairs(first[order].tolist(), second[order].tolist(), score[order].tolist())
