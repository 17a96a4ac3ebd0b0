"""Thin Typer commands: parse, call one function, format the result.

Commands live by theme in the modules of this package; importing them registers them on `app`.
"""

from digest.cli import daily, operations, subscribers
from digest.cli.common import app

__all__ = ["app", "daily", "main", "operations", "subscribers"]


def main() -> None:
    """Console-script entry point."""
    app()
