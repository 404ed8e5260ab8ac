"""What a remote cluster costs: revert latency there beside here, memory and connections.

Three control planes: the hub, where the operator runs as the chart's ServiceAccount, and
two remote clusters reached by kubeconfig Secrets (a token of the chart's ServiceAccount
applied on each). One Environment per cluster manages 20 ConfigMaps. Rounds patch one
ConfigMap at a time, in a shuffled order across the three clusters so that the machine's
noise weighs on all alike, and time from the patch's response until a read (GET, in a
loop) sees the blueprint's value again: an upper bound that includes one read's round
trip; `first_read` counts the rounds whose very first read already saw the revert. The
operator's RSS and its sockets are read with the hub's Environment alone, then with each
remote cluster added.

    .venv/bin/python bench/clusters.py    # figures in bench/clusters.json
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import chartidentity
from figures import percentile
from kubeapi import MERGE, Kube, cm_path
from procs import Child, free_port
from run import install_crds

from driftguard.controlplane import ControlPlane

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NAMESPACE = "bench-clusters"
OBJECTS = 20
ROUNDS = 30  # per cluster


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        [str(BIN / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
        input=stdin, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def environment(name: str, secret: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "resources": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}"},
             "data": {"value": "blueprint"}}
            for i in range(OBJECTS)
        ],
    }  # fmt: skip
    if secret:
        spec["kubeConfig"] = {"secretRef": {"name": secret}}
    return {"apiVersion": "driftguard.io/v1alpha1", "kind": "Environment",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}  # fmt: skip


def connections(pid: int) -> int:
    """TCP connections the process holds (its sockets, by /proc)."""
    return sum(
        1 for fd in Path(f"/proc/{pid}/fd").iterdir() if os.readlink(fd).startswith("socket:")
    )


async def in_sync(kube: Kube) -> bool:
    items = (await kube.request("GET", cm_path(NAMESPACE)))["items"]
    values = [i["data"].get("value") for i in items if i["metadata"]["name"].startswith("cm-")]
    return len(values) == OBJECTS and all(v == "blueprint" for v in values)


async def until(predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("gave up waiting")
        await asyncio.sleep(0.05)


async def revert_once(kube: Kube, name: str) -> tuple[float, bool]:
    """Patch one ConfigMap by hand; seconds until the blueprint's value is read back, and
    whether the first read saw it."""
    path = cm_path(NAMESPACE, name)
    body = {"data": {"value": f"by-hand-{random.random()}"}}
    await kube.request("PATCH", path, body=body, content_type=MERGE)
    start, reads = time.monotonic(), 0
    while (await kube.request("GET", path))["data"]["value"] != "blueprint":
        reads += 1
        await asyncio.sleep(0.002)
    return time.monotonic() - start, reads == 0


async def measure(clusters: dict[str, Kube], operator: Child) -> dict[str, Any]:
    order = [name for name in clusters for _ in range(ROUNDS)]
    random.shuffle(order)
    samples: dict[str, list[float]] = {name: [] for name in clusters}
    first: dict[str, int] = dict.fromkeys(clusters, 0)
    for name in order:
        took, at_once = await revert_once(clusters[name], f"cm-{random.randrange(OBJECTS)}")
        samples[name].append(took)
        first[name] += at_once
    return {
        name: {
            "revert_read_p50_ms": round(1000 * (percentile(values, 50) or 0), 1),
            "revert_read_p99_ms": round(1000 * (percentile(values, 99) or 0), 1),
            "samples": len(values),
            "first_read": first[name],
        }
        for name, values in samples.items()
    }


async def bench(hub: ControlPlane, remotes: list[ControlPlane], work: Path) -> dict[str, Any]:
    install_crds(hub.kubeconfig)
    # The hub reads each remote's kubeconfig Secret: the chart's clusters.enabled grant.
    identity = chartidentity.install(hub, values={"clusters": {"enabled": True}})
    kubeconfigs = {"hub": hub.kubeconfig}
    kubectl(hub.kubeconfig, "create", "namespace", NAMESPACE)
    for index, remote in enumerate(remotes):
        remote_identity = chartidentity.install(remote)
        kubectl(remote.kubeconfig, "create", "namespace", NAMESPACE)
        value = base64.b64encode(remote_identity.kubeconfig.read_bytes()).decode()
        secret = {"apiVersion": "v1", "kind": "Secret",
                  "metadata": {"name": f"remote-{index}", "namespace": NAMESPACE},
                  "data": {"value": value}}  # fmt: skip
        kubectl(hub.kubeconfig, "apply", "-f", "-", stdin=json.dumps(secret))
        kubeconfigs[f"remote-{index}"] = remote.kubeconfig
    port = free_port()
    operator = Child(
        "operator",
        [str(BIN / "driftguard"), "run", "--all-namespaces", "--metrics-port", str(port),
         "--metrics-insecure",
         "--log-level", identity.log_level],
        work / "operator.log",
        {**os.environ, "KUBECONFIG": str(identity.kubeconfig)},
    )  # fmt: skip
    kubes = {
        name: await Kube.connect(path, user_agent="bench-person")
        for name, path in kubeconfigs.items()
    }
    try:
        figures: dict[str, Any] = {"objects_per_cluster": OBJECTS, "rounds_per_cluster": ROUNDS}
        kubectl(hub.kubeconfig, "apply", "-f", "-", stdin=json.dumps(environment("hub", None)))
        await until(lambda: in_sync(kubes["hub"]))
        await asyncio.sleep(2)  # settle: the first pass's allocations
        steps = [{"clusters": 1, "rss_mb": operator.rss_mb(), "sockets": connections(operator.pid)}]
        for index in range(len(remotes)):
            name = f"remote-{index}"
            kubectl(hub.kubeconfig, "apply", "-f", "-", stdin=json.dumps(environment(name, name)))
            await until(lambda n=name: in_sync(kubes[n]))  # type: ignore[misc]
            await asyncio.sleep(2)
            steps.append(
                {
                    "clusters": index + 2,
                    "rss_mb": operator.rss_mb(),
                    "sockets": connections(operator.pid),
                }
            )
        figures["steps"] = steps
        figures["rss_mb_per_remote_cluster"] = round(
            (steps[-1]["rss_mb"] - steps[0]["rss_mb"]) / len(remotes), 1
        )
        figures["sockets_per_remote_cluster"] = (steps[-1]["sockets"] - steps[0]["sockets"]) / len(
            remotes
        )
        figures["latency"] = await measure(kubes, operator)
        hub_p50 = figures["latency"]["hub"]["revert_read_p50_ms"]
        remote_p50 = [
            figures["latency"][f"remote-{i}"]["revert_read_p50_ms"] for i in range(len(remotes))
        ]
        figures["remote_over_local_p50"] = round(max(remote_p50) / hub_p50, 2) if hub_p50 else None
        return figures
    finally:
        for kube in kubes.values():
            await kube.close()
        operator.stop()


def main() -> int:
    with (
        tempfile.TemporaryDirectory(prefix="bench-clusters-") as tmp,
        ControlPlane() as hub,
        ControlPlane() as one,
        ControlPlane() as two,
    ):
        figures = asyncio.run(bench(hub, [one, two], Path(tmp)))
    out = ROOT / "bench" / "clusters.json"
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
