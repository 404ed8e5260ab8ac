"""`driftguard` under tracemalloc, for `scale.py --heap`: where the operator's memory is.

    python bench/heapwrap.py OUT run --all-namespaces ...

Runs the operator's command line with tracemalloc tracing from the first import; SIGUSR2
writes the live allocations to OUT, grouped by source line and by file, largest first. The
tracing costs time and about as much memory again as it traces, so its figures are for
telling the parts apart, never for the benchmark's RSS.
"""

from __future__ import annotations

import os
import signal
import sys
import tracemalloc
from pathlib import Path

TOP = 40
DEPTH = int(os.environ.get("HEAP_DEPTH", "1"))
"""Frames kept per allocation; HEAP_DEPTH=12 tells kopf's watch stream from the operator's
lists in the call chains printed last, and slows the operator a lot (one process, 10,000
objects: 433 s to InSync, against 86 s at 1)."""


def _dump(out: Path) -> None:
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    traced, peak = tracemalloc.get_traced_memory()
    lines = [f"traced {traced / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB", ""]
    for group in ("lineno", "filename"):
        stats = snapshot.statistics(group)
        lines.append(f"-- by {group} (top {TOP} of {len(stats)})")
        for stat in stats[:TOP]:
            frame = stat.traceback[0]
            where = frame.filename if group == "filename" else f"{frame.filename}:{frame.lineno}"
            lines.append(f"{stat.size / 2**20:9.2f} MiB {stat.count:9d} blocks  {where}")
        lines.append("")
    # Who made the largest blocks: the call chain of the top lines (needs DEPTH frames).
    for stat in snapshot.statistics("traceback")[:4] if DEPTH > 1 else []:
        lines.append(f"-- {stat.size / 2**20:.2f} MiB {stat.count} blocks, allocated via:")
        lines.extend(f"   {frame.filename}:{frame.lineno}" for frame in stat.traceback)
    lines.append("")
    partial = out.with_suffix(".partial")
    partial.write_text("\n".join(lines))
    partial.replace(out)  # the reader takes it whole


def main() -> int:
    out = Path(sys.argv[1])
    tracemalloc.start(DEPTH)
    signal.signal(signal.SIGUSR2, lambda *_: _dump(out))
    from driftguard.cli.main import main as driftguard

    return driftguard(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
