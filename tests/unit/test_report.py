"""report: each closed change record becomes exactly the Events, log event and metrics its table says."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from driftguard.core import render, tracking
from driftguard.core.changes import Change, Outcome
from driftguard.core.exception import Judged, Phase
from driftguard.core.model import ObjectKey
from driftguard.core.status import EnvironmentStatus
from driftguard.runtime import report
from driftguard.telemetry import metrics

OUTCOME_TABLE = Path(__file__).resolve().parents[2] / "docs" / "how-it-works.md"
KEY = ObjectKey("apps", "v1", "Deployment", "shop", "web")


def readme_rows() -> dict[str, tuple[set[str], str | None]]:
    """outcome -> (Event reasons, log event) from the outcome table in docs/how-it-works.md."""
    rows = {}
    for line in OUTCOME_TABLE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"`[a-z]+`", cells[0]):
            events = set(re.findall(r"`([A-Za-z]+)`", cells[2])) - {"Applied"}
            logs = re.findall(r"`([a-z_]+)`", cells[3])
            rows[cells[0].strip("`")] = (events, logs[0] if logs else None)
    return rows


@pytest.mark.parametrize("outcome", list(Outcome), ids=str)
def test_readme_table_is_the_reporters_table(outcome: Outcome) -> None:
    """The outcome table in the docs names the same Events and log event as report.TABLE."""
    reporting = report.TABLE[outcome]

    events, log_event = readme_rows()[outcome.value]

    assert events == {reason for reason, _ in reporting.events}
    assert log_event == reporting.log_event


ENV_BODY: dict[str, Any] = {"metadata": {"namespace": "staging", "name": "shop"}}


class Recorder:
    """Collects posted Events, each on the Environment it names."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, str, bool]] = []

    def post(self, env: dict[str, Any], reason: str, message: str, warning: bool) -> None:
        assert env is ENV_BODY
        self.posted.append((reason, message, warning))


@pytest.fixture
def ledger() -> tracking.Ledger:
    return tracking.Ledger(owner=render.Owner("staging", "shop"), status=EnvironmentStatus())


def sample(name: str, **labels: str) -> float:
    """The current value of one counter child."""
    counters: dict[str, Any] = {
        "detected": metrics.drift_detected,
        "reverted": metrics.drift_reverted,
        "errors": metrics.reconcile_errors,
    }
    return float(counters[name].labels(**labels)._value.get())


def test_reverted_record_posts_counts_and_remembers(ledger: tracking.Ledger) -> None:
    """A revert posts DriftDetected and DriftReverted, counts both, and becomes lastDrift."""
    post = Recorder()
    labels = {"namespace": "shop", "environment": "staging", "kind": "Deployment"}
    before = sample("detected", **labels), sample("reverted", **labels)
    change = Change(KEY, Outcome.REVERTED, ("/spec/replicas",), "kubectl", latency=0.004)

    with capture_logs() as logs:
        report.Reporter(ledger, post, ENV_BODY).record([change])

    assert [reason for reason, _, _ in post.posted] == ["DriftDetected", "DriftReverted"]
    assert post.posted[1][1] == (
        "Deployment/shop/web drifted at /spec/replicas by kubectl; reverted to the blueprint"
    )
    assert (sample("detected", **labels), sample("reverted", **labels)) == (
        before[0] + 1,
        before[1] + 1,
    )
    assert [entry["event"] for entry in logs] == ["drift_reverted"]
    assert logs[0]["latency_ms"] == 4.0
    assert ledger.status.last_drift is not None
    assert ledger.status.last_drift.paths == ["/spec/replicas"]
    assert ledger.status.last_drift.changed_by == "kubectl"


def test_failed_record_posts_logs_and_counts_an_error(ledger: tracking.Ledger) -> None:
    """A failed revert posts ApplyFailed, logs apply_failed and counts a reconcile error."""
    post = Recorder()
    labels = {"namespace": "shop", "environment": "staging", "reason": "ApplyFailed"}
    before = sample("errors", **labels)
    change = Change(KEY, Outcome.FAILED, message="revert Deployment/shop/web: 422 Invalid")

    with capture_logs() as logs:
        report.Reporter(ledger, post, ENV_BODY).record([change])

    assert post.posted == [("ApplyFailed", "revert Deployment/shop/web: 422 Invalid", True)]
    assert [entry["event"] for entry in logs] == ["apply_failed"]
    assert sample("errors", **labels) == before + 1


@pytest.mark.parametrize(
    "outcome", [Outcome.UNCHANGED, Outcome.CREATED, Outcome.TOLERATED, Outcome.RELEASED], ids=str
)
def test_quiet_outcomes_post_nothing(ledger: tracking.Ledger, outcome: Outcome) -> None:
    """Outcomes without an Event in the table post none, and leave lastDrift alone."""
    post = Recorder()

    report.Reporter(ledger, post, ENV_BODY).record([Change(KEY, outcome)])

    assert post.posted == []
    assert ledger.status.last_drift is None


class Notes:
    """The audit trail's records of the Environment itself, in memory."""

    def __init__(self) -> None:
        self.notes: list[dict[str, Any]] = []
        self.changes: list[Change] = []

    def add(self, changes: Any, paused: bool) -> None:
        self.changes.extend(changes)

    def note(self, action: str, **fields: Any) -> None:
        self.notes.append({"action": action, **fields})


def test_an_exceptions_start_and_end_reach_events_and_the_audit_trail(
    ledger: tracking.Ledger,
) -> None:
    """Who created and approved it, its reason and end; then how it ended."""
    post, trail = Recorder(), Notes()
    reporter = report.Reporter(ledger, post, ENV_BODY, trail)
    judged = Judged(
        "hold",
        "shop",
        Phase.ACTIVE,
        expires_at=1_800_000_000.0,
        message="covers Deployment/web /spec/replicas",
        reason="incident 4711",
        created_by="alice",
        approved_by="carol",
    )
    reporter.exception_began(judged)
    reporter.exception_ended("hold", "Expired")
    assert [reason for reason, _, _ in post.posted] == ["ExceptionActive", "ExceptionEnded"]
    assert "(Expired)" in post.posted[1][1]
    assert trail.notes == [
        {
            "action": "exception-active",
            "kind": "DriftException",
            "namespace": "shop",
            "name": "hold",
            "exception": "hold",
            "reason": "incident 4711",
            "covers": "covers Deployment/web /spec/replicas",
            "createdBy": "alice",
            "approvedBy": "carol",
            "expiresAt": "2027-01-15T08:00:00Z",
        },
        {
            "action": "exception-ended",
            "kind": "DriftException",
            "namespace": "shop",
            "name": "hold",
            "exception": "hold",
            "end": "Expired",
        },
    ]


def test_drift_times_its_detection_and_opens_the_out_of_sync_interval(
    ledger: tracking.Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manual write's time to drift seen is observed; the time out of sync runs from it."""
    monkeypatch.setattr(metrics.out_of_sync, "_started", 0.0)  # as if running for long
    reporter = report.Reporter(ledger, Recorder(), ENV_BODY, Notes())
    histogram = metrics.detect_latency.labels("ConfigMap")
    before = histogram._sum.get()
    written = time.time() - 3.0
    change = Change(
        ObjectKey("", "v1", "ConfigMap", "shop", "db"),
        Outcome.FLAGGED,
        ("/data/DB_VERSION",),
        "kubectl-patch",
        changed_at=datetime.fromtimestamp(written, UTC).isoformat().replace("+00:00", "Z"),
    )
    reporter.record([change])
    assert 2.9 <= histogram._sum.get() - before <= 30.0
    spent = metrics.out_of_sync.ended("shop", "staging", time.time())
    assert spent is not None
    assert spent >= 2.9  # from the write, not from when it was seen


def test_back_in_sync_is_an_audit_record(ledger: tracking.Ledger) -> None:
    trail = Notes()
    report.Reporter(ledger, Recorder(), ENV_BODY, trail).back_in_sync(12.3456)
    assert trail.notes == [
        {
            "action": "in-sync",
            "kind": "Environment",
            "namespace": "shop",
            "name": "staging",
            "outOfSyncS": 12.346,
        }
    ]
