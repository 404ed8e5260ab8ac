"""A fake of driftguard's own `Cluster` protocol, for orchestration tests without a server.

It is not a fake Kubernetes: server-side apply is only true on a real server, and the
e2e tests cover it. This keeps just enough (objects, resourceVersions, managedFields of
flat manifests, label-selected lists and watches) to drive the watcher and the loop
through faults that are hard to stage on demand: a dropped stream, a 410, a stalled
connection, a refused list.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections import Counter
from collections.abc import AsyncGenerator, Callable
from typing import Any

from driftguard.core.model import Resource
from driftguard.kube.cluster import CONNECTED, ENVIRONMENTS, WatchEvent
from driftguard.kube.errors import ApiError, UnknownKindError

CONFIGMAPS = Resource("", "v1", "ConfigMap", "configmaps", namespaced=True)

Key = tuple[str, str]  # namespace, name


def _fields(node: Any) -> dict[str, Any]:
    """The fieldsV1 tree of a manifest: every dict key owned, lists and scalars as leaves."""
    if not isinstance(node, dict):
        return {}
    return {f"f:{key}": _fields(value) for key, value in node.items()}


def _owned(manifest: dict[str, Any]) -> dict[str, Any]:
    tree = _fields({k: v for k, v in manifest.items() if k not in ("apiVersion", "kind")})
    tree.get("f:metadata", {}).pop("f:name", None)
    tree.get("f:metadata", {}).pop("f:namespace", None)
    if not tree.get("f:metadata"):
        tree.pop("f:metadata", None)  # the server records no field for a name alone
    return tree


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _matches(obj: dict[str, Any], selector: str) -> bool:
    labels = obj["metadata"].get("labels") or {}
    pairs = [term.split("=", 1) for term in selector.split(",") if term]
    return all(labels.get(name) == value for name, value in pairs)


class FakeCluster:
    """ConfigMaps in memory, with switches for the faults a real connection has."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.version = 100
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str]] = []
        self.applied: Counter[Key] = Counter()  # per object: the audit trail is applied too
        self.lists = 0
        self.forbidden: set[str] = set()  # verbs RBAC refuses
        self.expire_next_watch = False
        self.unreachable = False  # every request fails, as with the API server down
        self.bookmark_interval = 0.05
        self.watch_calls = 0
        self.watched: list[tuple[str | None, str, str]] = []  # namespace, selector, name
        self.identities: set[str] = set()
        self._history: list[WatchEvent] = []  # a watch from a version replays what followed it
        self._streams: list[asyncio.Queue[WatchEvent | ApiError | None]] = []
        self._stalled: list[asyncio.Queue[WatchEvent | ApiError | None]] = []

    @property
    def applies(self) -> int:
        """Applies (not dry-run) of every object."""
        return sum(self.applied.values())

    # -- the Cluster protocol ---------------------------------------------------

    async def resource(self, api_version: str, kind: str) -> Resource:
        if (api_version, kind) != ("v1", "ConfigMap"):
            raise UnknownKindError(f"the fake serves no {kind}")
        return CONFIGMAPS

    async def apply(
        self, resource: Resource, manifest: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        self._check("dry-run apply" if dry_run else "apply")
        meta = manifest["metadata"]
        key = (meta["namespace"], meta["name"])
        current = copy.deepcopy(self.objects.get(key)) or {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": f"u-{key}"},
        }
        _merge(current, {k: v for k, v in manifest.items() if k != "metadata"})
        _merge(current["metadata"], {"labels": meta.get("labels") or {}})
        others = [
            e for e in current["metadata"].get("managedFields", []) if e["manager"] != "driftguard"
        ]
        mine = {"manager": "driftguard", "operation": "Apply", "fieldsV1": _owned(manifest)}
        current["metadata"]["managedFields"] = [mine, *self._strip(others, manifest)]
        if dry_run:
            return current
        self.applied[key] += 1
        return self._store(key, current, "MODIFIED" if key in self.objects else "ADDED")

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        self._check("get")
        found = self.objects.get((namespace, name))
        return copy.deepcopy(found) if found else None

    async def list_objects(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        selector: str = "",
        limit: int = 0,
        name: str = "",
        metadata_only: bool = False,
    ) -> tuple[list[dict[str, Any]], str]:
        self._check("list", namespace)
        self.lists += 1
        items = [
            {"metadata": copy.deepcopy(obj["metadata"])} if metadata_only else copy.deepcopy(obj)
            for (ns, named), obj in sorted(self.objects.items())
            if (namespace is None or ns == namespace)
            and name in ("", named)
            and _matches(obj, selector)
        ]
        return (items[:limit] if limit else items), str(self.version)

    async def whoami(self) -> str:
        return ""  # RBAC, impersonation included, is the real server's part

    def as_user(self, user: str) -> FakeCluster:
        self.identities.add(user)
        return self  # RBAC is the real server's part: the e2e tests cover impersonation

    async def delete(
        self, resource: Resource, namespace: str, name: str, uid: str, *, dry_run: bool = False
    ) -> None:
        self._check("delete")
        if dry_run:
            return
        obj = self.objects.pop((namespace, name), None)
        if obj is not None:
            self.version += 1
            obj["metadata"]["resourceVersion"] = str(self.version)
            self._publish(WatchEvent("DELETED", obj))

    async def json_patch(
        self, resource: Resource, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        raise NotImplementedError("the fake's manifests hold no lists")

    async def probe(
        self, resource: Resource, namespace: str, name: str, patch: dict[str, Any]
    ) -> list[str]:
        return []  # the fake enforces no admission policy

    async def patch_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        resource: Resource = ENVIRONMENTS,
    ) -> None:
        if resource == ENVIRONMENTS:
            self.statuses.append(copy.deepcopy(status))

    async def post_event(
        self, env: dict[str, Any], *, reason: str, message: str, warning: bool = False
    ) -> None:
        self.events.append((reason, message))

    async def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        selector: str,
        resource_version: str,
        timeout_seconds: int = 600,
        accept: Callable[[bytes], bool] | None = None,
        batch_s: float = 0.0,
        name: str = "",
    ) -> AsyncGenerator[WatchEvent, None]:
        self._check("watch", namespace)
        self.watched.append((namespace, selector, name))
        if self.expire_next_watch:
            self.expire_next_watch = False
            raise ApiError(410, "Expired", "too old resource version")
        self.watch_calls += 1
        queue: asyncio.Queue[WatchEvent | ApiError | None] = asyncio.Queue()
        for past in self._history:
            if int(past.object["metadata"]["resourceVersion"]) > int(resource_version or 0):
                queue.put_nowait(past)
        self._streams.append(queue)
        try:
            yield CONNECTED
            while True:
                try:
                    # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that
                    # lands as the queue answers, and this loop then outlives its task's
                    # cancel (a worker of `make test` hung at exit on it).
                    async with asyncio.timeout(self.bookmark_interval):
                        item = await queue.get()
                except TimeoutError:
                    if queue not in self._stalled:  # as the API server does, about every minute
                        yield WatchEvent(
                            "BOOKMARK", {"metadata": {"resourceVersion": str(self.version)}}
                        )
                    continue
                if item is None:
                    return  # the server ended the stream
                if isinstance(item, ApiError):
                    raise item
                obj, meta = item.object, item.object["metadata"]
                # What the server filters (namespace, name, labels) is never sent; the
                # rest is sent as a line the client may skip undecoded (`accept`).
                if namespace not in (None, meta["namespace"]) or name not in ("", meta["name"]):
                    continue
                if not _matches(obj, selector):
                    continue
                if accept is not None:
                    line = json.dumps({"type": item.type, "object": obj}, separators=(",", ":"))
                    if not accept(line.encode()):
                        continue
                yield WatchEvent(item.type, copy.deepcopy(obj))
        finally:
            self._streams.remove(queue)
            if queue in self._stalled:
                self._stalled.remove(queue)

    # -- what people and other controllers do ------------------------------------

    def create(self, namespace: str, name: str, manager: str, **data: str) -> None:
        """`kubectl create configmap`: an object driftguard did not make, without its labels."""
        obj = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"u-{name}",
                "managedFields": [
                    {"manager": manager, "operation": "Update", "fieldsV1": _fields({"data": data})}
                ],
            },
            "data": dict(data),
        }
        self._store((namespace, name), obj, "ADDED")

    def edit(self, namespace: str, name: str, manager: str, **data: str) -> None:
        """`kubectl patch` of data keys: values change and the fields move to `manager`."""
        obj = copy.deepcopy(self.objects[(namespace, name)])
        obj.setdefault("data", {}).update(data)
        touched = {"f:data": {f"f:{key}": {} for key in data}}
        entries = self._strip(obj["metadata"]["managedFields"], {"data": data})
        entries.append({"manager": manager, "operation": "Update", "fieldsV1": touched})
        obj["metadata"]["managedFields"] = entries
        self._store((namespace, name), obj, "MODIFIED")

    # -- faults ---------------------------------------------------------------------

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def break_streams(self) -> None:
        """Every open watch fails, as when the API server is killed mid-stream."""
        for queue in list(self._streams):
            queue.put_nowait(ApiError(0, "StreamBroken", "response payload is not completed"))

    def end_streams(self) -> None:
        """The server ends every watch normally (its timeoutSeconds)."""
        for queue in list(self._streams):
            queue.put_nowait(None)

    def expire_streams(self) -> None:
        """Every open watch gets an ERROR event with 410 Gone."""
        for queue in list(self._streams):
            queue.put_nowait(ApiError(410, "Expired", "too old resource version"))

    def stall(self) -> None:
        """Half-open connections: the open watches stay open and deliver nothing more."""
        self._stalled.extend(self._streams)

    # -- internals --------------------------------------------------------------------

    def _check(self, verb: str, namespace: str | None = None) -> None:
        if self.unreachable:
            raise ApiError(0, "Unreachable", "connection refused")
        if verb in self.forbidden:
            error = ApiError(403, "Forbidden", f'User "test" cannot {verb} resource "configmaps"')
            # As KubeCluster does: the request is named on the error.
            error.verb, error.kind, error.namespace = verb, "ConfigMap", namespace
            raise error

    def _store(self, key: Key, obj: dict[str, Any], kind: str) -> dict[str, Any]:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.objects[key] = obj
        self._publish(WatchEvent(kind, obj))
        return copy.deepcopy(obj)

    def _publish(self, event: WatchEvent) -> None:
        self._history.append(WatchEvent(event.type, copy.deepcopy(event.object)))
        for queue in self._streams:
            if queue not in self._stalled:
                queue.put_nowait(WatchEvent(event.type, copy.deepcopy(event.object)))

    @staticmethod
    def _strip(entries: list[dict[str, Any]], manifest: dict[str, Any]) -> list[dict[str, Any]]:
        """Other managers lose the fields a write sets (flat data keys are enough here)."""
        taken = set((manifest.get("data") or {}).keys())
        kept = []
        for entry in copy.deepcopy(entries):
            data = entry.get("fieldsV1", {}).get("f:data", {})
            for key in taken:
                data.pop(f"f:{key}", None)
            kept.append(entry)
        return kept
