"""The newsletter file (digest.toml): its model and loader, validated once at the door."""

import re
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from digest.config_messages import find_line, known_names, place, plain_message
from digest.errors import ConfigError

# C0 and C1 controls (CR, LF, TAB, NUL, NEL), DEL, and the Unicode line and paragraph separators
_HEADER_BREAKERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NewsletterInfo(_Strict):
    """The [newsletter] table: who sends, from where, and how far back an edition looks."""

    title: str = Field(min_length=1)
    from_email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    from_name: str = ""
    reply_to: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    postal_address: str = Field(min_length=1)
    lookback_hours: int = Field(default=24, ge=1, le=24 * 14)
    language: str = Field(default="en", pattern=r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]+)*$")
    description: str = ""
    catch_all_topic: str | None = "More news"
    max_stories_per_topic: int = Field(default=10, ge=1)
    max_stories: int = Field(default=40, ge=1)

    @field_validator("title", "from_name")
    @classmethod
    def _one_header_line(cls, value: str) -> str:
        # These go into From: and List-Id: headers; a line break there would let the file add
        # headers of its own (issue 12 row 18). The header builder strips them too.
        if _HEADER_BREAKERS.search(value):
            raise ValueError(
                "must not contain line breaks or control characters (it goes into the From: and "
                "List-Id: headers)"
            )
        return value

    @property
    def sender_domain(self) -> str:
        """Domain of the From address, used in Message-ID and List-Id."""
        return self.from_email.rsplit("@", 1)[1].lower()


class TopicConfig(_Strict):
    """One [[topics]] entry: a name, whole-word keywords and optional regular expressions."""

    name: str = Field(min_length=1)
    keywords: list[str] = []
    patterns: list[str] = []

    @field_validator("keywords")
    @classmethod
    def _not_blank(cls, value: list[str]) -> list[str]:
        if any(not k.strip() for k in value):
            raise ValueError("a keyword is empty (it would match every story)")
        return value

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"bad regular expression {pattern!r}: {e}") from e
        return value


class SourceConfig(_Strict):
    """One [[sources]] entry: a feed URL or path, and the topic for entries matching none."""

    name: str = Field(min_length=1)
    url: str = Field(min_length=1)
    topic: str | None = None
    weight: float = Field(default=1.0, gt=0)


class Newsletter(_Strict):
    """The whole digest.toml, with relative source paths resolved against the file's folder."""

    newsletter: NewsletterInfo
    topics: Annotated[list[TopicConfig], Field(min_length=1)]
    sources: list[SourceConfig] = []
    base_dir: Path = Path(".")

    @model_validator(mode="after")
    def _consistent(self) -> "Newsletter":
        names = [t.name for t in self.topics]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise _located(("topics", i, "name"), f"topic {name!r} is defined twice")
        seen: set[str] = set()
        for i, source in enumerate(self.sources):
            if source.name in seen:
                raise _located(("sources", i, "name"), f"source {source.name!r} is defined twice")
            seen.add(source.name)
            if source.topic is not None and source.topic not in names:
                raise _located(("sources", i, "topic"), f"unknown topic {source.topic!r}")
        return self

    @property
    def topic_names(self) -> list[str]:
        """Topic names in the order the file lists them, then the catch-all."""
        names = [t.name for t in self.topics]
        catch_all = self.newsletter.catch_all_topic
        if catch_all and catch_all not in names:
            names.append(catch_all)
        return names

    def source_location(self, source: SourceConfig) -> str:
        """The source's URL, or its path resolved against the newsletter file's folder."""
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source.url):
            return source.url
        return str((self.base_dir / source.url).resolve())


class _LocatedError(ValueError):
    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def _located(loc: tuple[str | int, ...], message: str) -> _LocatedError:
    return _LocatedError(loc, message)


def load_newsletter(path: Path) -> Newsletter:
    """Read and validate digest.toml; errors name the file, the key and the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: newsletter file not found (run `digest init` to create one)") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read newsletter file: {e}") from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from e
    try:
        return Newsletter.model_validate({**data, "base_dir": path.resolve().parent})
    except ValidationError as e:
        # An unknown key first: a misspelt required key is also reported missing, and the
        # misspelling is what to fix.
        err = min(e.errors(), key=lambda x: x["type"] != "extra_forbidden")
        loc: tuple[str | int, ...] = tuple(err["loc"])
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, _LocatedError):
            loc = cause.loc
        known, kind = known_names(Newsletter, loc)
        if err["type"] == "extra_forbidden":  # the message names the unknown key itself
            message, loc = plain_message(err, known, kind), loc[:-1]
        else:
            message = plain_message(err)
        line = find_line(text, tuple(err["loc"]) if err["type"] == "extra_forbidden" else loc)
        where = f"{path}:{line}" if line else str(path)
        raise ConfigError(f"{where}: {place(loc) + ': ' if loc else ''}{message}") from e
