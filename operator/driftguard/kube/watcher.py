"""Supervised watches: a watch that ends is started again, and what it missed is judged.

Enforcement is only as good as its watches. Every watch here is a loop, not a
task started once (the models: client-go's RetryWatcher and gitops-engine's
cluster cache):

- a stream the server ends (its timeout) resumes from the last resourceVersion;
- any error, a broken connection or a silence longer than the inactivity timeout
  (bookmarks arrive every minute or two) is a gap: after a backoff with jitter
  the scope is listed again in full and every object is judged, so drift made
  during an outage is caught at once, not at the next resync;
- `410 Gone` re-lists at once;
- a watch that RBAC refuses is reported to its Environments (Forbidden), retried
  slowly, and never counted against liveness: a restart would not fix it.

One log event when a watch is lost and one when it is back, with how long it was
down; a gauge of watches by state. This module knows nothing about Environments:
it calls its Listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import weakref
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from driftguard.kube.cluster import Cluster, Resource
from driftguard.kube.errors import ApiError
from driftguard.telemetry import metrics
from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)

# An unfiltered watch (Observe's) is read at most this often: a busy namespace's events
# then come hundreds to a read instead of one each (7 us of operator CPU per unrelated
# update instead of 117; 11 us at 0.1 s). An event after a quiet spell is read at once;
# in a busy namespace Observe flags a change up to this much later.
UNFILTERED_BATCH_S = 0.25


class Scope(NamedTuple):
    """One watch: a kind, a namespace (None: all), a label selector ("": none), the
    identity it is made as ("": the operator; else an impersonated ServiceAccount), a
    shard selector ("": none; set by shards.py when replicas share the work), and one
    object's name ("": all; the server filters by `metadata.name`)."""

    resource: Resource
    namespace: str | None
    selector: str
    identity: str = ""
    shard: str = ""
    name: str = ""


class Health(StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    LOST = "lost"
    FORBIDDEN = "forbidden"


class Listener(Protocol):
    def event(self, scope: Scope, type_: str, obj: dict[str, Any], received: float) -> None:
        """An object in the scope was added, modified or deleted."""

    def relisted(self, scope: Scope, items: list[dict[str, Any]], received: float) -> None:
        """After a gap: every object in the scope now; judge what changed meanwhile."""

    def refused(self, scope: Scope, error: ApiError) -> None:
        """RBAC refuses this watch."""

    def allowed(self, scope: Scope) -> None:
        """A refused watch works again."""


@dataclass(frozen=True, slots=True)
class Timing:
    backoff: float = 0.5  # first retry after an error; doubles up to backoff_cap
    backoff_cap: float = 30.0
    # RBAC changes rarely: once refused, ask again at most this seldom. The first tries come
    # quickly (the backoff's steps): an API server just restarted answers 403 until its RBAC
    # cache is filled, and a watch must not then stay down for a whole minute.
    forbidden_retry: float = 60.0
    # The API server sends a bookmark 2 minutes into a watch, then every minute
    # (measured on v1.37); silence well beyond that means a dead connection.
    inactivity: float = 180.0
    server_timeout: tuple[int, int] = (300, 600)  # spread, so watches do not restart together
    quick_end: float = 1.0  # a stream that ends sooner than this counts as a failure
    fight_backoff: float = 5.0  # plan.FIGHT_BACKOFF_S: the first wait once an object fights

    def delay(self, failures: int, *, cap: float | None = None) -> float:
        """Exponential backoff with jitter (half to the full step)."""
        step = min(cap or self.backoff_cap, self.backoff * float(2 ** max(failures - 1, 0)))
        return step * random.uniform(0.5, 1.0)


class Watch:
    """One supervised list-and-watch of one scope."""

    def __init__(
        self,
        cluster: Cluster,
        scope: Scope,
        listener: Listener,
        *,
        timing: Timing,
        on_health: Callable[[], None],
        accept: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.scope = scope
        self.health = Health.STARTING
        self.lost_since: float | None = None
        self.refusal: ApiError | None = None  # why RBAC refuses it, while it does
        self.synced = asyncio.Event()
        self._cluster = cluster
        self._listener = listener
        self._timing = timing
        self._on_health = on_health
        self._accept = accept
        self._task: asyncio.Task[None] | None = None
        kind, namespace = scope.resource.kind, scope.namespace or ""
        self._log = log.bind(
            kind=kind, namespace=namespace, selector=scope.selector, identity=scope.identity
        )
        if scope.name:
            self._log = self._log.bind(name=scope.name)

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"watch {self.scope}")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._task = None

    @property
    def is_dead(self) -> bool:
        """Its loop ended although nobody stopped it: nothing watches this scope any more."""
        return self._task is not None and self._task.done()

    async def _supervise(self) -> None:
        version, is_gap, failures = "", False, 0
        while True:
            try:
                if not version:
                    version = await self._list(is_gap)
                opened = time.monotonic()
                version = await self._stream(version)
                # The server ended the stream (its timeout): resume where it stopped.
                failures = 0 if time.monotonic() - opened > self._timing.quick_end else failures + 1
                if failures:
                    await asyncio.sleep(self._timing.delay(failures))
                continue
            except ApiError as exc:
                error = exc
            except TimeoutError:
                error = ApiError(0, "Silent", f"no event for {self._timing.inactivity:g}s")
            except Exception as exc:  # a supervisor's edge: nothing may end a watch silently
                self._log.exception("watch_crashed")
                error = ApiError(0, type(exc).__name__, str(exc))
            version, is_gap = "", True  # re-list, and judge what changed while away
            if error.is_gone:
                continue  # the version is too old: list again now
            failures += 1
            await asyncio.sleep(self._lose(error, failures))

    async def _list(self, is_gap: bool) -> str:
        # After a gap, the whole scope; at the start, one item is enough: the
        # Environment's full pass lists for itself, this only needs a version.
        items, version = await self._cluster.list_objects(
            self.scope.resource,
            namespace=self.scope.namespace,
            selector=self.scope.selector,
            limit=0 if is_gap else 1,
            **self._narrowed(),
        )
        if is_gap:
            self._listener.relisted(self.scope, items, time.monotonic())
        self.synced.set()
        return version

    async def _stream(self, version: str) -> str:
        loop = asyncio.get_running_loop()
        resource, namespace, selector = self.scope[:3]
        stream = self._cluster.watch(
            resource,
            namespace=namespace,
            selector=selector,
            resource_version=version,
            timeout_seconds=random.randint(*self._timing.server_timeout),
            accept=self._accept,
            # A watch that skips most of what it gets (Observe's unfiltered one) is read in
            # batches; the label-selected ones and the Namespace watch are read as they come.
            batch_s=UNFILTERED_BATCH_S if self._accept is not None else 0.0,
            **self._narrowed(),
        )
        async with (
            contextlib.aclosing(stream) as events,
            asyncio.timeout(self._timing.inactivity) as silence,
        ):
            async for event in events:
                silence.reschedule(loop.time() + self._timing.inactivity)
                if event.type == "CONNECTED":
                    self._healthy()
                    continue
                version = str(event.object.get("metadata", {}).get("resourceVersion") or version)
                if event.type != "BOOKMARK":
                    self._listener.event(self.scope, event.type, event.object, time.monotonic())
        return version

    def _narrowed(self) -> dict[str, Any]:
        # Only when set: clients that do not shard, or watch no single object, need not
        # know the options.
        options = {"shard": self.scope.shard} if self.scope.shard else {}
        if self.scope.name:
            options["name"] = self.scope.name
        return options

    def _healthy(self) -> None:
        if self.health is Health.HEALTHY:
            return
        if self.lost_since is not None:
            down = round(time.monotonic() - self.lost_since, 3)
            self._log.info("watch_restored", down_seconds=down)
            metrics.watch_restarts.labels(self.scope.resource.kind).inc()
        was_forbidden = self.health is Health.FORBIDDEN
        self.health, self.lost_since, self.refusal = Health.HEALTHY, None, None
        self._on_health()
        if was_forbidden:
            self._log.info("watch_allowed")
            self._listener.allowed(self.scope)

    def _lose(self, error: ApiError, failures: int) -> float:
        """Records a lost watch once per episode; returns how long to wait before retrying."""
        self.synced.set()  # a full pass must not hang on a watch that retries
        if error.is_forbidden:
            if self.health is not Health.FORBIDDEN:
                self._log.warning("watch_forbidden", error=error.describe())
                # lost_since stays: an API server that comes back answers 403 until its
                # RBAC cache is filled, and that is still the outage, to end in
                # watch_restored.
                self.health, self.refusal = Health.FORBIDDEN, error
                self._on_health()
                self._listener.refused(self.scope, error)
            return self._timing.delay(failures, cap=self._timing.forbidden_retry)
        if self.health is not Health.LOST:
            if self.lost_since is None:  # else the same outage, already logged
                self._log.warning("watch_lost", error=error.describe())
                self.lost_since = time.monotonic()
            self.health = Health.LOST
            self._on_health()
        # A 429 or 503 says how long to stay away: never come back sooner.
        return max(self._timing.delay(failures), error.retry_after or 0.0)


class Watches:
    """Every watch of the operator, shared by the Environments that need them."""

    def __init__(
        self,
        cluster: Cluster,
        listener: Listener,
        *,
        timing: Timing,
        sync_s: float | None = None,
    ) -> None:
        """`sync_s`: how long a first list may take before `need` gives up (None: forever;
        a remote cluster's, which may be away, and must not hold a pass for long)."""
        self._cluster = cluster
        self._listener = listener
        self._timing = timing
        self._sync_s = sync_s
        self._watches: dict[Scope, Watch] = {}
        self._users: dict[Scope, set[Hashable]] = {}
        _EVERY.add(self)

    async def need(
        self, scope: Scope, user: Hashable, *, accept: Callable[[bytes], bool] | None = None
    ) -> None:
        """Starts watching a scope once, and waits until its first list is done."""
        self._users.setdefault(scope, set()).add(user)
        watch = self._watches.get(scope)
        if watch is None:
            watch = Watch(
                self._cluster.as_user(scope.identity),
                scope,
                self._listener,
                timing=self._timing,
                on_health=self._export,
                accept=accept,
            )
            self._watches[scope] = watch
            watch.start()
            self._export()
        try:
            await asyncio.wait_for(watch.synced.wait(), self._sync_s)
        except TimeoutError as exc:
            what = f"{scope.resource.kind} in {scope.namespace or 'every namespace'}"
            raise ApiError(
                0, "Unreachable", f"the watch of {what} has not started within {self._sync_s} s"
            ) from exc

    def refusals(self, scopes: Iterable[Scope]) -> list[ApiError]:
        """Why RBAC refuses any of these watches (empty when it refuses none)."""
        found = (self._watches.get(scope) for scope in scopes)
        return [watch.refusal for watch in found if watch is not None and watch.refusal]

    def users(self, scope: Scope) -> set[Hashable]:
        return set(self._users.get(scope, ()))

    def release(self, user: Hashable, *, keep: frozenset[Scope] = frozenset()) -> None:
        """The user no longer needs these scopes; a watch stops with its last user."""
        for scope in [scope for scope, users in self._users.items() if user in users]:
            if scope in keep:
                continue
            users = self._users[scope]
            users.discard(user)
            if not users:
                del self._users[scope]
                self._watches.pop(scope).stop()
        self._export()

    def lost_for(self, seconds: float) -> list[tuple[Scope, float]]:
        """Watches down (not forbidden) for longer than `seconds`, with how long."""
        now = time.monotonic()
        return [
            (watch.scope, now - watch.lost_since)
            for watch in self._watches.values()
            if watch.health is Health.LOST
            and watch.lost_since is not None
            and now - watch.lost_since > seconds
        ]

    def dead(self) -> list[Scope]:
        """Watches whose supervising loop is gone (it should never end while needed)."""
        return [watch.scope for watch in self._watches.values() if watch.is_dead]

    def _export(self) -> None:
        # Every cluster's watches count (this one's and remote ones'): one gauge for all.
        counts = {health: 0 for health in Health}
        for watches in list(_EVERY):
            for watch in watches._watches.values():
                counts[watch.health] += 1
        for health, count in counts.items():
            metrics.watches.labels(health.value).set(count)

    def close(self) -> None:
        for watch in self._watches.values():
            watch.stop()
        self._watches.clear()
        self._users.clear()
        self._export()


_EVERY: weakref.WeakSet[Watches] = weakref.WeakSet()
