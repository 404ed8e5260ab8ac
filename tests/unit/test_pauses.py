"""The cyclic collector's long pauses are logged, with how long they held the process."""

from __future__ import annotations

import gc

import pytest

from driftguard.telemetry import logs
from driftguard.telemetry.pauses import Collections, watch_collections


def _pauses(capsys: pytest.CaptureFixture[str]) -> list[str]:
    captured = capsys.readouterr()
    return [line for line in (captured.out + captured.err).splitlines() if "gc_pause" in line]


def test_a_long_collection_is_logged_with_its_generation_and_duration(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure(level="INFO")
    watcher = Collections(long_s=0.0)  # every collection counts as long here
    watcher("start", {"generation": 2})
    watcher("stop", {"generation": 2, "collected": 3})
    lines = _pauses(capsys)
    assert len(lines) == 1, lines
    assert '"generation": 2' in lines[0]
    assert '"collected": 3' in lines[0]
    assert '"seconds": ' in lines[0]


def test_a_short_one_is_not(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure(level="INFO")
    quiet = Collections(long_s=60.0)
    quiet("start", {"generation": 0})
    quiet("stop", {"generation": 0, "collected": 0})
    assert _pauses(capsys) == []
    assert 0.0 <= quiet.longest_s < 60.0


def test_the_real_collector_reports_to_it() -> None:
    watcher = watch_collections()
    try:
        gc.collect()
        assert watcher.longest_s > 0.0
    finally:
        gc.callbacks.remove(watcher)
