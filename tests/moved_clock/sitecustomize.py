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

    # libfaketime 0.9.10 calls getenv() inside its pthread_cond_timedwait hook, which every thread
    # waiting for the GIL goes through; a setenv() in another thread at that moment (os.environ
    # changed by a test, or by Click's CliRunner, while an SMTP relay thread runs) can move the C
    # environment under it, and the process dies with SIGSEGV in getenv (gdb: getenv <-
    # needs_forced_monotonic_fix <- take_gil; seen in tests/deliver/test_proofs.py). So changes to
    # os.environ stay in Python's mapping, where digest and pydantic-settings read them, and a
    # child process is handed that mapping explicitly when it is given no env of its own.
    import functools
    import subprocess

    def _in_python_only(*_args: object) -> None:
        return None

    os.putenv = _in_python_only  # os.environ's __setitem__ and __delitem__ call these globals
    os.unsetenv = _in_python_only

    _popen_init = subprocess.Popen.__init__

    @functools.wraps(_popen_init)
    def _popen_with_environ(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("env") is None and len(args) < 11:  # env: the 11th parameter after self
            kwargs["env"] = dict(os.environ)
        _popen_init(self, *args, **kwargs)

    subprocess.Popen.__init__ = _popen_with_environ  # type: ignore[method-assign]
