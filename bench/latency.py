"""Revert latency: driftguard against the floor, measured interleaved on the same server.

Method: a manual write (merge patch as ``bench-manual``) returns at t0 with resourceVersion M;
the benchmark's own watch (as admin) sees, at t1, the first version newer than M that carries
the blueprint's value again. Latency is t1 - t0. Each object is changed once, so driftguard's
"fighting" guard (5 reverts in 60 s) never engages.

Two floors run beside driftguard: the Go floor (bench/gofloor, a client-go informer and
server-side apply, the fastest client there is) and the Python floor (floorloop.py). Their
changes alternate with driftguard's (one change each, the order rotating each round), so
whatever else the machine is doing at a given moment weighs on all three alike: the ratios
compare like with like.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import workload
from figures import Latencies
from informer import Informer, Seen
from kubeapi import MERGE, Kube, cm_path, deploy_path, rv
from lab import FLOOR_USER, GO_FLOOR_USER, Lab
from procs import Child

HERE = Path(__file__).resolve().parent
FLOOR_NAMESPACE = "bench-floor"
GO_FLOOR_NAMESPACE = "bench-go-floor"
# hack/build-bench-tools.sh puts the Go floor here (keyed by a hash of its source).
GO_FLOOR_GLOB = "bench-gofloor-*/bin/gofloor"

Target = tuple[str, str, str]  # kind, namespace, name


async def manual_change(manual: Kube, target: Target, serial: int) -> tuple[float, float, int, Any]:
    """One "human" merge patch: (when it was sent, when it returned, its resourceVersion,
    the blueprint value to expect back)."""
    kind, namespace, name = target
    query = {"fieldManager": workload.MANUAL_MANAGER}
    expected: Any
    if kind == "ConfigMap":
        body: dict[str, Any] = {"data": {workload.CM_KEY: f"manual-{serial}"}}
        path, expected = cm_path(namespace, name), workload.CM_VALUE
    else:
        body = {"spec": {"minReadySeconds": 2 + serial % 50}}
        path, expected = deploy_path(namespace, name), workload.DEPLOY_VALUE
    sent = time.monotonic()
    written = await manual.request("PATCH", path, query=query, body=body, content_type=MERGE)
    return sent, time.monotonic(), rv(written), expected


class Probe:
    """Changes targets one at a time and times their restoration as one observer sees it."""

    def __init__(self, manual: Kube, observers: dict[str, Informer], timeout: float) -> None:
        self._manual = manual
        self._observers = observers
        self._timeout = timeout
        self._serial = 0

    async def change(self, target: Target, latencies: Latencies) -> None:
        self._serial += 1
        sent, returned, written, expected = await manual_change(self._manual, target, self._serial)

        def restored(seen: Seen) -> bool:
            return seen.rv > written and seen.value == expected

        key = (target[1], target[2])
        at = await self._observers[target[0]].first(key, restored, timeout=self._timeout)
        latencies.add(None if at is None else at - returned, target[0], write_s=returned - sent)


def go_floor_binary() -> Path:
    """The Go floor built from the current source (hack/build-bench-tools.sh)."""
    import hashlib

    from driftguard.controlplane.binaries import cache_root

    source = HERE / "gofloor"
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", *sorted(p.name for p in source.glob("*.go"))):
        digest.update((source / name).read_bytes())
    binary = cache_root() / f"bench-gofloor-{digest.hexdigest()[:12]}" / "bin" / "gofloor"
    if not binary.exists():
        raise FileNotFoundError(f"{binary} is missing: run hack/build-bench-tools.sh")
    return binary


@asynccontextmanager
async def floor_loop(lab: Lab, count: int, *, go: bool = False) -> AsyncIterator[list[Target]]:
    """Run a floor (floorloop.py, or the Go floor) over ``count`` ConfigMaps; yield them."""
    namespace = GO_FLOOR_NAMESPACE if go else FLOOR_NAMESPACE
    await lab.create_namespaces([namespace])
    user = GO_FLOOR_USER if go else FLOOR_USER
    kubeconfig = lab.plane.user_kubeconfig(user, groups=["system:masters"])
    program = [str(go_floor_binary())] if go else [sys.executable, str(HERE / "floorloop.py")]
    argv = [*program, f"--kubeconfig={kubeconfig}", f"--namespace={namespace}", f"--count={count}"]
    name = "go-floor" if go else "floor"
    child = Child(name, argv, lab.workdir / f"{name}.log", {}, capture_stdout=True)
    lab.children.append(child)
    try:
        assert child.popen.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.popen.stdout.readline), 120)
        if line.strip() != b"ready":
            raise RuntimeError(f"the {name} loop did not start:\n{child.tail()}")
        yield [("ConfigMap", namespace, f"floor-{i:03d}") for i in range(count)]
    finally:
        child.stop(grace=5)
        lab.children.remove(child)


def observers(lab: Lab) -> dict[str, dict[str, Informer]]:
    """The floors' observers and driftguard's (label-selected, every namespace), by kind."""
    managed = workload.MANAGED_SELECTOR
    return {
        "floor": {
            "ConfigMap": Informer(
                lab.admin,
                cm_path(FLOOR_NAMESPACE),
                extract=workload.cm_value,
                selector=workload.FLOOR_SELECTOR,
            )
        },
        "go_floor": {
            "ConfigMap": Informer(
                lab.admin,
                cm_path(GO_FLOOR_NAMESPACE),
                extract=workload.cm_value,
                selector=workload.FLOOR_SELECTOR,
            )
        },
        "driftguard": {
            "ConfigMap": Informer(
                lab.admin, cm_path(None), extract=workload.cm_value, selector=managed
            ),
            "Deployment": Informer(
                lab.admin, deploy_path(None), extract=workload.deploy_value, selector=managed
            ),
        },
    }


async def interleaved(
    lab: Lab,
    driftguard_targets: Sequence[Target],
    *,
    batch: int,
    gap: float,
    timeout: float,
) -> dict[str, Any]:
    """Rotate batches of ``batch`` simultaneous changes among the Go floor, the Python
    floor and driftguard. Returns the three latency summaries and driftguard's requests
    per change."""
    count = len(driftguard_targets)
    watching = observers(lab)
    for group in watching.values():
        for observer in group.values():
            await observer.start()
    floor = Latencies("floor", timeout)
    go_floor = Latencies("go_floor", timeout)
    driftguard = Latencies("driftguard", timeout)
    try:
        async with (
            floor_loop(lab, count) as floor_targets,
            floor_loop(lab, count, go=True) as go_targets,
        ):
            sides = [
                (Probe(lab.manual, watching["go_floor"], timeout), go_targets, go_floor),
                (Probe(lab.manual, watching["floor"], timeout), floor_targets, floor),
                (
                    Probe(lab.manual, watching["driftguard"], timeout),
                    driftguard_targets,
                    driftguard,
                ),
            ]
            wall = time.time()
            for round_, start in enumerate(range(0, count, batch)):
                turn = round_ % len(sides)
                for probe, targets, latencies in sides[turn:] + sides[:turn]:
                    chunk = targets[start : start + batch]
                    await asyncio.gather(*(probe.change(t, latencies) for t in chunk))
                    await asyncio.sleep(gap)
                lab.check_operator()
            await asyncio.sleep(1)  # the status writes that follow the last revert
            requests = lab.audit.window(wall, time.time()).verbs
    finally:
        for group in watching.values():
            for observer in group.values():
                await observer.stop()
    return {
        "go_floor": go_floor.summary(),
        "floor": floor.summary(),
        "driftguard": driftguard.summary(),
        "operator_requests_per_change": {
            verb: round(n / count, 2) for verb, n in sorted(requests.items())
        },
    }


def targets(*, first_env: int, last_env: int, configmaps: int, deployments: bool) -> list[Target]:
    """The managed objects of a range of Environments, shuffled with a fixed seed."""
    found: list[Target] = []
    for env in range(first_env, last_env):
        namespace = workload.namespace(env)
        found += [("ConfigMap", namespace, workload.cm_name(j)) for j in range(configmaps)]
        if deployments:
            found.append(("Deployment", namespace, "web-0"))
    random.Random(4).shuffle(found)
    return found


def revert_histogram(samples: dict[str, float]) -> dict[str, Any]:
    """The operator's own view (watch event received -> revert written), mean by kind."""
    result: dict[str, Any] = {}
    for name, value in samples.items():
        if name.startswith("driftguard_revert_latency_seconds_sum"):
            kind = name.split("kind=", 1)[1].rstrip("}").split(",")[0]
            count = samples.get(name.replace("_sum{", "_count{"), 0.0)
            if count:
                result[kind] = {"n": int(count), "mean_s": round(value / count, 4)}
    return result
