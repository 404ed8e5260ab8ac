"""The probes the chart gives the kubelet, asked of a running operator.

The module runs its own control plane: the operator here must be the only one serving
its Environments, so that readiness is judged against first passes it alone makes. The
operator reaches the API server through a TCP relay (tcpproxy.py) the test can cut: the
watches then really go down, for this operator only.
"""

import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from envs import (
    apply,
    chart_kubeconfig,
    configmap,
    environment,
    free_port,
    install_crd,
    wait_condition,
)
from helpers import Kubectl, start_control_plane, wait_for
from tcpproxy import Proxy

from driftguard.controlplane import ControlPlane

ENVIRONMENTS = 12
GRACE_S = 2.0  # --liveness-watch-grace: short, so that a cut fails liveness within the test


def probe(port: int, path: str) -> int:
    """The status the probe server answers on a path (what the kubelet's httpGet sees)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class Run:
    """One `driftguard run` through the relay, with the chart's probe flags."""

    def __init__(self, kubeconfig: Path, log: Path) -> None:
        self.kubeconfig, self.log = kubeconfig, log
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = Path(sys.executable).parent / "driftguard"
        argv = [str(binary), "run", "--all-namespaces", "--metrics-port=0"]
        argv += [f"--liveness=http://127.0.0.1:{self.port}/healthz"]
        argv += ["--liveness-watch-grace", str(GRACE_S)]
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                argv,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
            )

    def answer(self, path: str) -> int | None:
        """The probe's status, or None while nothing listens yet."""
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"the operator exited:\n{self.log.read_text()[-3000:]}")
        try:
            return probe(self.port, path)
        except OSError:
            return None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=15)
            self.process = None


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    plane = start_control_plane()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def admin(plane: ControlPlane) -> Kubectl:
    return Kubectl(plane.kubeconfig)


@pytest.fixture(scope="module")
def proxy(plane: ControlPlane) -> Iterator[Proxy]:
    server = urlsplit(plane.server)
    relay = Proxy(server.hostname or "127.0.0.1", server.port or 443)
    relay.start()
    yield relay
    relay.cut()


@pytest.fixture(scope="module")
def relayed_kubeconfig(
    plane: ControlPlane, admin: Kubectl, chart_rbac: list[dict[str, Any]], proxy: Proxy
) -> Path:
    """The chart's ServiceAccount, reaching the API server through the relay."""
    install_crd(admin)
    config = yaml.safe_load(chart_kubeconfig(plane, admin, chart_rbac).read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    path = Path(plane.kubeconfig).parent / "relayed.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def namespace(admin: Kubectl) -> str:
    name = f"p-{secrets.token_hex(4)}"
    admin("create", "namespace", name)
    return name


@pytest.fixture(scope="module")
def run(relayed_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    handle = Run(relayed_kubeconfig, tmp_path_factory.mktemp("probes") / "operator.log")
    yield handle
    handle.stop()


def taken_up(admin: Kubectl, namespace: str) -> list[str]:
    """The Environments whose current generation has been through a pass."""
    listing = admin.json("get", "environments", "-n", namespace)
    return [
        item["metadata"]["name"]
        for item in listing["items"]
        if (item.get("status") or {}).get("observedGeneration") == item["metadata"]["generation"]
    ]


def test_ready_only_once_the_environments_at_start_are_taken_up(
    admin: Kubectl, namespace: str, run: Run
) -> None:
    """/readyz answers 503 from the start until every Environment there has had its first
    pass, and 200 from then on; /livez answers 200 all along."""
    for index in range(ENVIRONMENTS):
        name = f"e{index}"
        objects = [configmap(f"{name}-{part}", v=str(part)) for part in range(3)]
        apply(admin, environment(name, namespace, objects))
    assert taken_up(admin, namespace) == []  # nobody serves them yet
    run.start()
    answers: list[int] = []

    def ready() -> bool:
        status = run.answer("/readyz")
        if status is not None:
            answers.append(status)
        return status == 200

    began = time.monotonic()
    wait_for(ready, timeout=90, interval=0.02, message="/readyz to answer 200")
    print(f"ready {time.monotonic() - began:.2f}s after start, after {answers.count(503)} 503s")
    done = taken_up(admin, namespace)
    assert len(done) == ENVIRONMENTS, f"ready with only {sorted(done)} taken up"
    assert answers[0] == 503, answers[:5]
    assert set(answers) == {503, 200}
    assert run.answer("/livez") == 200
    assert run.answer("/healthz") == 200


def test_liveness_fails_soon_after_the_watches_are_cut(
    admin: Kubectl, namespace: str, run: Run, proxy: Proxy
) -> None:
    """Cut from the API server, /livez fails within the grace and a probe period (no cached
    answer), and answers 200 again once the watches are back."""
    if run.process is None:
        run.start()
    wait_for(lambda: run.answer("/readyz") == 200, timeout=90, message="the operator ready")
    wait_condition(admin, "e0", namespace, "InSync", "True", timeout=30)
    assert run.answer("/livez") == 200
    proxy.cut()
    cut = time.monotonic()
    try:
        wait_for(
            lambda: run.answer("/livez") == 500,
            timeout=GRACE_S + 20,
            interval=0.1,
            message="/livez to fail with the watches cut",
        )
        failed_after = time.monotonic() - cut
        print(f"/livez failed {failed_after:.2f}s after the cut (grace {GRACE_S}s)")
    finally:
        proxy.restore()
    # The watches go down at once (their connections closed); kopf's own endpoint would
    # have kept a healthy answer for 10 s more.
    assert GRACE_S <= failed_after < GRACE_S + 5, failed_after
    wait_for(
        lambda: run.answer("/livez") == 200,
        timeout=60,
        interval=0.2,
        message="/livez to answer 200 once the watches are back",
    )
