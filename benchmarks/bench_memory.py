"""Peak memory of `digest send` at 10,000 and 100,000 subscribers: it must stay flat.

Usage: python benchmarks/bench_memory.py [--counts 10000,100000]   (prints `BENCH {json}` lines)

Each send runs as its own `digest send` process (SQLite ledger, SMTP to a loopback sink in
another process) and reports its own peak resident size, so the setup's memory is not counted.
The ledger is read in batches of DIGEST_SEND_BATCH_SIZE rows; nothing holds every subscriber.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_send import NOW, setup  # noqa: E402
from smtp_sink import ProcessSink  # noqa: E402

from digest import editions  # noqa: E402
from digest.db.engine import session_scope  # noqa: E402

PROBE = (
    "import atexit, resource, sys\n"
    "atexit.register(lambda: print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
    "from digest.cli import main\n"
    "sys.argv = ['digest', 'send', '--date', sys.argv[1]]\n"
    "main()\n"
)


def peak_of_send(count: int) -> tuple[int, float]:
    """(peak RSS in KiB of the sending process, seconds) for an edition to `count` subscribers."""
    workdir = Path(tempfile.mkdtemp(prefix="digest-bench-mem-"))
    try:
        settings, newsletter, engine = setup(workdir, count)
        with session_scope(engine) as session:  # the edition, frozen with the benchmark's clock
            editions.build_edition(newsletter, session=session, edition_date=NOW.date(), now=NOW)  # type: ignore[arg-type]
        engine.dispose()
        with ProcessSink() as sink:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")},
                "DIGEST_CONFIG": str(settings.config),  # type: ignore[attr-defined]
                "DIGEST_DATABASE_URL": settings.database_url,  # type: ignore[attr-defined]
                "DIGEST_TRANSPORT": "smtp",
                "DIGEST_SMTP_HOST": "127.0.0.1",
                "DIGEST_SMTP_PORT": str(sink.port),
                "DIGEST_SECRET_KEY": "bench-secret-key-0123456789",
                "DIGEST_BASE_URL": "https://digest.example",
                "DIGEST_VAR_DIR": str(workdir / "var"),
            }
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", PROBE, NOW.date().isoformat()],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            seconds = time.perf_counter() - start
        assert f"sent {count}" in proc.stdout, proc.stdout + proc.stderr
        rss = next(int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("MAXRSS"))
        return rss, seconds
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", default="10000,100000")
    counts = [int(c) for c in parser.parse_args().counts.split(",")]
    results = [(count, *peak_of_send(count)) for count in counts]
    for count, rss, seconds in results:
        print(f"  {count:>7} subscribers: peak {rss / 1024:.0f} MiB, {seconds:.1f} s")
        print(
            "BENCH "
            + json.dumps(
                {
                    "benchmark": "memory",
                    "metric": f"digest send peak memory, {count:,} subscribers",
                    "value": round(rss / 1024),
                    "unit": "MiB",
                    "note": f"whole process, rendered copies included; SMTP, SQLite; {seconds:.0f} s",
                }
            )
        )


if __name__ == "__main__":
    main()
