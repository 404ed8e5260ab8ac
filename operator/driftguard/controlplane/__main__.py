"""``python -m driftguard.controlplane``: run a local control plane until Ctrl-C (``make cluster``).

Prints the ``export KUBECONFIG=...`` line on stdout and everything else on stderr.
"""

import argparse
import signal
import sys
import time

from driftguard.controlplane.errors import ControlPlaneError
from driftguard.controlplane.instance import ControlPlane


def _gates(text: str) -> dict[str, bool]:
    """Parse ``A=true,B=false`` as kube-apiserver's --feature-gates does."""
    gates: dict[str, bool] = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if value.lower() not in ("true", "false"):
            raise argparse.ArgumentTypeError(f"feature gate {item!r}: expected NAME=true|false")
        gates[name.strip()] = value.lower() == "true"
    return gates


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m driftguard.controlplane", description=__doc__)
    parser.add_argument(
        "--no-controller-manager",
        action="store_true",
        help="start only etcd and kube-apiserver (no GC, no namespace deletion, no Deployments)",
    )
    parser.add_argument(
        "--feature-gates", type=_gates, default={}, help="kube-apiserver gates, A=true,B=false"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Start, print how to connect, wait for Ctrl-C, stop; 1 if it fails or a component dies."""
    args = _parser().parse_args(argv)
    plane = ControlPlane(
        controller_manager=not args.no_controller_manager, feature_gates=args.feature_gates
    )
    # A shell without job control starts background commands with SIGINT ignored; this
    # command is meant to be stopped by Ctrl-C or `kill -INT` wherever it runs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print("control plane: starting ...", file=sys.stderr)
    try:
        with plane:
            print(
                f"control plane: up in {plane.startup_seconds:.1f}s at {plane.server}",
                file=sys.stderr,
            )
            print(f"control plane: logs and audit log in {plane.directory}", file=sys.stderr)
            print(f"export KUBECONFIG={plane.kubeconfig}", flush=True)
            print("control plane: press Ctrl-C to stop it", file=sys.stderr, flush=True)
            while True:
                plane.check()
                time.sleep(1)
    except KeyboardInterrupt:
        print("\ncontrol plane: stopped", file=sys.stderr)
        return 0
    except ControlPlaneError as exc:
        print(f"control plane: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
