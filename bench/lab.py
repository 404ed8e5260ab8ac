"""The benchmark's world: identities, the operator process, the Environment observer.

Everything a phase needs to act and to observe, and nothing it measures. The operator runs
as the chart's ServiceAccount with the chart's RBAC and log level (`chartidentity.py`); the
others are client certificates of the local control plane, so the audit log tells them all
apart: ``bench-manual`` (the "human" making manual changes), ``bench-floor`` and
``bench-go-floor`` (the floors) and the admin (setup, observers, noise).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import chartidentity
import procs
import workload
from auditlog import AuditLog
from informer import Informer, Key
from kubeapi import MERGE, ApiError, Kube, env_path, gather_limited
from procs import Child, free_port

from driftguard.controlplane import ControlPlane

MANUAL_USER = "bench-manual"
FLOOR_USER = "bench-floor"
GO_FLOOR_USER = "bench-go-floor"
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class EnvView:
    """What the benchmark reads of one Environment."""

    generation: int
    in_sync: bool
    drifted: frozenset[str]
    managed: int | None


def env_view(obj: dict[str, Any]) -> EnvView:
    """In sync: InSync=True for the current generation and every blueprint object counted."""
    meta, status = obj["metadata"], obj.get("status") or {}
    generation = int(meta.get("generation") or 0)
    condition: dict[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "InSync"), {}
    )
    managed = (status.get("summary") or {}).get("managed")
    expected = len((obj.get("spec") or {}).get("resources") or [])
    in_sync = (
        status.get("observedGeneration") == generation
        and condition.get("status") == "True"
        and condition.get("observedGeneration", generation) == generation
        and managed == expected
    )
    drifted = frozenset(
        str(r.get("name")) for r in status.get("resources") or [] if r.get("state") == "Drifted"
    )
    return EnvView(generation, in_sync, drifted, managed)


def all_in_sync(keys: dict[Key, int]) -> Callable[[dict[Key, Any]], bool]:
    """A check: every Environment in ``keys`` in sync at least at the generation given."""

    def check(latest: dict[Key, Any]) -> bool:
        for key, generation in keys.items():
            view = latest.get(key)
            if view is None or not view.in_sync or view.generation < generation:
                return False
        return True

    return check


class OperatorDied(RuntimeError):
    """The operator process exited while the benchmark needed it."""


class Lab:
    def __init__(self, plane: ControlPlane, workdir: Path) -> None:
        self.plane = plane
        self.workdir = workdir
        self.identity = chartidentity.install(plane)
        self.audit = AuditLog(plane.audit_log, self.identity.username)
        self.operator: Child | None = None
        self.metrics_port = 0
        self.health_port = 0  # the probes: /readyz answers 200 once every first pass is done
        self.starts = 0
        self.admin: Kube
        self.manual: Kube
        self.envs: Informer
        self.children: list[Child] = []
        self.profiler: procs.Profiler | None = None
        self.profile_label = ""

    async def open(self) -> None:
        self.admin = await Kube.connect(self.plane.kubeconfig, user_agent="bench-admin/1", pool=96)
        manual_config = self.plane.user_kubeconfig(MANUAL_USER, groups=["system:masters"])
        self.manual = await Kube.connect(manual_config, user_agent="bench-manual/1")
        self.envs = await Informer(self.admin, env_path(None), extract=env_view).start()
        self._operator_config = self.identity.kubeconfig

    async def close(self) -> None:
        for child in self.children:
            child.stop(grace=5)
        for closing in (self.envs.stop(), self.admin.close(), self.manual.close()):
            # Teardown of a lab that may be half open: nothing here may hide the real error.
            with contextlib.suppress(Exception):
                await closing

    # -- the operator ---------------------------------------------------------

    async def start_operator(self) -> float:
        """Start ``driftguard run``; return seconds until its /metrics answers."""
        self.starts += 1
        self.metrics_port, self.health_port = free_port(), free_port()
        argv = [
            str(BIN / "driftguard"),
            "run",
            "--all-namespaces",
            "--metrics-insecure",
            "--metrics-port",
            str(self.metrics_port),
            "--liveness",
            f"http://127.0.0.1:{self.health_port}/healthz",
            "--log-level",
            self.identity.log_level,
        ]
        env = {**os.environ, "KUBECONFIG": str(self._operator_config)}
        log = self.workdir / f"operator-{self.starts}.log"
        self.operator = Child("driftguard", argv, log, env)
        self.children.append(self.operator)
        if self.profiler is not None and self.profile_label:
            self.profiler.start(self.operator.pid, f"{self.profile_label}-start{self.starts}")
        began = time.monotonic()
        while True:
            self.check_operator()
            if await asyncio.to_thread(self._metrics_text) is not None:
                return time.monotonic() - began
            if time.monotonic() - began > 60:
                raise OperatorDied(f"no /metrics after 60 s:\n{self.operator.tail()}")
            await asyncio.sleep(0.05)

    def stop_operator(self) -> float:
        assert self.operator is not None
        seconds = self.operator.stop()
        self.children.remove(self.operator)
        self.operator = None
        return seconds

    def check_operator(self) -> None:
        """Fails fast when the operator, or any other child now running (a floor,
        kustomize-controller), has exited: its figures would be timeouts."""
        if self.operator is not None and not self.operator.is_alive():
            raise OperatorDied(
                f"the operator exited with {self.operator.popen.returncode}:\n"
                f"{self.operator.tail()}"
            )
        for child in self.children:
            if not child.is_alive():
                raise RuntimeError(
                    f"{child.name} exited with {child.popen.returncode}:\n{child.tail()}"
                )

    def _metrics_text(self) -> str | None:
        try:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=2) as response:
                return str(response.read().decode())
        except OSError:
            return None

    def is_ready(self) -> bool:
        """The readiness probe, as the kubelet asks it: 200 once every Environment there at
        start has had its first pass (listed, compared, reverted where it drifted)."""
        try:
            url = f"http://127.0.0.1:{self.health_port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:  # urllib's HTTPError (503: not ready yet) is one too
            return False

    async def metrics(self) -> dict[str, float]:
        """The operator's /metrics samples, ``name{labels}`` -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        text = await asyncio.to_thread(self._metrics_text) or ""
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}"] = float(sample.value)
        return samples

    def cpu_snapshot(self) -> dict[str, tuple[int, float]]:
        """CPU seconds so far of every process in play, by name: (pid, seconds)."""
        pids = dict(self.plane.pids)
        pids["bench"] = os.getpid()
        for child in self.children:
            pids[child.name] = child.pid
        return procs.cpu_snapshot(pids)

    # -- waiting ----------------------------------------------------------------

    async def until(
        self, check: Callable[[dict[Key, Any]], bool], *, timeout: float
    ) -> float | None:
        """Like ``Informer.until`` on the Environments, failing fast if the operator dies."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_operator()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            at = await self.envs.until(check, timeout=min(1.0, remaining))
            if at is not None:
                return at

    # -- objects ------------------------------------------------------------------

    async def kubectl(self, *args: str) -> str:
        """kubectl as the admin; raises with its stderr when it fails."""
        process = await asyncio.create_subprocess_exec(
            str(BIN / "kubectl"),
            f"--kubeconfig={self.plane.kubeconfig}",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {err.decode().strip()}")
        return out.decode()

    async def create_namespaces(self, names: list[str]) -> None:
        async def one(name: str) -> None:
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            try:
                await self.admin.request("POST", "/api/v1/namespaces", body=body)
            except ApiError as exc:
                if exc.status != 409:
                    raise

        await gather_limited(16, [one(name) for name in names])

    async def create_environments(self, manifests: list[dict[str, Any]]) -> dict[Key, int]:
        """POST each Environment; return their keys with the generation created."""

        async def one(manifest: dict[str, Any]) -> tuple[Key, int]:
            meta = manifest["metadata"]
            created = await self.admin.request("POST", env_path(meta["namespace"]), body=manifest)
            return (meta["namespace"], meta["name"]), int(created["metadata"]["generation"])

        return dict(await gather_limited(8, [one(m) for m in manifests]))

    async def bump_environments(self, keys: list[Key]) -> dict[Key, int]:
        """Change each spec harmlessly (resyncInterval 10m <-> 11m): a new generation to meet."""

        async def one(key: Key) -> tuple[Key, int]:
            namespace, name = key
            current = await self.admin.request("GET", env_path(namespace, name))
            interval = "11m" if current["spec"].get("resyncInterval") != "11m" else "10m"
            patched = await self.admin.request(
                "PATCH",
                env_path(namespace, name),
                body={"spec": {"resyncInterval": interval}},
                content_type=MERGE,
            )
            return key, int(patched["metadata"]["generation"])

        return dict(await gather_limited(16, [one(k) for k in keys]))

    async def set_resync(self, keys: list[Key], interval: str) -> dict[Key, int]:
        """Set each spec's resyncInterval; return the generations to meet."""

        async def one(key: Key) -> tuple[Key, int]:
            patched = await self.admin.request(
                "PATCH",
                env_path(*key),
                body={"spec": {"resyncInterval": interval}},
                content_type=MERGE,
            )
            return key, int(patched["metadata"]["generation"])

        return dict(await gather_limited(16, [one(k) for k in keys]))

    async def mark_stale(self, keys: list[Key]) -> dict[Key, int]:
        """Set each InSync condition to Unknown (status only; spec and generation untouched).

        Done while no operator runs: only a new process's own pass can set it True again,
        which makes "in sync after a restart" observable without changing any blueprint.
        """
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

        async def one(key: Key) -> tuple[Key, int]:
            env = await self.admin.request("GET", env_path(*key))
            generation = int(env["metadata"]["generation"])
            stale = {
                "type": "InSync",
                "status": "Unknown",
                "reason": "BenchRestart",
                "message": "the benchmark restarted the operator",
                "lastTransitionTime": stamp,
                "observedGeneration": generation,
            }
            status = env.get("status") or {}
            conditions = [c for c in status.get("conditions") or [] if c["type"] != "InSync"]
            await self.admin.request(
                "PATCH",
                env_path(*key) + "/status",
                body={"status": {"conditions": [*conditions, stale]}},
                content_type=MERGE,
            )
            return key, generation

        return dict(await gather_limited(16, [one(k) for k in keys]))

    async def delete(self, path: str) -> None:
        try:
            await self.admin.request("DELETE", path)
        except ApiError as exc:
            if exc.status != 404:
                raise


def enforce_environments(
    first: int, count: int, *, configmaps: int, deployments: int
) -> list[dict[str, Any]]:
    resources = workload.blueprint(configmaps=configmaps, deployments=deployments)
    return [
        workload.environment(workload.namespace(i), resources) for i in range(first, first + count)
    ]
