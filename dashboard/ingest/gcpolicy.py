"""Garbage-collector policy for a process that holds 100 000 long-lived task records.

CPython's cyclic GC scans every tracked object in a full collection, and it runs one each time the
tracked heap grows by a quarter: filling the state with tasks means full collections of hundreds of
thousands of objects, each a pause of 50-200 ms for every thread (pages, websockets, ingest).
Task records never form reference cycles, so once they have survived a young collection there is
nothing to find in them: they are moved to the permanent generation (`gc.freeze()`, O(1)) every
half second, and full collections only ever see what is young. Garbage cycles that were still
alive when frozen are collected by one full pass an hour (`unfreeze`, `collect`, `freeze`).
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)

FREEZE_EVERY = 0.5
FULL_EVERY = 3600.0


class GcPolicy:
    """Call `tick()` from a busy thread; it freezes survivors and runs the rare full collection."""

    def __init__(self, freeze_every: float = FREEZE_EVERY, full_every: float = FULL_EVERY) -> None:
        self.freeze_every = freeze_every
        self.full_every = full_every
        now = time.monotonic()
        self._frozen_at = now
        self._full_at = now
        self.full_collections = 0
        gc.freeze()  # everything imported and built at start-up is long-lived too

    def tick(self) -> None:
        """Freeze what survived since the last call; once in `full_every`, collect everything."""
        now = time.monotonic()
        if now - self._frozen_at < self.freeze_every:
            return
        self._frozen_at = now
        if now - self._full_at >= self.full_every:
            self._full_at = now
            gc.unfreeze()
            started = time.perf_counter()
            found = gc.collect()
            self.full_collections += 1
            log.info(
                "hourly full garbage collection: %d objects freed in %.0f ms",
                found,
                (time.perf_counter() - started) * 1000,
            )
        else:
            gc.collect(0)  # what is young and already garbage is not frozen
        gc.freeze()
