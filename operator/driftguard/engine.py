"""Routes the world to the Runners: Environment changes, watch events, Events to post.

One watch per kind that blueprints use (and per target namespace when the
operator is confined to namespaces), filtered by the server with the
`app.kubernetes.io/managed-by=driftguard` selector: unrelated objects never
reach the operator. Kinds come from the blueprints and discovery, never a list.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from driftguard import model, render
from driftguard.cluster import ApiError, Cluster, Resource
from driftguard.logs import get as get_logger
from driftguard.reconcile import Runner

log = get_logger(__name__)

Scope = tuple[Resource, str | None, str]
"""A watch: the kind, the namespace (None: all) and the label selector ("": none)."""


class Engine:
    def __init__(self, cluster: Cluster, *, namespaced: bool = False) -> None:
        self.cluster = cluster
        self._namespaced = namespaced
        self.runners: dict[tuple[str, str], Runner] = {}
        self._watches: dict[Scope, asyncio.Task[None]] = {}
        self._synced: dict[Scope, asyncio.Event] = {}
        self._events: asyncio.Queue[tuple[dict[str, Any], str, str, bool]] = asyncio.Queue()
        self._poster: asyncio.Task[None] | None = None
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._observers: dict[tuple[Resource, str | None], set[tuple[str, str]]] = {}
        self._background: set[asyncio.Task[None]] = set()

    # -- Environments ---------------------------------------------------------

    async def environment_changed(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        ident = (meta["namespace"], meta["name"])
        if meta.get("deletionTimestamp"):
            self.forget(ident)
            return
        async with self._locks.setdefault(ident, asyncio.Lock()):
            runner = self.runners.get(ident)
            if runner is None:
                runner = Runner(self.cluster, body, post=self.post, ensure_watch=self.ensure_watch)
                self.runners[ident] = runner
            await runner.update(body)

    def forget(self, ident: tuple[str, str]) -> None:
        """Stops keeping an Environment; its objects stay as they are."""
        runner = self.runners.pop(ident, None)
        if runner is not None:
            runner.stop()
        for (resource, namespace), observers in self._observers.items():
            observers.discard(ident)
            if not observers:  # nobody observes this namespace unfiltered any more
                task = self._watches.pop((resource, namespace, ""), None)
                self._synced.pop((resource, namespace, ""), None)
                if task is not None:
                    task.cancel()

    async def delete_objects(self, body: dict[str, Any]) -> int:
        """deletionPolicy Delete: removes every object carrying the Environment's labels."""
        meta = body["metadata"]
        ident = (meta["namespace"], meta["name"])
        runner = self.runners.get(ident)
        self.forget(ident)
        owner = render.Owner(name=meta["name"], namespace=meta["namespace"])
        status = model.EnvironmentStatus.model_validate(body.get("status") or {})
        kinds = {(entry.api_version, entry.kind) for entry in status.resources}
        kinds |= {
            (m["apiVersion"], m["kind"]) for m in (body.get("spec") or {}).get("resources") or []
        }
        if runner is not None:
            kinds |= {(k.api_version, k.kind) for k in runner.tracked}
        deleted = 0
        for api_version, kind in sorted(kinds):
            try:
                resource = await self.cluster.resource(api_version, kind)
            except LookupError:
                continue
            target = (body.get("spec") or {}).get("targetNamespace") or owner.namespace
            where = target if resource.namespaced else None
            items, _ = await self.cluster.list_objects(
                resource, namespace=where, selector=owner.selector
            )
            for item in items:
                m = item["metadata"]
                await self.cluster.delete(resource, m.get("namespace", ""), m["name"], m["uid"])
                deleted += 1
        log.info("environment_deleted", environment=str(owner), deleted=deleted)
        return deleted

    # -- watches --------------------------------------------------------------

    async def ensure_watch(
        self, resource: Resource, namespace: str | None, observer: render.Owner | None
    ) -> None:
        """Starts watching a kind once, and waits until its first list is done.

        An Observe Environment never labels objects, so the ones it reports on may
        carry no driftguard label: for those it gets an unfiltered watch of its
        target namespace too. Enforce never needs one: it labels what it applies.
        """
        where = namespace if self._namespaced and resource.namespaced else None
        await self._start((resource, where, model.MANAGED_SELECTOR))
        if observer is not None and resource.namespaced:
            self._observers.setdefault((resource, namespace), set()).add(
                (observer.namespace, observer.name)
            )
            await self._start((resource, namespace, ""))

    async def _start(self, scope: Scope) -> None:
        if scope not in self._watches:
            self._synced[scope] = asyncio.Event()
            self._watches[scope] = asyncio.create_task(self._watch(scope))
        await self._synced[scope].wait()

    async def _watch(self, scope: Scope) -> None:
        resource, namespace, selector = scope
        delay = 0.5
        resource_version = ""
        while True:
            try:
                if not resource_version:
                    # One item is enough: the list is only read for its resourceVersion.
                    _, resource_version = await self.cluster.list_objects(
                        resource, namespace=namespace, selector=selector, limit=1
                    )
                    self._synced[scope].set()
                async for event in self.cluster.watch(
                    resource,
                    namespace=namespace,
                    selector=selector,
                    resource_version=resource_version,
                    accept=None if selector else self._observed(resource, namespace),
                ):
                    resource_version = _rv(event.object) or resource_version
                    if event.type == "BOOKMARK":
                        pass
                    elif selector:
                        self._dispatch(event.type, event.object)
                    else:
                        self._dispatch_unlabelled(resource, namespace, event.type, event.object)
                    delay = 0.5
            except ApiError as exc:
                if exc.is_gone:
                    # Missed events are recovered by judging every object again.
                    resource_version = ""
                    self._resync_all()
                    continue
                log.warning("watch_failed", kind=resource.kind, error=exc.message)
                self._synced[scope].set()  # a pass must not hang on a watch that retries
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _dispatch(self, kind: str, obj: dict[str, Any]) -> None:
        received = time.monotonic()
        owner = render.owner_of(obj)
        if owner is None:
            return
        runner = self.runners.get((owner.namespace, owner.name))
        if runner is not None:
            key = model.ObjectKey.of(obj)
            runner.observe(key, None if kind == "DELETED" else obj, received)

    def _observed(self, resource: Resource, namespace: str | None) -> Callable[[bytes], bool]:
        """Skips, undecoded, events of objects no Observe Environment of this scope tracks.

        An unfiltered watch sees every object of a kind in a namespace, and decoding
        each would cost the most CPU of all. A tracked object's event always holds
        `"name":"<its name>"`; a line without any such name cannot be one of ours.
        """

        def is_tracked(line: bytes) -> bool:
            if not line.startswith(
                (b'{"type":"ADDED"', b'{"type":"MODIFIED"', b'{"type":"DELETED"')
            ):
                return True  # bookmarks and errors always go through
            for ident in self._observers.get((resource, namespace), ()):
                runner = self.runners.get(ident)
                for key in runner.tracked if runner is not None else ():
                    if key.kind == resource.kind and _quoted_name(key.name) in line:
                        return True
            return False

        return is_tracked

    def _dispatch_unlabelled(
        self, resource: Resource, namespace: str | None, kind: str, obj: dict[str, Any]
    ) -> None:
        if render.owner_of(obj) is not None:
            return  # the labelled watch delivers it
        received = time.monotonic()
        key = model.ObjectKey.of(obj)
        for ident in self._observers.get((resource, namespace), ()):
            runner = self.runners.get(ident)
            if runner is not None:
                runner.observe(key, None if kind == "DELETED" else obj, received)

    def _resync_all(self) -> None:
        for runner in self.runners.values():
            task = asyncio.create_task(runner.resync())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # -- Events ---------------------------------------------------------------

    def post(self, env: dict[str, Any], reason: str, message: str, warning: bool) -> None:
        """Queues a Kubernetes Event; posting never delays a revert."""
        if self._poster is None:
            self._poster = asyncio.create_task(self._post_events())
        self._events.put_nowait((env, reason, message, warning))

    async def _post_events(self) -> None:
        while True:
            env, reason, message, warning = await self._events.get()
            try:
                await self.cluster.post_event(env, reason=reason, message=message, warning=warning)
            except ApiError as exc:
                log.warning("event_failed", reason=reason, error=exc.message)

    async def close(self) -> None:
        for ident in list(self.runners):
            self.forget(ident)
        for task in [*self._watches.values(), self._poster]:
            if task is not None:
                task.cancel()


def _quoted_name(name: str) -> bytes:
    return b'"name":"' + name.encode() + b'"'


def _rv(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion", ""))
