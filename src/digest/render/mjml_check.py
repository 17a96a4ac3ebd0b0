"""A strict checker for MJML templates: known tags, known attributes, right parents, balanced tags.

mjml-python (MRML) accepts unknown tags and attributes silently and drops them, so a typo like
`<mj-colum>` or `paddng="0"` renders a subtly broken email without any error (issue 4). This module
knows the MJML 4 components digest's templates may use, with the attributes the MJML
documentation lists for each, and reports anything else with its file and line.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

import jinja2
import jinja2.meta

_PADDING = frozenset({"padding", "padding-top", "padding-right", "padding-bottom", "padding-left"})
_BORDER = frozenset({"border", "border-top", "border-right", "border-bottom", "border-left", "border-radius"})
_FONT = frozenset(
    {
        "color",
        "font-family",
        "font-size",
        "font-style",
        "font-weight",
        "line-height",
        "letter-spacing",
        "text-decoration",
        "text-transform",
    }
)
_BACKGROUND = frozenset(
    {
        "background-color",
        "background-position",
        "background-position-x",
        "background-position-y",
        "background-repeat",
        "background-size",
        "background-url",
    }
)
_SECTION = _PADDING | _BORDER | _BACKGROUND | {"direction", "full-width", "text-align"}
_BODY_BLOCKS = frozenset({"mj-column"})
_GLOBAL = frozenset({"css-class", "mj-class"})


@dataclass(frozen=True, slots=True)
class Component:
    """One MJML tag: where it may appear and which attributes it takes."""

    parents: frozenset[str]
    attributes: frozenset[str]
    ending: bool = False  # holds raw HTML (or text) rather than MJML children


def _c(parents: Iterable[str], attributes: Iterable[str], *, ending: bool = False) -> Component:
    return Component(frozenset(parents), frozenset(attributes), ending)


# MJML 4 components (mjml.io/documentation), limited to those that make sense in a digest.
COMPONENTS: dict[str, Component] = {
    "mjml": _c({""}, {"lang", "dir", "owa"}),
    "mj-head": _c({"mjml"}, ()),
    "mj-body": _c({"mjml"}, {"width", "background-color"}),
    "mj-title": _c({"mj-head"}, (), ending=True),
    "mj-preview": _c({"mj-head"}, (), ending=True),
    "mj-style": _c({"mj-head"}, {"inline"}, ending=True),
    "mj-attributes": _c({"mj-head"}, ()),
    "mj-breakpoint": _c({"mj-head"}, {"width"}),
    "mj-font": _c({"mj-head"}, {"name", "href"}),
    "mj-raw": _c({"mj-head", "mj-body", "mj-wrapper", "mj-section", "mj-column"}, {"position"}, ending=True),
    "mj-wrapper": _c({"mj-body"}, _SECTION | {"gap"}),
    "mj-section": _c({"mj-body", "mj-wrapper"}, _SECTION),
    "mj-group": _c({"mj-section"}, {"width", "vertical-align", "background-color", "direction"}),
    "mj-column": _c(
        {"mj-section", "mj-group"},
        _PADDING
        | _BORDER
        | {
            "background-color",
            "inner-background-color",
            "inner-border",
            "inner-border-top",
            "inner-border-right",
            "inner-border-bottom",
            "inner-border-left",
            "inner-border-radius",
            "vertical-align",
            "width",
            "direction",
        },
    ),
    "mj-text": _c(
        _BODY_BLOCKS, _FONT | _PADDING | {"align", "container-background-color", "height"}, ending=True
    ),
    "mj-button": _c(
        _BODY_BLOCKS,
        _FONT
        | _PADDING
        | _BORDER
        | {
            "align",
            "background-color",
            "container-background-color",
            "height",
            "href",
            "inner-padding",
            "name",
            "rel",
            "target",
            "text-align",
            "title",
            "vertical-align",
            "width",
        },
        ending=True,
    ),
    "mj-image": _c(
        _BODY_BLOCKS,
        _PADDING
        | _BORDER
        | {
            "align",
            "alt",
            "container-background-color",
            "fluid-on-mobile",
            "height",
            "href",
            "name",
            "rel",
            "sizes",
            "src",
            "srcset",
            "target",
            "title",
            "usemap",
            "width",
        },
    ),
    "mj-divider": _c(
        _BODY_BLOCKS,
        _PADDING
        | {"align", "border-color", "border-style", "border-width", "container-background-color", "width"},
    ),
    "mj-spacer": _c(_BODY_BLOCKS, _PADDING | {"container-background-color", "height"}),
    "mj-table": _c(
        _BODY_BLOCKS,
        _PADDING
        | {
            "align",
            "border",
            "cellpadding",
            "cellspacing",
            "color",
            "container-background-color",
            "font-family",
            "font-size",
            "line-height",
            "role",
            "table-layout",
            "width",
        },
        ending=True,
    ),
}
ANY_ATTRIBUTE = frozenset().union(*(c.attributes for c in COMPONENTS.values()))
# Children of <mj-attributes>: defaults for one component, for all (mj-all), or a named class.
_DEFAULTS_TAGS = frozenset({"mj-all", "mj-class"})
# Text-only ending tags: their content is not HTML (CSS, a title) and is not checked.
_OPAQUE = frozenset({"mj-style", "mj-title", "mj-preview"})
_VOID_HTML = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)

_JINJA = re.compile(r"\{#.*?#\}|\{%.*?%\}|\{\{.*?\}\}", re.DOTALL)
_VALUE = r"""(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]+))?"""
_MARKUP = re.compile(rf"<!--.*?-->|<(/?)([a-zA-Z][\w:-]*)((?:\s+[^\s=/>]+{_VALUE})*)\s*(/?)>", re.DOTALL)
_ATTR = re.compile(rf"([^\s=/>]+){_VALUE}")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a template, with where it is."""

    template: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.template}:{self.line}: {self.message}"


def strip_jinja(source: str) -> str:
    """Template source with Jinja blocks blanked out (line numbers kept); expressions become `x`."""

    def blank(match: re.Match[str]) -> str:
        text = match.group(0)
        filler = "x" if text.startswith("{{") else ""
        return filler + "\n" * text.count("\n")

    return _JINJA.sub(blank, source)


def check_mjml(source: str, *, template: str, partial: bool = False) -> list[Problem]:
    """Problems in MJML `source`; `partial` allows a fragment whose root is not <mjml>."""
    problems: list[Problem] = []
    stack: list[tuple[str, int]] = []  # open tags with their lines
    opaque_until = -1

    def line_of(pos: int) -> int:
        return source.count("\n", 0, pos) + 1

    for match in _MARKUP.finditer(source):
        if match.start() < opaque_until:
            continue
        closing, name, attrs, self_closing = match.group(1), match.group(2), match.group(3), match.group(4)
        if name is None:  # a comment
            continue
        name = name.lower()
        line = line_of(match.start())
        in_html = any(COMPONENTS.get(t, Component(frozenset(), frozenset())).ending for t, _ in stack)
        if closing:
            if not any(t == name for t, _ in stack):
                problems.append(Problem(template, line, f"</{name}> closes nothing open"))
                continue
            while stack[-1][0] != name:
                inner, opened = stack.pop()
                message = f"<{inner}> (line {opened}) is not closed before </{name}>"
                problems.append(Problem(template, line, message))
            stack.pop()
            continue
        parent = stack[-1][0] if stack else ""
        if name.startswith("mj-") or name == "mjml":
            if in_html:
                problems.append(Problem(template, line, f"<{name}> inside <{parent}>, which holds HTML only"))
            else:
                problems.extend(_check_component(name, attrs, parent, template, line, partial=partial))
        elif not in_html:
            problems.append(Problem(template, line, f"<{name}> is not MJML; put HTML inside <mj-text>"))
        if self_closing or name in _VOID_HTML:
            continue
        stack.append((name, line))
        if name in _OPAQUE:
            end = source.find(f"</{name}>", match.end())
            opaque_until = end if end >= 0 else len(source)
    for name, line in stack:
        problems.append(Problem(template, line, f"<{name}> is never closed"))
    return problems


def _check_component(
    name: str, attrs: str, parent: str, template: str, line: int, *, partial: bool
) -> list[Problem]:
    problems = []
    names = [m.group(1).lower() for m in _ATTR.finditer(attrs)]
    if parent == "mj-attributes":
        if name == "mj-class":
            allowed = ANY_ATTRIBUTE | {"name"}
        elif name == "mj-all":
            allowed = ANY_ATTRIBUTE
        elif name in COMPONENTS:
            allowed = COMPONENTS[name].attributes
        else:
            return [Problem(template, line, f"<{name}> is not an MJML component")]
        return [
            Problem(template, line, f"<{name}>: unknown attribute {a!r}")
            for a in names
            if a not in allowed | _GLOBAL
        ]
    component = COMPONENTS.get(name)
    if component is None:
        hint = " (inside <mj-attributes> only)" if name in _DEFAULTS_TAGS else ""
        return [Problem(template, line, f"<{name}> is not an MJML component digest supports{hint}")]
    if not (partial and parent == "") and parent not in component.parents:
        where = f"<{parent}>" if parent else "the top level"
        parents = ", ".join(f"<{p}>" for p in sorted(component.parents) if p)
        problems.append(Problem(template, line, f"<{name}> cannot be inside {where} (only in {parents})"))
    for attribute in names:
        if attribute not in component.attributes | _GLOBAL:
            problems.append(Problem(template, line, f"<{name}>: unknown attribute {attribute!r}"))
    if name == "mj-image" and "alt" not in names:
        problems.append(Problem(template, line, "<mj-image> needs an alt attribute"))
    return problems


def template_tree(env: jinja2.Environment, root: str) -> list[str]:
    """`root` and every template it includes, extends or imports, recursively."""
    seen: list[str] = []
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.append(name)
        assert env.loader is not None
        source, filename, _ = env.loader.get_source(env, name)
        # name and filename: a syntax error then names the file and line (issue 14), not "None:43".
        for ref in jinja2.meta.find_referenced_templates(env.parse(source, name, filename)):
            if ref is not None and ref not in seen:
                todo.append(ref)
    return seen


def check_templates(env: jinja2.Environment, root: str) -> list[Problem]:
    """Problems in the MJML of `root` and every partial it pulls in (Jinja blanked out)."""
    problems: list[Problem] = []
    assert env.loader is not None
    for name in template_tree(env, root):
        source, filename, _ = env.loader.get_source(env, name)
        problems.extend(check_mjml(strip_jinja(source), template=filename or name, partial=name != root))
    return problems
