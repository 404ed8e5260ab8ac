"""The benchmark's pictures for docs/performance.md, drawn from the runs of record.

    .venv/bin/python bench/plots.py       # writes docs/bench-*.svg

Every curve comes from bench/results/ (the latest run of each kind, `record.latest`; memory
per replica from every recorded scale run): nothing is typed in. The SVGs are reproducible
(no date, a fixed id salt), so a redraw from the same files changes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import matplotlib  # noqa: E402

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402
import record  # noqa: E402

OUT = ROOT / "docs"
plt.rcParams.update({"svg.hashsalt": "driftguard", "figure.figsize": (6.4, 3.6), "font.size": 9})
COLORS = {"driftguard": "#1f6feb", "Go floor": "#444444", "Python floor": "#999999"}


def _save(figure: Any, name: str) -> Path:
    path = OUT / f"bench-{name}.svg"
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    figure.savefig(path, format="svg", metadata={"Date": None})
    plt.close(figure)
    return path


def _sizes(r: dict[str, Any]) -> list[int]:
    s = r.get("sizes", {})
    return [s.get("small", 1000), s.get("large", 5000), s.get("huge", 50000)]


def _note(axes: Any, path: Path, r: dict[str, Any]) -> None:
    facts = r["recorded"]
    run = "quick run" if facts["quick"] else "full run"
    text = f"{path.name} ({run}, {facts['machine']['cores']} cores, commit {facts['commit']})"
    axes.figure.text(0.01, 0.01, text, fontsize=7, color="#666666")


def latency(path: Path, r: dict[str, Any]) -> Path:
    """Revert p50 and p99 against the number of managed objects, with both floors."""
    sizes = _sizes(r)
    series = {
        "driftguard": ("revert_p{q}_s", "revert_p{q}_s_5000", "revert_p{q}_s_50000"),
        "Go floor": ("go_floor_p{q}_s", "go_floor_p{q}_s_5000", "go_floor_p{q}_s_50000"),
        "Python floor": ("floor_p{q}_s", "floor_p{q}_s_5000", None),
    }
    figure, axes = plt.subplots()
    for name, keys in series.items():
        for q, style in (("50", "-o"), ("99", ":s")):
            points = [
                (size, r[key.format(q=q)] * 1000)
                for size, key in zip(sizes, keys, strict=True)
                if key is not None and r.get(key.format(q=q)) is not None
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                axes.plot(xs, ys, style, color=COLORS[name], label=f"{name} p{q}")
    axes.set_xscale("log")
    axes.set_xticks(sizes, [f"{size:,}" for size in sizes])
    axes.minorticks_off()
    axes.set_xlabel("managed objects")
    axes.set_ylabel("revert latency (ms)")
    axes.set_title("A manual change undone: driftguard against the floors")
    axes.legend(fontsize=7, ncol=3)
    axes.set_ylim(bottom=0)
    _note(axes, path, r)
    return _save(figure, "latency")


def memory(path: Path, r: dict[str, Any], scale_runs: list[dict[str, Any]]) -> Path:
    """RSS of one process against the objects it manages; each replica of the scale runs."""
    sizes = _sizes(r)
    keys = ("rss_mb_1000", "rss_mb_5000", "rss_mb_50000")
    points = [(0, r.get("rss_mb_idle"))] + [
        (size, r.get(key)) for size, key in zip(sizes, keys, strict=True)
    ]
    points = [(x, y) for x, y in points if y is not None]
    figure, axes = plt.subplots()
    if points:
        xs, ys = zip(*points, strict=True)
        axes.plot(xs, ys, "-o", color=COLORS["driftguard"], label="one process")
    for run in scale_runs:
        for value in run.get("rss_mb_per_replica") or []:
            axes.plot([run["objects"]], [value], "^", color="#d29922")
    if scale_runs:
        axes.plot([], [], "^", color="#d29922", label="each of 3 replicas (bench-scale)")
    axes.set_xlabel("managed objects")
    axes.set_ylabel("RSS (MB)")
    axes.set_title("Memory against managed objects")
    axes.set_xlim(left=0)
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=7)
    _note(axes, path, r)
    return _save(figure, "memory")


def peers(path: Path, r: dict[str, Any]) -> Path:
    """Revert p50 of driftguard, the floors and Flux, on a log scale."""
    bars = [
        ("Go floor", r.get("go_floor_p50_s")),
        ("Python floor", r.get("floor_p50_s")),
        ("driftguard", r.get("revert_p50_s")),
        (f"Flux, interval {r.get('flux_interval_s') or '?'}s", r.get("flux_revert_p50_s")),
        ("Flux, interval 1m", r.get("flux_revert_p50_s_interval_1m")),
    ]
    bars = [(name, value * 1000) for name, value in bars if value]
    figure, axes = plt.subplots()
    names = [name for name, _ in bars]
    colors = [COLORS.get(name, "#8250df") for name in names]
    axes.barh(names, [value for _, value in bars], color=colors)
    for i, (_, value) in enumerate(bars):
        axes.annotate(f"{value:,.1f} ms", (value, i), (4, -3), textcoords="offset points")
    axes.set_xscale("log")
    axes.set_xlim(right=max(value for _, value in bars) * 12)
    axes.set_xlabel("revert p50 (ms, log scale)")
    axes.set_title("Drift undone, median: driftguard, the floors and Flux")
    axes.invert_yaxis()
    _note(axes, path, r)
    return _save(figure, "peers")


def status_writes(path: Path, r: dict[str, Any]) -> Path:
    """API server CPU per status write, before and after the rules left the CRD: each round."""
    designs = r.get("details", {}).get("status_writes", {}).get("designs", {})
    figure, axes = plt.subplots()
    labels = {"previous": "CEL rules in the CRD", "current": "rules in an admission policy"}
    for i, design in enumerate(labels):
        rounds = designs.get(design, {}).get("cpu_ms_per_write_rounds", [])
        axes.plot([i] * len(rounds), rounds, "o", alpha=0.6, color=COLORS["driftguard"])
        median = designs.get(design, {}).get("cpu_ms_per_write_p50")
        if median is not None:
            axes.plot([i - 0.2, i + 0.2], [median, median], "-", color="black")
            axes.annotate(f"{median:.1f} ms", (i + 0.22, median), va="center")
    axes.set_xticks(range(len(labels)), list(labels.values()))
    axes.set_xlim(-0.6, len(labels) - 0.4)
    axes.set_ylim(bottom=0)
    axes.set_ylabel("kube-apiserver CPU per write (ms)")
    axes.set_title("A status write of an Environment of 100 objects (each dot: a round)")
    _note(axes, path, r)
    return _save(figure, "status-writes")


def failover(path: Path, r: dict[str, Any]) -> Path:
    """After a SIGKILL: the dead replica's Environments taken over, and their drift reverted."""
    details = r.get("details", {})
    timeline = details.get("failover_timeline") or {}
    figure, axes = plt.subplots()
    for key, label, color in (
        ("moved_s", "named another replica's", "#d29922"),
        ("reverted_s", "its drift reverted", COLORS["driftguard"]),
    ):
        times = sorted(timeline.get(key) or [])
        if times:
            axes.step([0, *times], range(len(times) + 1), where="post", label=label, color=color)
    lease = details.get("lease_duration_s")
    if lease:
        axes.axvline(lease, linestyle=":", color="#666666", label=f"Lease duration ({lease} s)")
    axes.set_xlabel("seconds after SIGKILL of one of 3 replicas")
    axes.set_ylabel("Environments")
    axes.set_title(f"Failover, {r.get('objects', 0):,} objects: {r.get('failover_s')} s")
    axes.set_xlim(left=0)
    axes.legend(fontsize=7)
    _note(axes, path, r)
    return _save(figure, "failover")


def draw() -> list[Path]:
    """Every picture the recorded runs allow."""
    written = []
    bench = record.latest("bench")
    if bench is not None:
        r = record.load(bench)
        scale_runs = [
            record.load(p) for p in sorted(record.RESULTS.glob("*.json"))
            if record.kind_of(p) == "scale"
        ]  # fmt: skip
        written += [latency(bench, r), memory(bench, r, scale_runs), peers(bench, r)]
        written.append(status_writes(bench, r))
    scale = record.latest("scale")
    if scale is not None:
        written.append(failover(scale, record.load(scale)))
    return written


if __name__ == "__main__":
    for path in draw():
        print(path.relative_to(ROOT))
