"""Replicas share the work by Leases: assignment, rebalancing on join and leave, failover.

The module runs its own control plane with the feature gate ShardedListAndWatch on, and
up to four `driftguard run --shards-from-leases` processes as the chart's ServiceAccount
(the chart rendered with sharding.enabled, so its Lease Role is what they use). Each has
its own POD_ID, which the operator puts in its User-Agent: the API server's audit log
then says which replica made each write, and a namespace written by two replicas at once
would show there. Leases last 4 s here (10 s in the chart) to keep the module short.
"""

import itertools
import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from envs import (
    MANAGED_RESOURCES,
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICEACCOUNT,
    WRITES,
    Operator,
    apply,
    chart_kubeconfig,
    configmap,
    environment,
    install_crd,
    wait_condition,
)
from helpers import Helm, Kubectl, audit_events, start_control_plane, wait_for

from driftguard.controlplane import ControlPlane

LEASE_S = 4
ENVIRONMENTS = 9
FAILOVER_GOAL_S = 15.0
SHARD_KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "FlowSchema",
}


class Replica(Operator):
    """One sharing replica: its own POD_ID, hence its own Lease and User-Agent."""

    def __init__(self, replica: str, kubeconfig: Path, log: Path, audit_log: Path) -> None:
        args = ["--shards-from-leases", f"--lease-namespace={OPERATOR_NAMESPACE}"]
        args += [f"--lease-duration={LEASE_S}"]
        super().__init__(kubeconfig, log, audit_log, extra_args=args)
        self.replica = replica

    def start(self) -> None:
        os.environ["POD_ID"] = self.replica  # inherited by the process Operator.start spawns
        try:
            super().start()
        finally:
            del os.environ["POD_ID"]

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    """This module's own control plane, with server-side shard selectors."""
    plane = start_control_plane(feature_gates={"ShardedListAndWatch": True})
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def admin(plane: ControlPlane) -> Kubectl:
    return Kubectl(plane.kubeconfig)


@pytest.fixture(scope="module")
def kubeconfig(plane: ControlPlane, admin: Kubectl, helm: Helm) -> Path:
    """The chart's ServiceAccount with the chart's RBAC for sharding.enabled (Leases included)."""
    values = {
        "fullnameOverride": OPERATOR_SERVICEACCOUNT,
        "rbac": {"managedResources": MANAGED_RESOURCES},
        "sharding": {"enabled": True},
        "replicas": 3,
    }
    objects = helm.template(values, namespace=OPERATOR_NAMESPACE)
    rbac = [obj for obj in objects if obj["kind"] in SHARD_KINDS]
    assert any(obj["metadata"]["name"].endswith("-shards") for obj in rbac), rbac
    install_crd(admin)
    return chart_kubeconfig(plane, admin, rbac)


class Fleet:
    """The replicas of this module, by id."""

    def __init__(self, plane: ControlPlane, kubeconfig: Path, logs: Path) -> None:
        self._plane, self._kubeconfig, self._logs = plane, kubeconfig, logs
        self.replicas: dict[str, Replica] = {}

    def start(self, replica: str) -> Replica:
        handle = Replica(
            replica, self._kubeconfig, self._logs / f"{replica}.log", self._plane.audit_log
        )
        handle.start()
        self.replicas[replica] = handle
        return handle

    def stop_all(self) -> None:
        for handle in self.replicas.values():
            handle.stop()


@pytest.fixture(scope="module")
def fleet(
    plane: ControlPlane,
    kubeconfig: Path,
    targets: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    """Three replicas, started one after the other with the Environments already there."""
    fleet = Fleet(plane, kubeconfig, tmp_path_factory.mktemp("shards"))
    try:
        for replica in ("r-a", "r-b", "r-c"):
            fleet.start(replica)
        yield fleet
    finally:
        fleet.stop_all()


@pytest.fixture(scope="module")
def targets(admin: Kubectl, kubeconfig: Path) -> list[str]:
    """Nine namespaces, each with an Environment of one ConfigMap (before any replica runs)."""
    names = [f"s{i}-{secrets.token_hex(3)}" for i in range(ENVIRONMENTS)]
    for name in names:
        admin("create", "namespace", name)
        apply(admin, environment("app", name, [configmap("settings", level="1")]))
    return names


def shards(admin: Kubectl, names: list[str]) -> dict[str, str]:
    """status.shard of each namespace's Environment."""
    listing = admin.json("get", "environments", "-A")
    found = {
        item["metadata"]["namespace"]: (item.get("status") or {}).get("shard", "")
        for item in listing["items"]
    }
    return {name: found.get(name, "") for name in names}


def counts(fleet: Fleet) -> dict[str, int]:
    """driftguard_shard_environments of each running replica."""
    return {
        replica: int(handle.metric("driftguard_shard_environments", replica=replica))
        for replica, handle in fleet.replicas.items()
        if handle.process is not None
    }


def settle(admin: Kubectl, fleet: Fleet, names: list[str], expected: list[int]) -> dict[str, str]:
    """Waits until the replicas' shares have the expected sizes and status agrees."""

    def settled() -> dict[str, str] | None:
        running = counts(fleet)
        owners = shards(admin, names)
        by_status = {replica: list(owners.values()).count(replica) for replica in running}
        is_settled = sorted(running.values()) == expected and by_status == running
        return owners if is_settled else None

    result: dict[str, str] = wait_for(settled, timeout=45, message=f"shares of sizes {expected}")
    return result


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def writers(audit_log: Path, namespace: str, *, since: float = 0.0) -> list[tuple[float, str]]:
    """(time, replica) of every operator write to the ConfigMap or Environment of a namespace."""
    found = []
    for event in audit_events(audit_log):
        agent = str(event.get("userAgent") or "")
        ref = event.get("objectRef") or {}
        if not agent.startswith("driftguard/") or event.get("verb") not in WRITES:
            continue
        if ref.get("namespace") != namespace or ref.get("resource") not in (
            "configmaps",
            "environments",
        ):
            continue
        if str(ref.get("name", "")).endswith("-drift-audit") or "dryRun" in event["requestURI"]:
            continue
        stamp = _seconds(event["stageTimestamp"])
        if stamp >= since:
            found.append((stamp, agent.rsplit("(", 1)[-1].rstrip(")")))
    return sorted(found)


def _all_stages(audit_log: Path) -> list[dict[str, Any]]:
    """Every audit record: a watch still open has ResponseStarted but no ResponseComplete."""
    lines = audit_log.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def drift_and_revert(admin: Kubectl, names: list[str]) -> None:
    """A hand edit in each namespace, then each reverted."""
    for name in names:
        patch = json.dumps({"data": {"level": "hand-edit"}})
        admin("patch", "configmap", "settings", "-n", name, "--type=merge", "-p", patch)
    for name in names:
        wait_for(
            lambda n=name: (
                admin.json("get", "configmap", "settings", "-n", n)["data"]["level"] == "1"
            ),
            timeout=20,
            message=f"the hand edit in {name} reverted",
        )


def test_each_environment_has_exactly_one_replica(
    admin: Kubectl, fleet: Fleet, targets: list[str], plane: ControlPlane
) -> None:
    """Three replicas split nine Environments 3/3/3 and bring them InSync; a drift in each
    namespace is reverted by one replica only, the one its status names."""
    owners = settle(admin, fleet, targets, [3, 3, 3])
    for name in targets:
        wait_condition(admin, "app", name, "InSync", "True", timeout=30)
    since = time.time()
    drift_and_revert(admin, targets)
    for name in targets:
        reverts = {replica for _, replica in writers(plane.audit_log, name, since=since)}
        assert reverts == {owners[name]}, f"{name} written by {reverts}, status: {owners[name]}"


def test_watches_are_filtered_by_the_server(
    fleet: Fleet, targets: list[str], plane: ControlPlane
) -> None:
    """Each replica's ConfigMap watch carries its shard selector, and it says the server filters."""
    for replica, handle in fleet.replicas.items():
        assert '"where": "server"' in handle.log_text() or "where=server" in handle.log_text()
        watches = [
            event["requestURI"]
            for event in _all_stages(plane.audit_log)
            if f"({replica})" in str(event.get("userAgent"))
            and event.get("verb") == "watch"
            and (event.get("objectRef") or {}).get("resource") == "configmaps"
        ]
        assert watches, f"{replica} opened no ConfigMap watch"
        assert all("shardSelector=shardRange" in uri for uri in watches), watches


def test_a_joining_replica_takes_only_its_share(
    admin: Kubectl, fleet: Fleet, targets: list[str], plane: ControlPlane
) -> None:
    """A fourth replica takes two or three Environments; nothing moves between the others,
    and after the move each namespace still has one writer."""
    before = shards(admin, targets)
    fleet.start("r-d")
    after = settle(admin, fleet, targets, [2, 2, 2, 3])
    moved = {name for name in targets if before[name] != after[name]}
    assert moved, (before, after)
    assert all(after[name] == "r-d" for name in moved), (before, after)
    since = time.time()
    drift_and_revert(admin, targets)
    for name in targets:
        assert {r for _, r in writers(plane.audit_log, name, since=since)} == {after[name]}


def test_a_leaving_replica_hands_back_only_its_share(
    admin: Kubectl, fleet: Fleet, targets: list[str], plane: ControlPlane
) -> None:
    """A replica stopped cleanly gives its Lease up: its Environments, and only those, move."""
    before = shards(admin, targets)
    fleet.replicas["r-d"].stop()
    after = settle(admin, fleet, targets, [3, 3, 3])
    moved = {name for name in targets if before[name] != after[name]}
    assert moved == {name for name in targets if before[name] == "r-d"}
    since = time.time()
    drift_and_revert(admin, targets)
    for name in targets:
        assert {r for _, r in writers(plane.audit_log, name, since=since)} == {after[name]}


def test_failover_after_sigkill_without_double_writes(
    admin: Kubectl, fleet: Fleet, targets: list[str], plane: ControlPlane
) -> None:
    """SIGKILL one replica: within the goal its Environments are another's, InSync, and a drift
    in them is reverted; no namespace was written by two replicas after the kill."""
    before = settle(admin, fleet, targets, [3, 3, 3])
    orphaned = [name for name in targets if before[name] == "r-c"]
    killed_at = time.time()
    fleet.replicas["r-c"].kill()
    for name in orphaned:  # drift made while nobody acts on them
        patch = json.dumps({"data": {"level": "while-down"}})
        admin("patch", "configmap", "settings", "-n", name, "--type=merge", "-p", patch)

    def taken_over() -> bool:
        owners = shards(admin, orphaned)
        return all(owner not in ("", "r-c") for owner in owners.values()) and all(
            admin.json("get", "configmap", "settings", "-n", n)["data"]["level"] == "1"
            for n in orphaned
        )

    wait_for(taken_over, timeout=FAILOVER_GOAL_S + 10, message="r-c's share taken over")
    failover = time.time() - killed_at
    for name in orphaned:
        wait_condition(admin, "app", name, "InSync", "True", timeout=10)
    assert failover <= FAILOVER_GOAL_S, f"failover took {failover:.1f}s"
    after = shards(admin, targets)
    for name in targets:
        seen = {r for _, r in writers(plane.audit_log, name, since=killed_at)}
        assert seen <= {after[name]}, f"{name} written by {seen} after the kill"


def test_a_frozen_replica_stops_before_others_take_over(
    admin: Kubectl, fleet: Fleet, targets: list[str], plane: ControlPlane
) -> None:
    """A replica paused past its Lease (SIGSTOP) fences itself when it wakes: the drift made
    meanwhile is reverted by the replica that took over, and each namespace's writer changes
    at most once (to the owner the status names at the end), never back and forth."""
    before = settle(admin, fleet, targets, [4, 5])
    frozen = fleet.replicas["r-b"]
    mine = [name for name in targets if before[name] == "r-b"]
    frozen.signal(signal.SIGSTOP)
    stopped_at = time.time()
    try:
        for name in mine:
            patch = json.dumps({"data": {"level": "while-frozen"}})
            admin("patch", "configmap", "settings", "-n", name, "--type=merge", "-p", patch)
        wait_for(
            lambda: (
                all(owner == "r-a" for owner in shards(admin, mine).values())
                and all(
                    admin.json("get", "configmap", "settings", "-n", n)["data"]["level"] == "1"
                    for n in mine
                )
            ),
            timeout=LEASE_S + 20,
            message="r-b's share taken by r-a and its drift reverted",
        )
    finally:
        frozen.signal(signal.SIGCONT)
    wait_for(lambda: "lease_expired" in frozen.log_text(), timeout=10, message="r-b fenced")
    after = settle(admin, fleet, targets, [4, 5])
    drift_and_revert(admin, targets)
    for name in mine:
        sequence = [replica for _, replica in writers(plane.audit_log, name, since=stopped_at)]
        changes = [b for a, b in itertools.pairwise(sequence) if a != b]
        assert sequence, name
        assert sequence[0] == "r-a", sequence
        assert len(changes) <= 1, sequence
        assert sequence[-1] == after[name], sequence


def test_deletion_is_left_to_the_owner(
    admin: Kubectl, fleet: Fleet, targets: list[str], plane: ControlPlane
) -> None:
    """Every replica's kopf sees an Environment with deletionPolicy Delete go; only the replica
    whose share it is deletes its objects, and the Environment goes (finalizer removed)."""
    name = f"del-{secrets.token_hex(3)}"
    admin("create", "namespace", name)
    manifest = environment("app", name, [configmap("settings", level="1")])
    manifest["spec"]["deletionPolicy"] = "Delete"
    apply(admin, manifest)
    wait_condition(admin, "app", name, "InSync", "True", timeout=30)
    owner = wait_for(lambda: shards(admin, [name])[name], timeout=10, message="status.shard")
    admin("delete", "environment", "app", "-n", name, "--wait=false")
    wait_for(
        lambda: (
            admin("get", "environment", "app", "-n", name, check=False).returncode != 0
            and admin("get", "configmap", "settings", "-n", name, check=False).returncode != 0
        ),
        timeout=30,
        message="the Environment and its ConfigMap gone",
    )
    deletes = {
        r
        for _, r in writers(plane.audit_log, name)
        if r  # the ConfigMap's delete, by User-Agent
    }
    configmap_deletes = [
        str(event.get("userAgent"))
        for event in audit_events(plane.audit_log)
        if event.get("verb") == "delete"
        and (event.get("objectRef") or {}).get("namespace") == name
        and (event.get("objectRef") or {}).get("resource") == "configmaps"
        and "dryRun" not in event["requestURI"]
    ]
    assert configmap_deletes, "nobody deleted the ConfigMap"
    assert all(agent.endswith(f"({owner})") for agent in configmap_deletes), configmap_deletes
    assert deletes == {owner}, deletes
