"""The image that hack/build-image.sh built, for test_image.py and test_image_sbom.py.

`make test` (and `make image`) build it first, so these tests always run on the image of
this checkout. On a machine that cannot run them (not root, no buildah or runc) they fail
under CI=true and skip elsewhere, after the build script has said loudly why it built
nothing; an image that is missing or older than the checkout's code is a failure.
"""

import json
import os
import posixpath
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from driftguard.controlplane.binaries import cache_root

IMAGE = os.environ.get("IMAGE", "localhost/driftguard:0.1.0")
STORE = cache_root() / "image"
BUILD = "make image (hack/build-image.sh)"


def unable() -> str | None:
    """Why this machine cannot run the image tests, or None."""
    said = STORE / "unbuildable"  # the build script's reason, when it could not build
    if said.exists():
        return f"hack/build-image.sh could not build the image here: {said.read_text().strip()}"
    if os.geteuid() != 0:
        return "not root: buildah's store and runc need it"
    missing = [tool for tool in ("buildah", "runc") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} missing: {BUILD} installs them from the Debian archive"
    return None


class Buildah:
    """buildah on the private store of hack/build-image.sh."""

    def __init__(self) -> None:
        why = unable()
        if why is not None:
            message = f"the image tests cannot run here: {why}"
            if os.environ.get("CI") == "true":
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
        # The driver the build chose (overlay where the kernel allows it, else vfs).
        driver = (STORE / "driver").read_text().strip() if (STORE / "driver").exists() else "vfs"
        store = "storage" if driver == "vfs" else f"storage-{driver}"
        self.argv = [str(shutil.which("buildah")), "--root", str(STORE / store)]
        self.argv += ["--runroot", str(STORE / f"run-{driver}"), "--storage-driver", driver]

    def __call__(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [*self.argv, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        assert done.returncode == 0, f"buildah {' '.join(args)}: {done.stderr.strip()}"
        return done.stdout.strip()

    def image_config(self) -> dict[str, Any]:
        """The image's OCI config (Entrypoint, User, Env...); fails when it was not built."""
        done = subprocess.run(
            [*self.argv, "inspect", "--type", "image", IMAGE], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.fail(f"{IMAGE} is not in {STORE}: build it with {BUILD}", pytrace=False)
        config: dict[str, Any] = json.loads(done.stdout)["OCIv1"]["config"]
        return config

    @contextmanager
    def container(self) -> Iterator[tuple[str, Path]]:
        """A working container of the image (its own copy of the filesystem), mounted; those
        of test processes that were killed outright are removed first."""
        listed = self("containers", "--format", "{{.ContainerName}}")
        for other in listed.split():
            pid = other.split("-")[2] if other.startswith("driftguard-test-") else ""
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                self("rm", other)
        name = f"driftguard-test-{os.getpid()}-{secrets.token_hex(4)}"
        self("from", "--pull=never", "--name", name, IMAGE)
        try:
            yield name, Path(self("mount", name))
        finally:
            self("umount", name)
            self("rm", name)


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


def dpkg_status(rootfs: Path) -> dict[str, tuple[str, str]]:
    """Package -> (version, architecture) of what the image's dpkg database has installed."""
    installed: dict[str, tuple[str, str]] = {}
    for stanza in (rootfs / "var/lib/dpkg/status").read_text().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Status") == "install ok installed":
            installed[fields["Package"]] = (fields["Version"], fields["Architecture"])
    return installed


@pytest.fixture(scope="module")
def buildah() -> Buildah:
    return Buildah()


@pytest.fixture(scope="module")
def image_config(buildah: Buildah) -> dict[str, Any]:
    """The image's OCI config (Entrypoint, User, Env...)."""
    return buildah.image_config()


@pytest.fixture(scope="module")
def image_mounted(buildah: Buildah, image_config: dict[str, Any]) -> Iterator[tuple[str, Path]]:
    """A working container of the image and its root filesystem, mounted on the host."""
    with buildah.container() as found:
        yield found


@pytest.fixture(scope="module")
def image_container(image_mounted: tuple[str, Path]) -> str:
    return image_mounted[0]


@pytest.fixture(scope="module")
def image_rootfs(image_mounted: tuple[str, Path]) -> Path:
    return image_mounted[1]
