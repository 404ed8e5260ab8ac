"""The operator image that `make test` (and `make image`) builds: its filesystem, and the
operator running in it the way a Pod runs it.

The build comes first (hack/build-image.sh, warm from its layer cache), so this is the
image of this checkout, the one users deploy. Its filesystem is read from the build's own
buildah store. Then tests/e2e/pod.py plays the kubelet: the chart is rendered with
`helm template`, its RBAC and Secrets applied to a control plane of this module's own, and
the Deployment's container started with runc on the image: the chart's args and env, its
UID and read-only root with an emptyDir /tmp, the ServiceAccount's token and CA mounted
where a Pod has them, KUBERNETES_SERVICE_HOST/PORT set and no kubeconfig anywhere; its
probes are asked as the kubelet asks them. The container shares the host's network, so
every port the chart's values name is moved to a free one first.
"""

import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from envs import apply, configmap, environment, free_port, install_crd, wait_condition
from helpers import CHART, Helm, Kubectl, audit_events, start_control_plane, wait_for
from images import Buildah, image_path, resolve
from pod import (
    SERVICEACCOUNT_DIR,
    Container,
    Pod,
    memory_bytes,
    oci_config,
    runc_for_this_process,
)

from driftguard.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
UID = VALUES["podSecurityContext"]["runAsUser"]  # the chart's, which the image must run as
RELEASE, NAMESPACE = "driftguard", "driftguard-system"
# Names of C/C++ compilers and linkers: none may be on the final image's PATH.
COMPILERS = {"cc", "gcc", "c++", "g++", "cpp", "clang", "clang++", "tcc", "ld", "as", "make"}
# What a kubelet would not get from the chart without more of a cluster than this one: the
# webhooks' Services have no endpoints here (no Pod network), so the API server is not
# told about them; the Deployment is what this module runs itself.
NOT_APPLIED = {"Deployment", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}


def test_entrypoint_is_driftguard_run_and_resolves(
    image_config: dict[str, Any], image_rootfs: Path
) -> None:
    """The entrypoint is `driftguard run`, found on the image's PATH, and its interpreter exists."""
    assert image_config["Entrypoint"] == ["driftguard", "run"]
    found = [
        resolve(image_rootfs, f"{folder}/driftguard")
        for folder in image_path(image_config)
        if resolve(image_rootfs, f"{folder}/driftguard").is_file()
    ]
    assert found, f"driftguard on none of {image_path(image_config)}"
    script = found[0]
    shebang = script.read_text().splitlines()[0]
    assert shebang.startswith("#!/"), shebang
    interpreter = resolve(image_rootfs, shebang[2:].split()[0])
    assert interpreter.is_file(), f"{shebang} does not resolve inside the image"
    assert interpreter.name.startswith("python3.11")


def test_user_is_the_charts_uid_with_a_passwd_entry(
    image_config: dict[str, Any], image_rootfs: Path
) -> None:
    """The image runs as the chart's UID (65532), which /etc/passwd names (kopf asks getpass)."""
    assert image_config["User"] == f"{UID}:{UID}"
    entries = [line.split(":") for line in (image_rootfs / "etc/passwd").read_text().splitlines()]
    assert [entry[0] for entry in entries if entry[2] == str(UID)] == ["driftguard"]


def test_has_no_compiler_and_no_installer(image_config: dict[str, Any], image_rootfs: Path) -> None:
    """No compiler, linker, pip or uv in the final image: only the runtime venv came across."""
    on_path = {
        entry.name
        for folder in image_path(image_config)
        if resolve(image_rootfs, folder).is_dir()
        for entry in resolve(image_rootfs, folder).iterdir()
    }
    assert "python3" in on_path
    assert not on_path & COMPILERS, sorted(on_path & COMPILERS)
    assert not [name for name in on_path if name.endswith(("-gcc", "-g++", "-ld"))]
    assert not {"pip", "pip3", "uv"} & on_path
    assert not (image_rootfs / "opt/uv").exists()
    assert not (image_rootfs / "src").exists(), "the build's sources must stay in the builder"


def test_image_carries_this_checkouts_code(image_rootfs: Path) -> None:
    """Every module of operator/driftguard is in the image as it is here: the image is not stale."""
    installed = image_rootfs / "opt/driftguard/lib/python3.11/site-packages/driftguard"
    source = ROOT / "operator" / "driftguard"
    ours = {p.relative_to(source): p.read_bytes() for p in source.rglob("*.py")}
    theirs = {p.relative_to(installed): p.read_bytes() for p in installed.rglob("*.py")}
    stale = sorted(
        str(path) for path in ours.keys() | theirs.keys() if ours.get(path) != theirs.get(path)
    )
    assert not stale, f"the image differs from this checkout in {stale[:10]}: run make image"


def test_python_imports_driftguard_as_the_image_user(
    buildah: Buildah, image_container: str
) -> None:
    """Inside the image, as its own user, python imports driftguard from the venv."""
    out = buildah(
        "run", "--isolation", "chroot", image_container, "--",
        "python3", "-c", "import os, driftguard.cli.main, kopf; print(os.getuid(), driftguard.__file__)",
    )  # fmt: skip
    assert out == f"{UID} /opt/driftguard/lib/python3.11/site-packages/driftguard/__init__.py"


# -- the image run as the chart's Pod -----------------------------------------------------


def deployment_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (found,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(found)


def moved_ports(defaults: list[dict[str, Any]]) -> dict[str, Any]:
    """Values that move each port of the default container to a free one: every `...port` value
    of values.yaml equal to one of them (a Service's port that matches moves too, harmlessly)."""
    ports = {p["containerPort"] for p in deployment_container(defaults).get("ports", [])}
    free: dict[int, int] = {}
    for port in sorted(ports):
        while (candidate := free_port()) in free.values():
            pass
        free[port] = candidate

    def walk(node: dict[str, Any]) -> dict[str, Any]:
        moved: dict[str, Any] = {}
        for key, value in node.items():
            if isinstance(value, dict) and (inner := walk(value)):
                moved[key] = inner
            elif key.lower().endswith("port") and value in free:
                moved[key] = free[value]
        return moved

    return walk(VALUES)


@dataclass
class Running:
    """The chart's operator container, running, on its control plane."""

    plane: ControlPlane
    admin: Kubectl
    container: Container
    spec: dict[str, Any]
    user: str


def install_chart(admin: Kubectl, objects: list[dict[str, Any]], account: str) -> str:
    """What `helm install` would create, but the Deployment and webhooks; the operator's user."""
    install_crd(admin)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    rest = [o for o in objects if o["kind"] not in NOT_APPLIED]
    admin("apply", "-f", "-", input=yaml.safe_dump_all([namespace, *rest]))
    user = f"system:serviceaccount:{NAMESPACE}:{account}"
    can = ("auth", "can-i", "watch", "environments.driftguard.io", "-A", f"--as={user}")
    wait_for(
        lambda: admin(*can, check=False).stdout.strip() == "yes",
        timeout=30,
        message="the chart's RBAC to take effect",
    )
    # The controller manager publishes the cluster's CA in every namespace (kube-api-access).
    ca = ("get", "configmap", "kube-root-ca.crt", "-n", NAMESPACE)
    wait_for(
        lambda: admin(*ca, check=False).returncode == 0,
        timeout=30,
        message="the kube-root-ca.crt ConfigMap",
    )
    return user


@pytest.fixture(scope="module")
def running(
    buildah: Buildah,
    image_config: dict[str, Any],
    helm: Helm,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Running]:
    """The chart's Deployment container, run from the image as a kubelet would, on its own plane."""
    defaults = helm.template({}, namespace=NAMESPACE, release=RELEASE)
    objects = helm.template(moved_ports(defaults), namespace=NAMESPACE, release=RELEASE)
    spec = deployment_container(objects)
    before, after = (
        {p["containerPort"] for p in deployment_container(o).get("ports", [])}
        for o in (defaults, objects)
    )
    assert not before & after, f"a port kept its default: {before & after}"
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    work = tmp_path_factory.mktemp("pod")
    plane = start_control_plane()
    try:
        admin = Kubectl(plane.kubeconfig)
        user = install_chart(admin, objects, template["spec"]["serviceAccountName"])
        api = urlparse(plane.server)
        pod = Pod(
            name=f"{RELEASE}-{secrets.token_hex(3)}",
            namespace=NAMESPACE,
            admin=admin,
            api_host=str(api.hostname),
            api_port=int(api.port or 443),
            work=work,
            template=template,
            labels=template["metadata"].get("labels", {}),
        )
        with buildah.container() as (_, rootfs):
            bundle = work / "bundle"
            bundle.mkdir()
            config = oci_config(pod, spec, image_config, rootfs)
            (bundle / "config.json").write_text(json.dumps(config))
            name = f"driftguard-test-{secrets.token_hex(4)}"
            operator = Container(runc_for_this_process(), name, spec, work / "operator.log")
            operator.start(bundle)
            try:
                yield Running(plane, admin, operator, spec, user)
            finally:
                operator.stop(template["spec"].get("terminationGracePeriodSeconds", 30))
    finally:
        plane.stop()


def probe_until(running: Running, kind: str, budget: float) -> str:
    """Ask the probe, as often as every half second, until it passes; its last answer."""
    deadline = time.monotonic() + budget
    while True:
        passed, answer = running.container.probe(kind)
        if passed:
            return answer
        log = running.container.log.read_text()
        assert time.monotonic() < deadline, (
            f"the {kind} did not pass in {budget} s: {answer}\n{log}"
        )
        time.sleep(0.5)


def test_pod_answers_its_probes(running: Running) -> None:
    """The rendered Deployment's probes (startup first, if any) pass as the kubelet asks them."""
    kinds = [k for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in running.spec]
    assert "livenessProbe" in kinds, "the chart's container has no liveness probe"
    for kind in kinds:
        probe = running.spec[kind]
        budget = probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get(
            "failureThreshold", 3
        )
        answer = probe_until(running, kind, max(budget, 30))
        assert re.search(r": [23]\d\d$|: open$", answer), answer


def test_pod_runs_the_charts_args_as_its_uid_on_a_read_only_root(
    running: Running, image_config: dict[str, Any]
) -> None:
    """The chart's args run as UID/GID 65532 without privileges, on a read-only root, /tmp writable."""
    pid = running.container.pid
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    assert argv[-len(running.spec["args"]) :] == running.spec["args"]
    # The console script's interpreter, the script (the image's entrypoint), then its args.
    assert [Path(argv[1]).name, *argv[2:3]] == image_config["Entrypoint"]
    status = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    assert status["Uid"].split() == [str(UID)] * 4
    assert status["Gid"].split() == [str(UID)] * 4
    assert status["NoNewPrivs"] == "1"  # allowPrivilegeEscalation: false
    assert int(status["CapEff"], 16) == 0  # capabilities: drop ALL
    write = "import sys; open(sys.argv[1], 'w').write('x'); print('wrote')"
    for target, user in [("/opt/driftguard/probe", None), ("/etc/probe", "0:0")]:
        done = running.container.exec("python3", "-c", write, target, user=user)
        assert "Read-only file system" in done.stderr, (target, done.stdout, done.stderr)
    done = running.container.exec("python3", "-c", write, "/tmp/probe")
    assert done.stdout.strip() == "wrote", done.stderr


def test_pod_has_the_charts_memory_limit(running: Running) -> None:
    """The container's cgroup holds the memory limit of the chart's resources."""
    limit = memory_bytes(running.spec["resources"]["limits"]["memory"])
    cgroups = dict(
        line.split(":", 2)[1:]
        for line in Path(f"/proc/{running.container.pid}/cgroup").read_text().splitlines()
    )
    if "memory" in cgroups:  # cgroup v1
        path = Path("/sys/fs/cgroup/memory" + cgroups["memory"]) / "memory.limit_in_bytes"
    else:  # cgroup v2: one hierarchy
        path = Path("/sys/fs/cgroup" + cgroups[""]) / "memory.max"
    assert int(path.read_text()) == limit


def test_pod_has_its_serviceaccount_and_no_kubeconfig(running: Running) -> None:
    """Its one credential is the mounted token: no kubeconfig; every request is the ServiceAccount's."""
    pid = running.container.pid
    environ = dict(
        e.split("=", 1) for e in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if e
    )
    assert "KUBECONFIG" not in environ
    assert environ["KUBERNETES_SERVICE_HOST"] == urlparse(running.plane.server).hostname
    look = (
        "import json, os, pathlib, sys; d = pathlib.Path(sys.argv[1]); print(json.dumps(["
        "sorted(p.name for p in d.iterdir()), (d / 'namespace').read_text(),"
        " os.path.exists(os.path.expanduser('~/.kube')), os.environ.get('KUBECONFIG')]))"
    )
    done = running.container.exec("python3", "-c", look, SERVICEACCOUNT_DIR)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [["ca.crt", "namespace", "token"], NAMESPACE, False, None]
    ours = [
        e
        for e in audit_events(running.plane.audit_log)
        if e.get("userAgent", "").startswith("driftguard/")
    ]
    assert ours, "no request from the containerised operator reached the API server"
    assert {e["user"]["username"] for e in ours} == {running.user}


def test_pod_operator_reverts_a_drift(running: Running) -> None:
    """The containerised operator applies an Environment and reverts a kubectl patch of its object."""
    admin = running.admin
    namespace = f"img-{secrets.token_hex(4)}"
    admin("create", "namespace", namespace)
    apply(admin, environment("app", namespace, [configmap("settings", LEVEL="info")]))
    wait_condition(admin, "app", namespace, "InSync", "True", timeout=60)
    admin("patch", "configmap", "settings", "-n", namespace, "-p", '{"data":{"LEVEL":"debug"}}')
    wait_for(
        lambda: (
            admin.json("get", "configmap", "settings", "-n", namespace)["data"] == {"LEVEL": "info"}
        ),
        timeout=30,
        message="the containerised operator to revert the patch",
    )
    patches = [
        e["user"]["username"] for e in audit_events(running.plane.audit_log)
        if e["verb"] == "patch" and e.get("objectRef", {}).get("name") == "settings"
        and e.get("objectRef", {}).get("namespace") == namespace
    ]  # fmt: skip
    # The apply, the person's patch, then the revert: the last write is the ServiceAccount's.
    assert patches[0] == running.user
    assert patches[-1] == running.user
    assert "driftguard-admin" in patches[1:-1], patches  # the control plane's admin: the test
    assert running.container.process is not None
    assert running.container.process.poll() is None, running.container.log.read_text()
