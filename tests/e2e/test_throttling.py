"""Faults that need a control plane of their own: throttling, an upgrade, two replicas.

The module's plane is squeezed (API Priority and Fairness objects that leave the operator's
ServiceAccount about three seats and answer 429 beyond them) and hosts operators that are
restarted and SIGKILLed, so it is never the session's. Every operator runs as the chart's
ServiceAccount with the chart's RBAC (peering enabled, a superset), one or two at a time.
The API server's audit log is the witness: it says who wrote what, when, and who got 429.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from envs import (
    MANAGED_RESOURCES,
    OPERATOR_SERVICEACCOUNT,
    OPERATOR_USER,
    Operator,
    chart_kubeconfig,
    configmap,
    deployment,
    environment,
    install_crd,
    wait_condition,
)
from helpers import CHART, Helm, Kubectl, audit_events, start_control_plane, wait_for
from prometheus_client.parser import text_string_to_metric_families

from driftguard.controlplane import ControlPlane

NAMESPACE = "squeezed"
PEERING = "driftguard"
LIFETIME_S = 10  # --peering-lifetime: a short one, so that a failover fits the test's time
WRITES = {"create", "update", "patch"}
NEW_VERSION = "0.1.1+upgrade"
# The operator's own ServiceAccount gets one priority level to itself, with few seats and
# no queue: past them the API server answers 429 at once, with Retry-After: 1. Admins
# (system:masters) are exempt, so kubectl stays usable.
SQUEEZE = [
    {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "PriorityLevelConfiguration",
        "metadata": {"name": "driftguard-squeeze"},
        "spec": {
            "type": "Limited",
            "limited": {
                "nominalConcurrencyShares": 1,
                "lendablePercent": 0,
                "limitResponse": {"type": "Reject"},
            },
        },
    },
    {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": "driftguard-squeeze"},
        "spec": {
            "priorityLevelConfiguration": {"name": "driftguard-squeeze"},
            "matchingPrecedence": 100,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [
                {
                    "subjects": [
                        {
                            "kind": "ServiceAccount",
                            "serviceAccount": {
                                "name": OPERATOR_SERVICEACCOUNT,
                                "namespace": "driftguard-system",
                            },
                        }
                    ],
                    "resourceRules": [
                        {
                            "verbs": ["*"],
                            "apiGroups": ["*"],
                            "resources": ["*"],
                            "namespaces": ["*"],
                            "clusterScope": True,
                        }
                    ],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                }
            ],
        },
    },
]


class Build(Operator):
    """`driftguard run` in a fresh process, optionally reporting another version."""

    def __init__(self, *args: Any, version: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.version = version

    def start(self) -> None:
        if self.version is None:
            super().start()
            return
        # The same code stamped with another version: what a new image would report.
        stamp = (
            f"import driftguard.runtime.daemon as d; d.VERSION = {self.version!r}; "
            "from driftguard.cli.main import main; raise SystemExit(main())"
        )
        argv = [sys.executable, "-c", stamp, "run", "--all-namespaces", "--metrics-insecure"]
        argv += ["--metrics-port", str(self.metrics_port), *self.extra_args]
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                argv,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
            )
        wait_for(self._is_up, timeout=30, message="the new build's /metrics endpoint")

    def _is_up(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"the operator exited:\n{self.log_text()[-3000:]}")
        try:
            self.metric("driftguard_reconcile_duration_seconds_count")
        except OSError:
            return False
        return True

    @property
    def agent(self) -> str:
        """What this process puts in its User-Agent: its pid names it as a peer."""
        assert self.process is not None
        return f"-{self.process.pid})"

    def records(self, event: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") == event:
                found.append(record)
        return found


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    """This module's control plane: it gets squeezed, and sees operators killed."""
    plane = start_control_plane()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def admin(plane: ControlPlane) -> Kubectl:
    return Kubectl(plane.kubeconfig)


@pytest.fixture(scope="module")
def peering_chart(helm: Helm) -> list[dict[str, Any]]:
    """The chart with two replicas and peering: its identity objects and ClusterKopfPeering."""
    values = {
        "fullnameOverride": OPERATOR_SERVICEACCOUNT,
        "rbac": {"managedResources": MANAGED_RESOURCES},
        "replicas": 2,
        "peering": {"enabled": True, "name": PEERING},
    }
    objects = helm.template(values, namespace="driftguard-system")
    kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
    return [obj for obj in objects if obj["kind"] in kinds]


@pytest.fixture(scope="module")
def kubeconfig(plane: ControlPlane, admin: Kubectl, peering_chart: list[dict[str, Any]]) -> Path:
    install_crd(admin)
    admin("apply", "--server-side", "-f", str(CHART / "crds" / "kopfpeerings.zalando.org.yaml"))
    wait_for(
        lambda: admin("get", "clusterkopfpeerings", check=False).returncode == 0,
        timeout=30,
        message="the ClusterKopfPeering API",
    )
    rbac = [obj for obj in peering_chart if obj["kind"] != "ClusterKopfPeering"]
    config = chart_kubeconfig(plane, admin, rbac)
    peering = [obj for obj in peering_chart if obj["kind"] == "ClusterKopfPeering"]
    assert [obj["metadata"]["name"] for obj in peering] == [PEERING]
    admin("apply", "-f", "-", input=yaml.safe_dump_all(peering))
    admin("create", "namespace", NAMESPACE)
    return config


def start(
    plane: ControlPlane,
    kubeconfig: Path,
    log_dir: Path,
    name: str,
    *args: str,
    version: str | None = None,
) -> Build:
    handle = Build(
        kubeconfig, log_dir / f"{name}.log", plane.audit_log, extra_args=args, version=version
    )
    handle.start()
    return handle


def apply_all(admin: Kubectl, manifests: list[dict[str, Any]]) -> None:
    admin("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(manifests))


def envs_in_sync(admin: Kubectl, names: list[str]) -> bool:
    listing = admin.json("get", "environments", "-n", NAMESPACE)
    states = {}
    for item in listing["items"]:
        conditions = (item.get("status") or {}).get("conditions") or []
        states[item["metadata"]["name"]] = any(
            c["type"] == "InSync" and c["status"] == "True" for c in conditions
        )
    return all(states.get(name) for name in names)


def operator_events(plane: ControlPlane, since: float) -> list[dict[str, Any]]:
    """The operator's requests completed after `since` (a time.time())."""
    return [
        event
        for event in audit_events(plane.audit_log, username=OPERATOR_USER)
        if epoch(event["stageTimestamp"]) >= since
    ]


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def is_write(event: dict[str, Any]) -> bool:
    uri = event.get("requestURI") or ""
    return event["verb"] in WRITES | {"delete"} and "dryRun" not in uri


def drift(admin: Kubectl, name: str, value: str) -> float:
    """A manual change of one ConfigMap; the time just before it was made (a revert can
    be written before kubectl has exited)."""
    patch = json.dumps({"data": {"v": value}})
    made = time.time()
    admin("patch", "cm", name, "-n", NAMESPACE, "--type=merge", "-p", patch)
    return made


def value(admin: Kubectl, name: str) -> str | None:
    found = admin.json("get", "cm", name, "-n", NAMESPACE)
    result: str | None = (found.get("data") or {}).get("v")
    return result


# -- upgrade ----------------------------------------------------------------------------


def test_restart_on_a_new_build_writes_nothing(
    plane: ControlPlane,
    admin: Kubectl,
    kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """50 Environments in sync; the operator stopped and a new build started: it writes no
    managed object and detects no drift, and every Environment stays in sync."""
    logs = tmp_path_factory.mktemp("upgrade")
    names = [f"up-{i:02d}" for i in range(50)]
    manifests = []
    for i, name in enumerate(names):
        objects = [configmap(f"{name}-a", v="1"), configmap(f"{name}-b", v="2")]
        if i % 5 == 0:  # Deployments too: the controller manager writes their status
            objects.append(deployment(f"{name}-web"))
        manifests.append(environment(name, NAMESPACE, objects))
    old = start(plane, kubeconfig, logs, "old")
    try:
        apply_all(admin, manifests)
        wait_for(lambda: envs_in_sync(admin, names), timeout=90, message="50 Environments InSync")
    finally:
        old.stop()
    restarted = time.time()

    new = start(plane, kubeconfig, logs, "new", version=NEW_VERSION)
    try:
        managed = 50 * 2 + 10
        wait_for(
            lambda: total(new, "driftguard_managed_resources") == managed,
            timeout=60,
            interval=0.2,
            retry_on=(OSError,),
            message=f"the new build to have checked all {managed} objects",
        )
        caught_up = time.time() - restarted
        quiet_until = time.time() + 3.0
        wait_for(lambda: time.time() > quiet_until, timeout=5, message="a quiet moment")
        drifted = total(new, "driftguard_drift_detected_total")
        reverted = total(new, "driftguard_drift_reverted_total")
        (started,) = new.records("operator_started")
    finally:
        new.stop()

    events = operator_events(plane, restarted)
    writes = [event for event in events if is_write(event)]
    managed_writes = [
        e for e in writes if e["objectRef"].get("resource") in ("configmaps", "deployments")
    ]
    status_writes = [e for e in writes if e["objectRef"].get("subresource") == "status"]
    other = [e for e in writes if e not in managed_writes and e not in status_writes]
    assert started["version"] == NEW_VERSION
    assert any(NEW_VERSION in (event.get("userAgent") or "") for event in events)
    assert managed_writes == [], [describe(e) for e in managed_writes[:10]]
    assert drifted == 0
    assert reverted == 0
    assert envs_in_sync(admin, names)
    detected = admin.json("get", "events", "-n", NAMESPACE, "--field-selector=reason=DriftDetected")
    assert detected["items"] == []
    reads = [e for e in events if e["verb"] in ("get", "list")]
    print(
        f"\nupgrade, 50 Environments / {managed} objects: new build caught up in"
        f" {caught_up:.1f}s; writes after the restart: {len(managed_writes)} managed,"
        f" {len(status_writes)} status, {len(other)} other"
        f" ({sorted({describe(e) for e in other})[:5]}); {len(reads)} reads"
    )


def total(handle: Operator, name: str) -> float:
    """The sum of a metric over all its label sets."""
    url = f"http://127.0.0.1:{handle.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def describe(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
    return f"{event['verb']} {ref.get('resource')}{sub} {event.get('userAgent', '')[:40]}"


# -- two replicas ---------------------------------------------------------------------


def test_second_replica_takes_over_after_sigkill(
    plane: ControlPlane,
    admin: Kubectl,
    kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Two replicas peer: only the first acts; SIGKILLed, the second takes over within the
    peering lifetime and reverts a change made meanwhile; each revert is written once."""
    logs = tmp_path_factory.mktemp("replicas")
    peering = ("--peering", PEERING, "--peering-lifetime", str(LIFETIME_S))
    first = start(plane, kubeconfig, logs, "first", *peering, "--priority", "200")
    second = start(plane, kubeconfig, logs, "second", *peering, "--priority", "100")
    first_agent, second_agent = first.agent, second.agent
    began = time.time()
    try:
        wait_for(
            lambda: second.records("standing_by"),
            timeout=LIFETIME_S + 10,
            message="the second replica standing by",
        )
        manifest = environment("pair", NAMESPACE, [configmap("pair-a", v="1")])
        apply_all(admin, [manifest])
        wait_condition(admin, "pair", NAMESPACE, "InSync", "True", timeout=30)
        before = drift(admin, "pair-a", "by-hand")
        wait_for(
            lambda: value(admin, "pair-a") == "1",
            timeout=20,
            message="the drift reverted while both replicas run",
        )

        first.process.kill()  # type: ignore[union-attr]
        killed = time.time()
        during = drift(admin, "pair-a", "meanwhile")
        wait_for(
            lambda: value(admin, "pair-a") == "1",
            timeout=LIFETIME_S + 20,
            interval=0.1,
            message="the second replica to revert the change made after the kill",
        )
        failover = time.time() - killed
    finally:
        second.stop()
        first.stop()

    events = operator_events(plane, began)
    writes = [
        e
        for e in events
        if is_write(e) and e["objectRef"].get("name") == "pair-a" and e["verb"] != "delete"
    ]
    by_first = [e for e in writes if first_agent in (e.get("userAgent") or "")]
    by_second = [e for e in writes if second_agent in (e.get("userAgent") or "")]
    assert len(by_first) + len(by_second) == len(writes), [describe(e) for e in writes]
    first_revert = [e for e in writes if before <= epoch(e["stageTimestamp"]) < killed]
    second_revert = [e for e in writes if epoch(e["stageTimestamp"]) >= during]
    assert len(first_revert) == 1, first_revert
    assert first_revert[0] in by_first
    assert len(second_revert) == 1, second_revert
    assert second_revert[0] in by_second
    second_before_kill = [
        e
        for e in events
        if is_write(e)
        and second_agent in (e.get("userAgent") or "")
        and epoch(e["stageTimestamp"]) < killed
        # Its keep-alive, and the SelfSubjectReview asking its own name: no state written.
        and e["objectRef"].get("resource") not in ("clusterkopfpeerings", "selfsubjectreviews")
    ]
    assert second_before_kill == [], [describe(e) for e in second_before_kill]
    assert failover < LIFETIME_S + 5, failover
    print(
        f"\ntwo replicas, peering lifetime {LIFETIME_S}s: the second reverted a change made"
        f" after the SIGKILL {failover:.1f}s later; reverts written once each"
        f" ({len(by_first)} by the first, {len(by_second)} by the second)"
    )


# -- throttling -------------------------------------------------------------------------


@pytest.fixture
def squeeze(admin: Kubectl) -> Iterator[None]:
    """API Priority and Fairness leaves the operator's ServiceAccount a few seats."""
    admin("apply", "-f", "-", input=yaml.safe_dump_all(SQUEEZE))
    yield
    admin("delete", "flowschema,prioritylevelconfiguration", "driftguard-squeeze", check=False)


def test_throttled_operator_honours_retry_after_and_converges(
    plane: ControlPlane,
    admin: Kubectl,
    kubeconfig: Path,
    squeeze: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """20 Environments applied and drifted under 429s: every drift is reverted, every
    Environment in sync, each refused request retried no sooner than Retry-After, and the
    log has one line per throttling episode, not one per 429."""
    logs = tmp_path_factory.mktemp("throttled")
    names = [f"thr-{i:02d}" for i in range(20)]
    objects = {name: [configmap(f"{name}-{j}", v=str(j)) for j in range(5)] for name in names}
    handle = start(plane, kubeconfig, logs, "throttled")
    began = time.time()
    try:
        apply_all(admin, [environment(name, NAMESPACE, objects[name]) for name in names])
        wait_for(lambda: envs_in_sync(admin, names), timeout=90, message="20 Environments InSync")
        applied = time.time() - began
        # One manual change in each Environment, all at once (kubectl as admin is exempt).
        drifted_at = time.time()
        hand = [configmap(f"{name}-0", v="by-hand") for name in names]
        for manifest in hand:
            manifest["metadata"]["namespace"] = NAMESPACE
        argv = ("apply", "--server-side", "--force-conflicts", "--field-manager=intruder")
        admin(*argv, "-f", "-", input=yaml.safe_dump_all(hand))
        wait_for(
            lambda: all(value(admin, f"{name}-0") == "0" for name in names),
            timeout=60,
            interval=0.2,
            message="the 20 manual changes reverted",
        )
        reverted = time.time() - drifted_at
        wait_for(lambda: envs_in_sync(admin, names), timeout=30, message="20 Environments InSync")
        wait_for(
            lambda: len(handle.records("throttle_cleared")) >= len(handle.records("throttled")),
            timeout=30,
            message="the last throttling episode to end",
        )
    finally:
        handle.stop()

    events = operator_events(plane, began)
    refused = [e for e in events if (e.get("responseStatus") or {}).get("code") == 429]
    ours = [e for e in refused if "driftguard/" in (e.get("userAgent") or "")]
    throttled, cleared = handle.records("throttled"), handle.records("throttle_cleared")
    counted = sum(int(record["attempts"]) for record in cleared)
    early, retried = too_soon(events, ours)
    assert ours, "the operator was never throttled: the squeeze does not bite"
    assert len(throttled) == len(cleared) >= 1
    assert len(throttled) < len(ours) / 3, (len(throttled), len(ours))
    assert counted >= len(ours) * 0.9, (counted, len(ours))  # all of them, bar the audit's lag
    assert retried > 0
    assert early == [], early[:5]
    drifted = [name for name in names for j in range(5) if value(admin, f"{name}-{j}") != str(j)]
    assert drifted == []
    print(
        f"\nthrottled: {len(refused)} 429s in all ({len(ours)} to driftguard's requests);"
        f" {len(throttled)} throttled / {len(cleared)} throttle_cleared log lines"
        f" (attempts {[r['attempts'] for r in cleared]}, seconds"
        f" {[r['seconds'] for r in cleared]}); 20 Environments InSync {applied:.1f}s after"
        f" the apply, 20 drifts reverted in {reverted:.1f}s; {retried} refused requests for one"
        " object retried, none sooner than Retry-After"
    )


def too_soon(events: list[dict[str, Any]], refused: list[dict[str, Any]]) -> tuple[list[str], int]:
    """Requests for one object sent again, by the same client, sooner than 1 s (Retry-After)
    after a 429; and how many were sent again at all.

    Lists and watches are left out: the passes of several Environments list the same
    scope, so a second list of a URI need not be a retry of the first.
    """
    early, retried = [], 0
    for refusal in refused:
        if refusal["verb"] in ("list", "watch"):
            continue
        at = epoch(refusal["stageTimestamp"])
        key = (refusal["verb"], refusal["requestURI"], refusal.get("userAgent"))
        again = [
            epoch(e["requestReceivedTimestamp"])
            for e in events
            if (e["verb"], e["requestURI"], e.get("userAgent")) == key
            and epoch(e["requestReceivedTimestamp"]) > at
        ]
        retried += bool(again)
        if again and min(again) - at < 1.0:
            early.append(f"{key[0]} {key[1]} after {min(again) - at:.3f}s")
    return early, retried


def test_outranked_replica_stands_by(
    plane: ControlPlane,
    admin: Kubectl,
    kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A replica acting alone, outranked by a new one (a rollout), stops its own watches
    too: afterwards a change is reverted once, by the new replica only."""
    logs = tmp_path_factory.mktemp("rollout")
    peering = ("--peering", PEERING, "--peering-lifetime", str(LIFETIME_S))
    old = start(plane, kubeconfig, logs, "old", *peering, "--priority", "100")
    old_agent = old.agent
    try:
        apply_all(admin, [environment("roll", NAMESPACE, [configmap("roll-a", v="1")])])
        wait_condition(admin, "roll", NAMESPACE, "InSync", "True", timeout=30)
        new = start(plane, kubeconfig, logs, "new", *peering, "--priority", "200")
        arrived = time.time()
        try:
            new_agent = new.agent
            (stood,) = wait_for(
                lambda: old.records("standing_by"),
                timeout=LIFETIME_S + 10,
                message="the outranked replica standing by",
            )
            stood_by = time.time() - arrived
            made = drift(admin, "roll-a", "by-hand")
            wait_for(
                lambda: value(admin, "roll-a") == "1",
                timeout=20,
                interval=0.1,
                message="the new replica to revert the change",
            )
        finally:
            new.stop()
    finally:
        old.stop()

    writes = [
        e
        for e in operator_events(plane, made)
        if is_write(e) and e["objectRef"].get("name") == "roll-a"
    ]
    assert stood["environments"] >= 1
    assert len(writes) == 1, [describe(e) for e in writes]
    assert new_agent in writes[0]["userAgent"]
    assert old_agent not in writes[0]["userAgent"]
    print(
        f"\nrollout: the outranked replica stood by {stood_by:.1f}s after the new one started"
        f" ({stood['environments']} Environments let go); the change was reverted once, by"
        " the new replica"
    )
