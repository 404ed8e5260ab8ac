"""bench/tables.py and bench/record.py: the docs' performance tables follow the runs of record."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import date
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


record = _load("record")
tables = _load("tables")


def test_committed_docs_show_the_latest_committed_results() -> None:
    """README.md, docs/performance.md and docs/scaling.md hold what tables.py draws from
    bench/results/: run `.venv/bin/python bench/tables.py` after recording a run."""
    assert tables.stale() == []


def test_a_run_is_recorded_with_its_machine_and_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs the same day get two files; each says its commit, cores, memory and sizes."""
    monkeypatch.setenv("BENCH_MACHINE", "Test Box")
    day = date(2026, 1, 2)
    first = record.write({"revert_p50_ratio_go": 1.2}, kind="bench", quick=False,
                         sizes={"small": 1}, directory=tmp_path, today=day)  # fmt: skip
    second = record.write({"revert_p50_ratio_go": 1.3}, kind="bench", quick=False,
                          sizes={"small": 1}, directory=tmp_path, today=day)  # fmt: skip
    assert (first.name, second.name) == ("2026-01-02-test-box.json", "2026-01-02-test-box-2.json")
    kept = json.loads(first.read_text())
    assert kept["revert_p50_ratio_go"] == 1.2
    assert set(kept["recorded"]) >= {"commit", "machine", "sizes", "date", "quick", "kind"}
    assert {"cores", "memory_gib"} <= set(kept["recorded"]["machine"])
    assert record.latest("bench", tmp_path) == second


@pytest.mark.parametrize(
    ("names", "kind", "expected"),
    [
        (["2026-01-01-m.json", "2026-01-03-m-quick.json"], "bench", "2026-01-01-m.json"),
        (
            ["2026-01-01-m-quick.json", "2026-01-02-m-quick.json"],
            "bench",
            "2026-01-02-m-quick.json",
        ),
        (["2026-01-05-m.json", "2026-01-02-m-scale.json"], "scale", "2026-01-02-m-scale.json"),
        (["board.json", "2026-01-02-m-scale-quick.json"], "bench", None),
    ],
    ids=["a-full-run-beats-a-later-quick-one", "else-the-newest-quick", "scale-apart", "none"],
)
def test_latest_run_of_a_kind(
    tmp_path: Path, names: list[str], kind: str, expected: str | None
) -> None:
    """The tables follow the newest full run of their kind, a quick one only if none is full."""
    for name in names:
        (tmp_path / name).write_text("{}")
    found = record.latest(kind, tmp_path)
    assert (found.name if found else None) == expected
