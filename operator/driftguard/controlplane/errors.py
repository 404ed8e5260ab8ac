"""The errors the local control plane raises; callers catch ``ControlPlaneError``.

Only exception types live here: no behaviour, no imports from the rest of the package.
"""


class ControlPlaneError(Exception):
    """The local control plane could not be located, started, queried or stopped."""


class BinariesMissingError(ControlPlaneError):
    """The cached etcd / kube-apiserver / kube-controller-manager binaries are not there."""


class StartupError(ControlPlaneError):
    """A component exited or did not become ready; the message carries its log's tail."""
