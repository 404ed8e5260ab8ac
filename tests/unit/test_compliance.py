"""compliance: one Policy Report result per managed object, with paths and people, no values."""

from __future__ import annotations

import json
from typing import Any

from driftguard.core import compliance
from driftguard.core.model import Mode, ObjectKey, Resource, State
from driftguard.core.tracking import Tracked
from driftguard.kube import timestamps

CONFIGMAPS = Resource("", "v1", "ConfigMap", "configmaps", namespaced=True)


def tracked(name: str, state: State, **fields: Any) -> Tracked:
    key = ObjectKey("", "v1", "ConfigMap", "shop", name)
    return Tracked(key, CONFIGMAPS, {"data": {"PASSWORD": "hunter2"}}, state=state, **fields)


def content(*records: Tracked, mode: Mode = Mode.ENFORCE) -> dict[str, Any]:
    return compliance.content(records, "prod", mode, timestamps.epoch)


def test_each_state_is_the_outcome_a_policy_tool_shows() -> None:
    assert compliance.outcome(State.IN_SYNC, Mode.ENFORCE) == "pass"
    assert compliance.outcome(State.OVERRIDDEN, Mode.ENFORCE) == "pass"  # the blueprint allows it
    assert compliance.outcome(State.DRIFTED, Mode.ENFORCE) == "fail"  # not put back
    assert compliance.outcome(State.FIGHTING, Mode.ENFORCE) == "fail"
    assert compliance.outcome(State.DRIFTED, Mode.OBSERVE) == "warn"
    assert compliance.outcome(State.MISSING, Mode.OBSERVE) == "warn"
    assert compliance.outcome(State.EXCEPTED, Mode.ENFORCE) == "skip"


def test_a_drifted_object_names_its_paths_and_people_never_a_value() -> None:
    drifted = tracked(
        "db",
        State.DRIFTED,
        pointers=("/data/PASSWORD",),
        changed_by="kubectl-edit",
        changed_by_user="alice",
        last_drift_time="2026-12-06T10:00:00Z",
    )
    found = content(drifted, mode=Mode.OBSERVE)
    (only,) = found["results"]
    assert only["result"] == "warn"
    assert (only["policy"], only["source"], only["rule"]) == (
        "prod",
        "driftguard",
        "matches-blueprint",
    )
    assert only["resources"] == [
        {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "shop", "name": "db"}
    ]
    assert only["properties"] == {
        "state": "Drifted",
        "paths": "/data/PASSWORD",
        "changedBy": "kubectl-edit",
        "changedByUser": "alice",
    }
    assert only["timestamp"] == {"seconds": 1796551200, "nanos": 0}
    assert "hunter2" not in json.dumps(found)
    assert found["summary"] == {"pass": 0, "fail": 0, "warn": 1, "error": 0, "skip": 0}


def test_an_excepted_object_is_skipped_naming_its_exception() -> None:
    held = tracked("web", State.EXCEPTED, pointers=("/spec/replicas",), exception="hold")
    (only,) = content(held)["results"]
    assert only["result"] == "skip"
    assert only["properties"]["exception"] == "hold"
    assert "DriftException hold" in only["message"]


def test_equal_records_give_equal_content_whatever_their_order() -> None:
    """What decides a write: the same objects in another order write nothing."""
    records = [tracked(f"cm-{i}", State.IN_SYNC) for i in range(5)]
    assert content(*records) == content(*reversed(records))
    assert content(*records)["results"][0]["message"] == "matches the blueprint"
    assert "timestamp" not in content(*records)["results"][0]  # no clock in a passing result


def test_a_big_environment_lists_failures_first_and_counts_everything() -> None:
    records = [tracked(f"cm-{i:05d}", State.IN_SYNC) for i in range(compliance.LIMIT + 10)]
    records.append(tracked("zz-drifted", State.DRIFTED, pointers=("/data/A",)))
    found = content(*records)
    assert len(found["results"]) == compliance.LIMIT
    assert found["results"][0]["result"] == "fail"
    assert found["summary"]["pass"] == compliance.LIMIT + 10
    assert found["summary"]["fail"] == 1


def test_the_report_is_owned_by_its_environment_and_labelled() -> None:
    env = {"metadata": {"name": "prod", "namespace": "shop", "uid": "u-1"}}
    owner = {"apiVersion": "driftguard.io/v1alpha1", "kind": "Environment", "name": "prod"}
    made = compliance.document("openreports.io/v1alpha1", "Report", env, owner, content())
    assert made["metadata"]["name"] == "driftguard-prod"
    assert made["metadata"]["ownerReferences"] == [owner]
    assert made["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "driftguard"
    assert (made["kind"], made["results"]) == ("Report", [])
    assert len(compliance.report_name("e" * 253)) <= 253
