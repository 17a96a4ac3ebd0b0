"""Option labels in `--help` as a person reads them (issue 14): a flag takes no value, so it shows
none (`--open`, not `--open <bool>`), and a repeatable option shows the type of one value
(`--topic <str>`, not `<list[str]>`; its help says "repeat").

Typer 0.2x labels every option with its Python type; this wraps that one method of its option
class. Imported once by cli/common.py, before any command's help is built."""

from typing import Any

import typer.core

_typed = typer.core.TyperOption.display_type_rich


def _label(self: typer.core.TyperOption, ctx: Any) -> str | None:
    if self.is_flag or self.count:
        return None
    shown = _typed(self, ctx)
    if shown and shown.startswith("<list[") and shown.endswith("]>"):
        return "<" + shown.removeprefix("<list[").removesuffix("]>") + ">"
    return shown


typer.core.TyperOption.display_type_rich = _label  # type: ignore[method-assign]
