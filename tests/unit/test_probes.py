"""probes.Probes: what /livez and /readyz answer, from the operator's state in memory."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest

from driftguard.kube.cluster import Resource
from driftguard.kube.watcher import Scope
from driftguard.runtime import probes

DEPLOYMENTS = Resource("apps", "v1", "Deployment", "deployments", namespaced=True)
SCOPE = Scope(DEPLOYMENTS, None, "app.kubernetes.io/managed-by=driftguard")


@dataclass
class FakeWatches:
    """The two questions probes ask of the watches, answered from fixed lists."""

    down: list[tuple[Scope, float]] = field(default_factory=list)
    ended: list[Scope] = field(default_factory=list)

    def lost_for(self, seconds: float) -> list[tuple[Scope, float]]:
        return [(scope, down) for scope, down in self.down if down > seconds]

    def dead(self) -> list[Scope]:
        return list(self.ended)


@dataclass
class FakeEngine:
    watches: FakeWatches = field(default_factory=FakeWatches)


@dataclass
class FakeLease:
    valid_until: float


def started(*, peering: bool = False, lease: FakeLease | None = None) -> probes.Probes:
    health = probes.Probes(watch_grace=120.0, peering=peering)
    health.started(FakeEngine(), lease=lease)  # type: ignore[arg-type]
    return health


def test_live_while_starting() -> None:
    """Before the engine exists liveness passes: the startup probe guards the start."""
    assert probes.Probes(watch_grace=1.0).liveness() == (True, "starting")


def test_not_ready_while_starting() -> None:
    """Before the engine exists the replica is not ready."""
    assert probes.Probes(watch_grace=1.0).readiness() == (False, "starting")


@pytest.mark.parametrize(
    ("watches", "expected"),
    [
        (FakeWatches(), (True, "ok")),
        (FakeWatches(down=[(SCOPE, 30.0)]), (True, "ok")),
        (FakeWatches(down=[(SCOPE, 130.0)]), (False, "Deployment watch down 130s")),
        (FakeWatches(ended=[SCOPE]), (False, "Deployment watch ended")),
    ],
    ids=["all-up", "down-within-grace", "down-past-grace", "loop-ended"],
)
def test_liveness(watches: FakeWatches, expected: tuple[bool, str]) -> None:
    """Liveness fails on a watch down past the grace or a supervising loop that ended."""
    health = probes.Probes(watch_grace=120.0)
    health.started(FakeEngine(watches))  # type: ignore[arg-type]
    assert health.liveness() == expected


def test_not_ready_until_listed() -> None:
    """Started but without the list of Environments, it is not ready."""
    assert started().readiness() == (False, "Environments not listed yet")


def test_ready_once_every_listed_environment_is_taken_up() -> None:
    """Ready only after each Environment there at start has been taken up."""
    health = started()
    health.expect([("a", "one"), ("b", "two")])
    health.taken_up(("a", "one"))
    assert health.readiness() == (False, "1 Environments not taken up yet")
    health.taken_up(("b", "two"))
    assert health.readiness() == (True, "ok")


def test_taken_up_before_the_list_counts() -> None:
    """An Environment kopf handed over before the list answered is not awaited again."""
    health = started()
    health.taken_up(("a", "one"))
    health.expect([("a", "one")])
    assert health.readiness() == (True, "ok")


def test_environment_gone_before_kopf_listed_it_is_not_awaited() -> None:
    """Listed again, an awaited Environment that no longer exists is dropped."""
    health = started()
    health.expect([("a", "one"), ("b", "two")])
    health.taken_up(("a", "one"))
    health.expect([("a", "one"), ("c", "new")])
    assert health.readiness() == (True, "ok")


def test_readiness_latches_after_start() -> None:
    """An Environment created after start does not make a ready replica unready."""
    health = started()
    health.expect([])
    health.expect([("z", "later")])
    assert health.readiness() == (True, "ok")


def test_no_environments_is_ready() -> None:
    """A cluster without Environments: ready as soon as the list answered."""
    health = started()
    health.expect([])
    assert health.readiness() == (True, "ok")


@pytest.mark.parametrize(
    ("standing_by", "expected"),
    [
        (None, (False, "peering role not known yet")),
        (True, (True, "standing by")),
        (False, (False, "1 Environments not taken up yet")),
    ],
    ids=["role-unknown", "standby-is-ready", "acting-waits-for-passes"],
)
def test_peering_readiness(standing_by: bool | None, expected: tuple[bool, str]) -> None:
    """Peering: a standby replica is ready; the acting one once its Environments are taken up."""
    health = started(peering=True)
    health.expect([("a", "one")])
    if standing_by is not None:
        health.role(standing_by=standing_by)
    assert health.readiness() == expected


def test_sharding_needs_a_valid_lease() -> None:
    """Sharding: with every Environment taken up, an expired Lease still makes it unready."""
    lease = FakeLease(valid_until=time.monotonic() + 60)
    health = started(lease=lease)
    health.expect([])
    assert health.readiness() == (True, "ok")
    lease.valid_until = time.monotonic() - 1
    assert health.readiness() == (False, "holds no valid Lease")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://0.0.0.0:8081/healthz", ("0.0.0.0", 8081, "/healthz")),
        ("http://127.0.0.1:9000", ("127.0.0.1", 9000, "/healthz")),
    ],
    ids=["chart-form", "no-path"],
)
def test_address(url: str, expected: tuple[str, int, str]) -> None:
    """--liveness URL gives the probe server's host, port and liveness path."""
    assert probes.address(url) == expected


@pytest.mark.parametrize("url", ["https://0.0.0.0:8081/healthz", "http://host/healthz"])
def test_address_refuses(url: str) -> None:
    """Only plain http with a port is accepted."""
    with pytest.raises(ValueError, match="expected"):
        probes.address(url)


async def test_the_list_at_start_asks_for_names_only() -> None:
    """The Environments at start are listed as metadata: their names are all it reads."""
    asked: list[dict[str, object]] = []

    class Lister:
        async def list_objects(self, resource: Resource, **options: object) -> tuple[list, str]:
            asked.append(options)
            return [{"metadata": {"namespace": "team-a", "name": "dev"}}], "1"

    health = started()
    health.list_at_start(Lister(), ())  # type: ignore[arg-type]
    await asyncio.sleep(0)
    health.taken_up(("team-a", "dev"))

    assert asked == [{"namespace": None, "metadata_only": True}]
    assert health.readiness() == (True, "ok")
    health.close()
