"""One Environment's status: written once a burst of changes settles, and only if it changed.

The gauges follow the same summary, exported even when nothing is written (after
a restart that changed nothing, the status on the server is already right).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any, Protocol

from driftguard.core import tracking
from driftguard.core.status import EnvironmentStatus, Summary
from driftguard.core.tracking import Ledger
from driftguard.kube import timestamps
from driftguard.kube.cluster import Cluster
from driftguard.kube.errors import ApiError
from driftguard.kube.retries import retrying
from driftguard.runtime.report import Reporter
from driftguard.telemetry import metrics

DEBOUNCE_S = 0.02
"""A short delay lets a burst of watch events settle into one status write."""


def _digest(body: dict[str, object]) -> bytes:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class Busy(Protocol):
    @property
    def is_busy(self) -> bool:
        """Whether judgements are under way whose results status must wait for."""


class Follower(Protocol):
    def soon(self) -> None:
        """The records changed: write what follows them, if it changed."""


class StatusWriter:
    def __init__(
        self,
        cluster: Cluster,
        ledger: Ledger,
        *,
        judge: Busy,
        reporter: Reporter,
        reports: Follower | None = None,
    ) -> None:
        """`reports`: the Policy Report, which follows the same records."""
        self._cluster = cluster
        self._ledger = ledger
        self._judge = judge
        self._reporter = reporter
        self._reports = reports
        # What the server holds, as a digest: the bodies of 500 Environments of 100 objects
        # were 17 MB of every replica's memory, kept only to be compared.
        self._written = _digest(ledger.status.to_body())
        # Then only the inventory is kept: after a restart that changes nothing, no write
        # comes to drop the received entries (157 KB of models for 100 objects).
        self._keep_inventory(ledger.status)
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._stopped = False
        self._stale_copy = False

    def received(self, body: dict[str, Any]) -> None:
        """The Environment as the server holds it. A copy of its spec that earlier versions
        had kopf keep in status (handlers.NoDiffBase) goes with the next write."""
        kept = (body.get("status") or {}).get("kopf") or {}
        if isinstance(kept, dict) and "lastHandledConfiguration" in kept:
            self._stale_copy = True
            self.soon()

    def soon(self) -> None:
        """Writes status after the debounce delay, once for any number of calls meanwhile."""
        if self._timer is None and not self._stopped:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(DEBOUNCE_S, self._start)

    def _start(self) -> None:
        # The task is kept: the event loop holds tasks only weakly.
        self._flushing = asyncio.create_task(self.flush())

    async def flush(self) -> None:
        """Writes status if it changed since the last write."""
        self._timer = None
        if self._judge.is_busy:
            return  # the last evaluation to finish asks again
        async with self._lock:  # writes in order, never two at once
            await self._write()

    def build(self) -> EnvironmentStatus:
        ledger = self._ledger
        return tracking.summarize(
            ledger.status,
            ledger.tracked.values(),
            ledger.ready,
            now=timestamps.now(),
            paused_until=ledger.paused_until,
            enforced=(ledger.enforced, ledger.enforcing),
        )

    async def _write(self) -> None:
        if self._stopped:
            return
        status = self.build()
        self._export(status.summary)
        if self._reports is not None:
            self._reports.soon()
        body = status.to_body()
        digest = _digest(body)
        if digest == self._written and not self._stale_copy:
            return
        owner = self._ledger.owner
        sent = {**body, "kopf": {"lastHandledConfiguration": None}} if self._stale_copy else body
        try:
            await retrying(lambda: self._cluster.patch_status(owner.namespace, owner.name, sent))
        except ApiError as exc:
            if not exc.is_not_found:  # a deleted Environment needs no status
                self._reporter.status_failed(exc.describe())
            return
        self._written, self._stale_copy = digest, False
        self._keep_inventory(status)

    def _keep_inventory(self, status: EnvironmentStatus) -> None:
        """Status as written (or received), its entries kept as the inventory only: what a
        pass lists besides the blueprint's kinds. The entries are made from the records at
        each build; 100 of them as models are 157 KB."""
        self._ledger.inventory = frozenset(
            (entry.api_version, entry.kind, entry.namespace) for entry in status.resources
        )
        self._ledger.status = status.model_copy(update={"resources": []})

    def _export(self, summary: Summary) -> None:
        owner = self._ledger.owner
        labels = (owner.namespace, owner.name)
        metrics.managed_resources.labels(*labels).set(summary.managed)
        metrics.drifted_resources.labels(*labels).set(summary.drifted + summary.missing)
        is_in_sync = summary.drifted + summary.missing == 0 and self._ledger.ready[0]
        metrics.environment_in_sync.labels(*labels).set(1 if is_in_sync else 0)
        if summary.drifted + summary.missing:
            metrics.out_of_sync.began(*labels, time.time())  # e.g. found so by a full pass
        elif is_in_sync:
            spent = metrics.out_of_sync.ended(*labels, time.time())
            if spent is not None:
                self._reporter.back_in_sync(spent)
        spec = self._ledger.spec
        is_suspended = bool(self._ledger.paused_until) or bool(spec and spec.suspend)
        metrics.environment_suspended.labels(*labels).set(1 if is_suspended else 0)

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
