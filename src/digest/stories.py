"""Pure: decide whether a new article reports a story we already have."""

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True, slots=True)
class StoryKey:
    """What story matching looks at: a story's id and its title."""

    story_id: int
    title: str


def normalize_title(title: str) -> str:
    """Lower-case words of a title, accents and punctuation dropped."""
    folded = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return " ".join(_WORD.findall(folded.lower()))


def find_same_story(title: str, candidates: Iterable[StoryKey]) -> int | None:
    """The id of a recent story with the same normalized title, if any."""
    wanted = normalize_title(title)
    if not wanted:
        return None
    for candidate in candidates:
        if normalize_title(candidate.title) == wanted:
            return candidate.story_id
    return None
