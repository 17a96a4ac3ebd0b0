"""Run every benchmarks/bench_*.py and print one table (also written as Markdown).

Usage: python benchmarks/run.py [--quick] [--readme] [bench_name ...]
  --quick   small counts everywhere: checks that every benchmark runs, in a few minutes
            (its figures are not the ones to publish)
  --readme  also put the table into README.md, between the two marker comments of its
            "Benchmarks" section (refused with --quick, or when a benchmark failed)

Contract for a benchmark script: run standalone, print what it likes, and print one line per
result of the form `BENCH {"benchmark": ..., "metric": ..., "value": ..., "unit": ..., "note": ...}`,
optionally with "peer" (the figure it is read against: a peer tool's, or the floor of doing the
same work as simply as possible), "target" (text, e.g. "<= 3.0 s") and "met" (true or false).
The table goes to stdout and to benchmarks/results/latest.md.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
START = "<!-- bench:start (benchmarks/run.py --readme writes between these lines) -->"
END = "<!-- bench:end -->"

# Small counts for --quick, per script (scripts not named run with their defaults).
QUICK_ARGS = {
    "bench_cli_collect": [
        *("--feeds", "40", "--entries", "10", "--latency", "0.05", "--runs", "3", "--repeats", "1"),
    ],
    "bench_cli_collect_many": ["--feeds", "200", "--entries", "5", "--latency", "0.05", "--repeats", "1"],
    "bench_cli_send": ["--count", "2000"],
    "bench_collect": ["--feeds", "40", "--entries", "10", "--latency", "0.05"],
    "bench_clustering": ["--articles", "5000"],
    "bench_render": ["--subscribers", "5000", "--baseline-sample", "50"],
    "bench_send": ["--count", "2000"],
    "bench_memory": ["--counts", "2000,10000"],
    "bench_distributed": ["--count", "1000", "--repeat", "1"],
    "bench_distributed_collect": ["--feeds", "40", "--entries", "10", "--latency", "0.05"],
    "bench_subscribers_schedule": ["2000", "--csv-rows", "2000,20000"],
}

# Areas in the order of the pipeline; a benchmark not listed here comes last, by name.
AREAS = {
    "cli startup": "Start-up of a command (whole process)",
    "cli collect": "Collect as the user runs it (whole `digest collect` process)",
    "cli collect many": "Collect of many small feeds (whole process)",
    "collect": "Collection (in process)",
    "feedparser fixtures": "Collection: feed parsing robustness",
    "clustering": "Story clustering",
    "threads": "Story continuity (follow-ups)",
    "render": "Rendering",
    "send": "Sending",
    "cli send": "Send through the file outbox (whole `digest send` process)",
    "memory": "Memory of a send",
    "distributed": "Distributed send",
    "distributed collect": "Distributed collect",
    "subscribers+schedule": "Subscribers and schedule",
}


def machine() -> str:
    """One line naming the machine the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()}"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, or '?' where there are none."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# Two probes of the machine's speed, each in a fresh interpreter, by the words the heading names
# them with: the core alone, and what every command's start-up is made of (unmarshalling modules
# from files, memory).
SPEED_PROBES = {
    "an empty loop of 10 million steps": "for _ in range(10_000_000):\n    pass",
    "importing numpy, pydantic and sqlalchemy": "import numpy, pydantic, sqlalchemy",
}
_TIMED = "import time\nt = time.perf_counter()\n{code}\nprint(time.perf_counter() - t)\n"


def speed_check(tries: int = 3) -> tuple[str, ...]:
    """Seconds for each of SPEED_PROBES, in its order, the best of `tries` in a fresh interpreter.

    The same 2-core machines here ran the loop in 0.3-1.2 s at different hours, and one afternoon
    every figure came out ~1.5 times slower than that morning's while the loop ran fast (issue
    15): the core's speed alone does not say how fast a run was. The imports are most of each
    command's start-up. Both are printed, so two tables can be read side by side.
    """
    found = []
    for code in SPEED_PROBES.values():
        command = [sys.executable, "-c", _TIMED.format(code=code)]
        runs = [subprocess.run(command, capture_output=True, text=True, check=True) for _ in range(tries)]
        found.append(f"{min(float(done.stdout) for done in runs):.2f} s")
    return tuple(found)


def parse_bench(output: str) -> list[dict[str, Any]]:
    """The `BENCH {json}` lines of a benchmark's output, as dicts."""
    return [json.loads(line[6:]) for line in output.splitlines() if line.startswith("BENCH ")]


def format_value(value: object, unit: str = "") -> str:
    """A figure in readable units: thousands separated, sensible decimals, the unit after it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        text = str(value)
    elif unit == "x":
        # Two decimals below 10: a ratio read against a target such as >= 0.95x or >= 1.7x must
        # not round across it (0.95 showed as "0.9x" beside ">= 0.95x: met").
        return f"{value:,.0f}x" if abs(value) >= 10 else f"{value:.2f}x"
    elif isinstance(value, int) or abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


Row = tuple[str, str, str, str, str, str]  # area, measure, value, peer or floor, target, note


def target_text(result: dict[str, Any]) -> str:
    """The target of a result, with whether it is met when the benchmark said."""
    target = str(result.get("target") or "")
    met = result.get("met")
    if target and isinstance(met, bool):
        return f"{target}: {'met' if met else 'NOT met'}"
    return target


def table_rows(results: Iterable[dict[str, Any]]) -> list[Row]:
    """(area, measure, value, peer or floor, target, note) rows, grouped by area in pipeline
    order; the area only on its first row."""
    order = list(AREAS)
    results = list(results)
    groups = sorted(
        {str(r["benchmark"]) for r in results},
        key=lambda b: (order.index(b) if b in order else len(order), b),
    )
    rows = []
    for bench in groups:
        area = AREAS.get(bench, bench)
        for r in results:
            if r["benchmark"] == bench:
                value = format_value(r["value"], str(r.get("unit") or ""))
                peer, target = str(r.get("peer") or ""), target_text(r)
                rows.append((area, str(r["metric"]), value, peer, target, str(r.get("note") or "")))
                area = ""
    return rows


def heading(when: datetime, loads: Sequence[str], quick: bool, speeds: Sequence[Sequence[str]] = ()) -> str:
    """The lines above the table: the machine, the date, the load, the machine's speed (`speeds`:
    speed_check's figures at the start and at the end of the run), the mode."""
    mode = " Quick mode (small counts): not figures to publish." if quick else ""
    speed = ""
    if speeds:
        probes = "; ".join(
            f"{label} {start} / {end}"
            for label, start, end in zip(SPEED_PROBES, speeds[0], speeds[-1], strict=True)
        )
        speed = f"  \nSpeed check (best of 3, fresh interpreter; start / end of the run): {probes}. "
        speed += "Compare figures within one run."
    return (
        f"Machine: {machine()}.  \n"
        f"Run: {when:%Y-%m-%d %H:%M} UTC; load average {loads[0]} at the start, {loads[-1]} at the end."
        f"{speed}{mode}\n"
    )


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table (the area in bold where a group starts)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| area | measure | value | peer or floor | target | note |", "|---|---|--:|---|---|---|"]
    for area, metric, value, peer, target, note in rows:
        lines.append(
            f"| {f'**{cell(area)}**' if area else ''} | {cell(metric)} | {cell(value)} "
            f"| {cell(peer)} | {cell(target)} | {cell(note)} |"
        )
    return "\n".join(lines) + "\n"


def text_table(rows: Sequence[Row]) -> str:
    """The rows as aligned plain text for the terminal: a heading per area; the peer or floor,
    the target and the note indented below each figure."""
    width = max((len(row[1]) for row in rows), default=0)
    value_width = max((len(row[2]) for row in rows), default=0)
    lines = []
    for area, metric, value, peer, target, note in rows:
        if area:
            lines.append(f"\n{area}")
        lines.append(f"  {metric:<{width}}  {value:>{value_width}}")
        against = "; ".join(
            part for part in (f"against {peer}" if peer else "", f"target {target}" if target else "") if part
        )
        for extra in (against, note):
            if extra:
                lines.append(f"  {'':<{width}}  {'':>{value_width}}  ({extra})")
    return "\n".join(lines).lstrip("\n") + "\n"


def replace_between_markers(text: str, table: str) -> str:
    """`text` with everything between the START and END marker lines replaced by `table`."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md: markers {START!r} and {END!r} not found, in that order")
    return f"{text[: start + len(START)]}\n\n{table.strip()}\n\n{text[end:]}"


def run_script(script: Path, quick: bool) -> tuple[list[dict[str, Any]], bool]:
    """Run one benchmark, echoing its output; (its BENCH results, whether it succeeded)."""
    print(f"== {script.name}", flush=True)
    args = QUICK_ARGS.get(script.stem, []) if quick else []
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, cwd=HERE.parent
    )
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr[-4000:])
    print(f"   ({time.perf_counter() - started:.1f} s, exit {proc.returncode})", flush=True)
    return parse_bench(proc.stdout), proc.returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    parser.add_argument("only", nargs="*", help="benchmark names (e.g. bench_send); default all")
    args = parser.parse_args(argv)
    if args.readme and args.quick:
        parser.error("--readme publishes the table: run it without --quick")
    scripts = sorted(p for p in HERE.glob("bench_*.py") if not args.only or p.stem in args.only)
    when, loads, speeds = datetime.now(UTC), [load_average()], [speed_check()]
    results: list[dict[str, Any]] = []
    failed = []
    for script in scripts:
        found, ok = run_script(script, args.quick)
        results.extend(found)
        if not ok:
            failed.append(script.name)
    loads.append(load_average())
    speeds.append(speed_check())
    rows = table_rows(results)
    top = heading(when, loads, args.quick, speeds)
    if failed:
        top += f"Failed: {', '.join(failed)} (their figures, if any, are partial).\n"
    print()
    print(top)
    print(text_table(rows))
    markdown = f"{top}\n{markdown_table(rows)}"
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.md").write_text(markdown)
    print(f"written to {out / 'latest.md'}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    if args.readme:
        README.write_text(replace_between_markers(README.read_text(), markdown))
        print(f"and into {README} between the benchmark markers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
