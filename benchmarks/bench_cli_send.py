"""`digest send` through the file outbox as the user runs it, against the floor of writing as many
files of the same size from a tight Python loop; both write to tmpfs (/dev/shm).

The demo newsletter (examples/demo: its feeds written for today by make_feeds.py) is collected and
N readers (default 100,000, over four topic sets) are imported with `digest subscribers import`
from a generated CSV; neither is timed. Then `digest send` runs as a whole process, timed from exec
to exit, start-up included, writing one .eml per reader into an outbox on tmpfs; the database is
the SQLite file a user would have, in the temp directory on disk. The floor is another whole
process (the same interpreter, start-up included) writing as many files of the average size the
send wrote, into a directory on tmpfs. The disk's page cache makes a floor on disk vary several
times over from run to run; tmpfs does not.

Both start on the same memory: each timed process runs after SETTLE seconds of quiet. On this
project's virtual machines memory freed in the guest is handed back to the host within a few
seconds, and a page touched again costs a host fault: writing 100,000 files of 25 KB to tmpfs took
1.7-3.3 s right after an equal set had been deleted and 5.0-5.6 s five or more seconds later (issue
15's probe, 2026-12-02). The floor used to run right after the send's files were deleted, on pages
the send had just faulted in, while the send wrote on memory untouched for seconds. The floor on
warm pages is still measured and reported beside it.

Target (issue 15, reported not asserted): the send within 3 times the floor.

Usage: python benchmarks/bench_cli_send.py [--count 100000]
"""

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from as_user import bench_row, digest, environment, load_average, run  # noqa: E402

TMPFS = Path("/dev/shm")
TOPIC_SETS = ["", "EV industry", "Robotics;Smartphones", "Smartphones"]  # as in subscribers/example.csv
# The floor: write N files of SIZE bytes into DIR, one open/write/close each.
FLOOR = (
    "import sys\n"
    "n, size, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]\n"
    "body = b'x' * size\n"
    "for i in range(n):\n"
    "    with open(f'{out}/{i:08d}.eml', 'wb') as f:\n"
    "        f.write(body)\n"
)
SETTLE = 10.0  # seconds of quiet before each timed process: freed memory goes back to the host


def settle() -> None:
    """Wait until memory freed by the step before has gone back to the host (see the docstring)."""
    time.sleep(SETTLE)


def write_readers(path: Path, count: int) -> None:
    """A subscriber CSV of `count` readers over four topic sets."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "name", "topics", "timezone"])
        for i in range(count):
            writer.writerow([f"reader{i:06d}@example.com", f"Reader {i}", TOPIC_SETS[i % 4], ""])


def demo_newsletter(workdir: Path) -> Path:
    """The demo digest.toml with its feeds written for today (make_feeds.py), under `workdir`."""
    demo = workdir / "demo"
    demo.mkdir()
    (demo / "digest.toml").write_text((ROOT / "examples" / "demo" / "digest.toml").read_text())
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo" / "make_feeds.py"), "--out", str(demo / "feeds")],
        check=True,
        capture_output=True,
    )
    return demo / "digest.toml"


def outbox_files(folder: Path) -> tuple[int, int]:
    """(files, bytes) of the .eml files under `folder`."""
    files = total = 0
    for path in folder.rglob("*.eml"):
        files += 1
        total += path.stat().st_size
    return files, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args()
    count = args.count
    if not TMPFS.is_dir():
        bench_row("cli send", "digest send, file outbox", "n/a", note=f"{TMPFS} missing: no tmpfs here")
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="digest-bench-send-"))
    shm = Path(tempfile.mkdtemp(prefix="digest-bench-send-", dir=TMPFS))
    try:
        env = environment(
            DIGEST_CONFIG=str(demo_newsletter(workdir)),
            DIGEST_DATABASE_URL=f"sqlite:///{workdir / 'digest.db'}",
            DIGEST_VAR_DIR=str(workdir / "var"),
            DIGEST_TRANSPORT="file",
            DIGEST_OUTBOX_DIR=str(shm / "outbox"),
            DIGEST_SECRET_KEY="bench-secret-key-0123456789abcdef",
            DIGEST_BASE_URL="https://digest.example",
        )
        digest("collect", env=env).check()
        write_readers(workdir / "readers.csv", count)
        imported = digest("subscribers", "import", str(workdir / "readers.csv"), env=env).check()
        load = load_average()
        settle()
        sent = digest("send", env=env).check(f"sent {count}")
        files, size = outbox_files(shm / "outbox")
        if files != count:
            raise SystemExit(f"digest send wrote {files} files for {count} readers")
        shutil.rmtree(shm / "outbox")  # tmpfs is memory: one set of files at a time
        average = size // files
        loop = [sys.executable, "-c", FLOOR, str(count), str(average), str(shm / "floor")]
        (shm / "floor").mkdir()
        warm = run(loop, env=env).check()  # on the pages the send's files have just freed
        shutil.rmtree(shm / "floor")
        (shm / "floor").mkdir()
        settle()
        floor = run(loop, env=env).check()
    finally:
        shutil.rmtree(shm, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    ratio = sent.seconds / floor.seconds
    print(
        f"{count:,} readers: digest send {sent.seconds:.2f} s (CPU {sent.cpu:.2f} s, peak"
        f" {sent.peak_kib / 1024:.0f} MiB), floor {floor.seconds:.2f} s ({average:,} bytes a file),"
        f" {ratio:.1f}x; floor on warm pages {warm.seconds:.2f} s;"
        f" import of the readers (not measured here) {imported.seconds:.1f} s; load {load} before the send"
    )
    bench_row(
        "cli send",
        f"digest send, file outbox on tmpfs, {count:,} readers",
        round(sent.seconds, 2),
        "s",
        peer=f"floor: {floor.seconds:.2f} s for {count:,} files of {average:,} bytes",
        note=(
            f"whole process, start-up included; {count / sent.seconds:,.0f} msg/s; CPU {sent.cpu:.1f} s; "
            f"peak {sent.peak_kib / 1024:.0f} MiB; SQLite on disk; load {load}"
        ),
    )
    bench_row(
        "cli send",
        "digest send / floor, file outbox on tmpfs",
        round(ratio, 2),
        "x",
        peer=(
            f"floor {floor.seconds:.2f} s (a Python loop writing the files, start-up included;"
            f" {warm.seconds:.2f} s right after the send's files were deleted)"
        ),
        target="<= 3x",
        met=ratio <= 3,
        note=f"readers seeded by digest subscribers import ({count / imported.seconds:,.0f} rows/s, untimed)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
