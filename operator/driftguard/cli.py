"""The `driftguard` command (also `kubectl-driftguard`): run, diff, status."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftguard", description="Keep environments matching their blueprint."
    )
    parser.add_argument("--kubeconfig", help="kubeconfig to use (default: $KUBECONFIG, in-cluster)")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the operator")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch Environments here (repeat)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    run.add_argument("--metrics-port", type=int, default=8080, help="port of /metrics (0: off)")
    run.add_argument("--liveness", help="liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    run.add_argument("--log-level", default="INFO")
    run.add_argument(
        "--default-service-account",
        metavar="NAME",
        help="impersonate this ServiceAccount (in each Environment's namespace) for "
        "Environments that name none: RBAC then bounds every blueprint",
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
        default=os.environ.get("POD_NAMESPACE") or "driftguard-system",
        metavar="NAMESPACE",
        help="where Blueprint revisions are kept for pinning (default: $POD_NAMESPACE, "
        "else driftguard-system)",
    )
    run.add_argument(
        "--liveness-watch-grace",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="the liveness probe fails once a watch has been down this long (default 120)",
    )

    diff = commands.add_parser("diff", help="show drift, live vs blueprint; exit 1 if any")
    diff.add_argument("environment")
    diff.add_argument("-n", "--namespace", default=None)

    status = commands.add_parser("status", help="a table of Environments")
    status.add_argument("-n", "--namespace", default=None)
    status.add_argument("-A", "--all-namespaces", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    if args.command == "run":
        from driftguard import daemon
        from driftguard.tenancy import Tenancy

        tenancy = Tenancy(
            default_service_account=args.default_service_account,
            allowed_target_namespaces=tuple(args.allow_target_namespaces),
            allow_cluster_scoped=args.allow_cluster_scoped,
        )
        return daemon.run(
            tenancy=tenancy,
            break_glass_groups=tuple(args.break_glass_group or ["driftguard:break-glass"]),
            namespaces=args.namespace,
            metrics_port=args.metrics_port,
            liveness=args.liveness,
            log_level=args.log_level,
            watch_grace=args.liveness_watch_grace,
            history_namespace=args.history_namespace,
        )
    from driftguard import inspect

    if args.command == "diff":
        return inspect.diff(args.environment, namespace=args.namespace)
    return inspect.status(namespace=args.namespace, all_namespaces=args.all_namespaces)


if __name__ == "__main__":
    sys.exit(main())
