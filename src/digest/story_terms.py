"""What stories.py (the rule) and similar.py (its matrix work) share: the packed term format, the
rule's weights, and the values the two exchange. stories.py imports similar.py only when it
scores (numpy and scipy.sparse load on first use), and similar.py imports only this module, so
the two never import each other.
"""

import functools
import hashlib
from dataclasses import dataclass

SAME_TITLE = 2.0  # the score of two articles with one normalized title: above any cosine
SINGLE_ANCHOR = 0.7  # the cosine's weight when two articles share only one name or number
NO_ANCHOR = 0.5  # ... when they share none and at most one of them names something

# The low byte of a packed term: how often the article uses it, and how it is written there.
TF_MASK = 0x0F
CAPITALIZED = 0x10  # capitalized mid-sentence, or an acronym, in this article
LOWER = 0x20  # written in lower case somewhere in this article
NUMBER = 0x40
IN_TITLE = 0x80

# Capitalized, but they name a date, not a subject.
CALENDAR = frozenset(
    """january february march april may june july august september october november december
    monday tuesday wednesday thursday friday saturday sunday""".split()  # noqa: SIM905
)


@functools.lru_cache(maxsize=200_000)
def term_hash(term: str) -> int:
    """A term as a 56-bit number, the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=7).digest(), "little")


@dataclass(frozen=True, slots=True)
class Batch:
    """What the matrix work reads, as plain values (cheap to send to another process)."""

    entries: bytes  # packed terms, article after article, recent (known) articles first
    lengths: list[int]  # each article's share of `entries`, in bytes
    first_new: int  # articles before this one are known: only pairs with a new one are scored
    floor: float  # scores below it are not returned


@dataclass(frozen=True, slots=True)
class Pairs:
    """Scored pairs of articles (first < second) at or above the batch's floor, best first."""

    first: list[int]
    second: list[int]
    score: list[float]
