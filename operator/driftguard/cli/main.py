"""The `driftguard` command (also `kubectl-driftguard`): run, diff, status."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from driftguard.cli import runflags


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="driftguard", description="Keep environments matching their blueprint."
    )
    parser.add_argument("--kubeconfig", help="kubeconfig to use (default: $KUBECONFIG, in-cluster)")
    commands = parser.add_subparsers(dest="command", required=True)

    runflags.add_run(commands)

    diff = commands.add_parser("diff", help="show drift, live vs blueprint; exit 1 if any")
    diff.add_argument("environment")
    diff.add_argument("-n", "--namespace", default=None)

    status = commands.add_parser("status", help="a table of Environments")
    status.add_argument("-n", "--namespace", default=None)
    status.add_argument("-A", "--all-namespaces", action="store_true")
    status.add_argument(
        "-o",
        "--output",
        choices=["wide"],
        default=None,
        help="wide: also the last drift, when, and who made it",
    )
    _memory_commands(commands)
    _exception_commands(commands)
    board = commands.add_parser("board", help="a read-only web page of every Environment")
    board.add_argument("--port", type=int, default=8765, help="default 8765 (0: any free one)")
    board.add_argument("--address", default="127.0.0.1", help="default 127.0.0.1 (this machine)")
    seen = board.add_mutually_exclusive_group()
    seen.add_argument("-n", "--namespace", action="append", default=[], help="repeat")
    seen.add_argument("-A", "--all-namespaces", action="store_true")
    completion = commands.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=["bash", "zsh", "fish"])
    return parser


def _exception_commands(commands: Any) -> None:
    """exception create|list|end: drift tolerated for a while, with a reason."""
    group = commands.add_parser("exception", help="DriftExceptions: drift allowed until an end")
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")
    create = verbs.add_parser("create", help="let chosen paths of an Environment drift a while")
    create.add_argument("environment")
    create.add_argument("-n", "--namespace", default=None)
    create.add_argument("--path", action="append", required=True, help="a JSON pointer; repeat")
    create.add_argument("--object", metavar="KIND/NAME", help="only this object (default: all)")
    create.add_argument("--minimum", type=float, default=None)
    create.add_argument("--maximum", type=float, default=None)
    end = create.add_mutually_exclusive_group(required=True)
    end.add_argument("--for", dest="duration", metavar="DURATION", help="e.g. 4h or 30m")
    end.add_argument("--until", metavar="RFC3339", help="e.g. 2026-12-06T18:00:00Z")
    create.add_argument("--reason", required=True, help="why: an incident, a ticket")
    create.add_argument("--name", default=None, help="default: ENVIRONMENT-<random>")
    listed = verbs.add_parser("list", help="the DriftExceptions, their phase, end and creator")
    listed.add_argument("-n", "--namespace", default=None)
    listed.add_argument("-A", "--all-namespaces", action="store_true")
    listed.add_argument("-o", "--output", choices=["table", "json"], default="table")
    ended = verbs.add_parser("end", help="end one now: its drift is reverted (Enforce)")
    ended.add_argument("name")
    ended.add_argument("-n", "--namespace", default=None)
    approve = verbs.add_parser("approve", help="four eyes: approve another's DriftException")
    approve.add_argument("name")
    approve.add_argument("-n", "--namespace", default=None)


def _exception(args: argparse.Namespace) -> int:
    from driftguard.cli import excepting

    if args.verb == "create":
        return excepting.create(
            args.environment,
            namespace=args.namespace,
            paths=args.path,
            reason=args.reason,
            duration=args.duration,
            until=args.until,
            obj=args.object,
            minimum=args.minimum,
            maximum=args.maximum,
            name=args.name,
        )
    if args.verb == "list":
        return excepting.show(
            namespace=args.namespace, all_namespaces=args.all_namespaces, output=args.output
        )
    if args.verb == "approve":
        return excepting.approve(args.name, namespace=args.namespace)
    return excepting.end(args.name, namespace=args.namespace)


def _memory_commands(commands: Any) -> None:
    """history, rollback, audit, compare: the past of an Environment; Environments side by side."""
    history = commands.add_parser("history", help="the applied revisions of an Environment")
    history.add_argument("environment")
    history.add_argument("-n", "--namespace", default=None)
    shown = history.add_mutually_exclusive_group()
    shown.add_argument("--revision", type=int, metavar="N", help="print revision N's spec")
    shown.add_argument("--diff", type=int, nargs=2, metavar=("N", "M"), help="diff two revisions")
    shown.add_argument("-o", "--output", choices=["table", "json"], default="table")

    rollback = commands.add_parser(
        "rollback", help="write an earlier revision's spec back into the Environment"
    )
    rollback.add_argument("environment")
    rollback.add_argument("-n", "--namespace", default=None)
    rollback.add_argument("--to-revision", type=int, required=True, metavar="N")
    rollback.add_argument(
        "--force", action="store_true", help="even when a GitOps tool manages the spec"
    )
    rollback.add_argument(
        "--dry-run", action="store_true", help="show the change; the server checks it, keeps none"
    )

    audit = commands.add_parser("audit", help="the drift incidents of an Environment")
    audit.add_argument("environment")
    audit.add_argument("-n", "--namespace", default=None)
    audit.add_argument("--since", metavar="DURATION", help="only newer ones: 30s, 10m, 1h, 2d")
    audit.add_argument("-o", "--output", choices=["table", "json"], default="table")

    report = commands.add_parser(
        "report", help="compliance evidence over a window: incidents, people, exceptions"
    )
    report.add_argument("environment", nargs="?", default=None)
    where = report.add_mutually_exclusive_group()
    where.add_argument("-n", "--namespace", default=None)
    where.add_argument("-A", "--all-namespaces", action="store_true")
    report.add_argument("--since", default="30d", metavar="DURATION", help="the window (30d)")
    report.add_argument("-o", "--output", choices=["markdown", "json", "csv"], default="markdown")

    compare = commands.add_parser(
        "compare", help="Environments side by side: declared and live; exit 1 on live drift"
    )
    which = compare.add_mutually_exclusive_group(required=True)
    which.add_argument("environments", nargs="*", default=[], metavar="NAMESPACE/NAME")
    which.add_argument("--blueprint", metavar="NAME", help="every Environment of this Blueprint")
    compare.add_argument(
        "--all", action="store_true", help="every declared field, not only differences"
    )
    compare.add_argument("-o", "--output", choices=["table", "json"], default="table")
    compare.add_argument(
        "--context",
        action="append",
        default=[],
        dest="contexts",
        metavar="CONTEXT",
        help="the kubeconfig context of each NAMESPACE/NAME, in order (once: all of them)",
    )


def _duration(text: str) -> float:
    from driftguard.core.model import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        _parser().error(f"--max-exception-duration {text!r}: {exc}")
        raise


def _board_beside(args: argparse.Namespace) -> None:
    """The board in the operator's process (chart value board.enabled), as the operator."""
    from driftguard.cli.board import server
    from driftguard.telemetry import logs

    server.serve_beside(
        port=args.board_port,
        address=args.board_address,
        scopes=args.namespace or [None],
        announce=lambda url: logs.get(__name__).info("board_serving", url=url),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    if args.command == "board":
        from driftguard.cli.board import server

        return server.serve_board(
            port=args.port,
            address=args.address,
            namespaces=args.namespace,
            all_namespaces=args.all_namespaces,
        )
    if args.command == "run":
        from driftguard.runtime import daemon

        if args.board_port:
            _board_beside(args)

        if args.peering and args.shards_from_leases:
            _parser().error("--peering and --shards-from-leases exclude each other")
        if args.liveness:
            from driftguard.runtime import probes

            try:
                probes.address(args.liveness)
            except ValueError as exc:
                _parser().error(f"--liveness: {exc}")
        from driftguard.core.tenancy import Tenancy

        tenancy = Tenancy(
            default_service_account=args.default_service_account,
            allowed_target_namespaces=tuple(args.allow_target_namespaces),
            allow_cluster_scoped=args.allow_cluster_scoped,
            operator_namespace=args.operator_namespace,
        )
        return daemon.run(
            tenancy=tenancy,
            break_glass_groups=tuple(args.break_glass_group or ["driftguard:break-glass"]),
            namespaces=args.namespace,
            metrics=daemon.Metrics(args.metrics_port, args.metrics_secure, args.metrics_cert_dir),
            liveness=args.liveness,
            log_level=args.log_level,
            watch_grace=args.liveness_watch_grace,
            allow_kubeconfig_exec=args.insecure_kubeconfig_exec,
            history_namespace=args.history_namespace,
            max_exception_s=_duration(args.max_exception_duration),
            exception_approvers=args.exception_approvers,
            peering=args.peering,
            priority=args.priority,
            peering_lifetime=args.peering_lifetime,
            sharding=daemon.Sharding(
                replica=args.replica_id,
                namespace=args.lease_namespace,
                duration=args.lease_duration,
            )
            if args.shards_from_leases
            else None,
            webhook=daemon.Webhook(
                port=args.webhook_port,
                cert_dir=args.webhook_cert_dir,
                key_file=args.attribution_key_file,
            )
            if args.webhook_port
            else None,
        )
    if args.command == "completion":
        from driftguard.cli import completion

        sys.stdout.write(completion.script(_parser(), args.shell))
        return 0
    if args.command in ("history", "rollback", "audit", "report", "compare"):
        return _memory(args)
    if args.command == "exception":
        return _exception(args)
    from driftguard.cli import inspection

    if args.command == "diff":
        return inspection.diff(args.environment, namespace=args.namespace)
    return inspection.status(
        namespace=args.namespace, all_namespaces=args.all_namespaces, wide=args.output == "wide"
    )


def _memory(args: argparse.Namespace) -> int:
    from driftguard.cli import comparison, rollback, views

    if args.command == "history":
        diff = tuple(args.diff) if args.diff else None
        return views.show_history(
            args.environment,
            namespace=args.namespace,
            revision=args.revision,
            diff=diff,
            output=args.output,
        )
    if args.command == "rollback":
        return rollback.roll_back(
            args.environment,
            namespace=args.namespace,
            to_revision=args.to_revision,
            force=args.force,
            dry_run=args.dry_run,
        )
    if args.command == "report":
        from driftguard.cli import reporting

        if args.environment and args.all_namespaces:
            print("error: name one Environment or use -A, not both", file=sys.stderr)
            return 2
        return reporting.report(
            args.environment,
            namespace=args.namespace,
            all_namespaces=args.all_namespaces,
            since=args.since,
            output=args.output,
        )
    if args.command == "audit":
        return views.show_audit(
            args.environment, namespace=args.namespace, since=args.since, output=args.output
        )
    if args.contexts and args.blueprint:
        print(
            "error: --context goes with NAMESPACE/NAME arguments, not --blueprint", file=sys.stderr
        )
        return 2
    return comparison.compare(
        args.environments,
        blueprint=args.blueprint,
        output=args.output,
        everything=args.all,
        contexts=args.contexts,
    )


if __name__ == "__main__":
    sys.exit(main())
