"""Process start-up: the heavy imports, made without the cyclic garbage collector.

Importing scikit-learn, SciPy, pandas and optuna creates over 200,000 objects that live as long as
the process. While they are made, the collector keeps running, and each full collection scans
all of them again to find next to nothing: about 7% of the imports' CPU time. At parallelism 2
the main process and the workers' fork server (kubetune.pool) import at once on 2 cores, so
that CPU delays the first fit.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused(*, freeze: bool = False) -> Iterator[None]:
    """Turn the cyclic collector off for the block, then back on if it was on.

    Args:
        freeze: afterwards move every object alive into the permanent generation, so that no
            later collection scans them again (``gc.freeze``). Only in a process kubetune
            owns (a worker, or the fork server workers are forked from): frozen garbage is
            never freed.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if enabled:
            gc.enable()
