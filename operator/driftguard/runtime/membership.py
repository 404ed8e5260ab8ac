"""Membership from coordination.k8s.io Leases: one per replica, renewed, read by all.

Each replica holds one Lease in the operator's namespace, labelled for driftguard,
renewed every third of its duration, with the hash ranges it claims in an
annotation. Every second it lists the Leases: a replica whose renewTime plus duration
has passed is gone. From the live Leases and the namespaces in use each replica makes
the same plan (`sharding.plan`) and steps toward it (`sharding.step`): it releases
what it must give up before it writes its Lease, and takes a range only once no other
live Lease claims it and its own write of the claim succeeded.

Fencing: a replica acts only while its own Lease is valid, counted from the moment it
*sent* the last successful renew (never later than the renewTime others read). When
that runs out, or a renew fails until it does, it stops acting on everything at once
(`Shards.fence`) and comes back with no claims. Others take over only after the full
duration past the renewTime they read, so the two never overlap.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any, Protocol

from driftguard.core import sharding
from driftguard.core.declared import Declared
from driftguard.core.model import Resource
from driftguard.kube.client import KubeCluster
from driftguard.kube.cluster import ENVIRONMENTS
from driftguard.kube.errors import ApiError
from driftguard.runtime.engine import Engine
from driftguard.runtime.shards import ShardedWatches, Shards
from driftguard.runtime.subscriptions import NAMESPACES
from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)

LEASES = Resource("coordination.k8s.io", "v1", "Lease", "leases", namespaced=True)
LABEL = "driftguard.io/shard"
"""Labels the Leases of sharing replicas (value: "replica")."""
CLAIMS = "driftguard.io/shard-ranges"
"""The annotation with the hash ranges a replica claims (sharding.encode)."""
FIELD_MANAGER = "driftguard-membership"
SETTLE_TICKS = 2
"""Polls a new replica waits, holding its Lease with no claims, before it claims."""
MARGIN_S = 2.0
"""A replica stops acting up to this long (a fifth of the duration at most) before its
Lease runs out: fencing is a timer on an event loop, which a busy step delays."""


class LeaseApi(Protocol):
    """What membership needs of the API server (KubeCluster; a fake in unit tests)."""

    async def list_objects(
        self, resource: Resource, *, namespace: str | None = None, selector: str = ""
    ) -> tuple[list[dict[str, Any]], str]: ...

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create(
        self, resource: Resource, body: dict[str, Any], *, field_manager: str
    ) -> dict[str, Any]: ...

    async def replace(
        self, resource: Resource, body: dict[str, Any], *, field_manager: str
    ) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class Share(Protocol):
    """What membership drives (Shards; a fake in unit tests)."""

    replica: str

    @property
    def ranges(self) -> sharding.Ranges: ...

    def hashes(self) -> set[int]: ...

    def hold(self, until: float, claims: sharding.Ranges) -> None: ...

    async def act_on(self, ranges: sharding.Ranges) -> None: ...

    def fence(self, *, reason: str = ...) -> None: ...


def lease_name(replica: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", replica.lower()).strip("-")[:200]
    return f"driftguard-shard-{name or 'replica'}"


def _micro_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def member_of(lease: dict[str, Any]) -> sharding.Member | None:
    """A Lease as a member; None for one that is not a sharing replica's."""
    spec = lease.get("spec") or {}
    annotations = (lease.get("metadata") or {}).get("annotations") or {}
    try:
        return sharding.Member(
            replica=str(spec["holderIdentity"]),
            renewed=_seconds(str(spec["renewTime"])),
            duration=float(spec["leaseDurationSeconds"]),
            claims=sharding.decode(str(annotations.get(CLAIMS, ""))),
        )
    except (KeyError, TypeError, ValueError):
        return None


class Membership:
    """This replica's Lease, and what the Leases of all replicas say it may act on."""

    def __init__(
        self,
        cluster: LeaseApi,
        shards: Share,
        *,
        namespace: str,
        duration: float = 10.0,
        poll: float = 1.0,
    ) -> None:
        self.replica = shards.replica
        self.claims: sharding.Ranges = ()
        self._cluster = cluster
        self._shards = shards
        self._namespace = namespace
        self._duration = duration
        self._poll = min(poll, duration / 3)
        self._lease: dict[str, Any] | None = None
        self._valid_until = 0.0  # monotonic; 0: not valid
        self._renewed = 0.0  # monotonic, when the last successful renew was sent
        self._fence_timer: asyncio.TimerHandle | None = None
        self._members: dict[str, sharding.Member] = {}
        self._ticks = 0
        self._lapsed_until = 0.0  # monotonic: after a lapse, when the old Lease ran out
        # The act_on calls the acting loop has not done yet, oldest first.
        self._acting: list[tuple[sharding.Ranges, asyncio.Future[None]]] = []

    @property
    def is_valid(self) -> bool:
        return time.monotonic() < self._valid_until

    async def run(self) -> None:
        """Renews, reads the others and moves the shard; until cancelled."""
        log.info(
            "membership_started",
            replica=self.replica,
            lease=lease_name(self.replica),
            namespace=self._namespace,
            duration=self._duration,
        )
        while True:
            try:
                await self.tick()
            except ApiError as exc:
                log.warning("membership_unreadable", error=exc.describe())
            except Exception:  # a supervisor's edge: membership must keep running
                log.exception("membership_crashed")
            self._check()
            await asyncio.sleep(self._poll)

    async def tick(self) -> None:
        self._log_changes(await self._others())
        if time.monotonic() < self._lapsed_until:
            return  # fenced: the old Lease runs out before this replica comes back
        held = {replica: member.claims for replica, member in self._members.items()}
        held[self.replica] = self.claims if self.is_valid else ()
        planned = sharding.plan(held, self._shards.hashes(), held)
        step = sharding.step(self.replica, planned, held)
        # After a lapse others may hold this replica's old ranges: come back with none.
        # A new replica first only shows itself, so that replicas started together see
        # each other before the first of them claims everything.
        self._ticks += 1
        claims = step.claims if self.is_valid and self._ticks > SETTLE_TICKS else ()
        # Stop acting first: what this replica gives up is another's once written. If the
        # event loop that acts is too busy to confirm, keep claiming it for now.
        stop = sharding.intersect(self._shards.ranges, step.claims)
        if step.released and self.is_valid and not await self._act(stop):
            claims = self.claims
        is_due = time.monotonic() - self._renewed >= self._duration / 3
        if claims != self.claims or is_due or not self.is_valid:
            await self._renew(claims)
        if not self.is_valid:
            return
        if sharding.subtract(self.claims, self._shards.ranges):
            await self._confirm()
        if self.is_valid:
            await self._act(self.claims)

    async def _act(self, ranges: sharding.Ranges) -> bool:
        """Tells the acting loop its ranges; False if it has not done so within a poll.

        That loop may be busy for seconds (a takeover's passes): renewals must not wait
        for it, or a busy replica fences itself. The call is not withdrawn: the loop acts
        on it when it gets to it, in the order the calls were made.
        """
        ranges = sharding.merge_ranges(ranges)
        last = self._acting[-1] if self._acting else None
        if last is None and ranges == self._shards.ranges:
            # Acting on these already, and no call of ours still on the way (that one may
            # change them: a release waits for it): no need to wait for a busy loop.
            return True
        if last is not None and last[0] == ranges:
            acting = last[1]  # asked already: wait for that one, do not queue another
        else:
            acting = asyncio.ensure_future(self._shards.act_on(ranges))
            entry = (ranges, acting)
            self._acting.append(entry)
            acting.add_done_callback(lambda _: self._acting.remove(entry))
        done, _ = await asyncio.wait({acting}, timeout=self._poll)
        return bool(done)

    async def _confirm(self) -> None:
        """Reads the Leases again after writing a new claim, before acting on it.

        Two replicas whose plans briefly disagree could claim one range at once. Of two
        such writes, the second one's reader sees the first: that replica gives the range
        up, and if both see each other, both do, and the next plan decides.
        """
        others = await self._others()
        contested = sharding.intersect(
            self.claims, [r for member in others.values() for r in member.claims]
        )
        if contested:
            log.warning("shard_claim_contested", replica=self.replica, ranges=len(contested))
            await self._renew(sharding.subtract(self.claims, contested))

    async def _others(self) -> dict[str, sharding.Member]:
        """The other replicas whose Leases are valid now."""
        items, _ = await self._cluster.list_objects(
            LEASES, namespace=self._namespace, selector=f"{LABEL}=replica"
        )
        now = time.time()
        found = (member_of(item) for item in items)
        others = (m for m in found if m is not None and m.replica != self.replica)
        return sharding.live(others, now)

    def _log_changes(self, members: dict[str, sharding.Member]) -> None:
        for replica in sorted(set(members) - set(self._members)):
            log.info("replica_joined", replica=replica)
        for replica in sorted(set(self._members) - set(members)):
            log.info("replica_left", replica=replica)
        self._members = members

    async def _renew(self, claims: sharding.Ranges) -> None:
        sent, wall = time.monotonic(), time.time()
        body = self._body(claims, wall)
        try:
            if self._lease is None:
                self._lease = await self._cluster.get(
                    LEASES, self._namespace, lease_name(self.replica)
                )
                body = self._body(claims, wall)
            if self._lease is None:
                answer = await self._cluster.create(LEASES, body, field_manager=FIELD_MANAGER)
            else:
                answer = await self._cluster.replace(LEASES, body, field_manager=FIELD_MANAGER)
        except ApiError as exc:
            self._lease = None  # read it again: a conflict means someone else wrote it
            log.warning("lease_renew_failed", error=exc.describe())
            return
        self._lease = answer
        self.claims = sharding.merge_ranges(claims)
        self._renewed = sent
        self._valid_until = sent + self._duration - min(MARGIN_S, self._duration / 5)
        self._shards.hold(self._valid_until, self.claims)
        self._arm_fence()

    def _body(self, claims: sharding.Ranges, wall: float) -> dict[str, Any]:
        previous = self._lease or {}
        meta = previous.get("metadata") or {}
        spec = previous.get("spec") or {}
        is_new_term = not self.is_valid  # after a lapse, a new acquireTime
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": lease_name(self.replica),
                "namespace": self._namespace,
                "labels": {**(meta.get("labels") or {}), LABEL: "replica"},
                "annotations": {**(meta.get("annotations") or {}), CLAIMS: sharding.encode(claims)},
            },
            "spec": {
                "holderIdentity": self.replica,
                # Whole seconds, rounded up: others must never take over before this one fences.
                "leaseDurationSeconds": max(1, math.ceil(self._duration)),
                "renewTime": _micro_time(wall),
                "acquireTime": _micro_time(wall)
                if is_new_term or "acquireTime" not in spec
                else spec["acquireTime"],
                "leaseTransitions": int(spec.get("leaseTransitions", 0))
                + (1 if is_new_term else 0),
            },
        }
        if meta.get("resourceVersion"):
            body["metadata"]["resourceVersion"] = meta["resourceVersion"]
        return body

    def _arm_fence(self) -> None:
        if self._fence_timer is not None:
            self._fence_timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._valid_until - time.monotonic())
        self._fence_timer = loop.call_later(delay, self._check)

    def _check(self) -> None:
        """Fences the moment the Lease is no longer valid, whatever else is going on."""
        if self.is_valid or not (self.claims or self._shards.ranges):
            return
        log.warning("lease_expired", replica=self.replica)
        self.claims = ()
        self._lapsed_until = self._renewed + self._duration
        self._shards.hold(0.0, ())
        self._shards.fence()

    async def leave(self) -> None:
        """On a clean stop: stop acting, then give the Lease up so others take over at once."""
        self._shards.fence(reason="stopping")
        await self.release()

    async def release(self) -> None:
        """Gives the Lease up (expired at once); the caller has stopped acting already."""
        if self._fence_timer is not None:
            self._fence_timer.cancel()
        if self._lease is not None:
            body = self._body((), time.time())
            body["spec"]["renewTime"] = _micro_time(0.0)  # expired already: take it
            try:
                await self._cluster.replace(LEASES, body, field_manager=FIELD_MANAGER)
            except ApiError as exc:
                log.warning("lease_release_failed", error=exc.describe())
        await self._cluster.close()


class CrossLoop:
    """Shards as the membership thread sees them: calls go to the operator's event loop.

    Membership runs on its own thread and event loop, so that renewals keep their pace
    while the operator's loop is busy (first passes of thousands of objects stalled it for
    seconds, and replicas lost their shares to missed renewals). Reads are of values the
    operator's loop replaces whole (a tuple, a frozenset): atomic under the GIL.
    """

    def __init__(self, shards: Shards, main: asyncio.AbstractEventLoop) -> None:
        self.replica = shards.replica
        self._shards = shards
        self._main = main

    @property
    def ranges(self) -> sharding.Ranges:
        return self._shards.ranges

    def hashes(self) -> set[int]:
        return set(self._shards.hash_snapshot)

    def hold(self, until: float, claims: sharding.Ranges) -> None:
        self._shards.hold(until, claims)  # replaced whole: the write gate reads it at once

    async def act_on(self, ranges: sharding.Ranges) -> None:
        future = asyncio.run_coroutine_threadsafe(self._shards.act_on(ranges), self._main)
        await asyncio.wrap_future(future)

    def fence(self, *, reason: str = "lease_expired") -> None:
        self._main.call_soon_threadsafe(functools.partial(self._shards.fence, reason=reason))


class Keeper:
    """The membership thread: its own event loop, connections and Membership."""

    def __init__(self, shards: Shards, *, namespace: str, duration: float) -> None:
        self._shards = shards
        self._namespace = namespace
        self._duration = duration
        self._loop: asyncio.AbstractEventLoop | None = None
        self._member: Membership | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="membership", daemon=True)

    def start(self) -> None:
        self._main_loop = asyncio.get_running_loop()
        self._thread.start()

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        leases = await KubeCluster.connect(pool=2)
        share = CrossLoop(self._shards, self._main_loop)
        self._member = Membership(leases, share, namespace=self._namespace, duration=self._duration)
        self._task = asyncio.current_task()
        self._ready.set()
        try:
            await self._member.run()
        except asyncio.CancelledError:
            await self._member.release()

    async def leave(self) -> None:
        """Stops acting at once (on the operator's loop), then gives the Lease up."""
        self._shards.fence(reason="stopping")
        if self._loop is None or self._task is None:
            return
        self._loop.call_soon_threadsafe(self._task.cancel)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10.0)


async def start(
    cluster: KubeCluster, engine: Engine, *, replica: str, namespace: str, duration: float
) -> tuple[Shards, Keeper]:
    """Makes the engine share the work: its watches carry the shard, Environments go
    through Shards, and this replica's Lease is kept from now on."""
    probe = sharding.selector(sharding.EVERYTHING)
    try:
        # A built-in kind the operator may list: custom resources answer without shardInfo
        # (seen on v1.37.2), and there the engine's client-side routing filters anyway.
        filters = await cluster.filters_shards(NAMESPACES, probe)
    except ApiError as exc:
        log.warning("shard_probe_failed", error=exc.describe())
        filters = False
    if filters:
        engine.use_watches(ShardedWatches(cluster, engine, timing=engine.timing))
        log.info("shard_filtering", where="server", feature_gate="ShardedListAndWatch")
    else:
        log.warning(
            "shard_filtering",
            where="client",
            reason="the API server ignores shardSelector (feature gate ShardedListAndWatch "
            "off): every replica receives every managed object's events and drops those "
            "of Environments outside its share",
        )
    shards = Shards(engine, replica, server_filters=filters)
    # The namespaces in use before the first plan, so a new replica does not plan blind.
    try:
        items, _ = await cluster.list_objects(ENVIRONMENTS)
    except ApiError as exc:
        log.warning("environments_unlisted", error=exc.describe())
        items = []
    for item in items:  # no share yet: kept slim, parsed once this replica takes it
        shards.keep(Declared.unparsed(item))
    shards.remember()
    cluster.guard_writes(shards.allows)
    # Its own thread, loop and connections: a renewal must not wait for the engine's work.
    keeper = Keeper(shards, namespace=namespace, duration=duration)
    keeper.start()
    return shards, keeper
