"""Percentiles of latency samples and the printed table. Pure: no I/O but ``print``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(samples: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None without samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Latencies:
    """Samples of one latency measurement; a timeout counts as its timeout (never dropped)."""

    name: str
    timeout: float
    samples: list[float] = field(default_factory=list)
    from_sent: list[float] = field(default_factory=list)
    timeouts: int = 0
    early: int = 0
    by_kind: dict[str, list[float]] = field(default_factory=dict)

    def add(self, seconds: float | None, kind: str = "ConfigMap", *, write_s: float = 0.0) -> None:
        """One sample, from the write's return; ``write_s`` is how long the write itself took."""
        if seconds is None:
            self.timeouts += 1
            seconds = self.timeout
        if seconds < 0:
            # The observer saw the revert before the manual write's response was read: the
            # revert beat the response to this process. Counted, and recorded as zero.
            self.early += 1
            seconds = 0.0
        self.samples.append(seconds)
        self.from_sent.append(seconds + write_s)
        self.by_kind.setdefault(kind, []).append(seconds)

    def summary(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "n": len(self.samples),
            "timeouts": self.timeouts,
            "seen_before_write_returned": self.early,
            "p50_s": _round(percentile(self.samples, 50)),
            "p90_s": _round(percentile(self.samples, 90)),
            "p99_s": _round(percentile(self.samples, 99)),
            "max_s": _round(max(self.samples) if self.samples else None),
            "from_write_sent_p50_s": _round(percentile(self.from_sent, 50)),
            "from_write_sent_p99_s": _round(percentile(self.from_sent, 99)),
        }
        if len(self.by_kind) > 1:
            result["by_kind"] = {
                kind: {
                    "n": len(values),
                    "p50_s": _round(percentile(values, 50)),
                    "p99_s": _round(percentile(values, 99)),
                }
                for kind, values in sorted(self.by_kind.items())
            }
        return result


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b as measured (no floor on either side); None when b is not positive."""
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 2)


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def table(rows: Sequence[tuple[str, Any, str, str]]) -> str:
    """Rows of (figure, value, target, verdict) as an aligned text table."""
    head = ("figure", "value", "target", "")
    cells = [head] + [
        (name, _show(value), target, verdict) for name, value, target, verdict in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = []
    for index, row in enumerate(cells):
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def verdict(value: float | None, limit: float | None) -> str:
    if limit is None:
        return ""
    if value is None:
        return "n/a"
    return "ok" if value <= limit else "MISSED"
