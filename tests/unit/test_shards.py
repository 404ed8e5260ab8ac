"""Shards: which Environments a replica keeps, and what it tells about the others."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from driftguard.core import sharding
from driftguard.core.declared import Declared
from driftguard.runtime.blueprints import Users
from driftguard.runtime.shards import Shards, target_of


class FakeEngine:
    """The parts of the engine Shards touches."""

    def __init__(self) -> None:
        self.environments: dict[tuple[str, str], Any] = {}
        self.watches = None
        self.census: Any = None
        self.forgotten: list[tuple[str, str]] = []

    def count_users_with(self, census: Any) -> None:
        self.census = census

    async def environment_changed(self, body: Declared) -> None:
        self.environments[body.ident] = body

    def forget(self, ident: tuple[str, str]) -> None:
        self.forgotten.append(ident)
        self.environments.pop(ident, None)


def env(namespace: str, *, target: str = "", blueprint: str = "", refused: str = "") -> Any:
    spec: dict[str, Any] = {"targetNamespace": target} if target else {}
    if blueprint:
        spec["blueprintRef"] = {"name": blueprint}
    conditions = [{"type": "Ready", "reason": "InvalidSpec", "message": refused}] if refused else []
    return {
        "metadata": {"namespace": namespace, "name": "app"},
        "spec": spec,
        "status": {"conditions": conditions},
    }


def shards_of(*bodies: Any) -> Shards:
    shards = Shards(FakeEngine(), "r-1", server_filters=False)  # type: ignore[arg-type]
    for body in bodies:
        shards.bodies[(body["metadata"]["namespace"], "app")] = Declared.of(body)
    shards.remember()
    return shards


def test_the_target_namespace_decides_the_owner() -> None:
    """An Environment living in `ops` and writing into `team-a` goes with team-a's hash."""
    body = env("ops", target="team-a")
    shards = shards_of(body)
    assert target_of(Declared.of(body)) == "team-a"
    assert shards.hashes() == {sharding.fnv64a("team-a")}
    shards.ranges = ((sharding.fnv64a("team-a"), sharding.fnv64a("team-a") + 1),)
    assert shards.owns(Declared.of(body))
    assert not shards.owns(Declared.of(env("team-a", target="ops")))


def test_blueprint_users_are_counted_over_every_replicas_environments() -> None:
    """Every replica counts the same: all bodies, with the refusals their status shows."""
    shards = shards_of(
        env("a", blueprint="db"),
        env("b", blueprint="db", refused="spec.values.size: must be at most 10"),
        env("c", blueprint="web"),
        env("d"),
    )
    assert shards.engine.census == shards.count_users
    assert shards.count_users("db") == Users(2, ("b/app: spec.values.size: must be at most 10",))


def test_fencing_forgets_every_environment() -> None:
    """A fenced replica keeps no Environment and holds no range."""
    shards = shards_of(env("a"))
    shards.ranges = sharding.EVERYTHING
    shards.engine.environments[("a", "app")] = object()
    shards.fence()
    assert shards.ranges == ()
    assert shards.engine.environments == {}


def test_the_write_gate_closes_with_the_lease_and_outside_the_share() -> None:
    """Writes need a valid Lease, and go nowhere another replica's Environment targets."""
    mine, theirs = env("a"), env("b")
    shards = shards_of(mine, theirs)
    own = sharding.fnv64a("a")
    shards.ranges = ((own, own + 1),)
    shards.remember()
    assert not shards.allows("a", None)  # no Lease yet
    shards.hold(time.monotonic() + 60, sharding.EVERYTHING)
    assert shards.allows("a", None)
    assert shards.allows(None, ("a", "app"))
    assert shards.allows("unused-namespace", None)
    assert not shards.allows("b", None)
    assert not shards.allows(None, ("b", "app"))
    shards.hold(0.0, ())
    assert not shards.allows("a", None)


def test_a_late_act_on_acts_on_no_more_than_the_lease_claims() -> None:
    """Membership does not wait for a busy loop, so its calls may arrive late: one asking
    for more than the Lease now claims gets only the claimed part, and none after a fence."""
    shards = shards_of(env("a"), env("b"))
    only_a = ((sharding.fnv64a("a"), sharding.fnv64a("a") + 1),)

    async def scenario() -> None:
        shards.hold(time.monotonic() + 60, only_a)
        await shards.act_on(sharding.EVERYTHING)
        assert shards.ranges == only_a
        await asyncio.sleep(0.05)  # the Environments arrived follow in the background
        assert set(shards.engine.environments) == {("a", "app")}
        shards.hold(0.0, ())
        shards.fence()
        await shards.act_on(only_a)
        assert shards.ranges == ()
        assert shards.engine.environments == {}

    asyncio.run(scenario())


def test_another_replicas_environment_is_kept_slim_and_taken_over_whole() -> None:
    """An Environment outside the share is kept slim (its spec unparsed, its objects not
    held); taken over, the engine gets it whole and parsed; handed back, it is slim again."""
    body = env("b", target="team-b")
    body["metadata"]["uid"] = "u-1"
    body["spec"]["resources"] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}"}, "data": {}}
        for i in range(100)
    ]
    shards = Shards(FakeEngine(), "r-1", server_filters=False)  # type: ignore[arg-type]
    ident = ("b", "app")

    async def scenario() -> None:
        assert not shards.wants(body)
        await shards.environment_changed(Declared.unparsed(body))
        kept = shards.bodies[ident]
        assert kept.is_slim
        assert not kept.is_parsed
        assert "resources" not in kept.body["spec"]
        assert target_of(kept) == "team-b"
        assert shards.seen(ident) is None  # nothing parsed to reuse
        assert shards.engine.environments == {}

        shards.hold(time.monotonic() + 60, sharding.EVERYTHING)
        await shards.act_on(sharding.EVERYTHING)
        await asyncio.sleep(0.05)  # taken up in the background
        taken = shards.engine.environments[ident]
        assert taken.body == body
        assert taken.spec is not None
        assert len(taken.spec.resources) == 100
        assert shards.seen(ident) is taken

        shards.hold(time.monotonic() + 60, ())
        await shards.act_on(())
        assert shards.engine.environments == {}
        assert shards.bodies[ident].is_slim
        assert shards.whole(ident) == Declared.of(body)

    asyncio.run(scenario())


def test_a_slim_environment_still_counts_for_its_blueprint() -> None:
    """Blueprint users are counted over every replica's Environments, slim ones included."""
    shards = shards_of()
    shards.keep(Declared.unparsed(env("a", blueprint="web", refused="spec.values: bad")))
    assert shards.bodies[("a", "app")].is_slim
    assert shards.count_users("web") == Users(1, ("a/app: spec.values: bad",))
