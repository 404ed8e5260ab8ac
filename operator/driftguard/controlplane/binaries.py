"""Where the control-plane binaries are cached, by version.

Mirrors the path scheme of ``hack/build-controlplane.sh``; it only looks, it never builds
(``make controlplane`` does).
"""

import os
from dataclasses import dataclass
from pathlib import Path

from driftguard.controlplane.errors import BinariesMissingError

K8S_VERSION = "v1.37.2"
ETCD_VERSION = "v3.6.16"

_NAMES = ("etcd", "kube-apiserver", "kube-controller-manager")


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of the three executables of one cached build."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path


def cache_root() -> Path:
    """Return ``$DRIFTGUARD_CACHE``, else ``$XDG_CACHE_HOME/driftguard``, else ``~/.cache/...``."""
    explicit = os.environ.get("DRIFTGUARD_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "driftguard"


def bin_dir(root: Path | None = None) -> Path:
    """Return the directory the build script fills for the pinned versions."""
    base = cache_root() if root is None else root
    return base / f"controlplane-k8s-{K8S_VERSION}-etcd-{ETCD_VERSION}" / "bin"


def locate(root: Path | None = None) -> Binaries:
    """Return the cached binaries, or raise ``BinariesMissingError`` naming what is missing."""
    directory = bin_dir(root)
    paths = {name: directory / name for name in _NAMES}
    missing = [name for name, path in paths.items() if not os.access(path, os.X_OK)]
    if missing:
        raise BinariesMissingError(
            f"control plane binaries missing in {directory}: {', '.join(missing)}; "
            "run `make controlplane` to build them (about 13 minutes the first time)"
        )
    return Binaries(
        etcd=paths["etcd"],
        kube_apiserver=paths["kube-apiserver"],
        kube_controller_manager=paths["kube-controller-manager"],
    )
