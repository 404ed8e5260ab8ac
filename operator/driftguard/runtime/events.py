"""Kubernetes Events on Environments, posted in the background: posting never delays a revert.

One queue and one task for the whole operator; a throttled API server delays Events,
it does not lose them (each post is retried like any request).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from driftguard.kube.cluster import Cluster
from driftguard.kube.errors import ApiError
from driftguard.kube.retries import retrying
from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)


class EventPoster:
    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._queue: asyncio.Queue[tuple[dict[str, Any], str, str, bool]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def post(self, env: dict[str, Any], reason: str, message: str, warning: bool) -> None:
        """Queues an Event on the Environment `env` (its body)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        self._queue.put_nowait((env, reason, message, warning))

    async def _run(self) -> None:
        while True:
            env, reason, message, warning = await self._queue.get()
            try:
                post = functools.partial(
                    self._cluster.post_event, env, reason=reason, message=message, warning=warning
                )
                await retrying(post)
            except ApiError as exc:
                log.warning("event_failed", reason=reason, error=exc.describe())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
