"""Resync: a new resyncInterval takes effect at once, not after the old one's sleep."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from driftguard.runtime.reconcile import Resync


def _resync(seconds: float) -> tuple[Resync, Any, list[float]]:
    ledger = SimpleNamespace(
        spec=SimpleNamespace(resync_seconds=seconds),
        paused_until=None,
        exceptions_until=None,
        is_waiting_for_kind=False,
        ready=(True, "", ""),
    )
    resync = Resync(SimpleNamespace(ledger=ledger))  # type: ignore[arg-type]
    runs: list[float] = []

    async def run() -> None:
        runs.append(asyncio.get_running_loop().time())

    resync.run = run  # type: ignore[method-assign]
    return resync, ledger, runs


async def test_a_shorter_resync_interval_replaces_the_sleep_under_way() -> None:
    resync, ledger, runs = _resync(600.0)
    resync.schedule()
    await asyncio.sleep(0.05)  # the loop is asleep for 600 s
    ledger.spec.resync_seconds = 0.05  # the spec changed; its full pass schedules again
    resync.schedule()
    await asyncio.sleep(0.4)
    resync.stop()
    assert len(runs) >= 3, runs


async def test_the_same_interval_keeps_the_sleep_under_way() -> None:
    resync, _, runs = _resync(0.2)
    resync.schedule()
    for _ in range(5):  # a pass every 0.05 s (events) must not postpone the resync
        await asyncio.sleep(0.05)
        resync.schedule()
    await asyncio.sleep(0.1)
    resync.stop()
    assert len(runs) >= 1, runs
