"""Run every benchmarks/bench_*.py and print one table (also written as Markdown).

Contract for a benchmark script: run standalone, print what it likes, and print one line per
result of the form `BENCH {"benchmark": ..., "metric": ..., "value": ..., "unit": ..., "note": ...}`.
"""

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> str:
    """One line naming the machine the numbers come from."""
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()}"


def main() -> int:
    only = sys.argv[1:]
    scripts = sorted(p for p in HERE.glob("bench_*.py") if not only or p.stem in only)
    rows: list[dict[str, object]] = []
    failed = []
    for script in scripts:
        print(f"== {script.name}", flush=True)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=HERE.parent)
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr[-4000:])
        if proc.returncode != 0:
            failed.append(script.name)
        for line in proc.stdout.splitlines():
            if line.startswith("BENCH "):
                rows.append(json.loads(line[6:]))
        print(f"   ({time.perf_counter() - started:.1f} s)")
    header = "| benchmark | metric | value | unit | note |\n|---|---|---|---|---|\n"
    body = "".join(
        f"| {r['benchmark']} | {r['metric']} | {r['value']} | {r.get('unit', '')} | {r.get('note', '')} |\n"
        for r in rows
    )
    table = f"Machine: {machine()}\n\n{header}{body}"
    print()
    print(table)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.md").write_text(table)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
