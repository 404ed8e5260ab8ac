"""The operator image that `make image` builds: its filesystem, and the operator running in it.

Opt-in: `make image` builds the image (hack/build-image.sh: debootstrap + buildah, about
3.5 minutes cold, about a minute warm) and then runs this module with
DRIFTGUARD_IMAGE_TESTS=1; a plain `make test` skips it, so the suite's time does not
depend on building an image. The image is read from the build's own buildah store. The
running test uses `buildah run` (chroot isolation, the host's network, the image's own
USER and environment) on a control plane of its own, so the session operator never
competes with the containerised one.
"""

import json
import os
import posixpath
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
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

from driftguard.controlplane import ControlPlane
from driftguard.controlplane.binaries import cache_root

IMAGE = os.environ.get("IMAGE", "localhost/driftguard:0.1.0")
UID = 65532
# Names of C/C++ compilers and linkers: none may be on the final image's PATH.
COMPILERS = {"cc", "gcc", "c++", "g++", "cpp", "clang", "clang++", "tcc", "ld", "as", "make"}

pytestmark = pytest.mark.skipif(
    os.environ.get("DRIFTGUARD_IMAGE_TESTS") != "1",
    reason="opt-in: `make image` builds the image and runs these tests",
)


class Buildah:
    """buildah on the private store of hack/build-image.sh."""

    def __init__(self) -> None:
        binary = shutil.which("buildah")
        if binary is None or os.geteuid() != 0:
            # Opted in: the build just ran, so a missing tool or root is a failure, not a skip.
            pytest.fail("the image tests need root and buildah (make image installs it)")
        store = cache_root() / "image"
        self.argv = [binary, "--root", str(store / "storage"), "--runroot", str(store / "run")]
        self.argv += ["--storage-driver", "vfs"]

    def __call__(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [*self.argv, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        assert done.returncode == 0, f"buildah {' '.join(args)}: {done.stderr.strip()}"
        return done.stdout.strip()


@pytest.fixture(scope="module")
def buildah() -> Buildah:
    tool = Buildah()
    tool("inspect", "--type", "image", IMAGE)  # fails, naming the image, when it was not built
    return tool


@pytest.fixture(scope="module")
def config(buildah: Buildah) -> dict[str, Any]:
    """The image's OCI config (Entrypoint, User, Env...)."""
    found: dict[str, Any] = json.loads(buildah("inspect", "--type", "image", IMAGE))
    result: dict[str, Any] = found["OCIv1"]["config"]
    return result


@pytest.fixture(scope="module")
def container(buildah: Buildah) -> Iterator[str]:
    """A working container of the image (its own copy of the filesystem)."""
    name = f"driftguard-test-{secrets.token_hex(4)}"
    buildah("from", "--pull=never", "--name", name, IMAGE)
    try:
        yield name
    finally:
        buildah("rm", name)


@pytest.fixture(scope="module")
def rootfs(buildah: Buildah, container: str) -> Iterator[Path]:
    """The image's root filesystem, mounted on the host."""
    path = Path(buildah("mount", container))
    try:
        yield path
    finally:
        buildah("umount", container)


def image_path(config: dict[str, Any]) -> list[str]:
    env = dict(entry.split("=", 1) for entry in config.get("Env", []))
    return env["PATH"].split(":")


def resolve(rootfs: Path, path: str) -> Path:
    """A path inside the image, symlinks followed inside the image (never onto the host)."""
    wanted = PurePosixPath(path)
    for _ in range(40):
        current = PurePosixPath("/")
        rest = wanted.parts[1:]
        for index, part in enumerate(rest):
            host = rootfs / (current / part).relative_to("/")
            if host.is_symlink():
                target = PurePosixPath(os.readlink(host))
                joined = (current / target).joinpath(*rest[index + 1 :])
                wanted = PurePosixPath(posixpath.normpath(joined))
                break
            current = current / part
        else:
            return rootfs / current.relative_to("/")
    raise AssertionError(f"symlink loop at {path}")


def test_entrypoint_is_driftguard_run_and_resolves(config: dict[str, Any], rootfs: Path) -> None:
    """The entrypoint is `driftguard run`, found on the image's PATH, and its interpreter exists."""
    assert config["Entrypoint"] == ["driftguard", "run"]
    found = [
        resolve(rootfs, f"{folder}/driftguard")
        for folder in image_path(config)
        if resolve(rootfs, f"{folder}/driftguard").is_file()
    ]
    assert found, f"driftguard on none of {image_path(config)}"
    script = found[0]
    assert os.access(script, os.X_OK)
    shebang = script.read_text().splitlines()[0]
    assert shebang.startswith("#!/"), shebang
    interpreter = resolve(rootfs, shebang[2:].split()[0])
    assert interpreter.is_file(), f"{shebang} does not resolve inside the image"
    assert interpreter.name.startswith("python3.11")


def test_user_is_non_root_with_a_passwd_entry(config: dict[str, Any], rootfs: Path) -> None:
    """The image runs as UID 65532, which /etc/passwd names (kopf asks getpass for a name)."""
    assert config["User"] == f"{UID}:{UID}"
    entries = [line.split(":") for line in (rootfs / "etc/passwd").read_text().splitlines()]
    assert [entry[0] for entry in entries if entry[2] == str(UID)] == ["driftguard"]


def test_has_no_compiler_and_no_installer(config: dict[str, Any], rootfs: Path) -> None:
    """No compiler, linker, pip or uv in the final image: only the runtime venv came across."""
    on_path = {
        entry.name
        for folder in image_path(config)
        if resolve(rootfs, folder).is_dir()
        for entry in resolve(rootfs, folder).iterdir()
    }
    assert on_path, "the image's PATH is empty"
    assert "python3" in on_path
    assert not on_path & COMPILERS, sorted(on_path & COMPILERS)
    assert not [name for name in on_path if name.endswith(("-gcc", "-g++", "-ld"))]
    assert not {"pip", "pip3", "uv"} & on_path
    assert not (rootfs / "opt/uv").exists()
    assert not (rootfs / "src").exists(), "the build's sources must stay in the builder"


def test_python_imports_driftguard_as_the_image_user(buildah: Buildah, container: str) -> None:
    """Inside the image, as its own user, python imports driftguard from the venv."""
    out = buildah(
        "run", "--isolation", "chroot", container, "--",
        "python3", "-c", "import os, driftguard.cli.main, kopf; print(os.getuid(), driftguard.__file__)",
    )  # fmt: skip
    assert out == f"{UID} /opt/driftguard/lib/python3.11/site-packages/driftguard/__init__.py"


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    """A control plane of this module's own: the containerised operator watches all of it."""
    control = start_control_plane()
    try:
        yield control
    finally:
        control.stop()


def test_containerised_operator_reverts_a_drift(
    buildah: Buildah,
    config: dict[str, Any],
    container: str,
    plane: ControlPlane,
    chart_rbac: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    """The image's entrypoint, as the chart's ServiceAccount, applies an Environment and reverts a patch."""
    admin = Kubectl(plane.kubeconfig)
    install_crd(admin)
    token_config = chart_kubeconfig(plane, admin, chart_rbac)
    # Self-contained (certificates inline) and readable by the image's UID.
    kubeconfig = tmp_path / "kubeconfig"
    flat = admin("config", "view", "--raw", "--flatten", "--minify", kubeconfig=token_config)
    kubeconfig.write_text(flat.stdout)
    kubeconfig.chmod(0o644)
    port = free_port()
    argv = [*buildah.argv, "run", "--isolation", "chroot"]
    argv += ["-v", f"{kubeconfig}:/tmp/kubeconfig:ro", "--env", "KUBECONFIG=/tmp/kubeconfig"]
    argv += [
        container,
        "--",
        *config["Entrypoint"],
        "--all-namespaces",
        "--metrics-port",
        str(port),
        "--metrics-insecure",
    ]
    log = tmp_path / "operator.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        namespace = f"img-{secrets.token_hex(4)}"
        admin("create", "namespace", namespace)
        apply(admin, environment("app", namespace, [configmap("settings", LEVEL="info")]))
        wait_condition(admin, "app", namespace, "InSync", "True", timeout=60)
        admin("patch", "configmap", "settings", "-n", namespace, "-p", '{"data":{"LEVEL":"debug"}}')
        wait_for(
            lambda: (
                admin.json("get", "configmap", "settings", "-n", namespace)["data"]
                == {"LEVEL": "info"}
            ),
            timeout=30,
            message="the containerised operator to revert the patch",
        )
        assert process.poll() is None, log.read_text()
        # buildah, its chroot runner and the operator share the session buildah run leads.
        assert _operator_uids(process.pid) == {str(UID)}
    finally:
        # The whole session buildah run started: buildah, its chroot runner and the operator.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _operator_uids(session: int) -> set[str]:
    """The real UIDs of the `driftguard run` processes in a session (buildah run's, here)."""
    uids: set[str] = set()
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            status = (proc / "status").read_text()
        except (OSError, ValueError):
            continue  # not a process, or gone meanwhile
        # Fields after the ")" that closes the command name: state, ppid, pgrp, session.
        if int(stat.rsplit(")", 1)[1].split()[3]) != session or b"run" not in argv:
            continue
        # The interpreter running the console script (argv[1]), or the script itself: not
        # buildah, whose own argv names `driftguard run` further on.
        if not any(arg.endswith(b"/driftguard") or arg == b"driftguard" for arg in argv[:2]):
            continue
        uids.add(next(x for x in status.splitlines() if x.startswith("Uid:")).split()[1])
    return uids
