"""Faults: etcd and kube-apiserver are SIGKILLed and started again under a running operator.

The module runs its own control plane, never the session's, because it kills components,
and one operator process for all its tests. Each outage lasts a few seconds on purpose;
afterwards the operator must log and restore every watch it lost, report its watches
healthy, stay live, and revert a manual change made as soon as the API server answers again.
"""

import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from envs import (
    Operator,
    apply,
    chart_kubeconfig,
    deployment,
    environment,
    free_port,
    install_crd,
    wait_condition,
)
from helpers import CHART, Kubectl, KubectlError, is_process_alive, start_control_plane, wait_for
from prometheus_client.parser import text_string_to_metric_families

from driftguard.controlplane import ControlPlane

ENV = "app"
# Long enough for every client to see refused connections and back off at least once.
OUTAGE_SECONDS = 3.0
REVERT_SECONDS = 20.0
# etcd first: with the API server up, a client's watch may outlive an etcd outage, so the
# milder fault's result is not hidden by whatever the API server's outage leaves broken.
FAULTS = ["etcd", "kube-apiserver"]
# Whether an outage must cost the operator its watches. Killing kube-apiserver cuts every
# connection. With etcd killed, the API server keeps its clients' watches open and resumes
# its own etcd watch (checked: a kubectl watch across a 3 s etcd outage stays open and then
# delivers the next change), so an operator that logs nothing is right; what must hold for
# both is that every watch it lost is restored.
LOSES_WATCHES = {"kube-apiserver": True, "etcd": False}
WATCH_EVENTS = {"watch_lost", "watch_restored"}
LIVENESS_GRACE_S = 3.0
# The kubelet asks this often (the chart's livenessProbe.periodSeconds): an answer older
# than that is one the kubelet would act on late.
PROBE_PERIOD_S = float(
    yaml.safe_load((CHART / "values.yaml").read_text())["livenessProbe"]["periodSeconds"]
)


@dataclass(frozen=True)
class Outage:
    """One component's kill and restart under the operator, and what the tests need of it."""

    component: str
    namespace: str
    log_offset: int  # the operator's log size just before the kill
    ready_again: float  # time.monotonic() when the API server's /readyz was ok again
    watches: dict[str, float]  # driftguard_watches by state just before the kill
    restarts: dict[str, float]  # driftguard_watch_restarts_total by kind just before the kill
    generation: int  # the Deployment's metadata.generation just before the kill
    writes: int  # the operator's writes to the namespace just before the kill
    fault_write: int  # the exit code of `kubectl scale` tried while the component was down


def new_namespace(admin: Kubectl) -> str:
    name = f"f-{secrets.token_hex(4)}"
    admin("create", "namespace", name)
    return name


def succeeds(admin: Kubectl, *args: str) -> bool:
    return admin(*args, check=False).returncode == 0


def replicas(admin: Kubectl, namespace: str) -> int:
    return int(admin.json("get", "deployment", "web", "-n", namespace)["spec"]["replicas"])


def scale(admin: Kubectl, namespace: str, count: int) -> None:
    """``kubectl scale``, retried while the API server still refuses (it may just be back)."""
    wait_for(
        lambda: succeeds(
            admin, "scale", "deployment", "web", f"--replicas={count}", "-n", namespace
        ),
        timeout=10,
        message=f"kubectl scale --replicas={count} in {namespace}",
    )


def log_events(operator: Operator, offset: int) -> list[dict[str, Any]]:
    """The operator's JSON log records written after ``offset`` bytes, in order."""
    with operator.log.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode("utf-8", errors="replace")
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a partial last line, or something not from structlog
        if isinstance(record, dict):
            records.append(record)
    return records


def watch_records(operator: Operator, offset: int) -> list[dict[str, Any]]:
    """The operator's watch_lost and watch_restored records after ``offset``, in order."""
    return [r for r in log_events(operator, offset) if r.get("event") in WATCH_EVENTS]


def samples(operator: Operator, name: str, label: str) -> dict[str, float]:
    """One metric's samples on /metrics, by the value of one label."""
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        sample.labels[label]: float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def watch_states(operator: Operator) -> dict[str, float]:
    """driftguard_watches by state, every state present."""
    found = samples(operator, "driftguard_watches", "state")
    return {state: found.get(state, 0.0) for state in ("healthy", "lost", "forbidden")}


def all_healthy(total: float) -> dict[str, float]:
    return {"healthy": total, "lost": 0.0, "forbidden": 0.0}


def settled(operator: Operator) -> dict[str, float] | None:
    """The watch states once none is lost or forbidden."""
    states = watch_states(operator)
    return states if states["lost"] == states["forbidden"] == 0 else None


def liveness_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    """This module's own control plane: its components get killed."""
    plane = start_control_plane()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def admin(plane: ControlPlane) -> Kubectl:
    """kubectl as admin on this module's control plane."""
    return Kubectl(plane.kubeconfig)


@pytest.fixture
def namespace(admin: Kubectl) -> Iterator[str]:
    """A fresh namespace on this module's control plane, deleted without waiting."""
    name = new_namespace(admin)
    yield name
    admin("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def liveness_url() -> str:
    return f"http://127.0.0.1:{free_port()}/healthz"


@pytest.fixture(scope="module")
def watcher(
    plane: ControlPlane,
    admin: Kubectl,
    chart_rbac: list[dict[str, Any]],
    liveness_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    """`driftguard run` with a liveness endpoint, on this module's plane, as the chart's SA."""
    install_crd(admin)
    kubeconfig = chart_kubeconfig(plane, admin, chart_rbac)
    log = tmp_path_factory.mktemp("faults-operator") / "operator.log"
    # A short grace, so that a lost watch fails the probe within the test's time.
    grace = ["--liveness-watch-grace", str(LIVENESS_GRACE_S)]
    handle = Operator(
        kubeconfig, log, plane.audit_log, extra_args=["--liveness", liveness_url, *grace]
    )
    try:
        handle.start()
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module", params=FAULTS)
def outage(
    request: pytest.FixtureRequest, plane: ControlPlane, admin: Kubectl, watcher: Operator
) -> Iterator[Outage]:
    """An Environment in sync, then its component SIGKILLed, down a while and started again.

    Its tests run in file order: the first, test_drift_after_outage_is_reverted, accounts
    for every write to the Deployment since the kill."""
    component: str = request.param
    namespace = new_namespace(admin)
    apply(admin, environment(ENV, namespace, [deployment()]))
    wait_condition(admin, ENV, namespace, "InSync", "True", reason="InSync", timeout=30)
    # The watch count holds still only once no namespace of an earlier test is going.
    wait_for(
        lambda: (
            not any(
                ns["status"].get("phase") == "Terminating"
                for ns in admin.json("get", "namespaces")["items"]
            )
        ),
        timeout=60,
        message="the earlier tests' namespaces to be gone",
    )
    watches = wait_for(lambda: settled(watcher), message="every watch healthy before the outage")
    restarts = samples(watcher, "driftguard_watch_restarts_total", "kind")
    generation = admin.json("get", "deployment", "web", "-n", namespace)["metadata"]["generation"]
    writes = len(watcher.writes(namespace))
    offset = watcher.log.stat().st_size
    plane.kill(component)
    began = time.monotonic()
    # A person's write while it is down: refused, and so nothing the operator may lose.
    argv = ("scale", "deployment", "web", "--replicas=7", "-n", namespace, "--request-timeout=1s")
    fault_write = admin(*argv, check=False).returncode
    # The one fixed wait: an outage of known length is what is being tested.
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - began)))
    plane.start_component(component)
    yield Outage(
        component,
        namespace,
        offset,
        time.monotonic(),
        watches,
        restarts,
        int(generation),
        writes,
        fault_write,
    )
    admin("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.mark.parametrize("component", ["etcd", "kube-apiserver"])
def test_killed_component_restarts_with_its_data(
    plane: ControlPlane, admin: Kubectl, namespace: str, component: str
) -> None:
    """A SIGKILLed component started again with the same command line serves the old objects."""
    admin("create", "configmap", "before", "-n", namespace, "--from-literal=key=value")
    old_pid = plane.pids[component]

    plane.kill(component)
    assert not is_process_alive(old_pid)
    down = admin("get", "configmap", "before", "-n", namespace, "--request-timeout=2s", check=False)
    assert down.returncode != 0, f"kubectl still worked with {component} killed"
    plane.start_component(component)

    assert plane.pids[component] != old_pid
    found = admin.json("get", "configmap", "before", "-n", namespace)
    assert found["data"] == {"key": "value"}
    admin("create", "configmap", "after", "-n", namespace)
    assert admin("get", "namespaces").returncode == 0
    plane.check()  # and no other component died meanwhile


def test_restarted_controller_manager_runs_controllers_again(
    plane: ControlPlane, admin: Kubectl
) -> None:
    """After a restart of kube-controller-manager, a new namespace gets its ServiceAccount."""
    plane.restart("kube-controller-manager")
    fresh = new_namespace(admin)
    try:
        wait_for(
            lambda: succeeds(admin, "get", "serviceaccount", "default", "-n", fresh),
            timeout=30,
            message=f"the default ServiceAccount in {fresh}",
        )
    finally:
        admin("delete", "namespace", fresh, "--wait=false", check=False)
    plane.check()


def test_drift_is_reverted_before_any_outage(
    admin: Kubectl, watcher: Operator, namespace: str
) -> None:
    """The control: with every component up, a manual scale is reverted to 2."""
    apply(admin, environment(ENV, namespace, [deployment()]))
    wait_condition(admin, ENV, namespace, "InSync", "True", reason="InSync", timeout=30)
    scale(admin, namespace, 5)
    wait_for(
        lambda: replicas(admin, namespace) == 2,
        timeout=REVERT_SECONDS,
        interval=0.1,
        retry_on=(KubectlError,),
        message="the scale to be reverted to 2",
    )


def test_drift_after_outage_is_reverted(admin: Kubectl, watcher: Operator, outage: Outage) -> None:
    """A manual scale made as soon as the API server is ready again is reverted to 2 in 20 s,
    by the operator's one write since the outage began."""
    scale(admin, outage.namespace, 5)
    wait_for(
        lambda: replicas(admin, outage.namespace) == 2,
        timeout=REVERT_SECONDS,
        interval=0.1,
        retry_on=(KubectlError,),
        message=f"the scale to be reverted to 2 after the {outage.component} outage",
    )
    seconds = time.monotonic() - outage.ready_again
    # Exactly what was stored is enforced: the write tried during the outage was refused and
    # stored nothing; the scale and its revert are the Deployment's only changes since, and
    # that revert is the operator's only write (nothing re-applied after its re-list).
    assert outage.fault_write != 0, f"a write was accepted with {outage.component} down"
    found = admin.json("get", "deployment", "web", "-n", outage.namespace)
    assert found["metadata"]["generation"] == outage.generation + 2
    assert len(watcher.writes(outage.namespace)) == outage.writes + 1
    print(
        f"\n{outage.component} down {OUTAGE_SECONDS:.0f}s: drift reverted {seconds:.2f}s"
        " after the API server was ready again"
    )


def test_operator_logs_watch_lost_then_restored(
    admin: Kubectl, watcher: Operator, outage: Outage
) -> None:
    """Each watch the outage cost is logged watch_lost once, then watch_restored with
    down_seconds, and counted once in driftguard_watch_restarts_total; killing the API
    server costs every watch, an etcd outage as many as the log and the counter agree on."""
    total = sum(outage.watches.values())
    # Settled only once every watch is healthy again and a later change went through them.
    wait_for(
        lambda: watch_states(watcher) == all_healthy(total),
        timeout=30,
        retry_on=(OSError,),
        message=f"every watch healthy after the {outage.component} outage",
    )
    scale(admin, outage.namespace, 6)
    wait_for(
        lambda: replicas(admin, outage.namespace) == 2,
        timeout=REVERT_SECONDS,
        retry_on=(KubectlError,),
        message="a change after the outage reverted",
    )

    records = watch_records(watcher, outage.log_offset)
    by_watch: dict[tuple[str, ...], list[str]] = {}
    for record in records:
        key = tuple(str(record.get(k)) for k in ("kind", "namespace", "selector", "identity"))
        by_watch.setdefault(key, []).append(record["event"])
    for key, names in by_watch.items():
        assert names == ["watch_lost", "watch_restored"], (key, names)
    restored = [record for record in records if record["event"] == "watch_restored"]
    for record in restored:
        assert isinstance(record.get("down_seconds"), int | float), record
        assert 0 <= record["down_seconds"] < 30, record
    counted = samples(watcher, "driftguard_watch_restarts_total", "kind")
    by_kind: dict[str, int] = {}
    for record in restored:
        by_kind[record["kind"]] = by_kind.get(record["kind"], 0) + 1
    for kind in {*counted, *outage.restarts}:
        increase = counted.get(kind, 0.0) - outage.restarts.get(kind, 0.0)
        assert increase == by_kind.get(kind, 0), (kind, increase, by_kind)
    if LOSES_WATCHES[outage.component]:
        assert len(by_watch) == total, (len(by_watch), total)
    else:
        assert len(by_watch) == 0, by_watch
    print(
        f"\n{outage.component}: {len(by_watch)} of {total:.0f} watches lost and restored,"
        f" down_seconds {[record['down_seconds'] for record in restored]}"
    )


def test_watches_report_healthy_after_outage(watcher: Operator, outage: Outage) -> None:
    """After the outage /metrics counts every watch it had healthy, none lost or forbidden."""
    total = sum(outage.watches.values())
    wait_for(
        lambda: watch_states(watcher) == all_healthy(total),
        timeout=30,
        retry_on=(OSError,),
        message=f"all {total:.0f} watches healthy after the {outage.component} outage",
    )


def test_liveness_answers_200_after_outage(
    watcher: Operator, liveness_url: str, outage: Outage
) -> None:
    """Once every watch is back after the outage, liveness answers 200 within a probe period."""
    total = sum(outage.watches.values())
    wait_for(
        lambda: watch_states(watcher) == all_healthy(total),
        timeout=30,
        retry_on=(OSError,),
        message=f"every watch healthy after the {outage.component} outage",
    )
    wait_for(
        lambda: liveness_status(liveness_url) == 200,
        timeout=PROBE_PERIOD_S,
        retry_on=(OSError,),
        message=f"liveness 200 within a probe period of the watches back ({outage.component})",
    )


def test_liveness_fails_while_a_watch_stays_down(
    plane: ControlPlane, admin: Kubectl, watcher: Operator, liveness_url: str
) -> None:
    """With the API server down longer than the grace, liveness answers 500 within a probe
    period of the grace running out; once the watches are back, 200 within a probe period."""
    namespace = new_namespace(admin)
    apply(admin, environment(ENV, namespace, [deployment()]))
    wait_condition(admin, ENV, namespace, "InSync", "True", reason="InSync", timeout=30)
    plane.kill("kube-apiserver")
    try:
        wait_for(
            lambda: watch_states(watcher)["lost"] > 0,
            timeout=10,
            message="the operator to notice its watches lost",
        )
        lost = time.monotonic()
        wait_for(
            lambda: liveness_status(liveness_url) == 500,
            timeout=LIVENESS_GRACE_S + PROBE_PERIOD_S,
            interval=0.2,
            retry_on=(OSError,),
            message="liveness 500 within a probe period of the grace running out",
        )
        failed = time.monotonic() - lost
    finally:
        plane.start_component("kube-apiserver")
    wait_for(
        lambda: settled(watcher),
        timeout=60,
        retry_on=(OSError,),
        message="every watch back",
    )
    back = time.monotonic()
    wait_for(
        lambda: liveness_status(liveness_url) == 200,
        timeout=PROBE_PERIOD_S,
        interval=0.2,
        retry_on=(OSError,),
        message="liveness 200 within a probe period of the watches back",
    )
    print(
        f"\nliveness 500 {failed:.1f}s after the watches were lost (grace {LIVENESS_GRACE_S:.0f}s),"
        f" 200 {time.monotonic() - back:.1f}s after they were back (probe period"
        f" {PROBE_PERIOD_S:.0f}s)"
    )
    admin("delete", "namespace", namespace, "--wait=false", check=False)
