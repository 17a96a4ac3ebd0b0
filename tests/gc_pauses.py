"""In-process servers and the garbage collector's full collections.

The tests' SMTP servers (aiosmtpd) run in a thread of the pytest process, so a full collection of
the whole suite's heap stops them as well as the client. Late in `make test` the process holds
0.5 to 1.4 million objects, and `gc.callbacks` timed its full collections at 0.4-0.6 s inside
tests/hostile/test_relay.py on a fast machine (up to 1.5 s elsewhere in the suite), about three
times that on a slow one. One landing between a client's connect and the relay's greeting was
read by the client, whose timeout is short on purpose, as a server that never greets:
test_a_drop_or_a_stall_is_retried_and_named_by_the_stage_it_hit failed twice so, on the same
case (the suite's order and allocations are fixed, so the collection came at the same point).

While a server is up, the collector does not run on its own; the objects a test leaves in cycles
are collected after it, at the next automatic collection. Reference counting frees everything
else as usual.
"""

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def no_gc_pauses() -> Iterator[None]:
    """No automatic collection until the block ends (nested use leaves it off until the outer)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
