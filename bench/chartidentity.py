"""The operator's identity in the benchmark: the chart's own ServiceAccount and RBAC.

`helm template` renders the chart's ServiceAccount, ClusterRole and ClusterRoleBinding,
kubectl applies them, and a TokenRequest token of that ServiceAccount becomes the
operator's kubeconfig, so the benchmark measures the operator as users install it (and a
rule the chart lacks fails the run). The log level is the chart's default too.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from driftguard.controlplane import ControlPlane
from driftguard.controlplane.binaries import cache_root

CHART = Path(__file__).resolve().parents[1] / "charts" / "driftguard"
HELM_VERSION = "v3.22.0"
NAMESPACE = "driftguard-system"
RELEASE = "driftguard"


@dataclass(frozen=True)
class ChartIdentity:
    kubeconfig: Path
    username: str
    log_level: str


def install(plane: ControlPlane, *, values: dict[str, Any] | None = None) -> ChartIdentity:
    """Creates the chart's ServiceAccount and RBAC on the plane; returns the operator's identity.

    `values`: over the chart's defaults (e.g. clusters.enabled, to read kubeconfig Secrets)."""
    helm = cache_root() / f"tools-helm-{HELM_VERSION}" / "bin" / "helm"
    kubectl = Path(sys.executable).parent / "kubectl"
    rendered = subprocess.run(
        [
            *(str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE),
            *("--show-only", "templates/serviceaccount.yaml"),
            *("--show-only", "templates/rbac.yaml"),
            *("-f", "-"),
        ],
        input=yaml.safe_dump(values or {}),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    admin = f"--kubeconfig={plane.kubeconfig}"
    subprocess.run([str(kubectl), admin, "create", "namespace", NAMESPACE], check=True)
    subprocess.run([str(kubectl), admin, "apply", "-f", "-"], input=rendered, text=True, check=True)
    account = next(
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all(rendered)
        if doc and doc.get("kind") == "ServiceAccount"
    )
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    return ChartIdentity(
        kubeconfig=plane.serviceaccount_kubeconfig(NAMESPACE, account),
        username=f"system:serviceaccount:{NAMESPACE}:{account}",
        log_level=str(values["logLevel"]),
    )
