"""The attribution webhook on a local control plane (`make demo`, `make bench`, a laptop).

No Pod and no Service there: the API server calls `driftguard run --webhook-port` at
https://127.0.0.1:PORT, with a certificate made here for that address. The configuration
is the chart's (templates/attribution.yaml) with a URL instead of a Service; an e2e test
keeps the two alike.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from driftguard.controlplane import pki

PATH = "/attribution"
MANAGED = {"app.kubernetes.io/managed-by": "driftguard"}
NAME = "driftguard-attribution"


@dataclass(frozen=True)
class LocalWebhook:
    port: int
    directory: Path
    ca_pem: bytes

    @property
    def args(self) -> list[str]:
        """What `driftguard run` needs to serve it."""
        return [
            f"--webhook-port={self.port}",
            f"--webhook-cert-dir={self.directory}",
            f"--attribution-key-file={self.directory / 'key'}",
        ]

    def configuration(self, *, operator_user: str, timeout_seconds: int = 2) -> dict[str, Any]:
        """The MutatingWebhookConfiguration that points the API server at it."""
        client = {
            "url": f"https://127.0.0.1:{self.port}{PATH}",
            "caBundle": base64.b64encode(self.ca_pem).decode(),
        }
        not_operator = {
            "name": "not-the-operator",
            "expression": f'request.userInfo.username != "{operator_user}"',
        }
        common = {
            "admissionReviewVersions": ["v1"],
            "failurePolicy": "Ignore",
            "timeoutSeconds": timeout_seconds,
            "matchPolicy": "Equivalent",
            "clientConfig": client,
        }
        # The cluster's scaler, by name (its scales are many and no person's); any other
        # kube-system identity is attributed like anyone.
        controllers = (
            "!(request.userInfo.username in ['system:kube-controller-manager', "
            "'system:serviceaccount:kube-system:horizontal-pod-autoscaler'])"
        )
        webhooks = [
            {
                "name": "attribution.driftguard.io",
                **common,
                "sideEffects": "NoneOnDryRun",
                "reinvocationPolicy": "IfNeeded",
                "objectSelector": {"matchLabels": MANAGED},
                "matchConditions": [not_operator],
                "rules": [_rule(["*"], ["*"], ["CREATE", "UPDATE", "DELETE"], ["*"], "*")],
            },
            {
                "name": "environments.attribution.driftguard.io",
                **common,
                "sideEffects": "None",
                "reinvocationPolicy": "IfNeeded",
                "matchConditions": [not_operator],
                "rules": [
                    _rule(
                        ["driftguard.io"],
                        ["*"],
                        ["CREATE", "UPDATE"],
                        ["environments", "blueprints", "driftexceptions"],
                        "*",
                    )
                ],
            },
            {
                "name": "scale.attribution.driftguard.io",
                **common,
                "sideEffects": "NoneOnDryRun",
                "matchConditions": [
                    not_operator,
                    {"name": "not-the-clusters-controllers", "expression": controllers},
                ],
                "rules": [
                    _rule(
                        ["apps"],
                        ["v1"],
                        ["UPDATE"],
                        ["deployments/scale", "statefulsets/scale", "replicasets/scale"],
                        "Namespaced",
                    )
                ],
            },
        ]
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": NAME},
            "webhooks": webhooks,
        }


def _rule(
    groups: list[str], versions: list[str], operations: list[str], resources: list[str], scope: str
) -> dict[str, Any]:
    return {
        "apiGroups": groups,
        "apiVersions": versions,
        "operations": operations,
        "resources": resources,
        "scope": scope,
    }


def prepare(directory: Path, port: int) -> LocalWebhook:
    """A CA, a serving certificate for 127.0.0.1 and a signing key, written to directory."""
    ca = pki.CertificateAuthority.create("driftguard-webhook-ca")
    serving = ca.issue_server(common_name="127.0.0.1", dns_names=[], ips=["127.0.0.1"])
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(serving.cert_pem)
    for name, data in (("tls.key", serving.key_pem), ("key", secrets.token_hex(32).encode())):
        path = directory / name
        path.touch(mode=0o600)
        path.write_bytes(data)
    return LocalWebhook(port=port, directory=directory, ca_pem=ca.pair.cert_pem)


def main(argv: list[str] | None = None) -> int:
    """`python -m driftguard.cli.localhook DIR`: write the files, print the configuration."""
    parser = argparse.ArgumentParser(
        prog="python -m driftguard.cli.localhook", description=main.__doc__
    )
    parser.add_argument("directory", type=Path, help="where tls.crt, tls.key and key go")
    parser.add_argument("--port", type=int, default=9443)
    parser.add_argument(
        "--operator-user", required=True, help="the operator's user name: its writes are skipped"
    )
    args = parser.parse_args(argv)
    hook = prepare(args.directory, args.port)
    print(json.dumps(hook.configuration(operator_user=args.operator_user), indent=2))
    print("driftguard run " + " ".join(hook.args), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
