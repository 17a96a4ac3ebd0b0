"""Jinja -> MJML -> HTML, and the text part: compiled once per distinct content, filled per reader.

Personal values (greeting, address, unsubscribe and preference links) are rendered as slot
markers, so the expensive work (Jinja over the whole edition, the MJML compile) runs once per
(edition, topic set); each subscriber then costs one string join.
"""

import html
import re
import secrets
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import mjml
from markupsafe import Markup

from digest.compose import Edition, StoryItem, ThreadRef
from digest.errors import TemplateError
from digest.newsletter import NewsletterInfo
from digest.render import mjml_check
from digest.sources.clean import sanitize_html, web_url

HTML_TEMPLATE = "digest.mjml.j2"
TEXT_TEMPLATE = "digest.txt.j2"
SLOTS = ("greeting", "email", "unsubscribe_url", "preferences_url")
# A card is a teaser, the article is one click away; and 40 cards must stay under Gmail's
# 102 KB clipping limit (STANDARDS.md), so summaries are capped.
SUMMARY_TEXT_MAX = 320
SUMMARY_HTML_MAX = 700
_TAG = re.compile(r"<[^>]+>")
_MJML_POSITION = re.compile(r"at position (\d+):(\d+)")


def bundled_templates_dir() -> Path:
    """The templates shipped with digest (inside the wheel, or `templates/` in a checkout)."""
    packaged = Path(str(resources.files("digest"))) / "templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "templates"


def make_environment(user_dir: Path | None = None) -> jinja2.Environment:
    """A Jinja environment: the user's folder (DIGEST_TEMPLATES_DIR) first, then the bundled templates."""
    loaders: list[jinja2.BaseLoader] = []
    if user_dir is not None:
        if not user_dir.is_dir():
            raise TemplateError(f"DIGEST_TEMPLATES_DIR: {str(user_dir)!r} is not a folder")
        loaders.append(jinja2.FileSystemLoader(str(user_dir)))
    loaders.append(jinja2.FileSystemLoader(str(bundled_templates_dir())))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("mjml.j2", "html.j2"), default_for_string=False, default=False
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        keep_trailing_newline=True,
    )


@dataclass(frozen=True, slots=True)
class BodyTemplate:
    """A rendered body split at its personal slots: fill it per reader without re-rendering."""

    chunks: tuple[str, ...]  # len(chunks) == len(slots) + 1
    slots: tuple[str, ...]
    escape: bool  # HTML-escape slot values (HTML part) or not (text part)

    def fill(self, values: Mapping[str, str]) -> str:
        """The body with each slot replaced by the reader's value."""
        esc = html.escape if self.escape else str
        parts = [self.chunks[0]]
        for slot, chunk in zip(self.slots, self.chunks[1:], strict=True):
            parts.append(esc(values[slot]))
            parts.append(chunk)
        return "".join(parts)

    @classmethod
    def split(cls, text: str, *, nonce: str, escape: bool) -> "BodyTemplate":
        """Split rendered text at the slot markers made with `nonce`."""
        pieces = re.split(rf"@@slot-{nonce}:([a-z_]+)@@", text)
        return cls(chunks=tuple(pieces[0::2]), slots=tuple(pieces[1::2]), escape=escape)


@dataclass(frozen=True, slots=True)
class RenderedDigest:
    """One distinct digest (an edition for one topic set), ready to personalize."""

    subject: str
    preheader: str
    html: BodyTemplate
    text: BodyTemplate
    mjml: str
    story_count: int


@dataclass(frozen=True, slots=True)
class _ThreadView:
    title: str
    date_label: str  # "Nov 24": the edition that carried it
    url: str  # its edition's public archive page, at the story


@dataclass(frozen=True, slots=True)
class _StoryView:
    title: str
    url: str
    summary: Markup
    summary_text: str
    published_label: str
    sources: tuple[Any, ...]
    anchor: str  # "story-42" on the card that carries the story, "" on a repeat of a split story
    earlier: tuple[_ThreadView, ...]
    later: tuple[_ThreadView, ...]


def story_anchor(story_id: int) -> str:
    """The HTML id of a story's card on its archive page (stable: the story's id) (issue 16)."""
    return f"story-{story_id}"


def _thread_views(refs: Sequence[ThreadRef], archive_root: str) -> tuple[_ThreadView, ...]:
    # Always the public archive page, never a reader's own copy (issue 16): the link works for
    # a reader who did not get that edition (joined later, paused, other topics then).
    return tuple(
        _ThreadView(
            title=r.title,
            date_label=r.day.strftime("%b %-d"),
            url=f"{archive_root}/{r.day.isoformat()}#{story_anchor(r.story_id)}",
        )
        for r in refs
    )


def _story_view(story: StoryItem, zone: tzinfo, *, anchor: str = "", archive_root: str = "") -> _StoryView:
    # Sanitized at collection already; again here because stored content outlives code versions
    # and the summary is the one piece of feed HTML an email carries (cheap: once per copy).
    summary_html = sanitize_html(story.summary_html)
    full = " ".join(html.unescape(_TAG.sub(" ", summary_html)).split())
    text = full
    if len(text) > SUMMARY_TEXT_MAX:
        text = text[: SUMMARY_TEXT_MAX - 3].rsplit(" ", 1)[0] + "..."
    # The only feed HTML that reaches the email, sanitized at collection by sources.clean; a long
    # one is replaced by its shortened text, escaped like every other value from a feed.
    keep_html = len(summary_html) <= SUMMARY_HTML_MAX and text == full
    # Only http(s) links reach an email or a page (issue 12): stored before that rule held, or
    # through a bug, a javascript:/data: link is shown as its text without a link.
    return _StoryView(
        title=story.title,
        url=web_url(story.url) or "",
        summary=Markup(summary_html) if keep_html else Markup(html.escape(text)),
        summary_text=text,
        published_label=format_published(story.published, zone),
        sources=tuple(replace(s, url=web_url(s.url) or "") for s in story.sources),
        anchor=anchor,
        earlier=_thread_views(story.earlier, archive_root),
        later=_thread_views(story.later, archive_root),
    )


def _section_views(edition: Edition, zone: tzinfo, archive_root: str) -> list[dict[str, Any]]:
    anchored: set[int] = set()  # a story split by topic is anchored where first shown
    sections = []
    for section in edition.topics:
        stories = []
        for story in section.stories:
            anchor = "" if story.id in anchored else story_anchor(story.id)
            anchored.add(story.id)
            stories.append(_story_view(story, zone, anchor=anchor, archive_root=archive_root))
        sections.append(
            {
                "name": section.name,
                "anchor": "topic-" + re.sub(r"[^a-z0-9]+", "-", section.name.lower()).strip("-"),
                "stories": stories,
            }
        )
    return sections


def subject_for(newsletter: NewsletterInfo, edition: Edition) -> str:
    """Subject with the date and what is inside: the lead story and how many more."""
    day = edition.date.strftime("%b %-d")
    stories = [s for t in edition.topics for s in t.stories]
    if not stories:
        return f"{newsletter.title}, {day}: no new stories"
    lead = stories[0].title
    if len(lead) > 70:
        lead = lead[:67].rsplit(" ", 1)[0] + "..."
    more = len(stories) - 1
    return f"{newsletter.title}, {day}: {lead}" + (f" + {more} more" if more else "")


def preheader_for(edition: Edition) -> str:
    """A one-line summary shown by inboxes after the subject."""
    parts = [f"{t.name} ({len(t.stories)})" for t in edition.topics]
    return f"{edition.story_count} stories today: " + ", ".join(parts)


def template_context(
    newsletter: NewsletterInfo,
    edition: Edition,
    *,
    archive_url: str,
    nonce: str,
    zone: tzinfo,
    web_copy: bool = False,
) -> dict[str, Any]:
    """The variables every template receives (documented in templates/README.md); story times
    are shown in `zone`, the reader's time zone. `web_copy`: the public archive page, which
    greets nobody and names no address (issue 14)."""
    archive_root = archive_url.rsplit("/", 1)[0]  # archive_url is ARCHIVE_ROOT/YYYY-MM-DD
    return {
        "newsletter": newsletter,
        "edition": {
            "date": edition.date,
            "topics": _section_views(edition, zone, archive_root),
            "note": edition.note,  # the editor's note (issue 14), "" for none
        },
        "edition_date_long": edition.date.strftime("%A, %B %-d, %Y"),
        "story_count": edition.story_count,
        "preheader": preheader_for(edition),
        "archive_url": archive_url,
        "web_copy": web_copy,
        "site_url": archive_root.removesuffix("/archive"),  # DIGEST_BASE_URL: /subscribe is below it
        # A fresh nonce per render: feed text cannot forge a marker it cannot guess.
        "slot": {name: Markup(f"@@slot-{nonce}:{name}@@") for name in SLOTS},
    }


def render_digest(
    env: jinja2.Environment,
    newsletter: NewsletterInfo,
    edition: Edition,
    *,
    archive_url: str,
    zone: tzinfo,
    web_copy: bool = False,
) -> RenderedDigest:
    """Render and compile one distinct digest, its story times in `zone` (the readers' time zone);
    TemplateError names the template and line. `web_copy`: the public archive page's copy."""
    nonce = secrets.token_hex(8)
    context = template_context(
        newsletter, edition, archive_url=archive_url, nonce=nonce, zone=zone, web_copy=web_copy
    )
    mjml_source = _render(env, HTML_TEMPLATE, context)
    text = _render(env, TEXT_TEMPLATE, context)
    compiled = compile_mjml(env, mjml_source)
    return RenderedDigest(
        subject=subject_for(newsletter, edition),
        preheader=str(context["preheader"]),
        html=BodyTemplate.split(compiled, nonce=nonce, escape=True),
        text=BodyTemplate.split(text, nonce=nonce, escape=False),
        mjml=mjml_source,
        story_count=edition.story_count,
    )


def compile_mjml(env: jinja2.Environment, source: str) -> str:
    """MJML -> HTML; a parse failure names the template file and line at fault."""
    try:
        # fonts={}: no Google Fonts <link> (a request to a third party on every open).
        return str(mjml.mjml2html(source, disable_comments=True, fonts={}))
    except ValueError as e:
        raise TemplateError(_mjml_failure(env, source, e)) from e


def _mjml_failure(env: jinja2.Environment, source: str, error: ValueError) -> str:
    """Point at the template line behind an MJML parse error, as precisely as we can."""
    try:
        problems = mjml_check.check_templates(env, HTML_TEMPLATE)
    except jinja2.TemplateError:
        problems = []
    if problems:
        # Unbalanced tags break the parse; an unknown attribute alone does not.
        problems.sort(key=lambda p: "close" not in p.message)
        return f"template {problems[0]}; MJML does not compile: {error}"
    where = _template_file(env, HTML_TEMPLATE)
    match = _MJML_POSITION.search(str(error))
    if match:
        start = int(match.group(1))
        line = source.count("\n", 0, start) + 1
        excerpt = source.splitlines()[line - 1].strip() if source else ""
        where = f"{where} (rendered MJML line {line}: {excerpt[:80]!r})"
    return f"template {where}: MJML does not compile: {error}"


def _template_file(env: jinja2.Environment, name: str) -> str:
    """The file a template name is read from (the user's folder or the bundled one), for errors."""
    try:
        assert env.loader is not None
        return env.loader.get_source(env, name)[1] or name
    except jinja2.TemplateNotFound:
        return name


def check_environment(env: jinja2.Environment) -> list[mjml_check.Problem]:
    """MJML problems in the templates `env` would use (mjml-python itself ignores most of them)."""
    try:
        return mjml_check.check_templates(env, HTML_TEMPLATE)
    except jinja2.TemplateError as e:
        raise TemplateError(f"template {_error_location(e)}: {e.message}") from e


def _error_location(error: jinja2.TemplateError) -> str:
    # file:line of a Jinja error, as well as it is known.
    if isinstance(error, jinja2.TemplateSyntaxError):
        return f"{error.filename or error.name}:{error.lineno}"
    return _template_frame(error, HTML_TEMPLATE)


def _render(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"template {e.filename or e.name}:{e.lineno}: {e.message}") from e
    except jinja2.TemplateNotFound as e:
        raise TemplateError(f"template {e.name} not found (needed by {name})") from e
    except jinja2.TemplateError as e:  # undefined variable, bad filter call, ...
        raise TemplateError(f"template {_template_frame(e, name)}: {e.message}") from e
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, ZeroDivisionError) as e:
        where = _template_frame(e, "")
        if not where:  # not raised by template code: a bug, not a template error
            raise
        raise TemplateError(f"template {where}: {type(e).__name__}: {e}") from e


def _template_frame(error: BaseException, fallback: str) -> str:
    """file:line of the innermost template frame of a runtime error (Jinja rewrites tracebacks)."""
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if frame.filename.endswith(".j2"):
            return f"{frame.filename}:{frame.lineno}"
    return fallback


def personal_values(*, email: str, name: str, unsubscribe_url: str, preferences_url: str) -> dict[str, str]:
    """Slot values for one reader."""
    return {
        "greeting": f"Hi {name}," if name else "Hi,",
        "email": email,
        "unsubscribe_url": unsubscribe_url,
        "preferences_url": preferences_url,
    }


def archive_values(base_url: str) -> dict[str, str]:
    """Slot values for the public web archive: no personal data, no working token."""
    return {
        "greeting": "Hi,",
        "email": "your address",
        "unsubscribe_url": f"{base_url}/unsubscribe",
        "preferences_url": f"{base_url}/preferences",
    }


def check_slots(rendered: RenderedDigest, required: Sequence[str] = ("unsubscribe_url",)) -> None:
    """Refuse a template that drops the unsubscribe link (the law requires it in every message)."""
    for part, body in (("HTML", rendered.html), ("text", rendered.text)):
        missing = [s for s in required if s not in body.slots]
        if missing:
            raise TemplateError(f"{part} template does not use {', '.join('slot.' + m for m in missing)}")


def format_published(value: datetime, zone: tzinfo) -> str:
    """How a story's time reads in a card, in the reader's time zone: "10:25 CET, Nov 25"."""
    local = value.astimezone(zone)
    return local.strftime("%H:%M ") + (local.tzname() or "UTC") + local.strftime(", %b %-d")
