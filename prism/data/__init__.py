"""Event streams for testing and comparing: synthetic generators, real datasets, replay.

Everything here produces or consumes event logs (:mod:`schemas.eventlog`);
nothing opens a network connection except :mod:`prism.data.replay`.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while millions of small dicts are built.

    Event records hold no reference cycles, so the collector only burns time
    re-scanning them (about a quarter of generation time); reference counting
    still frees every record as soon as it is written.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
