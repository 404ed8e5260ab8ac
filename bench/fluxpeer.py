"""Flux's kustomize-controller on the benchmark's control plane: its time to undo drift.

Built from its Go module by hack/build-bench-tools.sh (the Kustomization CRD from the
module's config/crd). No source-controller: the benchmark packs the objects into a tarball,
serves it on a loopback HTTP server and writes an ExternalArtifact's ``status.artifact``
(url, digest, revision) itself; kustomize-controller runs with the ExternalArtifact feature
gate and a system:masters certificate ``bench-flux``. Its Kustomization holds ConfigMaps like
driftguard's blueprints (same data), and the manual changes are the same merge patches.

kustomize-controller does not watch the objects it applies: drift is undone by the next
periodic reconcile, so its revert time is about half its ``interval`` on average. Each
change to one of its objects is paired with one to a driftguard object at the same moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import http.server
import io
import tarfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import workload
import yaml
from figures import Latencies
from informer import Informer
from kubeapi import MERGE, ApiError, cm_path
from lab import Lab
from latency import Probe, Target, observers
from procs import Child, free_port

from driftguard.controlplane.binaries import cache_root

HERE = Path(__file__).resolve().parent
VERSION = "v1.9.6"  # hack/build-bench-tools.sh FLUX_KC_VERSION
NAMESPACE = "bench-flux"
NAME = "bench"
USER = "bench-flux"
KS_PATH = f"/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/{NAMESPACE}/kustomizations"
EA_PATH = f"/apis/source.toolkit.fluxcd.io/v1/namespaces/{NAMESPACE}/externalartifacts"


def home() -> Path:
    return cache_root() / f"tools-kustomize-controller-{VERSION}"


def _tarball(count: int) -> bytes:
    """The objects as files in a .tar.gz, as source-controller would pack a repository."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for index in range(count):
            text = yaml.safe_dump(workload.configmap(index)).encode()
            info = tarfile.TarInfo(f"{workload.cm_name(index)}.yaml")
            info.size, info.mtime = len(text), 0
            archive.addfile(info, io.BytesIO(text))
    return buffer.getvalue()


@contextlib.contextmanager
def _serve(directory: Path) -> Any:
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _kustomization(interval: str) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "interval": interval,
            # The whole reconcile runs under this timeout (default: the interval).
            "timeout": "30s",
            "sourceRef": {"kind": "ExternalArtifact", "name": NAME},
            "path": "./",
            "prune": False,
            "targetNamespace": NAMESPACE,
        },
    }


def _ready(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@contextlib.asynccontextmanager
async def controller(lab: Lab, count: int) -> AsyncIterator[Child]:
    """kustomize-controller running, its artifact served, its Kustomization Ready."""
    binary = home() / "bin" / "kustomize-controller"
    if not binary.exists():
        raise FileNotFoundError(f"{binary} is missing: run hack/build-bench-tools.sh")
    for crd in [*sorted((home() / "crd").glob("*.yaml")), HERE / "flux" / "source-crds.yaml"]:
        await lab.kubectl("apply", "--server-side", "-f", str(crd))
    sources = ("gitrepositories", "ocirepositories", "buckets", "externalartifacts")
    crds = ["kustomizations.kustomize.toolkit.fluxcd.io"]
    crds += [f"{plural}.source.toolkit.fluxcd.io" for plural in sources]
    for crd_name in crds:
        await lab.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd_name}")
    await lab.create_namespaces([NAMESPACE])
    served = lab.workdir / "flux-artifacts"
    served.mkdir(exist_ok=True)
    data = _tarball(count)
    (served / "bench.tar.gz").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    kubeconfig = lab.plane.user_kubeconfig(USER, groups=["system:masters"])
    with _serve(served) as base:
        await _create(lab, EA_PATH, {"apiVersion": "source.toolkit.fluxcd.io/v1",
                                     "kind": "ExternalArtifact",
                                     "metadata": {"name": NAME, "namespace": NAMESPACE},
                                     "spec": {}})  # fmt: skip
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        artifact = {
            "path": "bench.tar.gz",
            "url": f"{base}/bench.tar.gz",
            "revision": f"bench@sha256:{digest}",
            "digest": f"sha256:{digest}",
            "lastUpdateTime": stamp,
            "size": len(data),
        }
        ready = {"type": "Ready", "status": "True", "reason": "Succeeded",
                 "message": "served by the benchmark", "lastTransitionTime": stamp}  # fmt: skip
        await lab.admin.request(
            "PATCH",
            f"{EA_PATH}/{NAME}/status",
            body={"status": {"artifact": artifact, "conditions": [ready]}},
            content_type=MERGE,
        )
        argv = [
            str(binary),
            f"--metrics-addr=127.0.0.1:{free_port()}",
            f"--health-addr=127.0.0.1:{free_port()}",
            "--feature-gates=ExternalArtifact=true",
            "--log-level=info",
        ]
        # No --kubeconfig flag: controller-runtime reads $KUBECONFIG.
        env = {
            "RUNTIME_NAMESPACE": NAMESPACE,
            "KUBECONFIG": str(kubeconfig),
            "PATH": "/usr/bin:/bin",
        }
        child = Child("flux", argv, lab.workdir / "kustomize-controller.log", env)
        lab.children.append(child)
        try:
            await _create(lab, KS_PATH, _kustomization("1m"))
            await _until_ready(lab, child, timeout=120)
            yield child
        finally:
            child.stop(grace=5)
            lab.children.remove(child)
            with contextlib.suppress(ApiError):
                await lab.delete(f"{KS_PATH}/{NAME}")


async def _create(lab: Lab, path: str, body: dict[str, Any]) -> None:
    try:
        await lab.admin.request("POST", path, body=body)
    except ApiError as exc:
        if exc.status != 409:
            raise


async def _until_ready(lab: Lab, child: Child, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.is_alive():
            raise RuntimeError(f"kustomize-controller exited:\n{child.tail()}")
        obj = await lab.admin.request("GET", f"{KS_PATH}/{NAME}")
        if _ready(obj) and (obj.get("status") or {}).get("lastAppliedRevision"):
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the Kustomization is not Ready after {timeout:.0f} s:\n{child.tail()}")


async def side_by_side(
    lab: Lab,
    child: Child,
    interval: str,
    flux_targets: Sequence[Target],
    driftguard_targets: Sequence[Target],
    *,
    spacing: float,
    timeout: float,
) -> dict[str, Any]:
    """At ``interval``: each change to a Flux object paired with one to a driftguard object,
    started ``spacing`` seconds apart (they overlap: Flux takes up to an interval each)."""
    patched = await lab.admin.request(
        "PATCH",
        f"{KS_PATH}/{NAME}",
        body={"spec": {"interval": interval}},
        content_type=MERGE,
    )
    generation = patched["metadata"]["generation"]
    deadline = time.monotonic() + 120
    while True:  # the new interval is in force once the controller has seen it
        obj = await lab.admin.request("GET", f"{KS_PATH}/{NAME}")
        if (obj.get("status") or {}).get("observedGeneration") == generation and _ready(obj):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"kustomize-controller did not take interval {interval}")
        await asyncio.sleep(0.2)
    flux_seen = Informer(lab.admin, cm_path(NAMESPACE), extract=workload.cm_value)
    watching = observers(lab)["driftguard"]
    flux = Latencies("flux", timeout)
    driftguard = Latencies("driftguard", timeout)
    for observer in [flux_seen, *watching.values()]:
        await observer.start()
    cpu = child.cpu_precise()
    began = time.monotonic()
    try:
        flux_probe = Probe(lab.manual, {"ConfigMap": flux_seen}, timeout)
        driftguard_probe = Probe(lab.manual, watching, timeout)
        tasks = []
        for ours, theirs in zip(driftguard_targets, flux_targets, strict=False):
            tasks.append(asyncio.create_task(flux_probe.change(theirs, flux)))
            tasks.append(asyncio.create_task(driftguard_probe.change(ours, driftguard)))
            await asyncio.sleep(spacing)
        await asyncio.gather(*tasks)
    finally:
        for observer in [flux_seen, *watching.values()]:
            await observer.stop()
    seconds = time.monotonic() - began
    return {
        "interval": interval,
        "flux": flux.summary(),
        "driftguard": driftguard.summary(),
        "flux_cpu_s": round(child.cpu_precise() - cpu, 2),
        "seconds": round(seconds, 1),
        "flux_cpu_share": round((child.cpu_precise() - cpu) / seconds, 3),
    }


def seconds_of(interval: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in ("ms", "s", "m", "h"):
        if interval.endswith(unit) and interval[: -len(unit)].replace(".", "").isdigit():
            return float(interval[: -len(unit)]) * units[unit]
    raise ValueError(interval)
