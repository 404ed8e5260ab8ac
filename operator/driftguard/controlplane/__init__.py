"""A local Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager).

For the e2e tests, ``make cluster``, the demo and the benchmark. It runs binaries that
``make controlplane`` built into a versioned cache; it never builds or downloads anything.

    with ControlPlane() as cp:
        subprocess.run(["kubectl", "--kubeconfig", str(cp.kubeconfig), "get", "ns"])
        cp.restart("kube-apiserver", down_seconds=3)  # SIGKILL, 3 s down, same argv again
"""

from driftguard.controlplane.binaries import ETCD_VERSION, K8S_VERSION, Binaries, locate
from driftguard.controlplane.errors import BinariesMissingError, ControlPlaneError, StartupError
from driftguard.controlplane.instance import COMPONENTS, ControlPlane

__all__ = [
    "COMPONENTS",
    "ETCD_VERSION",
    "K8S_VERSION",
    "Binaries",
    "BinariesMissingError",
    "ControlPlane",
    "ControlPlaneError",
    "StartupError",
    "locate",
]
