"""Watch events on managed objects, judged one by one in memory; only drift costs a request.

Events for one object coalesce: while it is being judged, newer events replace
the pending one, so a burst costs one judgement. Nothing is judged while a full
pass runs: the pass re-learns every object, and the events are judged after it.
An event about an object the pass has not recorded yet (a replica's first pass,
taking over objects that exist) waits with the rest: the pass may have listed the
object before the change. Each judgement ends in one ChangeSet in `results` (empty
when nothing is news): the Environment reports it; the judge reports nothing itself.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

from driftguard.core import plan, tracking
from driftguard.core.changes import ChangeSet
from driftguard.core.model import ObjectKey, State
from driftguard.core.tracking import Ledger, Tracked
from driftguard.kube import apply
from driftguard.kube.cluster import Cluster
from driftguard.kube.errors import ApiError
from driftguard.kube.retries import retrying
from driftguard.runtime import witness
from driftguard.runtime.witness import Witness


class EventJudge:
    """Judges watch events for one Environment and reverts what Enforce must."""

    def __init__(
        self,
        cluster: Callable[[], Cluster],
        ledger: Ledger,
        *,
        operator: Callable[[], Cluster],
        witness: Witness | None = None,
    ) -> None:
        self._acting_now = cluster  # the identity (and the cluster) can change with the spec
        self._operator = operator  # the Environment's own policy objects are the operator's
        self._ledger = ledger
        self._witness = witness
        self.results: asyncio.Queue[ChangeSet] = asyncio.Queue()
        """One ChangeSet per judgement, in order; an empty one says an object settled."""
        self._pending: dict[ObjectKey, tuple[dict[str, Any] | None, float]] = {}
        self._active: dict[ObjectKey, asyncio.Task[None]] = {}
        self._timers: dict[ObjectKey, asyncio.TimerHandle] = {}
        self._open = asyncio.Event()
        self._open.set()
        self._stopped = False

    @property
    def is_busy(self) -> bool:
        """Judging, or judged and not reported yet: status waits for both."""
        return (bool(self._active) and self._open.is_set()) or not self.results.empty()

    def pause(self) -> None:
        """A full pass starts: events wait until it is done."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()
        for key in list(self._pending):
            if self._ledger.record(key) is None:
                del self._pending[key]  # not one of ours after all
            else:
                self._kick(key)

    def observe(self, key: ObjectKey, live: dict[str, Any] | None, received: float) -> None:
        """A watch saw a managed object change (live) or go (None)."""
        tracked = self._ledger.record(key)
        if tracked is None:
            if not self._open.is_set():  # the running pass may be about to record it
                self._pending[key] = (live, received)
            return
        if live is not None and tracked.is_stale(live):
            return
        self._pending[key] = (live, received)
        self._kick(key)

    def _wake(self, key: ObjectKey, at: float) -> None:
        """Judges the object again once its fight backoff is due (a little jitter spreads them)."""
        if key in self._timers or self._stopped:
            return
        delay = max(at - time.monotonic(), 0.0) * random.uniform(1.0, 1.1) + 0.01

        def due() -> None:
            self._timers.pop(key, None)
            self.observe(key, None, time.monotonic())  # None: read it fresh

        self._timers[key] = asyncio.get_running_loop().call_later(delay, due)

    def _acting(self, key: ObjectKey) -> Cluster:
        return self._operator() if key in self._ledger.policies else self._acting_now()

    def stop(self) -> None:
        self._stopped = True
        for task in self._active.values():
            task.cancel()
        for timer in self._timers.values():
            timer.cancel()

    def _kick(self, key: ObjectKey) -> None:
        if key not in self._active and not self._stopped:
            self._active[key] = asyncio.create_task(self._settle(key))

    async def _settle(self, key: ObjectKey) -> None:
        try:
            await self._open.wait()
            while key in self._pending and self._open.is_set():
                live, received = self._pending.pop(key)
                self.results.put_nowait(await self._attributed(key, live, received))
        finally:
            self._active.pop(key, None)
            self.results.put_nowait(ChangeSet())

    async def _attributed(
        self, key: ObjectKey, live: dict[str, Any] | None, received: float
    ) -> ChangeSet:
        """The judgement, its drift naming the person the witness vouches for."""
        judged, live = await self._evaluate(key, live, received)
        return await witness.attribute(self._witness, key, judged, live)

    async def _evaluate(
        self, key: ObjectKey, live: dict[str, Any] | None, received: float
    ) -> tuple[ChangeSet, dict[str, Any] | None]:
        """The judgement and the object judged (read fresh when the watch gave none)."""
        tracked = self._ledger.record(key)
        if tracked is None or tracked.expectation is None or self._ledger.spec is None:
            return ChangeSet(), live
        try:
            if live is None:
                # A label change takes an object out of the watch's selector too.
                live = await retrying(
                    lambda: self._acting(key).get(tracked.resource, key.namespace, key.name)
                )
        except ApiError as exc:
            return self._failed(tracked, exc, "read "), live
        if live is not None and tracked.is_stale(live):
            return ChangeSet(), live
        verdict, news = tracking.assess(self._ledger, tracked, live, received)
        if verdict.action in (plan.Action.REVERT, plan.Action.RECREATE):
            return news + await self._revert(tracked, verdict, received, live), live
        if verdict.action is plan.Action.DEFER:
            self._wake(key, tracked.due_at)
        return news, live

    async def _revert(
        self,
        tracked: Tracked,
        verdict: plan.Verdict,
        received: float,
        live: dict[str, Any] | None,
    ) -> ChangeSet:
        manifest = apply.strip(tracked.desired, verdict.tolerated)
        try:
            if verdict.action is plan.Action.RECREATE:
                stored = await apply.put(self._acting(tracked.key), tracked.resource, manifest)
            else:
                stored = await apply.revert(
                    self._acting(tracked.key), tracked.resource, manifest, verdict.drifted, live
                )
        except ApiError as exc:
            return self._failed(tracked, exc, "revert ")
        return tracking.reverted(
            self._ledger,
            tracked,
            stored=stored,
            live=live,
            pointers=verdict.pointers,
            changed_by=verdict.changed_by,
            at=received,
            is_missing=verdict.state is State.MISSING,
            is_fighting=verdict.state is State.FIGHTING,
            latency=time.monotonic() - received,
        )

    def _failed(self, tracked: Tracked, exc: ApiError, doing: str) -> ChangeSet:
        tracked.state, tracked.message = State.ERROR, exc.describe()
        return ChangeSet.of(apply.failure(tracked.key, exc, doing))
