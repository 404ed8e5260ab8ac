"""What one status write of an Environment of 100 objects costs the API server, by design.

    .venv/bin/python bench/statuswrite.py [--writes 200] [--pprof DIR]   # its own control plane

The operator writes an Environment's status (a merge patch of `/status`) when a field of it
changed. The API server's CPU for that write depends on what the CRD asks it to check and on
the bytes written, so the two designs are measured side by side on one API server:

- `previous`: the Environment CRD as it was, the blueprint's CEL rules in its schema. The API
  server evaluates every rule on every `spec.resources` item at every status write (ratcheting
  in 1.37 turns an unchanged field's errors into warnings, after evaluating them), and each
  status entry carried its empty `driftedPaths` and zero `reverts`.
  kopf kept its last-handled copy of the spec in the status
  (`status.kopf.lastHandledConfiguration`, a JSON string), so every stored object carried
  the spec twice.
- `current`: `crds/` as committed (the rules in a ValidatingAdmissionPolicy that matches the
  main resource, not `environments/status`), the status as `EnvironmentStatus.to_body`
  writes it now, and no copy of the spec (runtime/handlers.py, `NoDiffBase`).

Each design is served under a group of its own (the same schema, the group renamed), with 4
Environments of 100 ConfigMaps. Writes go one at a time, in rounds alternating the designs,
so background load weighs on both alike. CPU is kube-apiserver's utime + stime, less what it
spends idle over the same wall time. The API server's count of CEL evaluations of CRD rules
(`apiserver_cel_evaluation_duration_seconds_count`) says what each design's writes evaluated.
`measure` uses a control plane of its own or the benchmark's before its operator starts: the
API server must have nothing else to do.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import re
import ssl
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import procs  # noqa: E402
import workload  # noqa: E402
import yaml  # noqa: E402
from kubeapi import MERGE, Kube  # noqa: E402

from driftguard.core import crd  # noqa: E402
from driftguard.core.model import State  # noqa: E402
from driftguard.core.status import Condition, EnvironmentStatus, ResourceStatus, Summary  # noqa: E402

OBJECTS = 100
ENVIRONMENTS = 4
ROUNDS = 10
NAMESPACE = "bench-status"


def _renamed(definition: dict[str, Any], group: str) -> dict[str, Any]:
    out = copy.deepcopy(definition)
    out["metadata"]["name"] = f"{out['spec']['names']['plural']}.{group}"
    out["spec"]["group"] = group
    return out


def designs() -> dict[str, dict[str, Any]]:
    """The Environment CRD of each design, each under a group of its own."""
    return {
        "previous": _renamed(crd.definition(rules_in_schema=True), "previous.bench.driftguard.io"),
        "current": _renamed(crd.definition(), "current.bench.driftguard.io"),
    }


def _policies(group: str) -> list[dict[str, Any]]:
    """crds/' admission policy and binding, pointed at the renamed group."""
    found = []
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or not doc["kind"].startswith("ValidatingAdmissionPolicy"):
                continue
            doc = copy.deepcopy(doc)
            doc["metadata"]["name"] = f"{doc['metadata']['name']}.{group}"
            if doc["kind"] == "ValidatingAdmissionPolicyBinding":
                doc["spec"]["policyName"] = f"{doc['spec']['policyName']}.{group}"
            else:
                for rule in doc["spec"]["matchConstraints"]["resourceRules"]:
                    rule["apiGroups"] = [group]
            found.append(doc)
    return found


def status(objects: int, step: int) -> EnvironmentStatus:
    """The status the operator writes for `objects` ConfigMaps; odd steps drift one of them."""
    drifted = step % objects if step % 2 else None
    resources = [
        ResourceStatus(
            api_version="v1",
            kind="ConfigMap",
            namespace=NAMESPACE,
            name=workload.cm_name(i),
            state=State.DRIFTED if i == drifted else State.IN_SYNC,
            drifted_paths=["/data/a"] if i == drifted else [],
            changed_by="bench-manual" if i == drifted else None,
            reverts=step // (2 * objects),
        )
        for i in range(objects)
    ]
    in_sync = drifted is None
    name = workload.cm_name(drifted or 0)
    message = (
        f"{objects} of {objects} objects match the blueprint"
        if in_sync
        else f"1 of {objects} objects drifted: ConfigMap/{NAMESPACE}/{name}"
    )
    stamp = f"2026-01-01T00:{step // 60 % 60:02d}:{step % 60:02d}Z"
    conditions = [
        Condition(type="Ready", status="True", reason="Applied", message="applied",
                  last_transition_time=stamp, observed_generation=1),
        Condition(type="InSync", status=str(in_sync), reason="InSync" if in_sync else "Drifted",
                  message=message, last_transition_time=stamp, observed_generation=1),
    ]  # fmt: skip
    summary = Summary(managed=objects, in_sync=objects - (0 if in_sync else 1))
    return EnvironmentStatus(
        observed_generation=1, revision=1, conditions=conditions, summary=summary,
        resources=resources,
    )  # fmt: skip


def status_body(design: str, objects: int, step: int) -> dict[str, Any]:
    """What each design's operator wrote: before, every entry carried its empty paths and zero
    reverts; now `EnvironmentStatus.to_body` leaves them out."""
    built = status(objects, step)
    if design == "previous":
        return built.model_dump(by_alias=True, exclude_none=True, mode="json")
    return built.to_body()


def cel_evaluations(kubeconfig: Path) -> float:
    """CEL evaluations of CRD schema rules so far, by the API server's own count."""
    kubectl = Path(sys.executable).parent / "kubectl"
    text = subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", "get", "--raw", "/metrics"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    found = re.findall(r"^apiserver_cel_evaluation_duration_seconds_count(?:\{[^}]*\})? (\S+)$",
                       text, re.M)  # fmt: skip
    return sum(float(value) for value in found)


def install(kubeconfig: Path) -> dict[str, str]:
    """Both designs' CRDs (and the current one's policies), Established; their groups by name."""
    kubectl = [str(Path(sys.executable).parent / "kubectl"), f"--kubeconfig={kubeconfig}"]
    found = designs()
    docs = [*found.values(), *_policies(found["current"]["spec"]["group"])]
    subprocess.run([*kubectl, "apply", "--server-side", "-f", "-"], input=yaml.safe_dump_all(docs),
                   text=True, check=True, capture_output=True, timeout=60)  # fmt: skip
    for definition in found.values():
        name = definition["metadata"]["name"]
        subprocess.run([*kubectl, "wait", "--for=condition=Established", f"crd/{name}",
                        "--timeout=60s"], check=True, capture_output=True, timeout=90)  # fmt: skip
    return {name: definition["spec"]["group"] for name, definition in found.items()}


def _env_path(group: str, name: str = "") -> str:
    base = f"/apis/{group}/v1alpha1/namespaces/{NAMESPACE}/environments"
    return f"{base}/{name}" if name else base


async def _create(kube: Kube, groups: dict[str, str]) -> None:
    await kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": NAMESPACE}})
    resources = workload.blueprint(configmaps=OBJECTS, deployments=0)
    for design, group in groups.items():
        for i in range(ENVIRONMENTS):
            env = workload.environment(NAMESPACE, resources, name=f"env-{i}")
            env["apiVersion"] = f"{group}/v1alpha1"
            await kube.request("POST", _env_path(group), body=env)
            if design == "previous":
                await kube.request(
                    "PATCH", _env_path(group, f"env-{i}") + "/status",
                    body={"status": {"kopf": {"lastHandledConfiguration": _kopf_copy(env)}}},
                    content_type=MERGE,
                )  # fmt: skip
            await _write(kube, design, group, i, 0)


def _kopf_copy(env: dict[str, Any]) -> str:
    """What kopf stored as the last-handled essence: the spec and the metadata it tracks."""
    essence = {"spec": env["spec"], "metadata": {"labels": env["metadata"].get("labels", {})}}
    return json.dumps(essence, separators=(",", ":"))


async def _write(kube: Kube, design: str, group: str, env: int, step: int) -> None:
    body = {"status": status_body(design, OBJECTS, step)}
    path = _env_path(group, f"env-{env}") + "/status"
    await kube.request("PATCH", path, body=body, content_type=MERGE)


def _idle_rate(pid: int, seconds: float) -> float:
    """CPU seconds a second the API server spends with nothing asked of it."""
    cpu = procs.cpu_seconds(pid) or 0.0
    time.sleep(seconds)
    return ((procs.cpu_seconds(pid) or 0.0) - cpu) / seconds


async def measure(
    kube: Kube, kubeconfig: Path, apiserver_pid: int, *, writes: int = 200
) -> dict[str, Any]:
    """Per design: the API server's CPU ms per status write (median of the rounds), the CEL
    evaluations those writes cost, and the status bytes each wrote."""
    groups = install(kubeconfig)
    await _create(kube, groups)
    per_round = max(writes // ROUNDS, 1)
    idle = _idle_rate(apiserver_pid, 5.0)
    samples: dict[str, list[float]] = {design: [] for design in groups}
    evaluations = dict.fromkeys(groups, 0.0)
    step = 0
    for round_ in range(ROUNDS):
        order = list(groups.items())
        for design, group in order if round_ % 2 == 0 else order[::-1]:
            counted = cel_evaluations(kubeconfig)
            cpu, wall = procs.cpu_seconds(apiserver_pid) or 0.0, time.monotonic()
            for n in range(per_round):
                await _write(kube, design, group, n % ENVIRONMENTS, step + n // ENVIRONMENTS + 1)
            spent = (
                (procs.cpu_seconds(apiserver_pid) or 0.0) - cpu - idle * (time.monotonic() - wall)
            )
            samples[design].append(spent / per_round * 1000)
            evaluations[design] += cel_evaluations(kubeconfig) - counted
        step += per_round
    body = {d: len(json.dumps(status_body(d, OBJECTS, 1), separators=(",", ":"))) for d in groups}
    result = {
        "objects": OBJECTS,
        "writes_per_design": per_round * ROUNDS,
        "idle_apiserver_cpu_ms_per_s": round(idle * 1000, 2),
        "designs": {
            design: {
                "group": groups[design],
                "cpu_ms_per_write_p50": round(statistics.median(samples[design]), 2),
                "cpu_ms_per_write_rounds": [round(v, 2) for v in samples[design]],
                "cel_evaluations_per_write": round(evaluations[design] / (per_round * ROUNDS), 1),
                "status_bytes": body[design],
            }
            for design in groups
        },
    }
    previous = result["designs"]["previous"]["cpu_ms_per_write_p50"]
    current = result["designs"]["current"]["cpu_ms_per_write_p50"]
    result["ratio_current_to_previous"] = round(current / previous, 3) if previous > 0 else None
    return result


def _profile(server: str, context: ssl.SSLContext, seconds: int, out: Path) -> None:
    url = f"{server}/debug/pprof/profile?seconds={seconds}"
    with urllib.request.urlopen(url, context=context, timeout=seconds + 60) as response:
        out.write_bytes(response.read())


async def _profiled(kube: Kube, plane: Any, groups: dict[str, str], out: Path) -> dict[str, str]:
    """A 20 s CPU profile of the API server during each design's status writes."""
    from driftguard.controlplane.instance import _admin_tls  # the admin's TLS, for /debug/pprof

    context, written = _admin_tls(plane._layout), {}
    for design, group in groups.items():
        path = out / f"apiserver-status-writes-{design}.pprof"
        task = asyncio.create_task(asyncio.to_thread(_profile, plane.server, context, 20, path))
        step = 10_000
        while not task.done():
            await _write(kube, design, group, step % ENVIRONMENTS, step)
            step += 1
        await task
        written[design] = str(path)
    return written


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    from driftguard.controlplane import ControlPlane

    flags = ["--profiling=true"] if args.pprof else []
    with ControlPlane(controller_manager=False, apiserver_flags=flags) as plane:
        kube = await Kube.connect(plane.kubeconfig, user_agent="bench-status-writes")
        try:
            found = await measure(
                kube, plane.kubeconfig, plane.pids["kube-apiserver"], writes=args.writes
            )
            if args.pprof:
                args.pprof.mkdir(parents=True, exist_ok=True)
                groups = {d: v["group"] for d, v in found["designs"].items()}
                found["profiles"] = await _profiled(kube, plane, groups, args.pprof)
        finally:
            await kube.close()
    return found


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=200, help="status writes per design")
    parser.add_argument("--pprof", type=Path, help="also profile the API server; files here")
    print(json.dumps(asyncio.run(_main(parser.parse_args())), indent=2))
