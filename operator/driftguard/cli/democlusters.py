"""`make demo-clusters`: the database story across three clusters, narrated on screen.

Starts three local control planes: a hub, where the operator and the Environments live,
and two remote clusters for staging and prod, each reached by a kubeconfig Secret. One
Blueprint makes dev (in the hub), staging and prod (remote); compare shows prod on 5.5; a
downgrade in staging's cluster is reverted there; prod's API server stops and only prod
says so; back, it is kept again. Development tooling, like `demo.py`.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from driftguard.cli.demo import BIN, ROOT, Demo, _free_port, note, say
from driftguard.controlplane import ControlPlane

CLUSTERS = ("staging", "prod")
IMAGE = "{.spec.template.spec.containers[0].image}{'\\n'}"
READY = (
    "custom-columns=NAME:.metadata.name,"
    'READY:.status.conditions[?(@.type=="Ready")].reason,'
    'MESSAGE:.status.conditions[?(@.type=="Ready")].message'
)


def _image(demo: Demo, namespace: str) -> str:
    found = demo.get("deployment", "db", namespace)
    return str(found["spec"]["template"]["spec"]["containers"][0]["image"])


def _ready(demo: Demo, name: str) -> tuple[str, str]:
    env = demo.get("environment", name, "platform")
    for entry in (env.get("status") or {}).get("conditions") or []:
        if entry["type"] == "Ready":
            return str(entry["status"]), str(entry.get("reason", ""))
    return "Unknown", ""


def _secret(name: str, kubeconfig: Path) -> str:
    value = base64.b64encode(kubeconfig.read_bytes()).decode()
    return json.dumps({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": name, "namespace": "platform"},
                       "data": {"value": value}})  # fmt: skip


def _environments() -> str:
    """dev here; staging and prod in their own clusters, prod declared on mysql:5.5."""
    remote = {
        name: {"kubeConfig": {"secretRef": {"name": f"{name}-kubeconfig"}}} for name in CLUSTERS
    }
    specs: dict[str, dict[str, Any]] = {
        "dev": {},
        "staging": remote["staging"],
        "prod": {**remote["prod"], "values": {"dbImage": "mysql:5.5"}},
    }
    items = [
        {"apiVersion": "driftguard.io/v1alpha1", "kind": "Environment",
         "metadata": {"name": name, "namespace": "platform"},
         "spec": {"targetNamespace": name, "blueprintRef": {"name": "shop"}, **spec}}
        for name, spec in specs.items()
    ]  # fmt: skip
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def tell(hub: Demo, remotes: dict[str, Demo]) -> None:
    say("1. One Blueprint, three clusters")
    note("dev lives in the hub; staging and prod in their own clusters, each reached through a")
    note("kubeconfig Secret in the Environment's namespace (spec.kubeConfig.secretRef).")
    hub.kubectl("apply", "-f", str(ROOT / "examples" / "shop-blueprint.yaml"))
    hub.kubectl("apply", "-f", "-", stdin=_environments())
    for name in ("dev", "staging", "prod"):
        hub.until(f"{name} ready", lambda n=name: _ready(hub, n)[0] == "True", timeout=60)  # type: ignore[misc]
    hub.kubectl("get", "environments", "-n", "platform")
    for name, remote in remotes.items():
        note(f"in {name}'s cluster:")
        remote.kubectl("get", "deploy", "db", "-n", name, "-o", f"jsonpath={IMAGE}")

    say("2. Before the release: the three clusters side by side")
    hub.driftguard("compare", "--blueprint", "shop")
    note("prod's database is 5.5 while dev's and staging's are 5.7: declared so, in prod's values.")

    say("3. A downgrade by hand in staging's own cluster")
    remotes["staging"].kubectl("set", "image", "deploy/db", "-n", "staging", "db=mysql:5.5")
    took = hub.until(
        "staging's database reverted", lambda: _image(remotes["staging"], "staging") == "mysql:5.7"
    )
    note(f"reverted in the staging cluster {took * 1000:.0f} ms after kubectl returned;")
    note("the Event and status are on the hub, where the Environment lives:")
    hub.kubectl("get", "events", "-n", "platform", "--field-selector", "reason=DriftReverted")

    say("4. prod's API server goes away")
    remotes["prod"].plane.kill("kube-apiserver")
    took = hub.until("prod unreachable", lambda: _ready(hub, "prod")[1] == "ClusterUnreachable")
    note(f"{took:.1f} s later only prod says so; dev and staging are kept as before:")
    hub.kubectl("get", "environments", "-n", "platform", "-o", READY)
    remotes["prod"].plane.start_component("kube-apiserver")
    took = hub.until("prod ready again", lambda: _ready(hub, "prod")[0] == "True", timeout=60)
    note(
        f"back: prod is Ready again {took:.1f} s after its API server started, and checked in full"
    )


def main() -> int:
    say("Starting three local control planes: the hub, staging's cluster and prod's")
    with ExitStack() as stack:
        hub_plane = stack.enter_context(ControlPlane())
        hub = Demo(hub_plane)
        remotes = {name: Demo(stack.enter_context(ControlPlane())) for name in CLUSTERS}
        hub.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"), show=False)
        hub.until(
            "the Environment API",
            lambda: subprocess.run([str(BIN / "kubectl"), "get", "env,blueprints", "-A"],
                                   env=hub.env, capture_output=True, check=False).returncode == 0,
        )  # fmt: skip
        for namespace in ("platform", "dev"):
            hub.kubectl("create", "namespace", namespace, show=False)
        for name, remote in remotes.items():
            remote.kubectl("create", "namespace", name, show=False)
            # The operator's identity there; a real install gives it the chart's ClusterRole.
            config = remote.plane.user_kubeconfig("driftguard", groups=["system:masters"])
            hub.kubectl("apply", "-f", "-", show=False, stdin=_secret(f"{name}-kubeconfig", config))
        port = _free_port()
        log = hub_plane.directory / "operator.log"
        operator_config = hub_plane.user_kubeconfig("driftguard-demo", groups=["system:masters"])
        say("Starting the operator in the hub: driftguard run --all-namespaces")
        note(f"its JSON logs: {log}")
        with log.open("wb") as sink:
            operator = subprocess.Popen(
                [str(BIN / "driftguard"), "run", "--all-namespaces", "--metrics-port", str(port),
                 "--metrics-insecure", "--allow-target-namespaces", "dev", "staging", "prod"],
                env={**hub.env, "KUBECONFIG": str(operator_config)},
                stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            tell(hub, remotes)
        finally:
            operator.terminate()
            operator.wait(timeout=15)
    say("Done: the three control planes are stopped and their files removed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
