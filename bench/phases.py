"""The measurements, one coroutine each; every one returns a dict of figures for results.json.

Revert latency (with the floor) is in latency.py. Detection uses the same method with the
Environment's status as the thing observed: a manual write returns at t0; the benchmark's
watch on Environments sees, at t1, the status naming the object Drifted.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import latency
import workload
import yaml
from figures import Latencies, ratio
from informer import Key, Seen
from kubeapi import MERGE, cm_path, env_path, gather_limited
from lab import Lab, all_in_sync, enforce_environments

HERE = Path(__file__).resolve().parent
SETTLE_S = 5.0


@dataclass(frozen=True)
class Sizes:
    """How much of everything; ``quick()`` scales it down for a smoke run."""

    quick: bool = False
    envs_small: int = 50
    envs_large: int = 250
    per_env: int = 20
    changes: int = 250
    concurrent_changes: int = 100
    concurrency: int = 4
    detect_changes: int = 30
    noise: int = 5000
    window_s: float = 60.0
    cold_objects: int = 100
    change_timeout: float = 10.0
    sync_timeout: float = 300.0
    gap_s: float = 0.1
    resync_window_s: float = 120.0
    huge_envs: int = 500
    huge_per_env: int = 180  # the 250 added Environments; with the first 5,000: 50,000
    huge_changes: int = 100
    huge_timeout: float = 1200.0
    flux_objects: int = 40
    flux_slow_changes: int = 6  # at interval 1m, started 10 s apart
    flux_fast_interval: str = "1s"
    flux_fast_changes: int = 30

    @classmethod
    def make_quick(cls) -> Sizes:
        return cls(
            quick=True,
            envs_small=10,
            envs_large=50,
            changes=50,
            concurrent_changes=20,
            detect_changes=10,
            noise=1000,
            window_s=10.0,
            sync_timeout=120.0,
            resync_window_s=40.0,
            huge_envs=100,
            huge_per_env=20,
            huge_changes=20,
            huge_timeout=300.0,
            flux_objects=20,
            flux_slow_changes=2,
            flux_fast_changes=10,
        )

    @property
    def small(self) -> int:
        return self.envs_small * self.per_env

    @property
    def large(self) -> int:
        return self.envs_large * self.per_env

    @property
    def huge(self) -> int:
        return self.large + (self.huge_envs - self.envs_large) * self.huge_per_env


# -- driftguard: bring-up, steady state, churn ------------------------------------------


async def bring_up(lab: Lab, sizes: Sizes) -> tuple[dict[str, Any], dict[Key, int]]:
    """Start the operator idle, then create the small set of Environments and wait for sync."""
    figures: dict[str, Any] = {"metrics_up_s": round(await lab.start_operator(), 3)}
    await asyncio.sleep(SETTLE_S)
    assert lab.operator is not None
    figures["rss_mb_idle"] = round(lab.operator.rss_mb(), 1)
    manifests = enforce_environments(
        0, sizes.envs_small, configmaps=sizes.per_env - 1, deployments=1
    )
    keys, seconds = await _create_and_sync(lab, manifests, sizes)
    figures[f"initial_sync_{sizes.small}_s"] = seconds
    figures["objects"] = sizes.small
    figures["environments"] = sizes.envs_small
    return figures, keys


async def _create_and_sync(
    lab: Lab, manifests: list[dict[str, Any]], sizes: Sizes, *, timeout: float | None = None
) -> tuple[dict[Key, int], float | None]:
    await lab.create_namespaces([m["metadata"]["namespace"] for m in manifests])
    began = time.monotonic()
    keys = await lab.create_environments(manifests)
    at = await lab.until(all_in_sync(keys), timeout=timeout or sizes.sync_timeout)
    return keys, None if at is None else round(at - began, 3)


async def settle(lab: Lab, keys: dict[Key, int], sizes: Sizes) -> None:
    """Wait until every Environment is in sync, then a little longer for stragglers."""
    if await lab.until(all_in_sync(keys), timeout=sizes.sync_timeout) is None:
        raise TimeoutError("Environments did not come back in sync")
    await asyncio.sleep(SETTLE_S)


async def create_noise(lab: Lab, sizes: Sizes) -> tuple[dict[str, Any], list[Key]]:
    """Unlabelled ConfigMaps spread over the managed namespaces."""
    objects = [
        workload.noise_configmap(workload.namespace(i % sizes.envs_small), i // sizes.envs_small)
        for i in range(sizes.noise)
    ]
    began = time.monotonic()
    await gather_limited(
        16,
        [lab.admin.request("POST", cm_path(o["metadata"]["namespace"]), body=o) for o in objects],
    )
    seconds = time.monotonic() - began
    keys = [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects]
    return {"noise_objects": len(keys), "noise_create_s": round(seconds, 2)}, keys


async def steady_state(lab: Lab, keys: dict[Key, int], sizes: Sizes) -> dict[str, Any]:
    """Nothing drifts, nothing changes: count the operator's requests and CPU."""
    await settle(lab, keys, sizes)
    assert lab.operator is not None
    cpu, ticks, wall = lab.operator.cpu_precise(), lab.operator.cpu_seconds(), time.time()
    await asyncio.sleep(sizes.window_s)
    cpu, end = lab.operator.cpu_precise() - cpu, time.time()
    ticks = lab.operator.cpu_seconds() - ticks
    lab.check_operator()
    await asyncio.sleep(2)  # the audit log is written as requests complete
    window = lab.audit.window(wall, end)
    return {"cpu_s": round(cpu, 4), "cpu_s_ticks": round(ticks, 2), **window.as_dict()}


async def churn(lab: Lab, noise: list[Key], seconds: float, writers: int = 4) -> dict[str, Any]:
    """Unrelated ConfigMaps updated as fast as ``writers`` sequential clients go."""
    assert lab.operator is not None
    updates = 0
    stop_at = time.monotonic() + seconds

    async def writer(offset: int) -> None:
        nonlocal updates
        index = offset
        while time.monotonic() < stop_at:
            namespace, name = noise[index % len(noise)]
            body = {"data": {"n": str(updates)}}
            await lab.admin.request(
                "PATCH", cm_path(namespace, name), body=body, content_type=MERGE
            )
            updates += 1
            index += writers

    cpu, ticks = lab.operator.cpu_precise(), lab.operator.cpu_seconds()
    wall, began = time.time(), time.monotonic()
    await asyncio.gather(*(writer(i) for i in range(writers)))
    cpu, end = lab.operator.cpu_precise() - cpu, time.time()
    ticks = lab.operator.cpu_seconds() - ticks
    elapsed = time.monotonic() - began
    lab.check_operator()
    await asyncio.sleep(2)
    window = lab.audit.window(wall, end)
    return {
        "cpu_s": round(cpu, 4),
        "cpu_s_ticks": round(ticks, 2),
        "updates": updates,
        "updates_per_s": round(updates / elapsed, 1),
        "seconds": round(elapsed, 2),
        "operator_requests": dict(window.verbs),
    }


# -- driftguard: reverts, detection, cold apply ----------------------------------------


async def reverts(
    lab: Lab, keys: dict[Key, int], sizes: Sizes, *, large: bool = False, huge: bool = False
) -> dict[str, Any]:
    """Sequential manual changes, then batches of ``concurrency`` at once (small size only),
    each on fresh objects, interleaved with the same changes to the floors' objects."""
    await settle(lab, keys, sizes)
    if huge:
        found = latency.targets(
            first_env=sizes.envs_large,
            last_env=sizes.huge_envs,
            configmaps=sizes.huge_per_env,
            deployments=False,
        )
        plan = [("sequential", sizes.huge_changes, 1)]
    elif large:
        found = latency.targets(
            first_env=sizes.envs_small,
            last_env=sizes.envs_large,
            configmaps=sizes.per_env,
            deployments=False,
        )
        plan = [("sequential", sizes.changes // 2, 1)]
    else:
        found = latency.targets(
            first_env=0, last_env=sizes.envs_small, configmaps=sizes.per_env - 1, deployments=True
        )
        plan = [
            ("sequential", sizes.changes, 1),
            (f"concurrent_{sizes.concurrency}", sizes.concurrent_changes, sizes.concurrency),
        ]
    result: dict[str, Any] = {}
    used = 0
    for name, count, batch in plan:
        result[name] = await latency.interleaved(
            lab,
            found[used : used + count],
            batch=batch,
            gap=sizes.gap_s,
            timeout=sizes.change_timeout,
        )
        used += count
    back = await lab.until(all_in_sync(keys), timeout=sizes.sync_timeout)
    result["all_in_sync_again"] = back is not None
    result["operator_histogram"] = latency.revert_histogram(await lab.metrics())
    return result


async def detect(lab: Lab, sizes: Sizes) -> dict[str, Any]:
    """Observe mode: manual write -> the Environment's status names the object Drifted."""
    namespace = "bench-observe"
    count = sizes.detect_changes
    manifest = workload.environment(
        namespace, workload.blueprint(configmaps=count, deployments=0), mode="Enforce"
    )
    # Observe never creates objects: let Enforce create them, then switch the mode.
    keys, _ = await _create_and_sync(lab, [manifest], sizes)
    key = next(iter(keys))
    switched = await lab.admin.request(
        "PATCH", env_path(*key), body={"spec": {"mode": "Observe"}}, content_type=MERGE
    )
    generation = int(switched["metadata"]["generation"])
    if await lab.until(all_in_sync({key: generation}), timeout=sizes.sync_timeout) is None:
        raise TimeoutError("the Observe Environment did not get in sync")
    latencies = Latencies("detect", sizes.change_timeout)
    for index in range(count):
        name = workload.cm_name(index)
        sent, returned, _, _ = await latency.manual_change(
            lab.manual, ("ConfigMap", namespace, name), index
        )

        def flagged(seen: Seen, name: str = name) -> bool:
            return seen.value is not None and name in seen.value.drifted

        at = await lab.envs.first(key, flagged, timeout=sizes.change_timeout)
        latencies.add(None if at is None else at - returned, write_s=returned - sent)
        await asyncio.sleep(sizes.gap_s)
    objects = [workload.noise_configmap(namespace, i) for i in range(sizes.noise // 10)]
    await gather_limited(
        16, [lab.admin.request("POST", cm_path(namespace), body=o) for o in objects]
    )
    noise = await _observe_churn(lab, namespace, objects, sizes)
    await lab.delete(env_path(*key))
    # Past 50 objects in an Environment (subscriptions.NAMED_WATCHES), Observe watches
    # the namespace unfiltered: 60 it never labelled.
    unlabelled = [workload.noise_configmap(namespace, i, prefix="wide") for i in range(60)]
    await gather_limited(
        16, [lab.admin.request("POST", cm_path(namespace), body=o) for o in unlabelled]
    )
    blueprint = [{**o, "metadata": {"name": o["metadata"]["name"]}} for o in unlabelled]
    wide = workload.environment(namespace, blueprint, mode="Observe", name="observe-wide")
    wide_keys = await lab.create_environments([wide])
    if await lab.until(all_in_sync(wide_keys), timeout=sizes.sync_timeout) is None:
        raise TimeoutError("the wide Observe Environment did not get in sync")
    unfiltered = await _observe_churn(lab, namespace, objects, sizes)
    await lab.delete(env_path(*next(iter(wide_keys))))
    await lab.delete(f"/api/v1/namespaces/{namespace}")
    return {"latency": latencies.summary(), "churn": noise, "churn_unfiltered": unfiltered}


async def _observe_churn(
    lab: Lab, namespace: str, objects: list[dict[str, Any]], sizes: Sizes
) -> dict[str, Any]:
    """Unrelated churn in an Observe Environment's namespace (Observe does not label the
    objects it reports on: it watches them by name, or past 50, the namespace
    without a label selector)."""
    count = len(objects)
    await asyncio.sleep(2)
    seconds = sizes.window_s / 3
    assert lab.operator is not None
    idle = lab.operator.cpu_precise()
    await asyncio.sleep(seconds)
    idle = lab.operator.cpu_precise() - idle
    busy = await churn(lab, [(namespace, o["metadata"]["name"]) for o in objects], seconds)
    return {
        "objects": count,
        "seconds": seconds,
        "idle_cpu_s": round(idle, 4),
        "churn_cpu_s": busy["cpu_s"],
        "updates_per_s": busy["updates_per_s"],
        "cpu_us_per_update": round(busy["cpu_s"] / max(busy["updates"], 1) * 1e6, 1),
        "cpu_ratio": ratio(busy["cpu_s"], idle),
    }


async def cold_apply(lab: Lab, sizes: Sizes) -> dict[str, Any]:
    """One new Environment of ``cold_objects`` ConfigMaps: `kubectl apply` -> InSync."""
    namespace = "bench-cold"
    await lab.create_namespaces([namespace])

    manifest = workload.environment(
        namespace, workload.blueprint(configmaps=sizes.cold_objects, deployments=0)
    )
    key = (namespace, workload.ENV_NAME)
    began = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "kubectl"),
        f"--kubeconfig={lab.plane.kubeconfig}",
        "apply",
        "-f",
        "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate(yaml.safe_dump(manifest).encode())
    kubectl_s = time.monotonic() - began
    if process.returncode != 0:
        raise RuntimeError(f"kubectl apply failed: {stderr.decode()}")
    created = await lab.envs.first(key, lambda seen: True, timeout=10)
    at = await lab.until(all_in_sync({key: 1}), timeout=sizes.sync_timeout)
    result = {
        "objects": sizes.cold_objects,
        "created_to_in_sync_s": None if at is None or created is None else round(at - created, 3),
        "kubectl_start_to_in_sync_s": None if at is None else round(at - began, 3),
        "kubectl_s": round(kubectl_s, 3),
    }
    await lab.delete(env_path(*key))
    await lab.delete(f"/api/v1/namespaces/{namespace}")
    return result


# -- driftguard: restart and scale -------------------------------------------------------


async def restart(
    lab: Lab,
    keys: dict[Key, int],
    sizes: Sizes,
    *,
    change_spec: bool = False,
    objects: int | None = None,
) -> dict[str, Any]:
    """Stop the operator, start a new one: time until every Environment is in sync again.

    The status the old process wrote would already read InSync, so while no operator runs
    each InSync condition is set to Unknown (``mark_stale``): only the new process's pass can
    set it back. With ``change_spec``, each spec changes harmlessly instead (a new generation:
    the new process must apply every object again, as after a blueprint-wide change).
    """
    await settle(lab, keys, sizes)
    stop_s = lab.stop_operator()
    if change_spec:
        generations = await lab.bump_environments(list(keys))
    else:
        generations = await lab.mark_stale(list(keys))
    wall, began = time.time(), time.monotonic()
    metrics_up_s = await lab.start_operator()
    at = await lab.until(all_in_sync(generations), timeout=sizes.sync_timeout)
    seconds = None if at is None else at - began
    assert lab.operator is not None
    cpu = lab.operator.cpu_seconds()
    await asyncio.sleep(2)
    window = lab.audit.window(wall, wall + (seconds or sizes.sync_timeout))
    keys.update(generations)
    return {
        "objects": objects if objects is not None else len(keys) * sizes.per_env,
        "in_sync_s": None if seconds is None else round(seconds, 3),
        "metrics_up_s": round(metrics_up_s, 3),
        "old_process_stop_s": round(stop_s, 3),
        "cpu_s_to_in_sync": round(cpu, 2),
        "requests_to_in_sync": dict(window.verbs),
    }


async def restart_unchanged(
    lab: Lab, keys: dict[Key, int], sizes: Sizes, *, objects: int
) -> dict[str, Any]:
    """Stop the operator, start a new one, nothing changed meanwhile (a rollout): time until
    it is ready, which it is once every Environment had its first pass. Status already
    reads InSync, so the proof is in what follows: the gauges of every Environment say in
    sync, and the status writes and reverts it made are counted (0 expected)."""
    await settle(lab, keys, sizes)
    lab.stop_operator()
    wall, began = time.time(), time.monotonic()
    await lab.start_operator()
    seconds = None
    while time.monotonic() - began < sizes.sync_timeout:
        lab.check_operator()
        if await asyncio.to_thread(lab.is_ready):
            seconds = time.monotonic() - began
            break
        await asyncio.sleep(0.05)
    assert lab.operator is not None
    cpu = lab.operator.cpu_seconds()
    samples = await lab.metrics()
    gauges = [v for k, v in samples.items() if k.startswith("driftguard_environment_in_sync{")]
    await asyncio.sleep(2)
    window = lab.audit.window(wall, wall + (seconds or sizes.sync_timeout))
    mine = [w for w in window.writes if "driftguard" in str(w.get("userAgent") or "")]
    status_writes = sum(1 for w in mine if w.get("subresource") == "status")
    return {
        "objects": objects,
        "ready_s": None if seconds is None else round(seconds, 3),
        "environments_in_sync": int(sum(gauges)),
        "environments": len(keys),
        "status_writes": status_writes,
        "other_writes": dict(
            Counter(
                f"{w['verb']} {w['resource']}" for w in mine if w.get("subresource") != "status"
            )
        ),
        "cpu_s_to_ready": round(cpu, 2),
        "requests_to_ready": dict(window.verbs),
    }


async def scale_up(lab: Lab, keys: dict[Key, int], sizes: Sizes) -> dict[str, Any]:
    """Add Environments (ConfigMaps only) up to the large size; RSS once all are in sync."""
    manifests = enforce_environments(
        sizes.envs_small,
        sizes.envs_large - sizes.envs_small,
        configmaps=sizes.per_env,
        deployments=0,
    )
    assert lab.operator is not None
    cpu = lab.operator.cpu_seconds()
    added, seconds = await _create_and_sync(lab, manifests, sizes)
    keys.update(added)
    cpu = lab.operator.cpu_seconds() - cpu
    await settle(lab, keys, sizes)
    return {
        "added_objects": len(added) * sizes.per_env,
        "added_to_in_sync_s": seconds,
        "cpu_s": round(cpu, 2),
    }


async def rss(lab: Lab, keys: dict[Key, int], sizes: Sizes) -> float:
    await settle(lab, keys, sizes)
    assert lab.operator is not None
    return round(lab.operator.rss_mb(), 1)


# -- resyncs and ten times the size -------------------------------------------------------


async def steady_resync(lab: Lab, keys: dict[Key, int], sizes: Sizes) -> dict[str, Any]:
    """``resyncInterval: 30s`` on every Environment, then a quiet window of several resyncs:
    each resync lists and judges every object, and must write nothing when nothing drifted.
    The interval goes back to 10m afterwards (new generations, recorded in ``keys``)."""
    keys.update(await lab.set_resync(list(keys), "30s"))
    await settle(lab, keys, sizes)
    assert lab.operator is not None
    cpu, wall = lab.operator.cpu_precise(), time.time()
    await asyncio.sleep(sizes.resync_window_s)
    end, cpu = time.time(), lab.operator.cpu_precise() - cpu
    lab.check_operator()
    await asyncio.sleep(2)
    window = lab.audit.window(wall, end)
    keys.update(await lab.set_resync(list(keys), "10m"))
    # Each resync lists its Environment's kinds: no lists, no resync, no figure.
    lists = window.verbs.get("list", 0)
    return {
        "resync_interval_s": 30,
        "environments": len(keys),
        "lists": lists,
        "resyncs_expected": int(sizes.resync_window_s // 30) * len(keys),
        "cpu_s": round(cpu, 3),
        **window.as_dict(),
        "writes": window.write_count if lists else None,
    }


async def scale_huge(lab: Lab, keys: dict[Key, int], sizes: Sizes) -> dict[str, Any]:
    """Ten times the size: Environments added until ``sizes.huge`` objects are managed.

    The benchmark only creates the Environments (``huge_envs`` of them, each with
    ``huge_per_env`` ConfigMaps); the operator creates every object. Time from the first
    POST to all of them InSync, the operator's CPU and requests meanwhile.
    """
    manifests = enforce_environments(
        sizes.envs_large,
        sizes.huge_envs - sizes.envs_large,
        configmaps=sizes.huge_per_env,
        deployments=0,
    )
    assert lab.operator is not None
    cpu, wall = lab.operator.cpu_precise(), time.time()
    added, seconds = await _create_and_sync(lab, manifests, sizes, timeout=sizes.huge_timeout)
    if seconds is None:
        raise TimeoutError(f"{sizes.huge} objects not in sync after {sizes.huge_timeout:.0f} s")
    keys.update(added)
    cpu = lab.operator.cpu_precise() - cpu
    window = lab.audit.window(wall, time.time())
    return {
        "environments": len(keys),
        "objects": sizes.huge,
        "added_objects": len(added) * sizes.huge_per_env,
        "added_to_in_sync_s": seconds,
        "objects_per_s": round(len(added) * sizes.huge_per_env / seconds, 1),
        "cpu_s": round(cpu, 2),
        "requests": dict(window.verbs),
    }


async def status_sizes(lab: Lab) -> dict[str, Any]:
    """Bytes of each Environment's status as JSON (what every status write sends)."""
    import json

    listing = await lab.admin.request("GET", env_path(None))
    sizes = sorted(
        len(json.dumps(item.get("status") or {}, separators=(",", ":")))
        for item in listing["items"]
    )
    by_objects: dict[int, list[int]] = {}
    for item in listing["items"]:
        count = len(item["spec"].get("resources") or [])
        size = len(json.dumps(item.get("status") or {}, separators=(",", ":")))
        by_objects.setdefault(count, []).append(size)
    return {
        "environments": len(sizes),
        "max_bytes": sizes[-1] if sizes else None,
        "median_bytes": sizes[len(sizes) // 2] if sizes else None,
        "by_objects": {
            str(count): {"n": len(values), "max_bytes": max(values)}
            for count, values in sorted(by_objects.items())
        },
    }


# -- Flux -----------------------------------------------------------------------------------


async def flux(lab: Lab, keys: dict[Key, int], sizes: Sizes) -> dict[str, Any]:
    """kustomize-controller at interval 1m and at ``flux_fast_interval``, each of its
    reverts paired with one of driftguard's (objects the revert phase left unchanged)."""
    import fluxpeer

    await settle(lab, keys, sizes)
    count = sizes.flux_objects
    theirs = [("ConfigMap", fluxpeer.NAMESPACE, workload.cm_name(i)) for i in range(count)]
    # The same shuffle as the revert phase: the objects after the ones it changed.
    unused = latency.targets(
        first_env=0, last_env=sizes.envs_small, configmaps=sizes.per_env - 1, deployments=True
    )[sizes.changes + sizes.concurrent_changes :]
    ours = [t for t in unused if t[0] == "ConfigMap"][-count:]
    slow_n = sizes.flux_slow_changes
    fast_n = min(sizes.flux_fast_changes, count - slow_n)
    fast_s = fluxpeer.seconds_of(sizes.flux_fast_interval)
    async with fluxpeer.controller(lab, count) as child:
        slow = await fluxpeer.side_by_side(
            lab, child, "1m", theirs[:slow_n], ours[:slow_n], spacing=10.0, timeout=100.0
        )
        fast = await fluxpeer.side_by_side(
            lab,
            child,
            sizes.flux_fast_interval,
            theirs[slow_n : slow_n + fast_n],
            ours[slow_n : slow_n + fast_n],
            spacing=max(0.77, fast_s * 0.77),
            timeout=fast_s * 2 + 20.0,
        )
    back = await lab.until(all_in_sync(keys), timeout=sizes.sync_timeout)
    return {
        "version": fluxpeer.VERSION,
        "objects": count,
        "interval_1m": slow,
        "interval_fast": fast,
        "all_in_sync_again": back is not None,
    }
