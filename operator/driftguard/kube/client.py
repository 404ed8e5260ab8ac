"""The real client, the only code that talks to the API server.

Raw JSON in and out (no model classes: blueprints hold any kind), discovery of kinds,
server-side apply, watches, a view per impersonated identity, and the write gate of
replicas sharing the work. Client errors become ApiErrors; nothing from the client
library escapes kube/.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from driftguard.core import model
from driftguard.core.model import Resource
from driftguard.kube import connection, stream, timestamps
from driftguard.kube.cluster import ENVIRONMENTS, Gate, WatchEvent
from driftguard.kube.discovery import Discovery
from driftguard.kube.errors import ApiError, naming_request
from driftguard.kube.library import ApiClient, RESTClientObject

__all__ = ["KubeCluster"]

_APPLY = "application/apply-patch+yaml"
_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
_MERGE = "application/merge-patch+json"
REMOTE_CONNECT_S = 5.0
"""A remote cluster may be away: connecting gives up this soon, so nothing waits long."""


class _Probing:
    """Cluster.probe, apart from KubeCluster, which is at its size limit."""

    _connection: connection.Connection

    async def probe(
        self, resource: Resource, namespace: str, name: str, patch: dict[str, Any]
    ) -> list[str]:
        """A server-side dry-run merge patch: the warnings admission gave."""
        # A dry run is never stored, so the write gate does not apply.
        query = {"fieldManager": model.FIELD_MANAGER, "dryRun": "All"}
        path = resource.path(namespace, name)
        with naming_request("dry-run patch", resource.kind, namespace):
            return await self._connection.warnings(
                "PATCH", path, query=query, body=patch, content_type=_MERGE
            )


class KubeCluster(_Probing):
    """The real client: raw JSON over two aiohttp sessions, one for requests (a bounded
    pool) and one for watches (unbounded)."""

    def __init__(
        self, api: ApiClient, *, user: str = "", streams: RESTClientObject | None = None
    ) -> None:
        self._connection = connection.Connection(api, user=user, streams=streams)
        self._discovery = Discovery()
        self._views: dict[str, KubeCluster] = {}
        # Replicas sharing the work (shards.py): may this replica write there now?
        self._gate: list[Gate] = []

    def as_user(self, user: str) -> KubeCluster:
        """A view sharing the session and discovery, its requests impersonating `user`:
        the API server then authorizes each request as that user, escalation checks
        included; the operator needs only the `impersonate` verb on it.
        """
        if user == self._connection.user:
            return self
        view = self._views.get(user)
        if view is None:
            own = self._connection
            view = self._views[user] = KubeCluster(own.api, user=user, streams=own.streams)
            view.connection.connect_s = own.connect_s
            view._discovery = self._discovery  # discovery is the same for every identity
            view._gate = self._gate  # one gate for every identity
        return view

    @classmethod
    async def connect(cls, *, kubeconfig: str | None = None, pool: int = 64) -> KubeCluster:
        """Uses the given kubeconfig or $KUBECONFIG, else the in-cluster config, else ~/.kube."""
        api, streams = await connection.sessions(kubeconfig=kubeconfig, pool=pool)
        return cls(api, streams=streams)

    async def close(self) -> None:
        await self._connection.close()

    @property
    def connection(self) -> connection.Connection:
        return self._connection

    def guard_writes(self, gate: Gate) -> None:
        """Every write (not dry-run) asks `gate` first, at the moment it is sent: a replica
        that no longer holds a namespace writes nothing there, whatever is still running."""
        self._gate[:] = [gate]

    def _check_gate(self, namespace: str | None, environment: tuple[str, str] | None) -> None:
        if self._gate and not self._gate[0](namespace, environment):
            where = f"Environment {environment[0]}/{environment[1]}" if environment else namespace
            raise ApiError(409, "Fenced", f"{where} is not this replica's share now")

    async def whoami(self) -> str:
        """The username the API server authenticates this client as (a SelfSubjectReview)."""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        path = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
        answer = await self._json("POST", path, body=review)
        return str(answer.get("status", {}).get("userInfo", {}).get("username", ""))

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return await self._connection.json(method, path, **kwargs)

    async def resource(self, api_version: str, kind: str) -> Resource:
        return await self._discovery.resource(api_version, kind, self._get)

    async def _get(self, path: str) -> dict[str, Any]:
        return await self._json("GET", path)

    async def apply(
        self, resource: Resource, manifest: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        meta = manifest["metadata"]
        query = {"fieldManager": model.FIELD_MANAGER, "force": "true"}
        if dry_run:
            query["dryRun"] = "All"
        path = resource.path(meta.get("namespace"), meta["name"])
        verb = "dry-run apply" if dry_run else "apply"
        if not dry_run:
            self._check_gate(meta.get("namespace"), None)
        with naming_request(verb, resource.kind, meta.get("namespace")):
            return await self._json("PATCH", path, query=query, body=manifest, content_type=_APPLY)

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            with naming_request("get", resource.kind, namespace):
                return await self._json("GET", resource.path(namespace, name))
        except ApiError as exc:
            if exc.is_not_found:
                return None
            raise

    async def list_objects(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        selector: str = "",
        limit: int = 0,
        shard: str = "",
        name: str = "",
        metadata_only: bool = False,
    ) -> tuple[list[dict[str, Any]], str]:
        query = _list_query(selector, limit, shard, name)
        accept = _METADATA_LIST if metadata_only else "application/json"
        with naming_request("list", resource.kind, namespace):
            listing = await self._json("GET", resource.path(namespace), query=query, accept=accept)
        items: list[dict[str, Any]] = listing.get("items") or []
        for item in items:
            item.setdefault("apiVersion", resource.api_version)
            item.setdefault("kind", resource.kind)
        return items, str(listing.get("metadata", {}).get("resourceVersion", ""))

    async def delete(
        self, resource: Resource, namespace: str, name: str, uid: str, *, dry_run: bool = False
    ) -> None:
        body: dict[str, Any] = {"preconditions": {"uid": uid}, "propagationPolicy": "Background"}
        if dry_run:
            # In the body: with DeleteOptions in the body the API server ignores ?dryRun=.
            body["dryRun"] = ["All"]
        else:
            self._check_gate(namespace, None)
        try:
            with naming_request(
                "dry-run delete" if dry_run else "delete", resource.kind, namespace
            ):
                await self._json("DELETE", resource.path(namespace, name), body=body)
        except ApiError as exc:
            if not exc.is_not_found:
                raise

    async def json_patch(
        self, resource: Resource, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        query = {"fieldManager": model.FIELD_MANAGER}
        path = resource.path(namespace, name)
        self._check_gate(namespace, None)
        with naming_request("patch", resource.kind, namespace):
            return await self._json(
                "PATCH", path, query=query, body=ops, content_type="application/json-patch+json"
            )

    async def create(
        self, resource: Resource, body: dict[str, Any], *, field_manager: str
    ) -> dict[str, Any]:
        """A POST of a new object (409 AlreadyExists if it is there): a replica's own Lease."""
        namespace = body["metadata"].get("namespace")
        with naming_request("create", resource.kind, namespace):
            return await self._json(
                "POST",
                resource.path(namespace),
                query={"fieldManager": field_manager},
                body=body,
            )

    async def filters_shards(self, resource: Resource, shard: str) -> bool:
        """Whether the API server filters by shard selector (feature gate
        ShardedListAndWatch): a list it filtered says so in metadata.shardInfo."""
        query = {"limit": "1", "shardSelector": shard}
        listing = await self._json("GET", resource.path(), query=query)
        return bool((listing.get("metadata") or {}).get("shardInfo"))

    async def replace(
        self, resource: Resource, body: dict[str, Any], *, field_manager: str, dry_run: bool = False
    ) -> dict[str, Any]:
        """A PUT of the whole object, as a person's tool writes it (`driftguard rollback`).

        The body's resourceVersion makes it fail with 409 Conflict if the object changed
        since it was read, so nobody's change is overwritten unseen.
        """
        meta = body["metadata"]
        query = {"fieldManager": field_manager}
        if dry_run:
            query["dryRun"] = "All"
        path = resource.path(meta.get("namespace"), meta["name"])
        with naming_request("update", resource.kind, meta.get("namespace")):
            return await self._json("PUT", path, query=query, body=body)

    async def patch_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        resource: Resource = ENVIRONMENTS,
    ) -> None:
        # A merge patch of the status subresource replaces lists whole, which is
        # what we want: status is rewritten from one pass, not merged with an old one.
        path = resource.path(namespace, name) + "/status"
        is_environment = resource == ENVIRONMENTS
        self._check_gate(None, (namespace, name) if is_environment else None)
        await self._json(
            "PATCH", path, body={"status": status}, content_type="application/merge-patch+json"
        )

    async def post_event(
        self, env: dict[str, Any], *, reason: str, message: str, warning: bool = False
    ) -> None:
        meta = env["metadata"]
        self._check_gate(None, (meta["namespace"], meta["name"]))
        namespace = quote(meta["namespace"])
        body = _event(env, reason=reason, message=message, warning=warning)
        await self._json("POST", f"/api/v1/namespaces/{namespace}/events", body=body)

    def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        selector: str,
        resource_version: str,
        timeout_seconds: int = 600,
        accept: Callable[[bytes], bool] | None = None,
        shard: str = "",
        batch_s: float = 0.0,
        name: str = "",
    ) -> AsyncGenerator[WatchEvent, None]:
        """CONNECTED, then events from resource_version on, until the server ends the stream.

        `name`: only the object of that name (a field selector: the server filters).

        `accept(line)` may skip a raw event undecoded. `batch_s`: after each read, leave
        the socket unread that long, so that a busy stream is received many events at a
        time (for a watch that mostly skips what it gets; its events come up to that much
        later). Every failure, including a connection that breaks mid-stream, is an
        ApiError: the caller restarts.
        """
        query = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds),
        }
        if selector:
            query["labelSelector"] = selector
        if name:
            query["fieldSelector"] = f"metadata.name={name}"
        if shard:
            query["shardSelector"] = shard
        return stream.events(
            self._connection.request,
            resource,
            namespace,
            query,
            accept=accept,
            batch_s=batch_s,
        )


def _event(env: dict[str, Any], *, reason: str, message: str, warning: bool) -> dict[str, Any]:
    """A core/v1 Event on the Environment, named by generateName so each one is new."""
    meta = env["metadata"]
    now = timestamps.now()
    return {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": f"{model.GROUP}/{model.VERSION}",
            "kind": model.KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": model.FIELD_MANAGER},
        "reportingComponent": model.FIELD_MANAGER,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


async def connect_context(context: str) -> KubeCluster:
    """A context of the kubeconfig ($KUBECONFIG, else ~/.kube/config): the CLI, across
    clusters, as the person."""
    api, streams = await connection.sessions(context=context)
    return KubeCluster(api, streams=streams)


async def version(cluster: KubeCluster, *, timeout_s: float) -> str:
    """The server's version: an ApiError when it does not answer within `timeout_s`."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    answer = await cluster.connection.json("GET", "/version", timeout=timeout)
    return str(answer.get("gitVersion", ""))


async def connect_remote(config: dict[str, Any], *, gate_of: KubeCluster | None) -> KubeCluster:
    """Another cluster, from its parsed kubeconfig; its writes ask the gate of `gate_of`
    (replicas sharing the work fence remote writes as they fence their own)."""
    api, streams = await connection.sessions(config=config, pool=16)
    made = KubeCluster(api, streams=streams)
    made.connection.connect_s = REMOTE_CONNECT_S
    if gate_of is not None:
        made._gate = gate_of._gate
    return made


def _list_query(selector: str, limit: int, shard: str, name: str) -> dict[str, str]:
    query = {"labelSelector": selector} if selector else {}
    if name:
        query["fieldSelector"] = f"metadata.name={name}"
    if limit:
        query["limit"] = str(limit)
    if shard:  # a shard selector (sharding.selector); ignored where the gate is off
        query["shardSelector"] = shard
    return query
