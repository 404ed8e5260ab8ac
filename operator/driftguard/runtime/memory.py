"""The full passes that may run at once, the memory their bursts leave behind, and the
pauses of Python's cyclic collector.

CPython takes every block over 512 bytes (the arrays of lists and large dicts, long
strings) from the C allocator, and glibc keeps what is freed inside its heaps for reuse,
giving back only what lies at the top. A burst of first passes (a cold start, a restart,
a takeover: thousands of decoded objects at once) so left each process at its peak for good,
hundreds of MB above what it then held. Once the passes have been quiet for a moment,
`malloc_trim(0)` hands the free pages back to the system (glibc's own call; on another C
library there is nothing to do).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)

QUIET_S = 1.0
"""How long no pass runs or waits before the memory is handed back."""
EVERY_S = 10.0
"""At most this often: a trim walks the whole heap (tens of ms at a few hundred MB)."""
LONG_PAUSE_S = 0.5
"""A collection that holds the interpreter this long is logged: every thread waits for it,
the Lease's renewals included."""


def _glibc_trim() -> Callable[[], object] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


def rss_mb() -> float:
    """This process's resident memory, from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * 4096 / 2**20


class Passes:
    """A semaphore of `at_once` slots that trims the heap after each burst settles."""

    def __init__(
        self,
        at_once: int,
        *,
        trim: Callable[[], object] | None = None,
        quiet_s: float = QUIET_S,
        every_s: float = EVERY_S,
    ) -> None:
        self._slots = asyncio.Semaphore(at_once)
        self._trim = trim if trim is not None else _glibc_trim()
        self._quiet_s, self._every_s = quiet_s, every_s
        self._busy = 0  # running or waiting
        self._timer: asyncio.TimerHandle | None = None
        self._last = float("-inf")  # monotonic, the last trim
        self._trimming: asyncio.Future[object] | None = None
        self.trims = 0

    async def __aenter__(self) -> None:
        self._busy += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            await self._slots.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._slots.release()
        self._leave()

    def _leave(self) -> None:
        self._busy -= 1
        if self._busy or self._timer is not None or self._trim is None:
            return
        delay = max(self._quiet_s, self._last + self._every_s - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._start_trim)

    def _start_trim(self) -> None:
        self._timer = None
        if self._busy or self._trim is None or self._trimming is not None:
            return
        self._last = time.monotonic()
        self.trims += 1
        before = rss_mb()
        # In a thread: ctypes lets the GIL go, so the loop goes on while glibc walks its heap.
        self._trimming = asyncio.get_running_loop().run_in_executor(None, self._trim)

        def done(_: object) -> None:
            self._trimming = None
            log.debug("memory_returned", rss_mb_before=round(before), rss_mb=round(rss_mb()))

        self._trimming.add_done_callback(done)


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
