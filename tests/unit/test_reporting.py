"""driftguard report: the figures an auditor asks for, from audit trail records."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

from driftguard.cli import reporting
from driftguard.cli.reporting import Trail
from driftguard.kube import audit

NOW = datetime(2026, 12, 31, 12, 0, tzinfo=UTC)
DAYS_30 = 30 * 86400.0


def incident(day: int, action: str = "reverted", **fields: Any) -> dict[str, Any]:
    return {
        "time": f"2026-12-{day:02d}T10:00:00Z",
        "apiVersion": "v1",
        "kind": "Secret",
        "namespace": "prod",
        "name": "db",
        "action": action,
        "paths": ["/data/password"],
        "changedBy": "kubectl-edit",
        "user": "alice",
        "values": [{"path": "/data/password", "blueprint": "hunter2", "live": "letmein"}],
        **fields,
    }


def prod() -> Trail:
    entries = [
        incident(1, latencyMs=999.0),  # December 1st: outside a 30-day window ending the 31st
        incident(5, latencyMs=4.0),
        incident(6, latencyMs=6.0, user=None, changedBy="kubectl-patch"),
        incident(7, latencyMs=100.0),
        incident(8, "flagged"),
        incident(9, "tolerated"),
        {"time": "2026-12-08T10:05:00Z", "action": "in-sync", "outOfSyncS": 300.0},
        {"time": "2026-12-10T10:00:00Z", "action": "exception-active", "exception": "hold",
         "reason": "incident 4711", "createdBy": "alice", "approvedBy": "carol",
         "expiresAt": "2026-12-10T14:00:00Z"},
        incident(10, "excepted", exception="hold"),
        {"time": "2026-12-10T14:00:00Z", "action": "exception-ended", "exception": "hold",
         "end": "Expired"},
    ]  # fmt: skip
    live = {
        "metadata": {"name": "later", "namespace": "shop", "creationTimestamp": "2026-12-30T09:00:00Z"},
        "spec": {"environmentRef": {"name": "prod"}, "reason": "load test", "duration": "2h"},
        "status": {"phase": "Pending", "createdBy": "bob"},
    }  # fmt: skip
    return Trail("shop", "prod", entries, [live])


def doc() -> dict[str, Any]:
    return reporting.build([prod(), Trail("shop", "dev", [])], window_s=DAYS_30, now=NOW)


def test_incidents_are_counted_by_what_was_done_person_and_tool() -> None:
    (env, dev) = doc()["environments"]
    assert env["incidents"] == {"total": 5, "reverted": 3, "flagged": 1, "excepted": 1, "other": 0}
    assert env["tolerated"] == 1  # allowed by the blueprint: no incident
    assert env["byPerson"] == {"alice": 4, "unknown": 1}
    assert env["byTool"] == {"kubectl-edit": 4, "kubectl-patch": 1}
    assert dev["incidents"]["total"] == 0
    assert doc()["totals"]["byPerson"] == {"alice": 4, "unknown": 1}


def test_time_to_revert_and_out_of_sync() -> None:
    (env, _) = doc()["environments"]
    assert env["revertLatencyMs"] == {"count": 3, "p50": 6.0, "p99": 100.0}
    assert env["outOfSyncSeconds"] == 300.0
    assert reporting.percentile([], 0.5) is None
    assert reporting.percentile([float(i) for i in range(1, 101)], 0.99) == 99.0


def test_exceptions_from_the_trail_and_the_cluster_once_each() -> None:
    (env, _) = doc()["environments"]
    hold, later = env["exceptions"]
    assert hold == {
        "name": "hold",
        "start": "2026-12-10T10:00:00Z",
        "reason": "incident 4711",
        "createdBy": "alice",
        "approvedBy": "carol",
        "expiresAt": "2026-12-10T14:00:00Z",
        "end": "2026-12-10T14:00:00Z",
        "ended": "Expired",
        "durationS": 4 * 3600,
    }
    assert (later["name"], later["createdBy"], later["phase"]) == ("later", "bob", "Pending")


def test_a_full_trail_that_starts_inside_the_window_says_how_far_it_reaches() -> None:
    full = Trail("shop", "busy", [incident(20)] * audit.LIMIT)
    (env,) = reporting.build([full], window_s=DAYS_30, now=NOW)["environments"]
    assert env["trailCoversWindow"] is False
    assert "reaches back only to 2026-12-20T10:00:00Z" in reporting.markdown(
        reporting.build([full], window_s=DAYS_30, now=NOW)
    )
    assert doc()["environments"][0]["trailCoversWindow"] is True  # not full: nothing dropped


def test_markdown_has_the_tables_and_no_value() -> None:
    text = reporting.markdown(doc())
    for title in ("Incidents by Environment", "Incidents by person", "Incidents by tool",
                  "Exceptions granted"):  # fmt: skip
        assert f"## {title}" in text
    assert "| shop/prod | 5 | 3 | 1 | 1 | 0 | 6 ms | 100 ms | 5 min |" in text
    assert "| hold | incident 4711 | alice | carol |" in text.replace("shop/prod | hold", "| hold")
    assert "(30 days)" in text
    assert "hunter2" not in text
    assert "letmein" not in text


def test_json_is_one_document_without_values() -> None:
    text = json.dumps(doc())
    loaded = json.loads(text)
    assert set(loaded) == {"window", "generatedAt", "environments", "totals"}
    assert loaded["window"]["from"] == "2026-12-01T12:00:00Z"
    assert "hunter2" not in text


def test_csv_has_a_row_per_incident_and_exception_record() -> None:
    text = reporting.rows_csv([prod()], window_s=DAYS_30, now=NOW)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["action"] for r in rows] == [
        "reverted", "reverted", "reverted", "flagged", "tolerated",
        "exception-active", "excepted", "exception-ended",
    ]  # fmt: skip
    assert rows[0]["paths"] == "/data/password"
    assert rows[1]["user"] == ""  # unknown stays empty, never someone else
    assert rows[5]["user"] == "alice"
    assert "hunter2" not in text


def test_an_environment_out_of_sync_now_counts_the_time_so_far() -> None:
    """Flagged on the 30th at 12:00, still drifted: a day out of sync by the 31st at 12:00."""
    entries = [
        {"time": "2026-12-29T10:00:00Z", "action": "in-sync", "outOfSyncS": 60.0},
        {**incident(30, "flagged"), "changedAt": "2026-12-30T12:00:00Z"},
        incident(30, "flagged"),
    ]
    drifted = Trail("shop", "prod", entries, is_out_of_sync=True)
    (env,) = reporting.build([drifted], window_s=DAYS_30, now=NOW)["environments"]
    assert env["outOfSyncSeconds"] == 60.0 + 86400.0
    settled = Trail("shop", "prod", entries, is_out_of_sync=False)
    (env,) = reporting.build([settled], window_s=DAYS_30, now=NOW)["environments"]
    assert env["outOfSyncSeconds"] == 60.0
