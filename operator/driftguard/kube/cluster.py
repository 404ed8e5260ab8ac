"""The only module that talks to the API server.

A thin async client over kubernetes_asyncio's configuration and aiohttp session:
raw JSON in and out (no model classes: blueprints hold any kind), discovery of
kinds, server-side apply, watches. Client errors become this module's own
exceptions; nothing from the client library escapes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig
from kubernetes_asyncio.client.rest import RESTClientObject

from driftguard.core import model
from driftguard.core.model import Resource
from driftguard.telemetry.logs import get as get_logger

__all__ = [
    "ENVIRONMENTS",
    "ApiError",
    "Cluster",
    "KubeCluster",
    "Resource",
    "Throttle",
    "WatchEvent",
    "retrying",
]

T = TypeVar("T")

log = get_logger(__name__)

USER_AGENT = "driftguard/0.1.0"
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")
_APPLY = "application/apply-patch+yaml"


class ApiError(Exception):
    """The API server refused a request."""

    def __init__(
        self, status: int, reason: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        # Seconds the server asked us to wait (its Retry-After header on a 429 or 503).
        self.retry_after = retry_after
        # What was refused, filled in where the request is made: a person reading
        # "Forbidden" needs the verb, the kind and the namespace to fix their RBAC.
        self.verb = ""
        self.kind = ""
        self.namespace: str | None = None

    def describe(self) -> str:
        """`cannot list RoleBinding in namespace team-a: <the server's message>`."""
        if not self.verb:
            return self.message
        where = f" in namespace {self.namespace}" if self.namespace else " (all namespaces)"
        return f"cannot {self.verb} {self.kind}{where}: {self.message}"

    @property
    def is_transient(self) -> bool:
        return self.status in (0, 429) or self.status >= 500

    @property
    def is_throttled(self) -> bool:
        """429 Too Many Requests: API Priority and Fairness or max-requests-inflight refused."""
        return self.status == 429

    @property
    def is_forbidden(self) -> bool:
        return self.status in (401, 403)

    @property
    def is_not_found(self) -> bool:
        return self.status == 404

    @property
    def is_gone(self) -> bool:
        return self.status == 410


class UnknownKindError(LookupError):
    """The server serves no such apiVersion and kind."""


@contextlib.contextmanager
def _refusal(verb: str, kind: str, namespace: str | None) -> Iterator[None]:
    """Names the request on any ApiError raised inside."""
    try:
        yield
    except ApiError as exc:
        if not exc.verb:
            exc.verb, exc.kind, exc.namespace = verb, kind, namespace
        raise


RETRIES = 4
# A 429 is the server asking for patience, not a failure: wait longer before giving up.
THROTTLED_RETRIES = 10
BACKOFF_S = 0.2
MAX_WAIT_S = 60.0
JITTER = 0.2
# 429s this close together are one episode: one `throttled` line, one `throttle_cleared`.
QUIET_S = 2.0


class Throttle:
    """The process's episodes of 429s, logged once when one begins and once when it ends.

    Every request refused with 429 waits at least the server's Retry-After (plus up to
    20 % jitter, so that refused clients do not all come back in the same instant), capped
    at a minute. An episode ends once no request waits any longer and none has been
    refused for QUIET_S; `throttle_cleared` then says how many 429s it took and how long.
    """

    def __init__(
        self,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        quiet: float = QUIET_S,
    ) -> None:
        self.sleep = sleep
        self._clock = clock
        self._jitter = jitter
        self._quiet = quiet
        self._began: float | None = None
        self._last_ok = 0.0
        self._refusals = 0
        self._waiting = 0
        self._closer: asyncio.TimerHandle | None = None

    @property
    def is_throttled(self) -> bool:
        return self._began is not None

    def wait_for(self, exc: ApiError, attempt: int) -> float:
        """Seconds to wait before the next attempt: the backoff or Retry-After, jittered."""
        backoff = BACKOFF_S * 2**attempt
        wait = min(max(backoff, exc.retry_after or 0.0), MAX_WAIT_S)
        return float(wait * (1 + JITTER * self._jitter()))

    def refused(self, exc: ApiError, *, is_new: bool) -> None:
        """One 429 arrived (`is_new`: to a request not already waiting); the first of an
        episode is logged."""
        if self._closer is not None:
            self._closer.cancel()
            self._closer = None
        if self._began is None:
            self._began, self._refusals = self._clock(), 0
            log.warning(
                "throttled",
                request=exc.verb or None,
                kind=exc.kind or None,
                retry_after=exc.retry_after,
                message=exc.message,
            )
        self._refusals += 1
        self._waiting += is_new

    def resumed(self, *, succeeded: bool) -> None:
        """A request that was refused is done waiting (answered, or given up on)."""
        self._waiting -= 1
        if succeeded:
            self._last_ok = self._clock()
        if self._waiting == 0 and self._began is not None:
            self._closer = asyncio.get_running_loop().call_later(self._quiet, self._clear)

    def _clear(self) -> None:
        self._closer = None
        if self._waiting or self._began is None:
            return
        log.info(
            "throttle_cleared",
            attempts=self._refusals,
            seconds=round(max(self._last_ok - self._began, 0.0), 3),
        )
        self._began = None


THROTTLE = Throttle()


async def retrying(call: Callable[[], Awaitable[T]], *, throttle: Throttle | None = None) -> T:
    """Retries transient failures (timeouts, 429, 5xx) with exponential backoff.

    A 429 waits at least as long as its Retry-After says, and counts toward the
    process's throttling episode (`Throttle`) instead of logging each refusal.
    """
    throttle = throttle or THROTTLE
    attempt, throttled = 0, False
    try:
        while True:
            try:
                result = await call()
            except ApiError as exc:
                limit = THROTTLED_RETRIES if exc.is_throttled else RETRIES
                if not exc.is_transient or attempt >= limit:
                    raise
                if exc.is_throttled:
                    throttle.refused(exc, is_new=not throttled)
                    throttled = True
                await throttle.sleep(throttle.wait_for(exc, attempt))
                attempt += 1
            else:
                if throttled:
                    throttle.resumed(succeeded=True)
                    throttled = False
                return result
    finally:
        if throttled:
            throttle.resumed(succeeded=False)


SERVICEACCOUNTS = Resource("", "v1", "ServiceAccount", "serviceaccounts", namespaced=True)
ENVIRONMENTS = Resource(model.GROUP, model.VERSION, model.KIND, model.PLURAL, namespaced=True)


Gate = Callable[[str | None, tuple[str, str] | None], bool]
"""(namespace written to, or the Environment whose status or Event it is) -> allowed now."""


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str  # CONNECTED (the server accepted the watch), ADDED, MODIFIED, DELETED, BOOKMARK
    object: dict[str, Any]


CONNECTED = WatchEvent("CONNECTED", {})


class Cluster(Protocol):
    """What reconcile and apply need from the API server."""

    async def resource(self, api_version: str, kind: str) -> Resource: ...

    async def apply(
        self, resource: Resource, manifest: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]: ...

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def list_objects(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        selector: str = "",
        limit: int = 0,
        shard: str = "",
        name: str = "",
    ) -> tuple[list[dict[str, Any]], str]: ...

    async def delete(
        self, resource: Resource, namespace: str, name: str, uid: str, *, dry_run: bool = False
    ) -> None: ...

    def as_user(self, user: str) -> Cluster:
        """The same client, every request impersonating `user` ("" for the client itself)."""
        ...

    async def whoami(self) -> str:
        """The username the API server knows this client as."""
        ...

    async def json_patch(
        self, resource: Resource, namespace: str, name: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]: ...

    async def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], *, resource: Resource = ...
    ) -> None: ...

    async def post_event(
        self, env: dict[str, Any], *, reason: str, message: str, warning: bool = False
    ) -> None: ...

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
    ) -> AsyncGenerator[WatchEvent, None]: ...


class KubeCluster:
    """The real client: raw JSON over two aiohttp sessions, one for requests (a bounded
    pool) and one for watches (unbounded)."""

    def __init__(
        self, api: kclient.ApiClient, *, user: str = "", streams: RESTClientObject | None = None
    ) -> None:
        self._api = api
        # Watches hold their connection for minutes: they get a pool of their own, without
        # a limit, so that however many there are, requests never wait behind them.
        self._streams = streams or api.rest_client
        self._host: str = api.configuration.host or ""
        self._kinds: dict[tuple[str, str], Resource] = {}
        self._discovery_lock = asyncio.Lock()
        self._user = user
        self._views: dict[str, KubeCluster] = {}
        # Replicas sharing the work (shards.py): may this replica write there now?
        self._gate: list[Gate] = []

    def as_user(self, user: str) -> KubeCluster:
        """A view sharing the session and discovery, its requests impersonating `user`.

        The API server then authorizes each request as that user, escalation checks
        included; the operator needs only the `impersonate` verb on it.
        """
        if user == self._user:
            return self
        view = self._views.get(user)
        if view is None:
            view = self._views[user] = KubeCluster(self._api, user=user, streams=self._streams)
            view._kinds = self._kinds  # discovery is the same for every identity
            view._gate = self._gate  # one gate for every identity
            view._discovery_lock = self._discovery_lock
        return view

    @classmethod
    async def connect(cls, *, kubeconfig: str | None = None, pool: int = 64) -> KubeCluster:
        """Uses the given kubeconfig or $KUBECONFIG, else the in-cluster config, else ~/.kube."""
        configuration = kclient.Configuration()
        if kubeconfig is not None:
            await kconfig.load_kube_config(
                config_file=kubeconfig, client_configuration=configuration
            )
        elif os.environ.get("KUBECONFIG"):
            # An explicit --kubeconfig (or $KUBECONFIG) wins over a Pod's own identity;
            # the library reads the variable itself, colon-separated lists included.
            await kconfig.load_kube_config(client_configuration=configuration)
        else:
            try:
                kconfig.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            except kconfig.ConfigException:
                await kconfig.load_kube_config(client_configuration=configuration)
        configuration.connection_pool_maxsize = pool
        api = kclient.ApiClient(configuration)
        api.user_agent = USER_AGENT
        streams = RESTClientObject(configuration, maxsize=0)  # 0: no limit
        if not any(os.environ.get(name) for name in _PROXY_VARIABLES):
            # kubernetes_asyncio opens its session with trust_env=True, so aiohttp looks
            # for ~/.netrc in a thread before every request: about 0.8 ms each, a third
            # of the operator's CPU while applying. Without proxy variables it serves
            # nothing (a kubeconfig's proxy-url is passed explicitly, not via env).
            api.rest_client.pool_manager._trust_env = False
            streams.pool_manager._trust_env = False
        return cls(api, streams=streams)

    async def close(self) -> None:
        if self._streams is not self._api.rest_client:
            await self._streams.close()
        await self._api.close()

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

    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: aiohttp.ClientTimeout | None = None,
        compressed: bool = True,
        stream: bool = False,
    ) -> aiohttp.ClientResponse:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if not compressed:
            headers["Accept-Encoding"] = "identity"
        headers.update(self._api.default_headers)
        if self._user:
            headers["Impersonate-User"] = self._user
        await self._api.update_params_for_auth(headers, [], ["BearerToken"])
        try:
            client = self._streams if stream else self._api.rest_client
            response: aiohttp.ClientResponse = await client.request(
                method,
                self._host + path,
                query_params=query,
                headers=headers,
                body=body,
                _preload_content=False,
                _request_timeout=timeout or aiohttp.ClientTimeout(total=60),
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(0, "Unreachable", str(exc) or type(exc).__name__) from exc
        if response.status >= 400:
            raise await _error(response)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._request(method, path, **kwargs)
        async with response:
            data: dict[str, Any] = await response.json(loads=json.loads)
            return data

    async def resource(self, api_version: str, kind: str) -> Resource:
        known = self._kinds.get((api_version, kind))
        if known is not None:
            return known
        # Retried under the lock: a refused discovery is waited out once, by one caller,
        # not requested again at once by every pass queued behind it.
        async with self._discovery_lock:
            if (api_version, kind) not in self._kinds:
                try:
                    await retrying(lambda: self._discover(api_version))
                except UnknownKindError as exc:
                    raise UnknownKindError(f"kind {kind}: {exc}") from exc
        try:
            return self._kinds[(api_version, kind)]
        except KeyError:
            raise UnknownKindError(f"the server has no kind {kind} in {api_version}") from None

    async def _discover(self, api_version: str) -> None:
        group, _, version = api_version.rpartition("/")
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            listing = await self._json("GET", path)
        except ApiError as exc:
            if exc.is_not_found:
                raise UnknownKindError(f"the server does not serve {api_version}") from exc
            raise
        for entry in listing.get("resources", []):
            if "/" in entry["name"]:
                continue  # a subresource such as deployments/scale
            found = Resource(group, version, entry["kind"], entry["name"], entry["namespaced"])
            self._kinds[(api_version, entry["kind"])] = found

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
        with _refusal(verb, resource.kind, meta.get("namespace")):
            return await self._json("PATCH", path, query=query, body=manifest, content_type=_APPLY)

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            with _refusal("get", resource.kind, namespace):
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
    ) -> tuple[list[dict[str, Any]], str]:
        query = {"labelSelector": selector} if selector else {}
        if name:
            query["fieldSelector"] = f"metadata.name={name}"
        if limit:
            query["limit"] = str(limit)
        if shard:  # a shard selector (sharding.selector); ignored where the gate is off
            query["shardSelector"] = shard
        with _refusal("list", resource.kind, namespace):
            listing = await self._json("GET", resource.path(namespace), query=query)
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
            with _refusal("dry-run delete" if dry_run else "delete", resource.kind, namespace):
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
        with _refusal("patch", resource.kind, namespace):
            return await self._json(
                "PATCH", path, query=query, body=ops, content_type="application/json-patch+json"
            )

    async def create(
        self, resource: Resource, body: dict[str, Any], *, field_manager: str
    ) -> dict[str, Any]:
        """A POST of a new object (409 AlreadyExists if it is there): a replica's own Lease."""
        namespace = body["metadata"].get("namespace")
        with _refusal("create", resource.kind, namespace):
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
        with _refusal("update", resource.kind, meta.get("namespace")):
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

    async def watch(
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
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=30)
        with _refusal("watch", resource.kind, namespace):
            # Uncompressed: the server flushes each event on its own, so gzip saves
            # little and costs both ends a compressor per event.
            response = await self._request(
                "GET",
                resource.path(namespace),
                query=query,
                timeout=timeout,
                compressed=False,
                stream=True,
            )
            async with response:
                yield CONNECTED
                transport = _batching(response, batch_s)
                buffer = b""
                try:
                    # Lines are split by hand: aiohttp's readline() refuses lines over
                    # its buffer size, and an object in a watch can be up to 1.5 MiB.
                    async for chunk in response.content.iter_any():
                        buffer += chunk
                        *lines, buffer = buffer.split(b"\n")
                        for line in lines:
                            if line.strip() and (accept is None or accept(line)):
                                yield _watch_event(line, resource)
                        if transport is not None:
                            transport.pause_reading()
                            await asyncio.sleep(batch_s)
                            transport.resume_reading()
                except (aiohttp.ClientError, ConnectionError) as exc:
                    # A server killed mid-stream: "Response payload is not completed".
                    raise ApiError(0, "StreamBroken", str(exc) or type(exc).__name__) from exc


def _event(env: dict[str, Any], *, reason: str, message: str, warning: bool) -> dict[str, Any]:
    """A core/v1 Event on the Environment, named by generateName so each one is new."""
    meta = env["metadata"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
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


def _batching(response: aiohttp.ClientResponse, batch_s: float) -> asyncio.Transport | None:
    """The transport to pause between reads, set so that pausing it stops the socket.

    An event arrives as a TLS record of its own: read as it comes, each costs an event
    loop turn, a decryption and a parse (about 80 µs); read every 20 / 50 / 100 / 200 ms,
    a busy stream costs 24 / 14 / 9 / 6 µs an event. A paused SSL transport only stops
    handing decrypted data on, and keeps reading the socket until a quarter MiB is
    buffered: a high-water mark of one byte makes it stop the socket too.
    """
    connection = response.connection
    if batch_s <= 0 or connection is None or connection.transport is None:
        return None
    transport = connection.transport
    limits = getattr(transport, "set_read_buffer_limits", None)
    if limits is not None:
        limits(high=1, low=0)
    return transport


def _watch_event(line: bytes, resource: Resource) -> WatchEvent:
    raw = json.loads(line)
    obj: dict[str, Any] = raw.get("object") or {}
    if raw.get("type") == "ERROR":
        raise ApiError(int(obj.get("code", 0)), str(obj.get("reason")), str(obj.get("message")))
    obj.setdefault("apiVersion", resource.api_version)
    obj.setdefault("kind", resource.kind)
    return WatchEvent(str(raw.get("type")), obj)


async def _error(response: aiohttp.ClientResponse) -> ApiError:
    async with response:
        text = await response.text()
    wait = _retry_after(response.headers.get("Retry-After"))
    try:
        status = json.loads(text)
        reason, message = str(status.get("reason")), str(status.get("message"))
    except ValueError:
        reason, message = response.reason or "", text[:500]
    return ApiError(response.status, reason, message, retry_after=wait)


def _retry_after(header: str | None) -> float | None:
    """Retry-After in seconds; the API server sends whole seconds (RFC 9110 also allows
    an HTTP date, which it never sends: that, or garbage, counts as absent)."""
    if header is None:
        return None
    try:
        seconds = float(header.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
