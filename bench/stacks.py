"""Summaries of py-spy's raw (collapsed-stack) profiles: where the operator's CPU went.

Pure apart from reading the files it is given and writing one text file. A line of the raw
format is ``frame;frame;...;leaf count``, each frame ``function (file:line)``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")
# Which code a frame belongs to, judged by its file path, first match wins.
_AREAS = (
    ("driftguard", "driftguard/"),
    ("kopf", "kopf/"),
    ("aiohttp", "aiohttp/"),
    ("kubernetes_asyncio", "kubernetes_asyncio/"),
    ("pydantic", "pydantic"),
    ("json", "json/"),
    ("yaml", "yaml/"),
    ("structlog/logging", "structlog/"),
    ("ssl/asyncio", "asyncio/"),
    ("import", "importlib"),
)


def _frames(stack: str) -> list[tuple[str, str]]:
    frames = []
    for raw in stack.split(";"):
        match = _FRAME.match(raw.strip())
        if match:
            frames.append((match["function"], match["file"]))
        else:
            frames.append((raw.strip(), ""))
    return frames


def _area(file: str) -> str:
    for name, needle in _AREAS:
        if needle in file:
            return name
    return "other"


def summarize(path: Path, *, top: int = 15) -> str:
    """Samples by area of the leaf frame, and the heaviest functions, self and inclusive."""
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = _frames(stack)
        if not frames:
            continue
        function, file = frames[-1]
        leaf[f"{function} ({file})"] += count
        areas[_area(file)] += count
        for name in {f"{f} ({p})" for f, p in frames if "driftguard/" in p or "kopf/" in p}:
            inclusive[name] += count
    if not total:
        return f"{path.name}: no samples\n"
    lines = [f"{path.name}: {total} samples"]
    lines.append("  by area of the running frame:")
    lines += [f"    {n * 100 / total:5.1f}%  {name}" for name, n in areas.most_common()]
    lines.append("  self (leaf) time:")
    lines += [f"    {n * 100 / total:5.1f}%  {name}" for name, n in leaf.most_common(top)]
    lines.append("  inclusive, driftguard and kopf frames:")
    lines += [f"    {n * 100 / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines) + "\n"


def write_summaries(paths: Iterable[Path], output: Path) -> None:
    text = "\n".join(summarize(p) for p in paths if p.exists() and p.stat().st_size)
    output.write_text(text)
