"""Membership over a fake Lease store: replicas converge, and never act on one range at once."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from driftguard.core import sharding
from driftguard.core.model import Resource
from driftguard.kube.errors import ApiError
from driftguard.runtime import membership

DURATION = 1.0  # whole seconds, as a Lease holds them
POLL = 0.05
LATENCY = 0.01
HASHES = {sharding.fnv64a(f"team-{i}") for i in range(12)}


class FakeLeases:
    """Leases by name, with resourceVersions; writes of a replica in `broken` fail (503)."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.broken: set[str] = set()
        self._version = 0

    async def list_objects(
        self, resource: Resource, *, namespace: str | None = None, selector: str = ""
    ) -> tuple[list[dict[str, Any]], str]:
        await asyncio.sleep(LATENCY)  # others run meanwhile: what is read may be stale
        return [copy.deepcopy(lease) for lease in self.leases.values()], str(self._version)

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.leases.get(name)
        return copy.deepcopy(found) if found else None

    async def create(
        self, resource: Resource, body: dict[str, Any], *, field_manager: str
    ) -> dict[str, Any]:
        if body["metadata"]["name"] in self.leases:
            raise ApiError(409, "AlreadyExists", "exists")
        return await self._store(body)

    async def replace(
        self, resource: Resource, body: dict[str, Any], *, field_manager: str
    ) -> dict[str, Any]:
        current = self.leases.get(body["metadata"]["name"])
        if current is None or current["metadata"]["resourceVersion"] != body["metadata"].get(
            "resourceVersion"
        ):
            raise ApiError(409, "Conflict", "changed")
        return await self._store(body)

    async def close(self) -> None:
        pass

    async def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(LATENCY)
        if body["spec"]["holderIdentity"] in self.broken:
            raise ApiError(503, "ServiceUnavailable", "down")
        self._version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self._version)
        self.leases[body["metadata"]["name"]] = stored
        return copy.deepcopy(stored)


class FakeShare:
    """Records what membership tells one replica to act on."""

    def __init__(self, replica: str, hashes: set[int] = HASHES) -> None:
        self.replica = replica
        self.ranges: sharding.Ranges = ()
        self.fenced = 0
        self.seen = hashes
        self.busy_until = 0.0  # the acting loop busy with passes: act_on waits till then

    def hashes(self) -> set[int]:
        return self.seen

    def hold(self, until: float, claims: sharding.Ranges) -> None:
        self.valid_until, self.claimed = until, claims

    async def act_on(self, ranges: sharding.Ranges) -> None:
        await asyncio.sleep(max(0.0, self.busy_until - asyncio.get_running_loop().time()))
        self.ranges = sharding.merge_ranges(ranges)

    def fence(self, *, reason: str = "lease_expired") -> None:
        self.ranges = ()
        self.fenced += 1


class Fleet:
    def __init__(self, store: FakeLeases) -> None:
        self.store = store
        self.shares: dict[str, FakeShare] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.overlaps: list[str] = []

    def start(self, replica: str, hashes: set[int] = HASHES) -> None:
        share = self.shares[replica] = FakeShare(replica, hashes)
        member = membership.Membership(
            self.store, share, namespace="ops", duration=DURATION, poll=POLL
        )
        self.tasks[replica] = asyncio.create_task(member.run())

    async def watch_for_overlaps(self) -> None:
        """Samples every few milliseconds: two replicas acting on one hash is the failure."""
        while True:
            acting = [share for share in self.shares.values() if share.ranges]
            for i, first in enumerate(acting):
                for second in acting[i + 1 :]:
                    if sharding.intersect(first.ranges, second.ranges):
                        self.overlaps.append(f"{first.replica} and {second.replica}")
            await asyncio.sleep(0.005)

    def covers_everything(self) -> bool:
        held = [r for share in self.shares.values() for r in share.ranges]
        return sharding.merge_ranges(held) == sharding.EVERYTHING

    def count(self, replica: str) -> int:
        return sum(sharding.contains(self.shares[replica].ranges, h) for h in HASHES)


async def until(check: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.fixture
def fleet() -> Fleet:
    return Fleet(FakeLeases())


async def _run(fleet: Fleet, scenario: Any) -> None:
    sampler = asyncio.create_task(fleet.watch_for_overlaps())
    try:
        await scenario()
    finally:
        sampler.cancel()
        for task in fleet.tasks.values():
            task.cancel()
    assert fleet.overlaps == []


def test_replicas_converge_to_balanced_disjoint_shares(fleet: Fleet) -> None:
    """Three replicas end up with 4 namespaces each, covering the whole hash space."""

    async def scenario() -> None:
        for replica in ("a", "b", "c"):
            fleet.start(replica)
        await until(
            lambda: fleet.covers_everything() and [fleet.count(r) for r in "abc"] == [4, 4, 4]
        )

    asyncio.run(_run(fleet, scenario))


def test_a_replica_that_cannot_renew_stops_before_the_other_takes_over(fleet: Fleet) -> None:
    """Renewals failing, a replica fences itself; the other takes its share only later, and
    the two never hold one hash at once (sampled throughout)."""

    async def scenario() -> None:
        fleet.start("a")
        fleet.start("b")
        await until(lambda: fleet.covers_everything() and fleet.count("a") == 6)
        fleet.store.broken.add("a")
        await until(lambda: fleet.shares["a"].fenced > 0)
        await until(lambda: fleet.count("b") == len(HASHES) and fleet.covers_everything())
        fleet.store.broken.clear()
        await until(lambda: fleet.count("a") == 6 and fleet.count("b") == 6)

    asyncio.run(_run(fleet, scenario))


def test_a_replica_whose_acting_loop_is_busy_keeps_its_lease(fleet: Fleet) -> None:
    """An act_on that takes longer than the Lease (the operator's loop busy with a
    takeover's passes) must not hold up renewals: the replica keeps its share, unfenced,
    and what it is asked to take while busy it takes once the loop answers."""

    async def scenario() -> None:
        fleet.start("a")
        await until(lambda: fleet.covers_everything())
        loop = asyncio.get_running_loop()
        fleet.shares["a"].busy_until = loop.time() + DURATION * 3
        fleet.start("b")  # "a" must give up half while busy: it can only once the loop is free
        await asyncio.sleep(DURATION * 2)  # twice the Lease: renewals went on meanwhile
        assert fleet.shares["a"].fenced == 0
        assert fleet.count("a") == len(HASHES)  # nothing given up before the loop confirms
        await until(lambda: fleet.count("a") == 6 and fleet.count("b") == 6)
        assert fleet.shares["a"].fenced == 0

    asyncio.run(_run(fleet, scenario))


def test_replicas_that_see_different_namespaces_never_overlap(fleet: Fleet) -> None:
    """While their views of the namespaces in use differ (an Environment not yet seen by
    all), their plans differ too; reading the Leases after each new claim keeps them apart,
    and once the views agree the shares cover everything again."""

    async def scenario() -> None:
        fleet.start("a")
        fleet.start("b", {sharding.fnv64a(f"other-{i}") for i in range(7)})
        fleet.start("c", set(list(HASHES)[:3]))
        await asyncio.sleep(1.0)
        for share in fleet.shares.values():
            share.seen = HASHES
        await until(lambda: fleet.covers_everything() and fleet.count("c") == 4)

    asyncio.run(_run(fleet, scenario))


def test_a_leaving_replica_hands_over_at_once(fleet: Fleet) -> None:
    """leave() fences and expires the Lease: the other takes over without waiting it out."""

    async def scenario() -> None:
        fleet.start("a")
        share = FakeShare("b")
        fleet.shares["b"] = share
        member = membership.Membership(fleet.store, share, namespace="ops", duration=30, poll=POLL)
        fleet.tasks["b"] = asyncio.create_task(member.run())
        await until(lambda: fleet.count("a") == 6 and fleet.count("b") == 6)
        fleet.tasks["b"].cancel()
        await member.leave()
        assert share.ranges == ()
        # Well before b's 30 s Lease would run out.
        await until(lambda: fleet.count("a") == len(HASHES), timeout=3)

    asyncio.run(_run(fleet, scenario))


@pytest.mark.parametrize(
    ("lease", "expected"),
    [
        ({}, None),
        ({"spec": {"holderIdentity": "a"}}, None),
        (
            {
                "metadata": {"annotations": {membership.CLAIMS: "0x00-0x10"}},
                "spec": {
                    "holderIdentity": "a",
                    "renewTime": "2026-11-26T12:00:00.000000Z",
                    "leaseDurationSeconds": 10,
                },
            },
            sharding.Member("a", 1795694400.0, 10.0, ((0, 16),)),
        ),
    ],
    ids=["empty", "no-renew-time", "complete"],
)
def test_member_of_reads_a_lease(lease: dict[str, Any], expected: sharding.Member | None) -> None:
    """A Lease without holder, renew time or duration is nobody's; claims come from the annotation."""
    assert membership.member_of(lease) == expected
