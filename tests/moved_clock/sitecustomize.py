"""Loaded into every Python process of `make test-moved-clock` (it puts this folder on PYTHONPATH).

Debian's libfaketime 0.9.10 moves the wall clock for the whole run. With
FAKETIME_DONT_FAKE_MONOTONIC=1 (monotonic time stays real, so timed waits and timeouts keep
their length) it fails every absolute CLOCK_MONOTONIC clock_nanosleep with EINVAL, and Python's
time.sleep is one (fixed upstream after 0.9.10). A relative wait, which it leaves alone, does
the same job. Nothing here moves or reads a date.
"""

import os
import select
import time

if "faketime" in os.environ.get("LD_PRELOAD", ""):

    def _sleep(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            select.select([], [], [], left)

    time.sleep = _sleep
