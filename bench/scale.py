"""make bench-scale: three replicas share 50,000 managed objects in 500 Environments.

    make bench-scale                          # = .venv/bin/python bench/scale.py
    .venv/bin/python bench/scale.py --quick   # 60 Environments of 50 ConfigMaps

Its own control plane (etcd with --unsafe-no-fsync, kube-apiserver with the feature gate
ShardedListAndWatch, kube-controller-manager), `crds/`, and the chart's ServiceAccount and
RBAC rendered with sharding.enabled (Leases included). The Environments exist before any
operator runs; then three `driftguard run --shards-from-leases` start together, each with its
own POD_ID (hence Lease and User-Agent). Measured:

- cold_in_sync_s: from the three starts to every Environment InSync (generation and count);
- rss_mb_per_replica: VmRSS of each, 5 s after that;
- revert_p50_s / revert_p99_s: manual merge patches (user agent bench-manual) to distinct
  ConfigMaps spread over all Environments, one at a time; from the patch's return to the
  benchmark's own watch seeing the blueprint's value again. The single-process figures
  are read from bench/results.json (`make bench`), when there is one;
- failover_s: SIGKILL one replica, then at once a manual change in one ConfigMap of each of
  its Environments; until every one of them names another replica in status.shard and
  the change is seen reverted (failover_first_revert_s: until the first change is);
- double_writes: from the API server's audit log, after the kill: managed objects written
  (create/update/patch/delete) by more than one replica, plus reverts beyond the first for
  each injected change.

Writes bench/scale.json (not committed), records the run in bench/results/ (`record.py`:
<date>-<machine>-scale.json, committed) and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import procs
import record
import yaml
from kubeapi import MERGE, ApiError, Kube, cm_path, env_path, gather_limited

from driftguard.controlplane import ControlPlane
from driftguard.controlplane.binaries import cache_root

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHART = ROOT / "charts" / "driftguard"
NAMESPACE = "driftguard-system"
RELEASE = "driftguard"
VICTIM = "r-2"
MANAGED = "app.kubernetes.io/managed-by=driftguard"
SINGLE = ROOT / "bench" / "scale-single.json"
SIZES = {"full": (500, 100, 250), "quick": (60, 50, 60)}
"""Environments, ConfigMaps in each, manual changes for the revert latency."""
WRITES = {"create", "update", "patch", "delete"}
LEASE_S = float(yaml.safe_load((CHART / "values.yaml").read_text())["sharding"]["leaseDuration"])
"""The chart's default, passed as it passes it."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class CpuAccount:
    """CPU seconds each process spent in a phase: who bounds it (the API server, etcd, a
    replica). The replicas come and go, so each phase names the pids it counts."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self.began = time.monotonic()
        self.start = procs.cpu_snapshot(self.pids)

    def spent(self) -> dict[str, float]:
        found = procs.cpu_delta(self.start, procs.cpu_snapshot(self.pids))
        found = {name: round(seconds, 1) for name, seconds in found.items()}
        found["wall"] = round(time.monotonic() - self.began, 1)
        return found


# -- identity and processes ----------------------------------------------------------


def install_identity(plane: ControlPlane) -> Path:
    """The chart's ServiceAccount and RBAC with sharding.enabled; a kubeconfig with its token."""
    helm = cache_root() / "tools-helm-v3.22.0" / "bin" / "helm"
    rendered = subprocess.run(
        [
            *(str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE),
            *("--set", "sharding.enabled=true", "--set", "replicas=3"),
            *("--show-only", "templates/serviceaccount.yaml"),
            *("--show-only", "templates/rbac.yaml"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kubectl = [str(BIN / "kubectl"), f"--kubeconfig={plane.kubeconfig}"]
    subprocess.run([*kubectl, "create", "namespace", NAMESPACE], check=True, capture_output=True)
    subprocess.run([*kubectl, "apply", "-f", "-"], input=rendered, text=True, check=True)
    subprocess.run([*kubectl, "apply", "--server-side", "-f", str(ROOT / "crds")], check=True)
    account = next(
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all(rendered)
        if doc and doc.get("kind") == "ServiceAccount"
    )
    return plane.serviceaccount_kubeconfig(NAMESPACE, account)


@dataclass
class Replica:
    replica: str
    kubeconfig: Path
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    sharded: bool = True
    heap: bool = False
    lease_s: float = LEASE_S

    @property
    def heap_file(self) -> Path:
        return self.directory / f"{self.replica}-heap.txt"

    def start(self) -> None:
        command = [str(BIN / "driftguard")]
        if self.heap:
            command = [sys.executable, str(ROOT / "bench" / "heapwrap.py"), str(self.heap_file)]
        argv = [*command, "run", "--all-namespaces", "--metrics-port", "0"]
        argv += ["--log-level=INFO"]
        if self.sharded:
            argv += ["--shards-from-leases", f"--lease-namespace={NAMESPACE}"]
            argv += [f"--lease-duration={self.lease_s:g}"]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "POD_ID": self.replica}
        with (self.directory / f"{self.replica}.log").open("ab") as sink:
            self.process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)

    def rss_mb(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return 0.0

    async def dump_heap(self) -> str:
        """tracemalloc's live allocations (bench/heapwrap.py), once written."""
        assert self.process is not None
        self.heap_file.unlink(missing_ok=True)
        self.process.send_signal(signal.SIGUSR2)
        for _ in range(600):
            if self.heap_file.exists() and self.heap_file.stat().st_size:
                return self.heap_file.read_text()
            await asyncio.sleep(0.5)
        return ""

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def lapses(self) -> int:
        """Times this replica's Lease ran out while it lived (a renewal too late): it fenced
        itself and came back with nothing, as designed, but its share moved for nothing."""
        log_file = self.directory / f"{self.replica}.log"
        text = log_file.read_text(errors="replace") if log_file.exists() else ""
        return sum(
            1 for line in text.splitlines() if "shard_fenced" in line and "lease_expired" in line
        )

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


# -- the world -------------------------------------------------------------------------


def blueprint(configmaps: int) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"cm-{j}"},
            "data": {"value": "blueprint", "index": str(j)},
        }
        for j in range(configmaps)
    ]


async def create_world(admin: Kube, environments: int, configmaps: int) -> list[str]:
    names = [f"scale-{i}" for i in range(environments)]
    await gather_limited(
        16,
        [
            admin.request("POST", "/api/v1/namespaces", body={"metadata": {"name": n}})
            for n in names
        ],
    )
    resources = blueprint(configmaps)

    def env(namespace: str) -> dict[str, Any]:
        return {
            "apiVersion": "driftguard.io/v1alpha1",
            "kind": "Environment",
            "metadata": {"name": "app", "namespace": namespace},
            "spec": {"mode": "Enforce", "resources": resources},
        }

    await gather_limited(8, [admin.request("POST", env_path(n), body=env(n)) for n in names])
    return names


@dataclass
class EnvState:
    in_sync: bool = False
    shard: str = ""


def env_state(obj: dict[str, Any]) -> EnvState:
    meta, status = obj["metadata"], obj.get("status") or {}
    generation = meta.get("generation")
    condition = next((c for c in status.get("conditions") or [] if c.get("type") == "InSync"), {})
    expected = len((obj.get("spec") or {}).get("resources") or [])
    in_sync = (
        status.get("observedGeneration") == generation
        and condition.get("status") == "True"
        and (status.get("summary") or {}).get("managed") == expected
    )
    return EnvState(in_sync=in_sync, shard=str(status.get("shard") or ""))


@dataclass
class Observer:
    """The benchmark's own watches: Environments (state, owner) and managed ConfigMaps."""

    admin: Kube
    envs: dict[str, EnvState] = field(default_factory=dict)
    values: dict[tuple[str, str], tuple[int, str, float]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        listing = await self.admin.request("GET", env_path(None))
        for item in listing["items"]:
            self.envs[item["metadata"]["namespace"]] = env_state(item)
        version = listing["metadata"]["resourceVersion"]
        self.tasks.append(asyncio.create_task(self._envs(version)))
        query = {"labelSelector": MANAGED, "limit": "1"}
        first = await self.admin.request("GET", cm_path(None), query=query)
        self.tasks.append(
            asyncio.create_task(self._configmaps(first["metadata"]["resourceVersion"]))
        )

    async def _envs(self, version: str) -> None:
        while True:
            with contextlib.suppress(ApiError):
                async for _, kind, obj in self.admin.watch(
                    env_path(None), query={"resourceVersion": version}
                ):
                    version = obj["metadata"].get("resourceVersion", version)
                    if kind in ("ADDED", "MODIFIED"):
                        self.envs[obj["metadata"]["namespace"]] = env_state(obj)
                        self._notify()
            await asyncio.sleep(0.2)

    async def _configmaps(self, version: str) -> None:
        while True:
            with contextlib.suppress(ApiError):
                query = {"resourceVersion": version, "labelSelector": MANAGED}
                async for arrived, kind, obj in self.admin.watch(cm_path(None), query=query):
                    meta = obj["metadata"]
                    version = meta.get("resourceVersion", version)
                    if kind == "MODIFIED":
                        value = str((obj.get("data") or {}).get("value"))
                        key = (meta["namespace"], meta["name"])
                        self.values[key] = (int(meta["resourceVersion"]), value, arrived)
                        self._notify()
            await asyncio.sleep(0.2)

    def _notify(self) -> None:
        self.changed.set()

    async def until(self, check: Any, timeout: float) -> float:
        """Waits until check() holds; returns the monotonic time it first did."""
        deadline = time.monotonic() + timeout
        while not check():
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("condition not reached")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=min(remaining, 1.0))
        return time.monotonic()

    def reverted(self, key: tuple[str, str], after: int) -> float | None:
        seen = self.values.get(key)
        if seen is not None and seen[0] > after and seen[1] == "blueprint":
            return seen[2]
        return None

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()


async def manual_change(manual: Kube, namespace: str, name: str, value: str) -> int:
    body = {"data": {"value": value}}
    answer = await manual.request("PATCH", cm_path(namespace, name), body=body, content_type=MERGE)
    return int(answer["metadata"]["resourceVersion"])


# -- phases ----------------------------------------------------------------------------


async def revert_latencies(
    observer: Observer, manual: Kube, names: list[str], configmaps: int, changes: int
) -> list[float]:
    latencies = []
    for k in range(changes):
        namespace = names[(k * 7) % len(names)]
        name = f"cm-{(k * 13) % configmaps}"
        version = await manual_change(manual, namespace, name, f"manual-{k}")
        written = time.monotonic()
        seen = await observer.until(
            lambda n=namespace, c=name, v=version: observer.reverted((n, c), v) is not None, 30
        )
        arrived = observer.reverted((namespace, name), version) or seen
        latencies.append(arrived - written)
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index], 4)


def audit_writes(audit_log: Path, offset: int) -> list[dict[str, Any]]:
    """The operator replicas' writes to managed ConfigMaps after ``offset`` bytes."""
    found = []
    with audit_log.open("rb") as handle:
        handle.seek(offset)
        for line in handle:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            agent = str(event.get("userAgent") or "")
            ref = event.get("objectRef") or {}
            if event.get("stage") != "ResponseComplete" or not agent.startswith("driftguard/"):
                continue
            if event.get("verb") not in WRITES or ref.get("resource") != "configmaps":
                continue
            if "dryRun" in str(event.get("requestURI")) or ref.get("name", "").endswith("-audit"):
                continue
            event["replica"] = agent.rsplit("(", 1)[-1].rstrip(")")
            found.append(event)
    return found


def double_writes(writes: list[dict[str, Any]], injected: set[tuple[str, str]]) -> dict[str, int]:
    by_object: dict[tuple[str, str], list[str]] = {}
    for event in writes:
        ref = event["objectRef"]
        by_object.setdefault((ref["namespace"], ref["name"]), []).append(event["replica"])
    shared = sum(1 for replicas in by_object.values() if len(set(replicas)) > 1)
    extra_reverts = sum(max(0, len(by_object.get(key, [])) - 1) for key in injected)
    return {"objects_written_by_two_replicas": shared, "extra_reverts": extra_reverts}


def single_process(objects: int) -> dict[str, Any]:
    """The single-process figures to compare with: this benchmark's own `--replicas 1 --plain`
    run at the same size when there is one, else `make bench`'s."""
    keys = ("revert_p50_s", "revert_p99_s", "cold_in_sync_s", "rss_mb_per_replica")
    try:
        own = json.loads(SINGLE.read_text())
        if own.get("objects") == objects:
            found = {key: own.get(key) for key in keys}
            found["source"] = f"{SINGLE.name} (bench/scale.py --replicas 1 --plain)"
            return found
    except (OSError, ValueError):
        pass
    try:
        results = json.loads((ROOT / "bench" / "results.json").read_text())
    except (OSError, ValueError):
        return {}
    keys = ("revert_p50_s", "revert_p99_s", "revert_p50_s_5000", "revert_p99_s_5000")
    found = {key: results.get(key) for key in keys if key in results}
    found["source"] = "bench/results.json (make bench, one process, 1,000 / 5,000 objects)"
    return found


async def run(args: argparse.Namespace, plane: ControlPlane, work: Path) -> dict[str, Any]:
    environments, configmaps, changes = SIZES["quick" if args.quick else "full"]
    environments = args.environments or environments
    configmaps = args.configmaps or configmaps
    kubeconfig = install_identity(plane)
    admin = await Kube.connect(plane.kubeconfig, user_agent="bench-scale")
    manual = await Kube.connect(plane.kubeconfig, user_agent="bench-manual")
    ids = [f"r-{i}" for i in range(1, args.replicas + 1)]
    replicas = {
        r: Replica(
            r, kubeconfig, work, sharded=not args.plain, heap=args.heap, lease_s=args.lease_duration
        )
        for r in ids
    }
    observer = Observer(admin)

    def pids() -> dict[str, int]:
        found = {n: p for n, p in plane.pids.items() if n in ("etcd", "kube-apiserver")}
        found.update({r: x.pid for r, x in replicas.items() if x.pid is not None})
        found["bench"] = os.getpid()
        return found

    try:
        log(f"creating {environments} Environments of {configmaps} ConfigMaps")
        names = await create_world(admin, environments, configmaps)
        await observer.start()
        log(f"starting {len(replicas)} replica(s){' without sharding' if args.plain else ''}")
        started = time.monotonic()
        for replica in replicas.values():
            replica.start()
        cold_cpu = CpuAccount(pids())
        done = await observer.until(
            lambda: (
                len(observer.envs) >= environments
                and all(
                    state.in_sync and (state.shard or args.plain)
                    for state in observer.envs.values()
                )
            ),
            args.timeout,
        )
        cold = done - started
        shares = {r: sum(1 for s in observer.envs.values() if s.shard == r) for r in replicas}
        cpu = {"cold": cold_cpu.spent()}
        log(f"cold start: all InSync after {cold:.1f}s; shares {shares}; CPU s {cpu['cold']}")
        await asyncio.sleep(5)
        rss = [replica.rss_mb() for replica in replicas.values()]
        log(f"RSS per replica {rss} MB; {changes} manual changes")
        if args.heap:
            for replica in replicas.values():
                log(f"heap of {replica.replica}:\n{await replica.dump_heap()}")
        latencies = await revert_latencies(observer, manual, names, configmaps, changes)
        result: dict[str, Any] = {
            "replicas": len(replicas),
            "objects": environments * configmaps,
            "environments": environments,
            "cold_in_sync_s": round(cold, 2),
            "rss_mb_per_replica": rss,
            "revert_p50_s": percentile(latencies, 0.5),
            "revert_p99_s": percentile(latencies, 0.99),
            "failover_s": None,
            "double_writes": None,
        }
        details: dict[str, Any] = {
            "size": "quick" if args.quick else "full",
            "sharded": not args.plain,
            "revert_samples": len(latencies),
            "revert_mean_s": round(statistics.fmean(latencies), 4),
            "shares": shares,
            "single_process": single_process(environments * configmaps),
            "work_directory": str(work),
            "measured_at": datetime.now().isoformat(timespec="seconds"),
            "cpu_s": cpu,
        }
        result["details"] = details
        if VICTIM not in replicas:
            return result
        victims = [n for n, s in observer.envs.items() if s.shard == VICTIM]
        offset = plane.audit_log.stat().st_size
        log(f"SIGKILL {VICTIM} ({len(victims)} Environments)")
        killed = time.monotonic()
        replicas[VICTIM].kill()
        failover_cpu = CpuAccount(pids())
        spies = procs.Profiler(args.py_spy, work) if args.py_spy else None
        for name, replica in replicas.items():
            if spies is not None and name != VICTIM and replica.pid is not None:
                spies.start(replica.pid, f"{name}-failover")
        injected = {}
        for namespace in victims:
            injected[(namespace, "cm-0")] = await manual_change(
                manual, namespace, "cm-0", "while-down"
            )

        # Seconds after the kill each victim was named another replica's, and its drift undone.
        moved: dict[str, float] = {}

        def taken_over() -> bool:
            for n in victims:
                if n not in moved and observer.envs[n].shard not in ("", VICTIM):
                    moved[n] = round(time.monotonic() - killed, 2)
            return all(
                n in moved and observer.reverted((n, "cm-0"), injected[(n, "cm-0")]) is not None
                for n in victims
            )

        recovered = await observer.until(taken_over, args.timeout)
        failover = recovered - killed
        reverted = [observer.reverted((n, "cm-0"), injected[(n, "cm-0")]) for n in victims]
        cpu["failover"] = failover_cpu.spent()
        if spies is not None:
            spies.stop()
        log(f"failover: {failover:.1f}s; CPU s {cpu['failover']}")
        await asyncio.sleep(3)  # late writes, if any, reach the audit log
        doubles = double_writes(audit_writes(plane.audit_log, offset), set(injected))
        after = {r: sum(1 for s in observer.envs.values() if s.shard == r) for r in replicas}
        result["failover_s"] = round(failover, 2)
        # The issue's own measure: until the first drift in the dead replica's share is undone.
        first = min((t for t in reverted if t is not None), default=recovered)
        result["failover_first_revert_s"] = round(first - killed, 2)
        result["double_writes"] = sum(doubles.values())
        details.update(
            shares_after_failover=after,
            failover_environments=len(victims),
            double_writes=doubles,
            lease_duration_s=args.lease_duration,
            lease_lapses={r: x.lapses() for r, x in replicas.items()},
            failover_timeline={
                "moved_s": sorted(moved.values()),
                "reverted_s": sorted(round((t or recovered) - killed, 2) for t in reverted),
            },
        )
        return result
    finally:
        observer.stop()
        for replica in replicas.values():
            replica.stop()
        await admin.close()
        await manual.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 Environments of 50 ConfigMaps")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per phase, seconds")
    parser.add_argument("--replicas", type=int, default=3, help="how many (default 3)")
    parser.add_argument("--environments", type=int, default=0, help="override the size's")
    parser.add_argument("--configmaps", type=int, default=0, help="per Environment, likewise")
    parser.add_argument(
        "--plain",
        action="store_true",
        help=f"one replica without sharding, the baseline; writes {SINGLE.name}",
    )
    parser.add_argument(
        "--heap",
        action="store_true",
        help="run the replicas under tracemalloc (bench/heapwrap.py) and print where their "
        "memory is after the cold start; slower, and its RSS is not the operator's",
    )
    parser.add_argument(
        "--lease-duration",
        type=float,
        default=LEASE_S,
        help=f"seconds (default {LEASE_S:g}, the chart's); another value is not recorded",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        default=None,
        metavar="PATH",
        help="sample the survivors with this py-spy during the failover (not a project "
        "dependency); collapsed stacks in the work directory, profile-<replica>-failover.txt",
    )
    parser.add_argument("--no-record", action="store_true", help="an experiment: nothing recorded")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.plain and args.replicas != 1:
        parser.error("--plain runs one replica: add --replicas 1")
    if args.output is None:
        args.output = SINGLE if args.plain else ROOT / "bench" / "scale.json"
    # A SIGTERM (timeout, a kill) unwinds like Ctrl-C, so the replicas and the plane stop.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    plane = ControlPlane(feature_gates={"ShardedListAndWatch": True})
    plane.start()
    # The plane's directory goes with it; the replicas' logs stay here.
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    log(f"control plane up; replica logs in {work}")
    try:
        result = asyncio.run(run(args, plane, work))
    finally:
        plane.stop()
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    # Traced or sampled replicas, or a Lease other than the chart's, are no figures of record.
    if (
        not (args.plain or args.heap or args.py_spy or args.no_record)
        and args.lease_duration == LEASE_S
    ):
        sizes = {"environments": result.get("environments"), "objects": result.get("objects")}
        print(f"recorded in {record.write(result, kind='scale', quick=args.quick, sizes=sizes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
