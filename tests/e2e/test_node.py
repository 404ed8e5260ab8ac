"""A real node: `helm install` runs the operator as a Pod, and its Environment's Deployment gets Pods.

Opt-in: `make node` builds the image (hack/build-image.sh), the kubelet and kube-scheduler
(hack/build-node.sh), and runs this module with DRIFTGUARD_NODE_TESTS=1; a plain `make test`
skips it. It needs root: hack/node.sh starts containerd, runc sandboxes with the bridge CNI
plugin and a kubelet (docs/node.md). Everything runs on a control plane of its own, so no
other test sees Pods that actually start.
"""

import base64
import json
import os
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import envs
import pytest
from envs import apply, environment, wait_condition
from helpers import CHART, HELM_VERSION, ROOT, Helm, Kubectl, cached_tool, start_control_plane
from helpers import wait_for as wait

from driftguard.controlplane import ControlPlane
from driftguard.controlplane.binaries import cache_root

NODE = "driftguard-node"
IMAGE = "localhost/driftguard:0.1.0"
PAUSE = "localhost/driftguard-pause:1"
ARCHIVE = cache_root() / "image" / "driftguard.oci.tar"
NODE_SH = ROOT / "hack" / "node.sh"
RELEASE, NAMESPACE = "dg", "driftguard-system"
TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount"

pytestmark = pytest.mark.skipif(
    os.environ.get("DRIFTGUARD_NODE_TESTS") != "1",
    reason="opt-in: `make node` starts containerd and a kubelet (root) and runs these tests",
)


class Node:
    """hack/node.sh's node on one control plane: its state directory and its kubelet's port."""

    def __init__(self, plane: ControlPlane, directory: Path) -> None:
        self.plane = plane
        self.directory = directory
        self.env = {
            **os.environ,
            "KUBECONFIG": str(plane.kubeconfig),
            "NODE_DIR": str(directory),
            "NODE_NAME": NODE,
            "KUBECTL": str(Kubectl(plane.kubeconfig).binary),
        }

    def __call__(self, *args: str, timeout: float = 300) -> None:
        done = subprocess.run(
            [str(NODE_SH), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"hack/node.sh {' '.join(args)}:\n{done.stderr[-3000:]}"

    def pid(self, container_id: str) -> int:
        """The host pid of a running container (containerd's task for the CRI's container id)."""
        sock = self.directory / "containerd" / "containerd.sock"
        argv = ["ctr", "--address", str(sock), "--namespace", "k8s.io", "tasks", "ls"]
        listing = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        for line in listing.splitlines()[1:]:
            task, pid, state = line.split()
            if task == container_id and state == "RUNNING":
                return int(pid)
        raise AssertionError(f"no running task {container_id} in:\n{listing}")

    @staticmethod
    def read(pid: int, path: str) -> str:
        """A file as the container sees it: in its mount namespace, where its symlinks resolve
        (through /proc/PID/root, the image's /var/run -> /run would lead to the host's /run)."""
        argv = ["nsenter", "--target", str(pid), "--mount", "cat", path]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    def kubelet_metrics(self, kubectl: Kubectl) -> str:
        """The kubelet's /metrics/probes, read as the admin (the kubelet authorizes by SubjectAccessReview)."""
        node = kubectl.json("get", "node", NODE)
        port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        # The kubelet serves with a certificate it signed itself, for its node name.
        context = ssl.create_default_context(
            cafile=str(self.directory / "kubelet" / "pki" / "kubelet.crt")
        )
        context.check_hostname = False
        layout = self.plane.directory / "pki"
        context.load_cert_chain(str(layout / "admin.crt"), str(layout / "admin.key"))
        with urllib.request.urlopen(
            f"https://127.0.0.1:{port}/metrics/probes", context=context
        ) as r:
            return str(r.read().decode())


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    if os.geteuid() != 0:
        # Opted in: a missing privilege is a failure, not a skip.
        pytest.fail("the node tests need root (containerd, cgroups, network namespaces)")
    if not ARCHIVE.is_file():
        pytest.fail(f"no image archive at {ARCHIVE}: run hack/build-image.sh (make node does)")
    # No kube-proxy: the API server reaches Services (the attribution webhook) through their
    # endpoints, the Pods' addresses on the node's bridge, as for aggregated APIs.
    plane = start_control_plane(apiserver_flags=["--enable-aggregator-routing=true"])
    handle = Node(plane, tmp_path_factory.mktemp("node") / "state")
    try:
        handle("start")
        handle("import", str(ARCHIVE))
        yield handle
    finally:
        try:
            handle("stop", timeout=120)
        finally:
            plane.stop()


@pytest.fixture(scope="module")
def kubectl(node: Node) -> Kubectl:
    return Kubectl(node.plane.kubeconfig)


@pytest.fixture(scope="module")
def release(node: Node, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The chart installed with its defaults but the local image; the name of its Pod."""
    helm = Helm(
        cached_tool("helm", HELM_VERSION, build_time="2 minutes"), tmp_path_factory.mktemp("helm")
    )
    helm(
        *("install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace"),
        *("--set", "image.repository=localhost/driftguard", "--set", "image.pullPolicy=Never"),
        f"--kubeconfig={node.plane.kubeconfig}",
    )
    selector = "app.kubernetes.io/name=driftguard"

    def ready_pod() -> str | None:
        for pod in kubectl.json("get", "pods", "-n", NAMESPACE, "-l", selector)["items"]:
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
            if conditions.get("Ready") == "True":
                return str(pod["metadata"]["name"])
        return None

    return wait(ready_pod, timeout=120, interval=0.5, message="the operator's Pod Ready")


def pause_deployment(name: str, *, replicas: int) -> dict[str, Any]:
    """A Deployment of the local pause image: the node has it, no registry is needed."""
    found = envs.deployment(name, image=PAUSE, replicas=replicas)
    (container,) = found["spec"]["template"]["spec"]["containers"]
    container["imagePullPolicy"] = "Never"
    return found


def probe_results(metrics: str, pod: str) -> dict[tuple[str, str], float]:
    """The kubelet's prober_probe_total for one Pod, by (probe type, result)."""
    found: dict[tuple[str, str], float] = {}
    for line in metrics.splitlines():
        if not line.startswith("prober_probe_total{") or f'pod="{pod}"' not in line:
            continue
        labels = dict(
            part.split("=", 1) for part in line[line.index("{") + 1 : line.index("}")].split(",")
        )
        key = (labels["probe_type"].strip('"'), labels["result"].strip('"'))
        found[key] = found.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def test_operator_runs_as_a_pod(node: Node, kubectl: Kubectl, release: str) -> None:
    """The chart's Pod is Running and Ready on the node, not restarted, every probe it declares passing."""
    pod = kubectl.json("get", "pod", release, "-n", NAMESPACE)
    assert pod["spec"]["nodeName"] == NODE
    assert pod["status"]["phase"] == "Running"
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] is True
    assert "running" in status["state"]
    assert status["image"] == IMAGE
    (spec,) = pod["spec"]["containers"]
    declared = {
        kind for kind in ("Liveness", "Readiness", "Startup") if f"{kind.lower()}Probe" in spec
    }
    assert "Liveness" in declared

    def every_probe_passed() -> dict[tuple[str, str], float] | None:
        results = probe_results(node.kubelet_metrics(kubectl), release)
        return results if all(results.get((k, "successful"), 0) >= 1 for k in declared) else None

    # The liveness probe starts after its initialDelaySeconds and runs every periodSeconds.
    delay = spec["livenessProbe"].get("initialDelaySeconds", 0)
    period = spec["livenessProbe"].get("periodSeconds", 10)
    results = wait(
        every_probe_passed,
        timeout=delay + 2 * period + 10,
        interval=1,
        message=f"a successful {declared} probe",
    )
    assert results.get(("Liveness", "failed"), 0) == 0, results
    status = kubectl.json("get", "pod", release, "-n", NAMESPACE)["status"]["containerStatuses"][0]
    assert status["restartCount"] == 0


def test_operator_pod_uses_its_projected_token(node: Node, kubectl: Kubectl, release: str) -> None:
    """In the container: in-cluster settings and the kubelet's Pod-bound token; the API server saw it."""
    pod = kubectl.json("get", "pod", release, "-n", NAMESPACE)
    (status,) = pod["status"]["containerStatuses"]
    pid = node.pid(status["containerID"].split("://", 1)[1])
    environ = dict(
        entry.split("=", 1)
        for entry in Path(f"/proc/{pid}/environ").read_text().split("\0")
        if "=" in entry
    )
    cluster_ip = kubectl.json("get", "service", "kubernetes", "-n", "default")["spec"]["clusterIP"]
    assert environ["KUBERNETES_SERVICE_HOST"] == cluster_ip
    assert environ["KUBERNETES_SERVICE_PORT"] == "443"
    assert "KUBECONFIG" not in environ
    claims = jwt_claims(node.read(pid, f"{TOKEN}/token"))
    account = f"system:serviceaccount:{NAMESPACE}:{pod['spec']['serviceAccountName']}"
    assert claims["sub"] == account
    assert claims["kubernetes.io"]["pod"]["name"] == release
    assert claims["kubernetes.io"]["node"]["name"] == NODE
    ca = (node.plane.directory / "pki" / "ca.crt").read_text()
    assert node.read(pid, f"{TOKEN}/ca.crt") == ca
    assert node.read(pid, f"{TOKEN}/namespace") == NAMESPACE

    def seen_from_the_pod() -> dict[str, Any] | None:
        for line in node.plane.audit_log.read_text().splitlines():
            event = json.loads(line)
            user = event["user"]
            if user["username"] == account and release in user.get("extra", {}).get(
                "authentication.kubernetes.io/pod-name", []
            ):
                return dict(user)
        return None

    user = wait(
        seen_from_the_pod, timeout=30, interval=0.5, message=f"a request by {account} from its Pod"
    )
    assert user["extra"]["authentication.kubernetes.io/node-name"] == [NODE]


def test_managed_deployment_gets_running_pods(node: Node, kubectl: Kubectl, release: str) -> None:
    """The operator in its Pod applies an Environment's Deployment, and the node runs its replicas."""
    kubectl("create", "namespace", "shop")
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "web", "image": PAUSE, "imagePullPolicy": "Never"}]
                },
            },
        },
    }
    apply(kubectl, environment("shop", "shop", [deployment]))
    wait_condition(kubectl, "shop", "shop", "InSync", "True", timeout=60)
    managed = kubectl.json("get", "deployment", "web", "-n", "shop")
    assert managed["metadata"]["labels"]["app"] == "web"

    def running() -> list[dict[str, Any]] | None:
        pods = kubectl.json("get", "pods", "-n", "shop", "-l", "app=web")["items"]
        up = [
            p
            for p in pods
            if p["status"].get("phase") == "Running"
            and all(c["ready"] for c in p["status"].get("containerStatuses", [{"ready": False}]))
        ]
        return up if len(up) == 2 else None

    pods = wait(running, timeout=60, interval=0.5, message="2 Running, Ready Pods of shop/web")
    assert {p["spec"]["nodeName"] for p in pods} == {NODE}
    assert len({p["status"]["podIP"] for p in pods}) == 2


def test_webhook_in_the_pod_names_who_scaled(node: Node, kubectl: Kubectl, release: str) -> None:
    """The API server calls the attribution webhook served by the Pod: a scale is put to its user."""
    kubectl("create", "namespace", "cafe")
    apply(kubectl, environment("cafe", "cafe", [pause_deployment("api", replicas=1)]))
    wait_condition(kubectl, "cafe", "cafe", "InSync", "True", timeout=60)
    kubectl("scale", "deployment", "api", "-n", "cafe", "--replicas=3")

    def drift() -> dict[str, Any] | None:
        found = envs.status(kubectl, "cafe", "cafe").get("lastDrift") or {}
        return dict(found) if found.get("changedByUser") else None

    last = wait(drift, timeout=60, interval=0.5, message="a drift put to a user on cafe/cafe")
    # The admin kubeconfig's client certificate: CN driftguard-admin.
    assert last["changedByUser"] == "driftguard-admin"
