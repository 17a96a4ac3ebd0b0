"""Configuration errors in plain words (issue 14): what a validation error means for the setting
or the digest.toml key at fault, where that key is (its line, `sources #3`), and "did you mean"
for a misspelled name. No validation-library wording reaches the operator."""

import difflib
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel
from pydantic_core import ErrorDetails

# Fields whose value must never be echoed in a message (keys, passwords, URLs with passwords).
SECRET_FIELDS = frozenset(
    {"secret_key", "old_secret_keys", "smtp_password", "sendgrid_api_key", "broker_url",
     "unsubscribe_mailbox_password", "bounce_mailbox_password", "database_url", "admin_token"}
)  # fmt: skip

# Environment names that belong to digest's tests and benchmarks, not to its settings.
NOT_SETTINGS = ("DIGEST_TEST_", "DIGEST_BENCH_", "DIGEST_REQUIRE_POSTGRES", "DIGEST_REQUIRE_TOOLS",
                "DIGEST_SENDGRID_SPEC")  # fmt: skip

_EMAIL_FIELDS = frozenset({"from_email", "reply_to", "unsubscribe_mailto"})
_FORMS = {
    "language": "is not a language tag like en or pt-BR",
    "broker_queue": "may hold only letters, digits and _ . : -",
    "unsubscribe_authserv_id": "may hold only letters, digits, '.' and '-' (a host name like mx.example.com)",
}


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _got(err: ErrorDetails, field: str) -> str:
    value = err.get("input")
    if field in SECRET_FIELDS or not isinstance(value, str | int | float) or isinstance(value, bool):
        return ""
    text = repr(value)
    return f" (got {text})" if len(text) <= 60 else f" (got {text[:57]}...)"


def _num(value: Any) -> str:
    """A bound as people write it: 0, not 0.0."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _plural(n: Any, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def plain_message(err: ErrorDetails, known_keys: Sequence[str] = (), table: str = "key") -> str:
    """What one validation error means, in words; `known_keys` are the names valid where an
    unknown one was found (for "did you mean"), `table` what that place calls a name."""
    kind = err["type"]
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    field = next((str(p) for p in reversed(err["loc"]) if isinstance(p, str)), "")
    got = _got(err, field)
    if kind == "extra_forbidden":
        return f"unknown {table} {field!r}{_suggest(field, known_keys)}"
    if kind == "missing":
        return "is missing (it is required)"
    if kind == "string_pattern_mismatch":
        if field in _EMAIL_FIELDS:
            return f"is not an email address like news@example.com{got}"
        return f"{_FORMS.get(field, 'is not in the expected form')}{got}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "too_short":
        return f"needs at least {_plural(ctx.get('min_length', 1), 'entry')}".replace("entrys", "entries")
    words = {
        "greater_than_equal": f"must be at least {_num(ctx.get('ge'))}",
        "less_than_equal": f"must be at most {_num(ctx.get('le'))}",
        "greater_than": f"must be more than {_num(ctx.get('gt'))}",
        "less_than": f"must be less than {_num(ctx.get('lt'))}",
        "literal_error": f"must be one of {ctx.get('expected')}",
        "int_parsing": "must be a whole number",
        "int_type": "must be a whole number",
        "int_from_float": "must be a whole number",
        "float_parsing": "must be a number",
        "float_type": "must be a number",
        "bool_parsing": "must be true or false",
        "bool_type": "must be true or false",
        "time_parsing": "is not a time of day like 07:00",
        "time_type": "is not a time of day like 07:00",
        "string_type": "must be text (in quotes)",
        "list_type": 'must be a list, like ["a", "b"]',
        "model_type": "must be a table",
        "model_attributes_type": "must be a table",
        "dict_type": "must be a table",
    }
    if kind in words:
        return words[kind] + got
    message = err["msg"].removeprefix("Value error, ")
    return message[0].lower() + message[1:] if message[:1].isupper() and message[1:2].islower() else message


def _inner(annotation: Any) -> Any:
    """The model a field's annotation holds (through list[...], Optional and Annotated)."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (list, tuple, Union, types.UnionType):
            models = [a for a in get_args(annotation) if a is not type(None)]
            annotation = models[0] if models else annotation
            if origin in (Union, types.UnionType) and len(models) <= 1:
                continue
            if origin in (list, tuple):
                continue
            return annotation
        else:
            return annotation


def known_names(model: type[BaseModel], loc: Sequence[str | int]) -> tuple[list[str], str]:
    """The names valid at `loc`'s place in `model` (where an unknown name was found), and whether
    they are tables (the top of digest.toml) or keys."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            return [], "key"
        current = _inner(fields[part].annotation)
    fields = getattr(current, "model_fields", {})
    names = [n for n in fields if n != "base_dir"]
    return names, ("table" if current is model and len(loc) == 1 else "key")


def place(loc: Sequence[str | int]) -> str:
    """A digest.toml location as the operator counts: ("sources", 2, "url") is `sources #3 url`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f" #{part + 1}"
        elif text and not text.endswith(tuple("0123456789")):
            text += f".{part}"
        else:
            text += f" {part}" if text else part
    return text


_ARRAY_HEADER = re.compile(r"^\s*\[\[\s*([^\]]+?)\s*\]\]")
_TABLE_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]")
_KEY = re.compile(r"""^\s*(?:"([^"]+)"|'([^']+)'|([A-Za-z0-9_.-]+))\s*=""")


def find_line(text: str, loc: Sequence[str | int]) -> int | None:
    """The line (1-based) of a key path like ("sources", 2, "url") in TOML text: the key's own line,
    else its table's header (where a missing key belongs), else None."""
    sections: list[tuple[tuple[str, ...], int | None, int, dict[str, int]]] = [((), None, 0, {})]
    counts: dict[tuple[str, ...], int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        array = _ARRAY_HEADER.match(line)
        table = None if array else _TABLE_HEADER.match(line)
        if array or table:
            header = array or table
            assert header is not None
            path = tuple(p.strip().strip("\"'") for p in header[1].split("."))
            index = None
            if array:
                index = counts.get(path, 0)
                counts[path] = index + 1
            sections.append((path, index, number, {}))
            continue
        key = _KEY.match(line)
        if key:
            sections[-1][3].setdefault(key[1] or key[2] or key[3], number)
    names = [p for p in loc if isinstance(p, str)]
    index = next((p for p in loc if isinstance(p, int)), None)
    # The longest table path that the location starts with, then the first key below it.
    for size in range(len(names), -1, -1):
        path = tuple(names[:size])
        for section_path, section_index, header_line, keys in sections:
            if section_path != path or (None not in (section_index, index) and section_index != index):
                continue
            if size == len(names):
                return header_line or None
            return keys.get(names[size], header_line or None)
    return None


def misspelled_settings(environ: Mapping[str, str], env_file: Path, known: Iterable[str]) -> list[str]:
    """A warning for each DIGEST_* name in the environment or in `env_file` that is no setting
    (a typo is otherwise silently ignored, and the default used), with the closest setting."""
    known = sorted(known)
    warnings = []
    for name in sorted(environ):
        upper = name.upper()  # settings are read whatever the case of their name
        if upper.startswith("DIGEST_") and upper not in known and not upper.startswith(NOT_SETTINGS):
            warnings.append(f"{name} is not a digest setting{_suggest_env(name, known)}; it is ignored")
    try:
        lines = env_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for number, line in enumerate(lines, 1):
        match = re.match(r"^\s*(?:export\s+)?(DIGEST_[A-Za-z0-9_]+)\s*=", line, re.IGNORECASE)
        upper = match[1].upper() if match else ""
        if match and upper not in known and not upper.startswith(NOT_SETTINGS):
            name = match[1]
            warnings.append(
                f"{env_file}:{number}: {name} is not a digest setting{_suggest_env(name, known)}; "
                "it is ignored"
            )
    return warnings


def _suggest_env(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0"})


def port_mismatch(base_url: str, port: int) -> str | None:
    """A warning when `digest serve --port` differs from the port of a local DIGEST_BASE_URL: the
    links in emails and pages would point where nothing listens. A public URL is left alone (a
    reverse proxy on 443 in front of port 8000 is the normal case)."""
    parsed = urlsplit(base_url)
    if parsed.hostname is None or parsed.hostname.lower() not in _LOCAL_HOSTS:
        return None
    try:
        url_port = parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        return None
    if url_port == port:
        return None
    fixed = parsed._replace(netloc=f"{parsed.hostname}:{port}").geturl()
    return (
        f"DIGEST_BASE_URL is {base_url} but digest serve listens on port {port}: links in emails "
        f"and pages would lead to port {url_port}; set DIGEST_BASE_URL={fixed}"
    )
