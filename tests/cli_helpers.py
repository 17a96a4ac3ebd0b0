"""The CLI as tests drive it: through Typer's runner, with the clock handed in at the door."""

from typing import Any

from click.testing import Result
from typer.testing import CliRunner

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
