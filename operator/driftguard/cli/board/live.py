"""The Environments the board's viewer may list, kept current by supervised watches.

One list-and-watch per scope (a namespace, or all of them), as the viewer: what RBAC
refuses is a notice on the page, never an error page, and is asked again with backoff.
A watch that ends resumes from its last resourceVersion; any error or a silence past the
inactivity timeout re-lists the scope (410 Gone: at once). Every change is published to
the pages listening (server-sent events): a row changed, or the grid's shape (an
Environment added or gone, a re-list). It never writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence
from typing import Any

from driftguard.kube.client import KubeCluster
from driftguard.kube.cluster import ENVIRONMENTS
from driftguard.kube.errors import ApiError

Key = tuple[str, str]
REFRESH: Key = ("", "")
"""Published when the grid's shape changed: the page fetches the whole grid again."""
INACTIVITY_S = 180.0  # the server sends a bookmark every minute: silence this long is a dead link
BACKOFF_CAP_S = 30.0


def scope_label(namespace: str | None) -> str:
    return f"namespace {namespace}" if namespace else "all namespaces"


class Board:
    """The viewer's Environments by (namespace, name), and who is listening for changes."""

    def __init__(self, scopes: Sequence[str | None]) -> None:
        self.scopes = list(dict.fromkeys(scopes))
        self.environments: dict[Key, dict[str, Any]] = {}
        self.refusals: dict[str | None, str] = {}  # scope -> why RBAC refuses it
        self.lost: dict[str | None, str] = {}  # scope -> why its watch is down now
        self._listed = {scope: asyncio.Event() for scope in self.scopes}
        self._listeners: set[asyncio.Queue[Key]] = set()

    async def wait_listed(self, timeout: float) -> None:
        """Until every scope was listed (or refused) once, so a first page is not empty."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                for event in self._listed.values():
                    await event.wait()

    def snapshot(self) -> list[dict[str, Any]]:
        return list(self.environments.values())

    def listen(self) -> asyncio.Queue[Key]:
        queue: asyncio.Queue[Key] = asyncio.Queue()
        self._listeners.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[Key]) -> None:
        self._listeners.discard(queue)

    def _publish(self, key: Key) -> None:
        for queue in self._listeners:
            queue.put_nowait(key)

    def relisted(self, scope: str | None, items: list[dict[str, Any]]) -> None:
        """Every Environment of the scope now: those gone while away are dropped."""
        kept = {k: v for k, v in self.environments.items() if scope and k[0] != scope}
        kept.update((key_of(env), slim(env)) for env in items)
        self.environments = kept
        self.refusals.pop(scope, None)
        self.lost.pop(scope, None)
        self._listed[scope].set()
        self._publish(REFRESH)

    def changed(self, type_: str, env: dict[str, Any]) -> None:
        key = key_of(env)
        if type_ == "DELETED":
            self.environments.pop(key, None)
            self._publish(REFRESH)
            return
        is_new = key not in self.environments
        self.environments[key] = slim(env)
        self._publish(REFRESH if is_new else key)

    def refused(self, scope: str | None, error: ApiError) -> None:
        self.refusals[scope] = error.describe()
        if scope is None:
            self.environments.clear()
        else:
            self.environments = {k: v for k, v in self.environments.items() if k[0] != scope}
        self._listed[scope].set()
        self._publish(REFRESH)

    async def follow(self, cluster: KubeCluster, scope: str | None) -> None:
        """List and watch one scope for as long as the board runs."""
        version, failures = "", 0
        while True:
            try:
                if not version:
                    items, version = await cluster.list_objects(ENVIRONMENTS, namespace=scope)
                    self.relisted(scope, items)
                version = await self._stream(cluster, scope, version)
                failures = 0
                continue
            except ApiError as exc:
                error = exc
            except TimeoutError:
                error = ApiError(0, "Silent", f"no event for {INACTIVITY_S:g}s")
            version = ""
            if error.is_gone:
                continue
            if error.is_forbidden:
                self.refused(scope, error)
            else:
                self.lost[scope] = error.describe()
                self._listed[scope].set()
                self._publish(REFRESH)
            failures += 1
            step = min(BACKOFF_CAP_S, 0.5 * 2 ** (failures - 1))
            await asyncio.sleep(step * random.uniform(0.5, 1.0))

    async def _stream(self, cluster: KubeCluster, scope: str | None, version: str) -> str:
        loop = asyncio.get_running_loop()
        events = cluster.watch(
            ENVIRONMENTS,
            namespace=scope,
            selector="",
            resource_version=version,
            timeout_seconds=random.randint(300, 600),
        )
        async with contextlib.aclosing(events) as stream, asyncio.timeout(INACTIVITY_S) as silence:
            async for event in stream:
                silence.reschedule(loop.time() + INACTIVITY_S)
                if event.type == "CONNECTED":
                    continue
                meta = event.object.get("metadata") or {}
                version = str(meta.get("resourceVersion") or version)
                if event.type in ("ADDED", "MODIFIED", "DELETED"):
                    self.changed(event.type, event.object)
        return version


def key_of(env: dict[str, Any]) -> Key:
    meta = env["metadata"]
    return str(meta["namespace"]), str(meta["name"])


def slim(env: dict[str, Any]) -> dict[str, Any]:
    """What the grid needs: managedFields are most of an object's size and show nowhere."""
    meta = {k: v for k, v in env["metadata"].items() if k != "managedFields"}
    return {**env, "metadata": meta}
