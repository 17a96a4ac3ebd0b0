"""Where the time of a first `digest collect` goes, as the user runs it (a diagnostic, not a benchmark).

The feeds and the setting are bench_cli_collect.py's (200 feeds x 50 entries on 200 loopback hosts
answering after 200 ms, a fresh SQLite database migrated beforehand). Four looks at the same run:

1. Phases, without any profiler attached: the command runs from a stand-in for the console
   script that imports its entry point (read from the package metadata, so nothing here names a
   module of digest) and notes the monotonic clock when the interpreter is up, when the imports
   are done and when the command returns (atexit); this process notes the spawn and the exit. With
   `-v`, the collect logs its own fetch-and-parse and store (clustering + inserts) times.
   Piped and in a pseudo-terminal, `--runs` times each; medians.
2. The main thread's timeline under py-spy (`--idle`, so waiting counts): each sample is put in
   a phase by the functions on its stack; the top functions of each phase.
3. CPU under py-spy (`--subprocesses`, busy samples only): by process (the command, the parse
   workers, the clustering worker) and the functions that cost most, by their own time.
4. The imports (`-X importtime`): their cost by top-level package.

py-spy slows what it samples (its phase times are longer than the plain run's); read them as
shares. The phase rules in `PHASES` name functions of today's code: after the package is
restructured they may need new names (unclassified samples are shown as "other").

Usage: python benchmarks/profile_collect.py [--feeds 200] [--entries 50] [--latency 0.2] [--runs 3]
       (needs py-spy: pip install py-spy; prints Markdown)
"""

import argparse
import collections
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from as_user import console_script, digest, environment, load_average, run  # noqa: E402
from bench_cli_collect import newsletter  # noqa: E402
from news_feeds import FeedServer  # noqa: E402

# A stand-in for the console script that notes the monotonic clock. A file, as the script is: a
# worker started with "spawn" (in a terminal) imports the parent's main file again, and with it
# everything the script imports; `python -c` would spare the workers that cost.
PROBE = """import time
up = time.monotonic()
import atexit, sys
from {module} import {attr} as main
imported = time.monotonic()
if __name__ == "__main__":
    stamp = lambda: print(f"PROBE {{up}} {{imported}} {{time.monotonic()}}", file=sys.stderr, flush=True)
    atexit.register(stamp)
    sys.exit(main())
"""
_LOGGED = re.compile(r"fetch_and_parse=([\d.]+)s store=([\d.]+)s")
# (phase, markers): a sample belongs to the first phase one of whose markers is on its stack
# (a marker is a function name, optionally with "@file.py").
PHASES = [
    ("imports inside the command", ["_find_and_load"]),
    ("clustering", ["cluster@stories.py", "Workers.cluster", "score_batch"]),
    ("store: queries and inserts", ["store_outcomes", "store_entries"]),
    ("fetch + parse (event loop)", ["_fetch_and_parse", "run@runners.py"]),
    ("stop the worker processes", ["Workers.close"]),
    ("commit", ["commit"]),
    ("print the table", ["_print_collect"]),
    ("settings, database open, sources sync", ["load_settings", "open_database", "sync_sources", "_setup"]),
]


def entry_point() -> str:
    """The `digest` console script's target, 'module:attr', from the installed metadata."""
    (found,) = entry_points(group="console_scripts", name="digest")
    return found.value


def fresh_env(config: Path, folder: Path) -> dict[str, str]:
    """Settings for a new, migrated SQLite database in `folder`."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    env = environment(
        DIGEST_CONFIG=str(config),
        DIGEST_DATABASE_URL=f"sqlite:///{folder / 'digest.db'}",
        DIGEST_VAR_DIR=str(folder / "var"),
    )
    digest("db", "upgrade", env=env).check()
    return env


def phases(config: Path, workdir: Path, *, tty: bool) -> dict[str, float]:
    """One first collect under the probe: seconds per phase."""
    env = fresh_env(config, workdir / "db")
    spawned = time.monotonic()
    module, _, attr = entry_point().partition(":")
    probe = workdir / "digest-probe"
    probe.write_text(PROBE.format(module=module, attr=attr))
    done = run([sys.executable, str(probe), "-v", "collect"], env=env, tty=tty).check()
    ended = spawned + done.seconds
    stamps = [line.split()[1:] for line in done.output.splitlines() if line.startswith("PROBE ")]
    logged = _LOGGED.search(done.output)
    if not stamps or logged is None:
        raise SystemExit(f"no probe stamps or collect timings in the output:\n{done.output[-2000:]}")
    up, imported, returned = (float(x) for x in stamps[-1])
    fetch, store = float(logged.group(1)), float(logged.group(2))
    command = returned - imported
    return {
        "total (exec to exit)": done.seconds,
        "interpreter start": up - spawned,
        "imports of the entry point": imported - up,
        "command": command,
        "  of which fetch + parse": fetch,
        "  of which store (clustering + inserts)": store,
        "  of which the rest (settings, DB open, commit, stop workers, table)": command - fetch - store,
        "exit (interpreter shutdown)": ended - returned,
        "CPU, all processes": done.cpu,
    }


def py_spy(args: Sequence[str], env: dict[str, str], out: Path) -> dict[str, object]:
    """py-spy record ARGS -- digest collect; its speedscope profile."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy not found: pip install py-spy")
    argv = [spy, "record", "--nonblocking", "-r", "200", "--format", "speedscope", "-o", str(out), *args]
    run([*argv, "--", console_script(), "collect"], env=env).check()
    return dict(json.loads(out.read_text()))


def frame_names(profile: dict[str, object]) -> list[str]:
    """Each frame as 'function@file.py'."""
    frames = profile["shared"]["frames"]  # type: ignore[index]
    return [f"{f['name']}@{Path(f.get('file') or '').name}" for f in frames]


def largest(weights: dict[str, float], n: int) -> list[tuple[str, float]]:
    """The `n` heaviest entries, heaviest first."""
    return sorted(weights.items(), key=lambda kv: -kv[1])[:n]


def classify(stack: list[str]) -> str:
    """The phase of one main-thread sample (its stack, root first)."""
    for phase, markers in PHASES:
        for frame in stack:
            if any(frame.startswith(m) or m in frame for m in markers):
                return phase
    return "other"


def timeline(profile: dict[str, object]) -> list[tuple[str, float, list[tuple[str, float]]]]:
    """The main thread's samples by phase: (phase, seconds, top leaf functions) in first-seen order.

    Before the command's first frame the phase is "interpreter + imports"; samples with no Python
    frame after the last one with the command on the stack are "exit".
    """
    names = frame_names(profile)
    main = profile["profiles"][0]  # type: ignore[index]
    stacks = [[names[i] for i in sample] for sample in main["samples"]]
    weights = main["weights"]
    started = next((n for n, s in enumerate(stacks) if any(f.startswith("collect@daily.py") for f in s)), 0)
    last = max(
        (n for n, s in enumerate(stacks) if any(f.startswith("collect@daily.py") for f in s)), default=0
    )
    seconds: dict[str, float] = {}
    leaves: dict[str, dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
    for n, (stack, weight) in enumerate(zip(stacks, weights, strict=True)):
        if n < started:
            phase = "interpreter + imports"
        elif n > last and len(stack) <= 1:
            phase = "exit (after the command returned)"
        else:
            phase = classify(stack)
        seconds[phase] = seconds.get(phase, 0.0) + weight
        if stack:
            leaves[phase][stack[-1]] += weight
    return [(p, s, largest(leaves[p], 4)) for p, s in seconds.items()]


def cpu(
    profile: dict[str, object],
) -> dict[str, tuple[float, list[tuple[str, float]], list[tuple[str, float]]]]:
    """Per process role (the command, the parse workers, the clustering worker): sampled busy
    seconds, the functions with the most own (leaf) time, and the files with the most."""
    names = frame_names(profile)
    samples: dict[str, list[tuple[list[str], float]]] = collections.defaultdict(list)
    order: list[str] = []
    for p in profile["profiles"]:  # type: ignore[attr-defined]
        pid = p["name"].split()[1]
        order += [] if pid in order else [pid]
        samples[pid] += [([names[i] for i in s], w) for s, w in zip(p["samples"], p["weights"], strict=True)]
    found: dict[str, tuple[float, list[tuple[str, float]], list[tuple[str, float]]]] = {}
    roles: dict[str, list[tuple[list[str], float]]] = collections.defaultdict(list)
    for pid in order:
        clusters = any(f.startswith(("score_batch", "warm_up")) for stack, _ in samples[pid] for f in stack)
        role = "the command" if pid == order[0] else "clustering worker" if clusters else "parse workers"
        roles[role] += samples[pid]
    for role, stacks in roles.items():
        own: dict[str, float] = collections.defaultdict(float)
        files: dict[str, float] = collections.defaultdict(float)
        for stack, weight in stacks:
            if stack:
                own[stack[-1]] += weight
                files[stack[-1].partition("@")[2]] += weight
        found[role] = (sum(w for _, w in stacks), largest(own, 10), largest(files, 8))
    return found


def import_costs(env: dict[str, str], *args: str) -> tuple[float, list[tuple[str, float]]]:
    """`digest ARGS` under -X importtime: total import seconds, and seconds by top-level package."""
    done = run([sys.executable, "-X", "importtime", console_script(), *args], env=env)
    by_package: dict[str, float] = collections.defaultdict(float)
    for line in done.output.splitlines():
        if line.startswith("import time:") and "|" in line and "self" not in line:
            own, _, name = (part.strip() for part in line[len("import time:") :].split("|"))
            package = name.split(".")[0]
            by_package["digest (own modules)" if package == "digest" else package] += int(own) / 1e6
    return sum(by_package.values()), largest(by_package, 14)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    out: list[str] = []
    with (
        FeedServer(args.feeds, args.entries, args.latency, datetime.now(UTC)) as server,
        tempfile.TemporaryDirectory(prefix="digest-profile-") as tmp,
    ):
        workdir = Path(tmp)
        config = newsletter(workdir, server.urls)
        out.append(
            f"{args.feeds} feeds x {args.entries} entries, {args.feeds} hosts, {args.latency * 1000:.0f} ms; "
            f"load average {load_average()} at the start\n"
        )
        for tty in (False, True):
            runs = [phases(config, workdir, tty=tty) for _ in range(args.runs)]
            out.append(
                f"### Phases, {'in a terminal' if tty else 'piped'} (median of {args.runs}, no profiler)\n"
            )
            out.append("| phase | seconds | runs |\n|---|--:|---|")
            for key in runs[0]:
                values = [r[key] for r in runs]
                listed = ", ".join(f"{v:.2f}" for v in values)
                out.append(f"| {key} | {statistics.median(values):.2f} | {listed} |")
            out.append(f"\nload average after: {load_average()}\n")
        idle = py_spy(["--idle"], fresh_env(config, workdir / "db"), workdir / "idle.json")
        out.append("### The command's main thread under py-spy --idle (seconds under the sampler)\n")
        out.append("| phase | seconds | top functions on top of the stack (seconds) |\n|---|--:|---|")
        for phase, seconds, top in timeline(idle):
            listed = "; ".join(f"{name} {s:.2f}" for name, s in top)
            out.append(f"| {phase} | {seconds:.2f} | {listed} |")
        busy = py_spy(["--subprocesses"], fresh_env(config, workdir / "db"), workdir / "busy.json")
        out.append(
            "\n### Busy samples under py-spy --subprocesses (runnable time: shares, not CPU seconds)\n"
        )
        for role, (total, own, files) in cpu(busy).items():
            out.append(f"**{role}**: {total:.2f} s sampled busy\n")
            out.append(
                "| function (own time) | seconds | | file (own time) | seconds |\n|---|--:|---|---|--:|"
            )
            for n in range(max(len(own), len(files))):
                left = f"{own[n][0]} | {own[n][1]:.2f}" if n < len(own) else " | "
                right = f"{files[n][0]} | {files[n][1]:.2f}" if n < len(files) else " | "
                out.append(f"| {left} | | {right} |")
            out.append("")
        env = fresh_env(config, workdir / "db")
        for args_ in (["collect"], ["--help"]):
            total, packages = import_costs(env, *args_)
            out.append(
                f"\n### Imports of `digest {' '.join(args_)}` (-X importtime, every process of the run):"
                f" {total:.2f} s\n"
            )
            out.append("| package | seconds (own time of its modules) |\n|---|--:|")
            out.extend(f"| {name} | {s:.3f} |" for name, s in packages)
        out.append(f"\nload average at the end: {load_average()}")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
