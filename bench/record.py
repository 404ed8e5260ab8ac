"""The figures of record: each `make bench` / `make bench-scale` run as a file in bench/results/.

    bench/results/<date>-<machine>.json          make bench (quick runs: -quick)
    bench/results/<date>-<machine>-scale.json    make bench-scale (quick runs: -scale-quick)

A file holds the run's results as the run printed them, under the same keys, and a `recorded`
block: the date, the commit (and whether the operator's code differed from it), the machine
(cores, memory, CPU model, kernel) and the sizes. `<machine>` is `BENCH_MACHINE` when set,
else `<cores>c<GiB>g`. The files are committed: the tables in the docs are generated from the
latest of each kind (`tables.py`), and nothing else may overwrite a figure of record.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from datetime import date
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
KINDS = ("bench", "scale")
_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})-(.+?)(-scale)?(-quick)?(?:-(\d+))?\.json$")


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=HERE.parent, capture_output=True, text=True, check=False
    )
    return done.stdout.strip()


def _meminfo_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024**2, 1)
    return 0.0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cores": os.cpu_count(),
        "memory_gib": _meminfo_gib(),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "arch": platform.machine(),
    }


def slug(facts: dict[str, Any]) -> str:
    named = os.environ.get("BENCH_MACHINE", "")
    if named:
        return re.sub(r"[^a-z0-9-]+", "-", named.lower()).strip("-")
    return f"{facts['cores']}c{round(facts['memory_gib'])}g"


def write(
    results: dict[str, Any],
    *,
    kind: str,
    quick: bool,
    sizes: dict[str, Any],
    directory: Path = RESULTS,
    today: date | None = None,
) -> Path:
    """Writes one run's file; a second run the same day gets `-2`, never overwrites."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    facts = machine()
    stem = f"{(today or date.today()).isoformat()}-{slug(facts)}"
    stem += ("-scale" if kind == "scale" else "") + ("-quick" if quick else "")
    directory.mkdir(parents=True, exist_ok=True)
    path, n = directory / f"{stem}.json", 1
    while path.exists():
        n += 1
        path = directory / f"{stem}-{n}.json"
    recorded = {
        "kind": kind,
        "date": (today or date.today()).isoformat(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "operator_code_changed_since_commit": bool(_git("status", "--porcelain", "--", "operator")),
        "machine": facts,
        "quick": quick,
        "sizes": sizes,
    }
    path.write_text(json.dumps({"recorded": recorded, **results}, indent=2) + "\n")
    return path


def kind_of(path: Path) -> str | None:
    match = _NAME.match(path.name)
    if match is None:
        return None
    return "scale" if match.group(3) else "bench"


def _order(path: Path) -> tuple[str, int]:
    match = _NAME.match(path.name)
    assert match is not None
    return match.group(1), int(match.group(5) or 1)


def latest(kind: str, directory: Path = RESULTS) -> Path | None:
    """The newest run of a kind: a full run if there is one, else the newest quick run."""
    runs = [p for p in directory.glob("*.json") if kind_of(p) == kind]
    full = [p for p in runs if "-quick" not in p.name]
    chosen = full or runs
    return max(chosen, key=_order) if chosen else None


def load(path: Path) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(path.read_text())
    return found
