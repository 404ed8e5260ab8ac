"""`make bench`: driftguard's performance figures on a local control plane, in one run.

    .venv/bin/python bench/run.py [--quick] [--output bench/results.json]

Starts its own etcd + kube-apiserver + kube-controller-manager (etcd with --unsafe-no-fsync:
the data dies with the run), installs crds/, runs ``driftguard run`` as a subprocess under its
own identity, and measures: the floor (a minimal watch -> apply loop), driftguard's revert
latency (Enforce), detection latency (Observe), steady-state requests (audit log), CPU under
unrelated churn, RSS and restart-to-in-sync at two sizes, and a cold apply. Prints a table,
writes JSON. ``--quick`` scales everything down for a smoke run (the JSON keys keep their
names; ``sizes`` says what was measured). Logs stay in the printed work directory.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import figures  # noqa: E402
import fluxpeer  # noqa: E402
import phases  # noqa: E402
import procs  # noqa: E402
import record  # noqa: E402
import stacks  # noqa: E402
import statuswrite  # noqa: E402
from lab import Lab  # noqa: E402
from phases import Sizes  # noqa: E402
from targets import TARGETS  # noqa: E402

from driftguard.controlplane import ControlPlane, ControlPlaneError  # noqa: E402

# Whole-run limits: a run that cannot finish says so instead of hanging `make bench`.
DEADLINE_S = {False: 40 * 60.0, True: 10 * 60.0}


def _kubectl(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "kubectl"
    return subprocess.run(
        [str(binary), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def _established(kubeconfig: Path, crd: str) -> None:
    """Polls: `kubectl wait` fails at once while a new CRD has no conditions yet."""
    path = '{.status.conditions[?(@.type=="Established")].status}'
    deadline = time.monotonic() + 30
    while "True" not in _kubectl(kubeconfig, "get", "crd", crd, "-o", f"jsonpath={path}",
                                 check=False).stdout:  # fmt: skip
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"CRD {crd} not Established after 30 s")
        time.sleep(0.1)


def install_crds(kubeconfig: Path) -> None:
    _kubectl(kubeconfig, "apply", "--server-side", "-f", str(ROOT / "crds"))
    _established(kubeconfig, "environments.driftguard.io")
    # Right after a CRD is created, lists can answer 429 "storage is (re)initializing".
    deadline = time.monotonic() + 30
    while _kubectl(kubeconfig, "get", "environments", "-A", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise ControlPlaneError("the Environment API does not serve lists after 30 s")
        time.sleep(0.2)


class Run:
    """One benchmark run: the phases in order, each timed, results kept even on failure."""

    def __init__(self, sizes: Sizes, lab: Lab) -> None:
        self.sizes = sizes
        self.lab = lab
        self.results: dict[str, Any] = {"details": {}, "phase_seconds": {}}

    def detail(self, name: str, value: Any) -> None:
        self.results["details"][name] = value

    async def phase(self, name: str, coro: Any) -> Any:
        """Run one phase; record its wall time and the CPU each process spent in it."""
        began, cpu = time.monotonic(), self.lab.cpu_snapshot()
        print(f"[{_clock()}] {name} ...", flush=True)
        profiler = self.lab.profiler
        if profiler is not None:
            self.lab.profile_label = name
            if self.lab.operator is not None:
                profiler.start(self.lab.operator.pid, name)
        try:
            return await coro
        finally:
            if profiler is not None:
                self.lab.profile_label = ""
                profiler.stop()
            seconds = round(time.monotonic() - began, 1)
            self.results["phase_seconds"][name] = seconds
            spent = procs.cpu_delta(cpu, self.lab.cpu_snapshot())
            self.results.setdefault("phase_cpu_seconds", {})[name] = spent
            busiest = ", ".join(
                f"{k} {v:.1f}" for k, v in sorted(spent.items(), key=lambda i: -i[1])
            )
            print(f"[{_clock()}] {name}: {seconds} s (CPU s: {busiest})", flush=True)

    async def execute(self) -> None:
        sizes, lab, r = self.sizes, self.lab, self.results
        await lab.open()
        # First, while the API server has nothing else to do: no operator runs yet.
        cost = await self.phase(
            "status-writes",
            statuswrite.measure(lab.admin, lab.plane.kubeconfig, lab.plane.pids["kube-apiserver"]),
        )
        self.detail("status_writes", cost)
        r["apiserver_cpu_ms_per_status_write"] = cost["designs"]["current"]["cpu_ms_per_write_p50"]
        r["apiserver_cpu_ms_per_status_write_previous"] = cost["designs"]["previous"][
            "cpu_ms_per_write_p50"
        ]
        r["apiserver_cpu_status_write_ratio"] = cost["ratio_current_to_previous"]
        up, keys = await self.phase("bring-up", phases.bring_up(lab, sizes))
        self.detail("bring_up", up)
        r["rss_mb_idle"] = up["rss_mb_idle"]
        r["rss_mb_1000"] = await phases.rss(lab, keys, sizes)

        noise, noise_keys = await self.phase("noise", phases.create_noise(lab, sizes))
        self.detail("noise", noise)
        steady = await self.phase("steady-state", phases.steady_state(lab, keys, sizes))
        self.detail("steady_state", steady)
        r["steady_state_writes"] = steady["writes"]
        r["steady_state_reads_per_s"] = steady["reads_per_s"]
        busy = await self.phase("churn", phases.churn(lab, noise_keys, sizes.window_s))
        self.detail("churn", busy)
        # Raw CPU seconds at the scheduler's resolution (procs.cpu_ns), no floor on either.
        r["idle_cpu_s"], r["churn_cpu_s"] = steady["cpu_s"], busy["cpu_s"]
        r["churn_cpu_ratio"] = figures.ratio(busy["cpu_s"], steady["cpu_s"])
        resync = await self.phase("steady-state-resync", phases.steady_resync(lab, keys, sizes))
        self.detail("steady_state_resync", resync)
        r["steady_state_writes_resync"] = resync["writes"]

        reverts = await self.phase("revert", phases.reverts(lab, keys, sizes))
        self.detail("revert", reverts)
        seq, together = reverts["sequential"], reverts[f"concurrent_{sizes.concurrency}"]
        r["go_floor_p50_s"] = seq["go_floor"]["p50_s"]
        r["go_floor_p99_s"] = seq["go_floor"]["p99_s"]
        r["floor_p50_s"] = seq["floor"]["p50_s"]
        r["floor_p99_s"] = seq["floor"]["p99_s"]
        r["revert_p50_s"] = seq["driftguard"]["p50_s"]
        r["revert_p99_s"] = seq["driftguard"]["p99_s"]
        r["revert_p50_ratio_go"] = figures.ratio(r["revert_p50_s"], r["go_floor_p50_s"])
        r["revert_p99_ratio_go"] = figures.ratio(r["revert_p99_s"], r["go_floor_p99_s"])
        r["revert_p50_ratio"] = figures.ratio(r["revert_p50_s"], r["floor_p50_s"])
        r["revert_p99_ratio"] = figures.ratio(r["revert_p99_s"], r["floor_p99_s"])
        for q in ("p50", "p99"):
            mine = together["driftguard"][f"{q}_s"]
            r[f"revert_concurrent_{q}_ratio_go"] = figures.ratio(
                mine, together["go_floor"][f"{q}_s"]
            )
            r[f"revert_concurrent_{q}_ratio"] = figures.ratio(mine, together["floor"][f"{q}_s"])

        found = await self.phase("detect", phases.detect(lab, sizes))
        self.detail("detect", found)
        r["detect_p50_s"] = found["latency"]["p50_s"]
        r["observe_idle_cpu_s"] = found["churn"]["idle_cpu_s"]
        r["observe_churn_cpu_s"] = found["churn"]["churn_cpu_s"]
        r["observe_churn_cpu_ratio"] = found["churn"]["cpu_ratio"]
        r["observe_churn_us_per_update"] = found["churn"]["cpu_us_per_update"]
        # An Observe Environment of more unlabelled objects than are watched one by one.
        wide = found["churn_unfiltered"]
        r["observe_unfiltered_idle_cpu_s"] = wide["idle_cpu_s"]
        r["observe_unfiltered_churn_cpu_s"] = wide["churn_cpu_s"]
        r["observe_unfiltered_churn_cpu_ratio"] = wide["cpu_ratio"]
        r["observe_unfiltered_us_per_update"] = wide["cpu_us_per_update"]

        try:
            peer = await self.phase("flux", phases.flux(lab, keys, sizes))
        except (FileNotFoundError, RuntimeError, TimeoutError) as exc:
            # Flux is a peer, not driftguard: its failure is reported, the run goes on.
            self.detail("flux", {"error": f"{type(exc).__name__}: {exc}"})
            print(f"flux not measured: {exc}", file=sys.stderr, flush=True)
        else:
            self.detail("flux", peer)
            fast = peer["interval_fast"]
            r["flux_revert_p50_s"] = fast["flux"]["p50_s"]
            r["flux_interval_s"] = fluxpeer.seconds_of(fast["interval"])
            r["flux_revert_p50_s_interval_1m"] = peer["interval_1m"]["flux"]["p50_s"]
            r["flux_side_revert_p50_s"] = fast["driftguard"]["p50_s"]
            mine, theirs = fast["driftguard"]["p50_s"], fast["flux"]["p50_s"]
            r["revert_p50_ratio_flux"] = round(mine / theirs, 4) if mine and theirs else None
            r["flux_p50_over_driftguard_p50"] = figures.ratio(theirs, mine)
        r["argocd_documented"] = ARGOCD_DOCUMENTED

        cold = await self.phase("cold-apply", phases.cold_apply(lab, sizes))
        self.detail("cold_apply", cold)
        r["cold_apply_100_s"] = cold["created_to_in_sync_s"]

        again = await self.phase(f"restart-{sizes.small}", phases.restart(lab, keys, sizes))
        self.detail(f"restart_{sizes.small}", again)
        r["restart_to_in_sync_s_1000"] = again["in_sync_s"]
        r["rss_mb_1000_after_restart"] = await phases.rss(lab, keys, sizes)

        grown = await self.phase(f"scale-to-{sizes.large}", phases.scale_up(lab, keys, sizes))
        self.detail(f"scale_to_{sizes.large}", grown)
        r["rss_mb_5000"] = await phases.rss(lab, keys, sizes)
        big = await self.phase(
            f"revert-{sizes.large}", phases.reverts(lab, keys, sizes, large=True)
        )
        self.detail(f"revert_{sizes.large}", big)
        r["revert_p50_s_5000"] = big["sequential"]["driftguard"]["p50_s"]
        r["revert_p99_s_5000"] = big["sequential"]["driftguard"]["p99_s"]
        r["floor_p50_s_5000"] = big["sequential"]["floor"]["p50_s"]
        r["floor_p99_s_5000"] = big["sequential"]["floor"]["p99_s"]
        r["go_floor_p50_s_5000"] = big["sequential"]["go_floor"]["p50_s"]
        r["go_floor_p99_s_5000"] = big["sequential"]["go_floor"]["p99_s"]
        again = await self.phase(f"restart-{sizes.large}", phases.restart(lab, keys, sizes))
        self.detail(f"restart_{sizes.large}", again)
        r["restart_to_in_sync_s_5000"] = again["in_sync_s"]
        r["rss_mb_5000_after_restart"] = await phases.rss(lab, keys, sizes)
        again = await self.phase(
            f"restart-{sizes.large}-spec-changed",
            phases.restart(lab, keys, sizes, change_spec=True),
        )
        self.detail(f"restart_{sizes.large}_spec_changed", again)
        r["restart_spec_changed_to_in_sync_s_5000"] = again["in_sync_s"]
        per_thousand = (r["rss_mb_5000"] - r["rss_mb_1000"]) / ((sizes.large - sizes.small) / 1000)
        r["rss_mb_growth_per_1000"] = round(per_thousand, 1)

        # Ten times the size: its own phases, shrunk by --quick (``sizes`` says to what).
        huge = await self.phase(f"scale-to-{sizes.huge}", phases.scale_huge(lab, keys, sizes))
        self.detail(f"scale_to_{sizes.huge}", huge)
        r["cold_to_in_sync_s_50000"] = huge["added_to_in_sync_s"]
        r["rss_mb_50000"] = await phases.rss(lab, keys, sizes)
        r["status_bytes_50000"] = await phases.status_sizes(lab)
        wide = await self.phase(f"revert-{sizes.huge}", phases.reverts(lab, keys, sizes, huge=True))
        self.detail(f"revert_{sizes.huge}", wide)
        seq = wide["sequential"]
        r["revert_p50_s_50000"] = seq["driftguard"]["p50_s"]
        r["revert_p99_s_50000"] = seq["driftguard"]["p99_s"]
        r["go_floor_p50_s_50000"] = seq["go_floor"]["p50_s"]
        r["go_floor_p99_s_50000"] = seq["go_floor"]["p99_s"]
        again = await self.phase(
            f"restart-{sizes.huge}", phases.restart(lab, keys, sizes, objects=sizes.huge)
        )
        self.detail(f"restart_{sizes.huge}", again)
        r["restart_to_in_sync_s_50000"] = again["in_sync_s"]
        r["rss_mb_50000_after_restart"] = await phases.rss(lab, keys, sizes)
        # The same restart with nothing changed meanwhile, as a rollout is: no status to write.
        same = await self.phase(
            f"restart-{sizes.huge}-unchanged",
            phases.restart_unchanged(lab, keys, sizes, objects=sizes.huge),
        )
        self.detail(f"restart_{sizes.huge}_unchanged", same)
        r["restart_unchanged_to_ready_s_50000"] = same["ready_s"]
        r["rss_mb_50000_after_unchanged_restart"] = await phases.rss(lab, keys, sizes)


def _clock() -> str:
    return time.strftime("%H:%M:%S")


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def environment_facts(plane: ControlPlane) -> dict[str, Any]:
    version = json.loads(_kubectl(plane.kubeconfig, "version", "-o", "json").stdout)
    packages = ("kopf", "kubernetes-asyncio", "aiohttp", "pydantic", "driftguard")
    return {
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kube_apiserver": (version.get("serverVersion") or {}).get("gitVersion"),
        "kubectl": (version.get("clientVersion") or {}).get("gitVersion"),
        "packages": {name: importlib.metadata.version(name) for name in packages},
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--", "operator")),
        "etcd": "--unsafe-no-fsync",
    }


# Argo CD cannot be built here (its gitops-engine module does not resolve from the Go
# module proxy): its figures are its documentation's, marked so, never measured.
ARGOCD_DOCUMENTED = {
    "source": "documented, not measured",
    "reconciliation_timeout_s": 180,  # argocd-cm timeout.reconciliation default (3 minutes)
    "self_heal_timeout_s": 5,  # --self-heal-timeout-seconds default, after a refresh
}


def report(results: dict[str, Any]) -> str:
    rows = [
        (name, results.get(name), target, figures.verdict(results.get(name), limit))
        for name, target, limit in TARGETS
    ]
    return figures.table(rows)


def missed(results: dict[str, Any]) -> list[str]:
    """Every target not met, a figure that was not measured included."""
    return [
        f"{name} = {results.get(name)} (target {target})"
        for name, target, limit in TARGETS
        if figures.verdict(results.get(name), limit) in ("MISSED", "n/a")
    ]


async def _measure(run: Run, deadline: float) -> None:
    try:
        await asyncio.wait_for(run.execute(), timeout=deadline)
    finally:
        await run.lab.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: small sizes, 10 s windows"
    )
    parser.add_argument("--output", type=Path, default=HERE / "results.json")
    parser.add_argument(
        "--no-record",
        dest="record",
        action="store_false",
        help="do not add the run to bench/results/ (the committed figures of record)",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        help="profile the operator in every phase with this py-spy executable (not a project"
        " dependency); the samples slow it a little, so keep such runs apart from the figures",
    )
    args = parser.parse_args(argv)
    sizes = Sizes.make_quick() if args.quick else Sizes()
    workdir = Path(tempfile.mkdtemp(prefix="driftguard-bench-"))
    began = time.monotonic()
    failure = ""
    print(f"driftguard bench ({'quick' if sizes.quick else 'full'}): logs in {workdir}", flush=True)
    with ControlPlane(controller_manager=True) as plane:
        print(f"[{_clock()}] control plane up in {plane.startup_seconds:.1f} s", flush=True)
        install_crds(plane.kubeconfig)
        run = Run(sizes, Lab(plane, workdir))
        if args.py_spy:
            run.lab.profiler = procs.Profiler(args.py_spy, workdir)
            run.results["profiled"] = True
        run.results["sizes"] = {
            "small": sizes.small,
            "large": sizes.large,
            "huge": sizes.huge,
            "huge_environments": sizes.huge_envs,
            "quick": sizes.quick,
        }
        run.results["environment"] = environment_facts(plane)
        run.results["operator"] = {
            "identity": run.lab.identity.username,
            "rbac": "the chart's ServiceAccount, ClusterRole, ClusterRoleBinding (defaults)",
            "log_level": run.lab.identity.log_level,
        }
        run.results["operator_identity"] = run.lab.identity.username
        run.results["operator_log_level"] = run.lab.identity.log_level
        try:
            asyncio.run(_measure(run, DEADLINE_S[sizes.quick]))
        except (Exception, KeyboardInterrupt) as exc:  # report what was measured
            failure = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            traceback.print_exc()
        _save_operator_audit(run.lab, workdir)
        if run.lab.profiler is not None:
            stacks.write_summaries(run.lab.profiler.files, workdir / "profile-summary.txt")
        _copy_logs(plane.directory, workdir)
    run.results["total_seconds"] = round(time.monotonic() - began, 1)
    if failure:
        run.results["error"] = failure
    args.output.write_text(json.dumps(run.results, indent=2, sort_keys=False) + "\n")
    if args.record and not failure:
        kept = record.write(
            run.results, kind="bench", quick=sizes.quick, sizes=run.results["sizes"]
        )
        print(f"recorded in {kept}")
    print()
    print(report(run.results))
    print(f"\nsizes: {run.results['sizes']}; total {run.results['total_seconds']} s")
    print(f"figures in {args.output}; logs in {workdir}")
    if failure:
        print(f"\nbench FAILED: {failure}", file=sys.stderr)
        return 1
    misses = missed(run.results)
    if misses:
        print("\ntargets missed:\n  " + "\n  ".join(misses), file=sys.stderr)
        return 2
    return 0


def _save_operator_audit(lab: Lab, workdir: Path) -> None:
    """The operator's requests, one JSON line each, for reading after the run."""
    try:
        lab.audit.refresh()
    except OSError:
        return
    with (workdir / "operator-audit.jsonl").open("w") as sink:
        for event in lab.audit.events:
            sink.write(json.dumps(event) + "\n")


def _copy_logs(directory: Path, workdir: Path) -> None:
    for name in ("kube-apiserver.log", "kube-controller-manager.log", "etcd.log"):
        source = directory / name
        if source.exists():
            shutil.copy(source, workdir / name)


if __name__ == "__main__":
    sys.exit(main())
