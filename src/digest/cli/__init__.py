"""Thin Typer commands: parse, call one function, format the result.

Commands live by theme in the modules of this package; importing them registers them on `app`.
"""

import gc

from digest.cli import daily, operations, subscribers
from digest.cli.common import app

__all__ = ["app", "daily", "main", "operations", "subscribers"]


def main() -> None:
    """Console-script entry point."""
    # Everything imported so far lives until exit: out of the collector's sight, each full
    # collection during the command skips it, and forked workers do not copy its pages.
    gc.freeze()
    try:
        app()
    finally:
        # Interpreter shutdown would otherwise run one last full collection over every object the
        # command made (0.3 s after a collect); what is left is freed when the process ends.
        gc.freeze()
