"""Writes one Environment's Policy Report, in the format the server serves, when it changes.

Asked after every status build; nothing is sent while the results stay as last written
(0 writes in steady state). Which format is served is asked of discovery at each write, so
a CRD installed later is used from the next change; with neither installed (or RBAC
refusing it), it asks again at most once a minute and writes nothing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from driftguard.core import compliance
from driftguard.core.model import Resource
from driftguard.core.tracking import Ledger
from driftguard.kube import history, timestamps
from driftguard.kube.cluster import Cluster
from driftguard.kube.errors import ApiError, UnknownKindError
from driftguard.kube.retries import retrying
from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)

RECHECK_S = 60.0
"""With no report CRD installed, how often a change asks discovery again."""


class PolicyReports:
    def __init__(self, cluster: Cluster, ledger: Ledger, env: dict[str, Any]) -> None:
        self._cluster = cluster
        self._ledger = ledger
        self._env = env
        self._written: dict[str, Any] | None = None  # the content the server holds
        self._absent_since: float | None = None  # no format served, asked then
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._stopped = False

    def update(self, env: dict[str, Any]) -> None:
        self._env = env

    def soon(self) -> None:
        """The records changed: the report follows if its content did."""
        if self._stopped:
            return
        if self._absent_since is not None and time.monotonic() - self._absent_since < RECHECK_S:
            return
        if self._task is not None and not self._task.done():
            self._again = True  # the running write looks once more when done
            return
        # The task makes the content and compares it, once: made here as well, every status
        # build made it twice (4 % of a restart's CPU, 500 Environments of 100 objects).
        self._task = asyncio.create_task(self._write())

    def _content(self) -> dict[str, Any]:
        ledger = self._ledger
        owner = ledger.owner.name
        return compliance.content(ledger.tracked.values(), owner, ledger.mode, timestamps.epoch)

    async def _write(self) -> None:
        self._again = True
        while self._again and not self._stopped:
            self._again = False
            content = self._content()
            if content == self._written:
                return
            try:
                await self._put_served(content)
            except ApiError as exc:
                # A record, never a reason to stop enforcing: say so; the next change retries
                # (a minute on, when RBAC refused it: the chart grants it, a hand install may not).
                log.warning("policy_report_failed", error=exc.describe())
                if exc.is_forbidden:
                    self._absent_since = time.monotonic()
                return

    async def _put_served(self, content: dict[str, Any]) -> None:
        """Into the first format served; one whose CRD was removed since is passed over."""
        for api_version, kind in compliance.FORMATS:
            try:
                resource = await self._cluster.resource(api_version, kind)
                await self._put(resource, content)
            except UnknownKindError:
                continue
            except ApiError as exc:
                if exc.is_not_found:
                    continue
                raise
            self._absent_since = None
            return
        self._absent_since = time.monotonic()

    async def _put(self, resource: Resource, content: dict[str, Any]) -> None:
        meta = self._env["metadata"]
        name = compliance.report_name(meta["name"])
        if self._written is None:  # after a restart the server may hold it already
            old = await retrying(lambda: self._cluster.get(resource, meta["namespace"], name))
            if old is not None and {k: old.get(k) for k in content} == content:
                self._written = content
                return
        manifest = compliance.document(
            resource.api_version,
            resource.kind,
            self._env,
            history.owner_reference(self._env),
            content,
        )
        await retrying(lambda: self._cluster.apply(resource, manifest))
        self._written = content

    def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
