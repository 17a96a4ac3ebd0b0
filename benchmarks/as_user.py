"""Running digest as its users do: the `digest` console script as a whole process.

Nothing here imports digest: a benchmark built on this module times what a user waits for (the
interpreter starting, the imports, the work, the exit), and keeps working however the package is
laid out inside.

`run` spawns one command, piped (stdout and stderr to a pipe, as under cron or `| tee`) or in a
pseudo-terminal (as at a prompt: Rich draws its progress bar), and times it from exec to exit.
It also returns the child's CPU time and peak resident size from wait4(2): the CPU of the whole
process tree (worker processes it waited for included), and ru_maxrss. About ru_maxrss: Linux
starts a child's high-water mark at its parent's at exec, so the figure is the child's own peak
only when it is above this process's peak (`own_peak_kib`); a benchmark built on this module
keeps its own process small (the feeds are generated in the server process) and says so.
"""

import compileall
import functools
import json
import os
import pty
import re
import shutil
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fcntl import ioctl
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The environment a user's shell would not hand digest: our settings, proxies, colour switches.
_DROP = (
    *("DIGEST_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"),
    *("http_proxy", "https_proxy", "all_proxy", "no_proxy"),
    *("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES", "TERM"),
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][A-Z0-9]|\r")


def console_script(name: str = "digest") -> str:
    """The installed console script `name`, beside this interpreter (the venv's bin) or on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name}: console script not found beside {sys.executable} or on PATH")
    return found


def environment(**settings: str) -> dict[str, str]:
    """This process's environment without digest settings, proxies or colour switches, plus
    `settings` (e.g. DIGEST_CONFIG=...)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP)}
    env.update(settings)
    return env


@dataclass(frozen=True)
class Run:
    """One finished process."""

    argv: tuple[str, ...]
    seconds: float  # exec to exit, wall clock
    cpu: float  # user + system seconds of the process and the children it waited for
    peak_kib: int  # ru_maxrss (see the module docstring)
    returncode: int
    output: str  # stdout and stderr as they arrived (escape sequences removed)
    raw: str  # the same with the terminal's escape sequences

    def check(self, *expected: str) -> "Run":
        """This run, if it exited 0 and printed each of `expected`; else stop the benchmark."""
        missing = [text for text in expected if text not in self.output]
        if self.returncode or missing:
            raise SystemExit(
                f"{' '.join(self.argv)} exited {self.returncode}"
                + (f", without {missing}" if missing else "")
                + f":\n{self.output[-3000:]}"
            )
        return self


def _drain(fd: int, into: list[bytes]) -> None:
    """Read `fd` until end of file (a pipe) or EIO (a pseudo-terminal whose other side closed)."""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:
            return
        if not chunk:
            return
        into.append(chunk)


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    tty: bool = False,
    cwd: Path | None = None,
    size: tuple[int, int] = (40, 120),
) -> Run:
    """Run `argv` to its end, piped or in a pseudo-terminal of `size` (rows, columns); measured."""
    _compiled_as_installed()
    chunks: list[bytes] = []
    env = dict(env)
    if tty:
        reading, child_side = pty.openpty()
        ioctl(child_side, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
        env["TERM"] = "xterm-256color"
        stdin = child_side
    else:
        reading, child_side = os.pipe()
        stdin = subprocess.DEVNULL
    reader = threading.Thread(target=_drain, args=(reading, chunks), daemon=True)
    reader.start()
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(argv), env=env, cwd=cwd, stdin=stdin, stdout=child_side, stderr=child_side, start_new_session=tty
    )
    os.close(child_side)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=30)  # a grandchild still holding the pipe must not hang the benchmark
    os.close(reading)
    raw = b"".join(chunks).decode("utf-8", "replace")
    return Run(
        argv=tuple(argv),
        seconds=seconds,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_kib=usage.ru_maxrss,
        returncode=proc.returncode,
        output=_ANSI.sub("", raw),
        raw=raw,
    )


def digest(*args: str, env: Mapping[str, str], tty: bool = False, cwd: Path | None = None) -> Run:
    """`digest ARGS...` as a whole process (see `run`)."""
    return run([console_script(), *args], env=env, tty=tty, cwd=cwd)


@functools.cache
def _compiled_as_installed() -> None:
    """digest's own modules compiled to bytecode, once, before any run is timed.

    pip compiles a package it installs, and an editable install (this checkout's `make`) writes the
    bytecode on its first run, unless PYTHONDONTWRITEBYTECODE is set, as in some CI and container
    images: then every start would compile digest's modules again (~50 ms for a collect), which no
    installed digest does.
    """
    package = ROOT / "src" / "digest"
    if package.is_dir():
        compileall.compile_dir(package, quiet=1)


def median_of(runs: Sequence[Run]) -> float:
    """The median wall time of several runs."""
    return statistics.median(r.seconds for r in runs)


def own_peak_kib() -> int:
    """This process's peak resident size (VmHWM): the floor under a child's ru_maxrss."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def bench_row(
    benchmark: str,
    metric: str,
    value: float | int | str,
    unit: str = "",
    *,
    peer: str = "",
    target: str = "",
    met: bool | None = None,
    note: str = "",
) -> None:
    """Print one `BENCH` line for run.py: the figure, its peer or floor, its target (and whether
    it is met)."""
    row: dict[str, object] = {"benchmark": benchmark, "metric": metric, "value": value, "unit": unit}
    if peer:
        row["peer"] = peer
    if target:
        row["target"] = target
    if met is not None:
        row["met"] = met
    row["note"] = note
    print("BENCH " + json.dumps(row), flush=True)
