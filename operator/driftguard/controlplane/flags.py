"""Command lines of etcd, kube-apiserver and kube-controller-manager, and the files they read.

Pure: builds paths and argument lists, touches no file and starts nothing. The flag choices
are explained in shared/design/controlplane.md.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from driftguard.controlplane.binaries import Binaries

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"

# One rule at Metadata: every request is logged with verb, user, user agent and objectRef,
# never a body. RequestReceived is omitted so that one request is one line (ResponseComplete,
# plus ResponseStarted for watches), which makes counting a client's requests easy.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
"""


@dataclass(frozen=True)
class Layout:
    """The files of one control plane instance, all under one temporary directory."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "pki" / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "pki" / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.root / "pki" / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.root / "pki" / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.root / "pki" / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.root / "pki" / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.root / "pki" / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.root / "pki" / "sa.pub"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd-data"

    @property
    def audit_policy(self) -> Path:
        return self.root / "audit-policy.yaml"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.log"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    @property
    def controller_manager_kubeconfig(self) -> Path:
        return self.root / "controller-manager.kubeconfig"

    @property
    def kubeconfigs(self) -> Path:
        return self.root / "kubeconfigs"

    def log(self, component: str) -> Path:
        """The combined stdout and stderr of one component."""
        return self.root / f"{component}.log"


def etcd(binaries: Binaries, layout: Layout, *, client_port: int, peer_port: int) -> list[str]:
    """A single-member etcd on loopback."""
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        str(binaries.etcd),
        "--name=default",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        "--log-level=warn",
        # Tests and benchmarks only: the data dies with the temp dir, durability buys nothing.
        "--unsafe-no-fsync",
    ]


def apiserver(
    binaries: Binaries,
    layout: Layout,
    *,
    etcd_url: str,
    port: int,
    feature_gates: Mapping[str, bool],
) -> list[str]:
    """kube-apiserver on loopback with RBAC, our CA, ServiceAccount keys and an audit log."""
    argv = [
        str(binaries.kube_apiserver),
        f"--etcd-servers={etcd_url}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        # The default reconciler refuses 127.0.0.1 ("cannot use public IP ... with endpoint
        # reconciler"); nothing here needs the kubernetes Service's endpoints.
        "--endpoint-reconciler-type=none",
        f"--secure-port={port}",
        f"--cert-dir={layout.root / 'apiserver-certs'}",
        f"--tls-cert-file={layout.serving_cert}",
        f"--tls-private-key-file={layout.serving_key}",
        f"--client-ca-file={layout.ca_cert}",
        "--authorization-mode=RBAC",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={layout.sa_pub}",
        f"--service-account-signing-key-file={layout.sa_key}",
        "--allow-privileged=true",
        f"--audit-policy-file={layout.audit_policy}",
        f"--audit-log-path={layout.audit_log}",
        # Never rotated: its readers (tests, the benchmark) follow one file by offset, and
        # 0 here means lumberjack's 100 MB, which a 50,000-object benchmark outgrows.
        "--audit-log-maxsize=1000000",
        "--profiling=false",
    ]
    if feature_gates:
        gates = ",".join(f"{k}={str(v).lower()}" for k, v in sorted(feature_gates.items()))
        argv.append(f"--feature-gates={gates}")
    return argv


def controller_manager(binaries: Binaries, layout: Layout) -> list[str]:
    """kube-controller-manager with every default controller, as one identity.

    Unlike kubeadm, no ``--use-service-account-credentials``: minting a token per controller
    costs about 4.5 s of each start (3.3 s instead of 7.9 s in all), and controllers behave
    the same; only their audit user differs (``system:kube-controller-manager`` for all).
    """
    return [
        str(binaries.kube_controller_manager),
        f"--kubeconfig={layout.controller_manager_kubeconfig}",
        "--leader-elect=false",
        # No serving endpoint: readiness is judged through the API server instead.
        "--secure-port=0",
        "--controllers=*",
        f"--service-account-private-key-file={layout.sa_key}",
        f"--root-ca-file={layout.ca_cert}",
        f"--cluster-signing-cert-file={layout.ca_cert}",
        f"--cluster-signing-key-file={layout.ca_key}",
        "--profiling=false",
    ]
