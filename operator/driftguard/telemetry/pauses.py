"""Pauses of Python's cyclic collector, logged when they are long.

A full collection walks every container object the process holds and keeps the
interpreter while it does: every thread waits, the Lease's renewals included. At 50,000
objects over 3 replicas a full collection took 0.7-1.5 s in a cold start (bench-scale), and
a replica whose Lease is short must renew through such pauses. The log says when one came
and how long it held everything, so that a lapse can be told from a slow API server.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)

LONG_PAUSE_S = 0.5
"""A collection that holds the interpreter this long is logged."""


class Collections:
    """Times the cyclic collector's runs (gc.callbacks) and logs the long ones."""

    def __init__(self, long_s: float = LONG_PAUSE_S) -> None:
        self.long_s = long_s
        self.longest_s = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        self.longest_s = max(self.longest_s, took)
        if took >= self.long_s:
            log.warning(
                "gc_pause",
                seconds=round(took, 3),
                generation=info.get("generation"),
                collected=info.get("collected"),
            )


def watch_collections() -> Collections:
    watcher = Collections()
    gc.callbacks.append(watcher)
    return watcher
