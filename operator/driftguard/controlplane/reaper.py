"""Stops every running control plane when Python exits, normally or by SIGTERM / SIGHUP.

A context manager or a pytest finalizer is the normal way to stop; this is the safety net
for paths that skip them (an unhandled signal, a forgotten ``stop()``). SIGINT is left to
Python: it raises KeyboardInterrupt, which unwinds to the normal path and then to atexit.
Signal handlers can only be installed from the main thread; elsewhere atexit still applies.
"""

import atexit
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Protocol


class Stoppable(Protocol):
    """Anything with an idempotent ``stop()``."""

    def stop(self) -> None: ...


_live: dict[int, Stoppable] = {}
_previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}
_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_armed = False


def register(item: Stoppable) -> None:
    """Stop ``item`` at exit (or on SIGTERM / SIGHUP) unless it is unregistered first."""
    # Armed on first use, not at import: importing the package must not touch signals.
    global _armed
    if not _armed:
        atexit.register(stop_all)
        _install_handlers()
        _armed = True
    _live[id(item)] = item


def unregister(item: Stoppable) -> None:
    """Forget ``item``: it has been stopped by its owner."""
    _live.pop(id(item), None)


def stop_all() -> None:
    """Stop everything still registered, newest first."""
    while _live:
        _, item = _live.popitem()
        item.stop()


def _install_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _SIGNALS:
        current = signal.getsignal(signum)
        if current is signal.SIG_IGN:
            continue
        _previous[signum] = current
        signal.signal(signum, _on_signal)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    stop_all()
    previous = _previous.get(signum)
    if callable(previous):
        previous(signum, frame)
        return
    # Die of the same signal, as the default action would have: the exit status stays honest.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
