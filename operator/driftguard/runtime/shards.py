"""One replica's share of the work: the Environments it acts on and the watches it needs.

Every replica sees every Environment (kopf watches them all; they are few), keeps what
sharding reads of it (of those it does not act on, the whole body only packed, for the day
it takes them over), and hands the engine only those whose *target* namespace hashes into
the ranges this replica holds (`membership.py` decides which). The managed objects'
watches carry the same ranges as a shard selector, so the API server sends each
replica only its own objects. Where the server does not filter (feature gate
ShardedListAndWatch off) the watches stay whole and the engine, which routes an event
only to an Environment it keeps, drops the rest: the same hash, applied client-side.

This module decides nothing about membership; it does what it is told, at once.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Hashable, Iterable
from typing import Any

from driftguard.core import model, sharding
from driftguard.core.conditions import Reason
from driftguard.core.declared import Declared
from driftguard.kube.cluster import Cluster
from driftguard.kube.watcher import Listener, Scope, Timing, Watches
from driftguard.runtime.blueprints import Users
from driftguard.runtime.engine import Engine
from driftguard.telemetry import metrics
from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)

Ident = tuple[str, str]


def target_of(declared: Declared) -> str:
    """The namespace an Environment writes into: its hash decides the owner."""
    return declared.target_namespace


def _is_shardable(scope: Scope) -> bool:
    """Cluster-wide labelled watches of namespaced kinds: the ones a shard selector narrows.
    (A cluster-scoped object has no namespace to hash; a namespaced watch is narrow already.)"""
    return (
        scope.resource.namespaced
        and scope.namespace is None
        and scope.selector == model.MANAGED_SELECTOR
    )


class ShardedWatches(Watches):
    """Watches whose cluster-wide labelled scopes carry this replica's shard selector.

    The engine names scopes without a shard; this adds the current one on the way in,
    so the engine's bookkeeping (need, release, refusals) works unchanged.
    """

    def __init__(self, cluster: Cluster, listener: Listener, *, timing: Timing) -> None:
        super().__init__(cluster, listener, timing=timing)
        self.shard = ""

    def _sharded(self, scope: Scope) -> Scope:
        return scope._replace(shard=self.shard) if _is_shardable(scope) else scope

    async def need(self, scope: Scope, user: Hashable, *, accept: Any = None) -> None:
        await super().need(self._sharded(scope), user, accept=accept)

    def refusals(self, scopes: Iterable[Scope]) -> list[Any]:
        return super().refusals(self._sharded(scope) for scope in scopes)

    def release(self, user: Hashable, *, keep: frozenset[Scope] = frozenset()) -> None:
        super().release(user, keep=frozenset(self._sharded(scope) for scope in keep))

    async def rescope(self, shard: str) -> None:
        """Moves every sharded watch to the new selector: the new ones are listed before
        the old ones stop, so no event falls between them."""
        if shard == self.shard:
            return
        old, self.shard = self.shard, shard
        moving = [scope for scope in self._watches if scope.shard == old and _is_shardable(scope)]
        starts = []
        for scope in moving:
            for user in self.users(scope):
                starts.append(super().need(scope._replace(shard=shard), user))
        await asyncio.gather(*starts)
        for scope in moving:
            self._users.pop(scope, None)
            watch = self._watches.pop(scope, None)
            if watch is not None:
                watch.stop()
        self._export()


class Shards:
    """The Environments of one replica's ranges; everything else is only remembered."""

    def __init__(self, engine: Engine, replica: str, *, server_filters: bool) -> None:
        self.engine = engine
        self.replica = replica
        self.server_filters = server_filters
        self.ranges: sharding.Ranges = ()
        self.bodies: dict[Ident, Declared] = {}
        """Each Environment as last seen: parsed if this replica acts on it, else slim."""
        self._packed: dict[Ident, bytes] = {}
        """The whole bodies behind the slim ones, as compressed JSON: an Environment of 100
        objects is about 260 KB as Python objects, 3 KB so (bench/scale.py --heap)."""
        self._background: set[asyncio.Task[None]] = set()
        self._following = asyncio.Lock()
        self.hash_snapshot: frozenset[int] = frozenset()
        self.valid_until = 0.0  # monotonic; membership moves it after each renewal
        self.claimed: sharding.Ranges = ()  # what this replica's Lease claims, written
        self._foreign: frozenset[str] = frozenset()
        engine.count_users_with(self.count_users)
        engine.replica = replica
        self._export()

    # -- what kopf sees -------------------------------------------------------

    def hashes(self) -> set[int]:
        """The hashes of the target namespaces in use: the plan's split points follow them."""
        return set(self.hash_snapshot)

    def remember(self) -> None:
        """Replaces the hashes whole, for the membership thread to read without a lock,
        and the target namespaces of other replicas' Environments, for the write gate."""
        self.hash_snapshot = frozenset(
            sharding.fnv64a(target_of(body)) for body in self.bodies.values()
        )
        targets = {target_of(body): self.owns(body) for body in self.bodies.values()}
        self._foreign = frozenset(
            namespace for namespace, is_mine in targets.items() if not is_mine
        )

    def hold(self, until: float, claims: sharding.Ranges) -> None:
        """The Lease is valid until then (monotonic; 0 once it is not) and claims these
        ranges: whatever act_on is asked, this replica acts on no more than that."""
        self.claimed = claims
        self.valid_until = until

    def allows(self, namespace: str | None, environment: Ident | None) -> bool:
        """The write gate (KubeCluster.guard_writes), asked as each write is sent: nothing
        without a valid Lease, and nothing in another replica's share, even from a pass
        that started before the share moved."""
        if time.monotonic() >= self.valid_until:
            return False
        if environment is not None:
            body = self.bodies.get(environment)
            return body is None or self.owns(body)
        return namespace not in self._foreign

    def count_users(self, name: str) -> Users:
        """A Blueprint's Environments across all replicas, from the bodies every replica sees
        (their status included): each replica reports the same, so none rewrites another's
        Blueprint status with its own share's count."""
        total, refused = 0, []
        for (namespace, env), body in self.bodies.items():
            if body.blueprint != name:
                continue
            total += 1
            for condition in (body.body.get("status") or {}).get("conditions") or []:
                message = str(condition.get("message") or "")
                if (
                    condition.get("type") == "Ready"
                    and condition.get("reason") == Reason.INVALID_SPEC
                    and message.startswith("spec.values")
                ):
                    refused.append(f"{namespace}/{env}: {message}")
        return Users(total, tuple(sorted(refused)))

    def owns(self, body: Declared) -> bool:
        return sharding.owns(self.ranges, target_of(body))

    def wants(self, body: dict[str, Any]) -> bool:
        """Whether this replica acts on the Environment (or did until now): only then is
        its spec worth parsing."""
        return self._acts_on(Declared.unparsed(body))

    def _acts_on(self, body: Declared) -> bool:
        return self.owns(body) or body.ident in self.engine.environments

    def seen(self, ident: Ident) -> Declared | None:
        """The Environment as last seen, parsed, if this replica keeps it so."""
        body = self.bodies.get(ident)
        return body if body is not None and body.is_parsed else None

    def keep(self, body: Declared) -> None:
        """Keeps the Environment: whole while this replica acts on it, else slim and packed."""
        ident = body.ident
        if self._acts_on(body):
            self.bodies[ident] = (body if body.is_parsed else Declared.of(body.body)).kept()
            self._packed.pop(ident, None)
            return
        if not body.is_slim:
            text = json.dumps(body.body, separators=(",", ":"))
            self._packed[ident] = zlib.compress(text.encode(), 1)
        self.bodies[ident] = body.slim()

    def whole(self, ident: Ident) -> Declared | None:
        """The Environment as last seen, parsed: unpacked when it was kept slim."""
        body = self.bodies.get(ident)
        if body is None or body.is_parsed:
            return body
        packed = self._packed.get(ident)
        return Declared.of(json.loads(zlib.decompress(packed))) if packed else None

    def _slim_the_others(self) -> None:
        for body in list(self.bodies.values()):
            if body.is_parsed and not self._acts_on(body):
                self.keep(body)

    async def environment_changed(self, body: Declared) -> None:
        meta = body.body["metadata"]
        ident = (meta["namespace"], meta["name"])
        previous = self.bodies.get(ident)
        if self.owns(body) and not body.is_parsed:
            body = Declared.of(body.body)  # the ranges moved since the handler looked
        if meta.get("deletionTimestamp"):
            self.bodies.pop(ident, None)
            self._packed.pop(ident, None)
        else:
            self.keep(body)
        if (
            previous is None
            or meta.get("deletionTimestamp")
            or target_of(previous) != target_of(body)
        ):
            # Only a new, gone or moved target changes what remember() works out (over every
            # Environment); status writes, most of the events, change none of it.
            self.remember()
        if self.owns(body) or ident in self.engine.environments:
            await self.engine.environment_changed(body)
        # The ranges may have moved while the engine worked (a rebalance, or fencing).
        environment = self.engine.environments.get(ident)
        if environment is not None and not self.owns(body):
            self.engine.forget(ident)
            if ident in self.bodies:
                self.keep(self.bodies[ident])
        elif environment is not None and environment.ledger.status.shard != self.replica:
            # Status names the replica that acts: one write when an Environment changes hands.
            ledger = environment.ledger
            ledger.status = ledger.status.model_copy(update={"shard": self.replica})
            await environment.status.flush()
        self._export()

    def environment_deleted(self, ident: Ident) -> None:
        self.bodies.pop(ident, None)
        self._packed.pop(ident, None)
        self.remember()
        self.engine.forget(ident)
        self._export()

    # -- what membership decides ------------------------------------------------

    def fence(self, *, reason: str = "lease_expired") -> None:
        """This replica's Lease is no longer valid (or it stops): stop acting on everything, now."""
        if self.ranges or self.engine.environments:
            log.info(
                "shard_fenced",
                replica=self.replica,
                reason=reason,
                environments=len(self.engine.environments),
            )
        self.ranges = ()
        self.remember()
        for task in list(self._background):
            task.cancel()  # first passes of Environments taken over, still running
        for ident in list(self.engine.environments):
            self.engine.forget(ident)
        self._slim_the_others()
        self._export()

    async def act_on(self, ranges: sharding.Ranges) -> None:
        """Acts on exactly these ranges from now on. What left is forgotten at once; the
        watches follow and what arrived gets its first pass in the background, so that
        the caller (membership, which must keep renewing) never waits for them."""
        # A call may reach this loop late (membership does not wait for a busy loop):
        # never more than the Lease claims now, and nothing once it is not valid.
        ranges = sharding.intersect(sharding.merge_ranges(ranges), self.claimed)
        if time.monotonic() >= self.valid_until:
            ranges = ()
        if ranges == self.ranges:
            return
        before, self.ranges = self.ranges, ranges
        self.remember()
        for ident in list(self.engine.environments):
            body = self.bodies.get(ident)
            if body is None or not self.owns(body):
                self.engine.forget(ident)
        self._slim_the_others()
        log.info(
            "shard_changed",
            replica=self.replica,
            ranges=len(ranges),
            share=round(sharding.size(ranges) / sharding.SPACE, 4),
            released=len(sharding.subtract(before, ranges)),
            environments=sum(1 for body in self.bodies.values() if self.owns(body)),
        )
        self._spawn(self._follow())
        self._export()

    async def _follow(self) -> None:
        """Moves the watches to the current ranges, then starts what arrived. One at a time:
        each run takes the ranges as they are then, so the last change wins."""
        async with self._following:
            ranges = self.ranges
            selector = sharding.selector(ranges)
            if selector and self.server_filters and isinstance(self.engine.watches, ShardedWatches):
                await self.engine.watches.rescope(selector)
            if ranges != self.ranges:
                return  # changed meanwhile: the run queued behind this one follows
            for ident, body in list(self.bodies.items()):
                if ident not in self.engine.environments and self.owns(body):
                    whole = self.whole(ident)
                    if whole is not None:
                        self._spawn(self.environment_changed(whole))

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _export(self) -> None:
        metrics.shard_environments.labels(self.replica).set(len(self.engine.environments))

    def close(self) -> None:
        for task in list(self._background):
            task.cancel()
