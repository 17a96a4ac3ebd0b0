"""The CLI as tests drive it: through Typer's runner, with the clock handed in at the door."""

from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from digest.cli import common
from digest.cli.common import Door
from digest.clock import Clock, FixedClock
from tests.conftest import NOW


class ClockedRunner(CliRunner):
    """A CliRunner whose commands read `clock` (a fixed clock at the suite's NOW by default)."""

    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__()
        self.clock: Clock = clock if clock is not None else FixedClock(NOW)

    def invoke(self, *args: Any, **kwargs: Any) -> Result:  # type: ignore[override]
        """Run a command as `digest` would, with this runner's clock in the Typer context."""
        kwargs.setdefault("obj", Door(clock=self.clock))
        return super().invoke(*args, **kwargs)


def use_newsletter(monkeypatch: pytest.MonkeyPatch, config: Path, db_url: str) -> None:
    """Point the CLI at this digest.toml and database (var/ beside the file), with wide tables."""
    monkeypatch.setenv("DIGEST_CONFIG", str(config))
    monkeypatch.setenv("DIGEST_DATABASE_URL", db_url)
    monkeypatch.setenv("DIGEST_VAR_DIR", str(config.parent / "var"))
    monkeypatch.setattr(common.out, "width", 400)  # one table row per line
