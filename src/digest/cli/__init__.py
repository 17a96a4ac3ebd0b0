"""Thin Typer commands: parse, call one function, format the result.

Commands live by theme in the modules of this package; importing them registers them on `app`.
The console script imports none of them up front: the root group (lazy.py) imports a command's
module when that command runs, so a command's start-up pays only for what it uses (issue 15).
`app`, the whole CLI with every module imported, is what tests drive.
"""

import gc
from typing import Any

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from digest.cli import daily, desk, mail, operations, status, subscribers  # noqa: F401  (they register)
        from digest.cli.common import app

        return app
    raise AttributeError(f"module 'digest.cli' has no attribute {name!r}")


def main() -> None:
    """Console-script entry point."""
    # Importing allocates a great many objects and frees almost none: the collector, running every
    # few hundred allocations, would only walk them again and again (~8% of `digest status`'s
    # start-up). It is switched back on once the command's module is imported (lazy.py).
    gc.disable()
    from digest.cli.common import app

    # Everything imported so far lives until exit: out of the collector's sight, each full
    # collection during the command skips it, and forked workers do not copy its pages.
    gc.freeze()
    try:
        app()
    finally:
        # Interpreter shutdown would otherwise run one last full collection over every object the
        # command made (0.3 s after a collect); what is left is freed when the process ends.
        gc.freeze()
