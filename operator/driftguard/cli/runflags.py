"""The flags of `driftguard run`: the operator's whole configuration, one flag each."""

from __future__ import annotations

import argparse
import os
from typing import Any


def add_run(commands: Any) -> None:
    """The `run` command, its flags and their defaults (the chart sets most of them)."""
    run: argparse.ArgumentParser = commands.add_parser("run", help="run the operator")
    # In a Pod the chart sets POD_NAMESPACE: the release's namespace.
    own_namespace = os.environ.get("POD_NAMESPACE") or "driftguard-system"
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch Environments here (repeat)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    run.add_argument("--metrics-port", type=int, default=8080, help="port of /metrics (0: off)")
    secure = run.add_mutually_exclusive_group()
    secure.add_argument(
        "--metrics-secure",
        dest="metrics_secure",
        action="store_true",
        default=True,
        help="the default: /metrics over HTTPS, each scraper's bearer token reviewed by the API "
        "server (TokenReview, then a SubjectAccessReview for get on the URL /metrics)",
    )
    secure.add_argument(
        "--metrics-insecure",
        dest="metrics_secure",
        action="store_false",
        help="/metrics over plain HTTP, to anyone who can reach the port",
    )
    run.add_argument(
        "--metrics-cert-dir",
        metavar="DIR",
        help="the metrics serving certificate, DIR/tls.crt and DIR/tls.key (default: a "
        "self-signed one made at start)",
    )
    run.add_argument(
        "--liveness",
        metavar="URL",
        help="serve the probes there, e.g. http://0.0.0.0:8081/healthz: liveness at its path "
        "and /livez, readiness at /readyz",
    )
    run.add_argument("--log-level", default="INFO")
    run.add_argument(
        "--default-service-account",
        metavar="NAME",
        help="impersonate this ServiceAccount (in each Environment's namespace) for "
        "Environments that name none: RBAC then bounds every blueprint",
    )
    run.add_argument(
        "--operator-namespace",
        default=own_namespace,
        metavar="NAMESPACE",
        help="the operator's own namespace: its ServiceAccounts, like kube-system's, are "
        "never impersonated (default: $POD_NAMESPACE, else driftguard-system)",
    )
    run.add_argument(
        "--allow-target-namespaces",
        nargs="+",
        action="extend",
        default=[],
        metavar="GLOB",
        help="namespaces an Environment acting as the operator may write to besides its own",
    )
    run.add_argument(
        "--allow-cluster-scoped",
        action="store_true",
        help="let Environments acting as the operator write cluster-scoped objects",
    )
    run.add_argument(
        "--break-glass-group",
        action="append",
        default=[],
        metavar="GROUP",
        help="members of this group may change what prevention guards (repeat); "
        "default: driftguard:break-glass",
    )
    run.add_argument(
        "--history-namespace",
        default=own_namespace,
        metavar="NAMESPACE",
        help="where Blueprint revisions are kept for pinning (default: $POD_NAMESPACE, "
        "else driftguard-system)",
    )
    run.add_argument(
        "--peering",
        metavar="NAME",
        help="run beside other replicas: kopf peering through the ClusterKopfPeering (or, "
        "with --namespace, the KopfPeering objects) of this name; only the replica with "
        "the highest priority acts",
    )
    run.add_argument(
        "--priority",
        type=int,
        metavar="N",
        help="this replica's peering priority (default: random, so that replicas differ)",
    )
    run.add_argument(
        "--peering-lifetime",
        type=int,
        default=60,
        metavar="SECONDS",
        help="a replica not heard from this long is dead: another takes over (default 60)",
    )
    run.add_argument(
        "--shards-from-leases",
        action="store_true",
        help="share the work with the other replicas: each holds a Lease in "
        "--lease-namespace and acts on the Environments whose target namespace hashes "
        "into its share (not with --peering)",
    )
    run.add_argument(
        "--replica-id",
        default=os.environ.get("POD_ID") or "",
        metavar="ID",
        help="this replica's id in its Lease (default: $POD_ID, else host and pid)",
    )
    run.add_argument(
        "--lease-namespace",
        default=own_namespace,
        metavar="NAMESPACE",
        help="where the replicas' Leases are (default: $POD_NAMESPACE, else driftguard-system)",
    )
    run.add_argument(
        "--lease-duration",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a replica that has not renewed for this long is gone and its share moves "
        "(default 10); it stops acting itself before then",
    )
    run.add_argument(
        "--max-exception-duration",
        default="24h",
        metavar="DURATION",
        help="the longest a DriftException may last; a longer one is Invalid (default 24h)",
    )
    run.add_argument(
        "--exception-approvers",
        default="",
        metavar="GROUP",
        help="four eyes: a DriftException is in force only once a member of GROUP other "
        "than its author approves it (driftguard exception approve); needs the webhook",
    )
    run.add_argument(
        "--webhook-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve the attribution webhook over HTTPS on this port (0: off); the API server "
        "then tells driftguard who made each change",
    )
    run.add_argument(
        "--webhook-cert-dir",
        default="/etc/driftguard/webhook",
        metavar="DIR",
        help="the webhook's serving certificate, DIR/tls.crt and DIR/tls.key (a TLS Secret)",
    )
    run.add_argument(
        "--attribution-key-file",
        default=None,
        metavar="FILE",
        help="the key that signs attribution records, shared by every replica (default: a "
        "new key each start, for one replica)",
    )
    run.add_argument(
        "--board-port",
        type=int,
        default=0,
        metavar="PORT",
        help="also serve the board (driftguard board) on this port, as the operator (0: off)",
    )
    run.add_argument(
        "--board-address",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="where the board listens (default 127.0.0.1: reach it with kubectl port-forward)",
    )
    run.add_argument(
        "--liveness-watch-grace",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="the liveness probe fails once a watch has been down this long (default 120)",
    )
    run.add_argument(
        "--insecure-kubeconfig-exec",
        action="store_true",
        help="let remote clusters' kubeconfigs (spec.kubeConfig) run programs (exec, "
        "auth-provider) and read the operator's files; refused by default",
    )
