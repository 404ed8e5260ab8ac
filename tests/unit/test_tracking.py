"""tracking: the status summed up from the ledger stays small for big Environments."""

from __future__ import annotations

from typing import Any

import pytest

from driftguard.core import model, prevention, tracking
from driftguard.core.model import ObjectKey, Resource, State
from driftguard.core.status import EnvironmentStatus, ResourceStatus

CONFIGMAPS = Resource("", "v1", "ConfigMap", "configmaps", namespaced=True)
READY = (True, "Applied", "revision 1 applied")


def record(index: int, state: State) -> tracking.Tracked:
    key = ObjectKey("", "v1", "ConfigMap", "shop", f"cm-{index:05d}")
    return tracking.Tracked(key, CONFIGMAPS, {}, state=state)


@pytest.mark.parametrize(
    ("in_sync", "drifted", "listed", "omitted"),
    [
        (10, 2, 12, None),
        (model.RESOURCE_STATUS_LIMIT, 0, model.RESOURCE_STATUS_LIMIT, None),
        (3000, 7, model.RESOURCE_STATUS_LIMIT, 2507),
    ],
    ids=["small", "at-limit", "big"],
)
def test_status_lists_at_most_the_limit_drifted_first(
    in_sync: int, drifted: int, listed: int, omitted: int | None
) -> None:
    """Past the limit only in-sync objects are left out of status.resources, and counted."""
    records = [record(i, State.IN_SYNC) for i in range(in_sync)]
    records += [record(in_sync + i, State.DRIFTED) for i in range(drifted)]

    status = tracking.summarize(EnvironmentStatus(), records, READY, now="2026-11-26T00:00:00Z")

    assert len(status.resources) == listed
    assert status.resources_omitted == omitted
    assert sum(entry.state is State.DRIFTED for entry in status.resources) == drifted
    assert status.summary.managed == in_sync + drifted


def test_suspended_condition_only_while_paused() -> None:
    """A Suspended condition names the expiry while suspendUntil lies ahead, and is gone after."""
    records = [record(0, State.IN_SYNC)]
    until = "2026-11-26T15:00:00Z"

    paused = tracking.summarize(EnvironmentStatus(), records, READY, now="t", paused_until=until)
    resumed = tracking.summarize(paused, records, READY, now="t")

    (condition,) = [c for c in paused.conditions if c.type == "Suspended"]
    assert condition.status == "True"
    assert until in condition.message
    assert [c.type for c in resumed.conditions] == ["Ready", "InSync"]


def test_refused_before_any_object_is_not_in_sync() -> None:
    """A pass refused before anything was compared says InSync=False with Ready's reason."""
    refused = (False, "Forbidden", "cannot list Secret in namespace team-b")

    status = tracking.summarize(EnvironmentStatus(), [], refused, now="t")

    (in_sync,) = [c for c in status.conditions if c.type == "InSync"]
    assert (in_sync.status, in_sync.reason) == ("False", "Forbidden")
    assert "cannot list Secret" in in_sync.message


def test_in_sync_is_unknown_while_the_cluster_does_not_answer() -> None:
    """ClusterUnreachable: what was last seen may have changed, so InSync is Unknown, saying so."""
    away = (False, "ClusterUnreachable", "the cluster of Secret shop/prod does not answer")

    status = tracking.summarize(EnvironmentStatus(), [record(0, State.IN_SYNC)], away, now="t")

    (in_sync,) = [c for c in status.conditions if c.type == "InSync"]
    assert (in_sync.status, in_sync.reason) == ("Unknown", "ClusterUnreachable")
    assert in_sync.message.startswith("unknown while its cluster does not answer; last seen:")
    assert status.summary.in_sync == 1  # the objects' last known states are kept


ENFORCED_DENY = prevention.Enforced(model.Prevention.DENY, "abc")
ENFORCED_OFF = prevention.Enforced(model.Prevention.OFF)


@pytest.mark.parametrize(
    ("enforced", "enforcing", "expected"),
    [
        (None, None, None),
        (None, ENFORCED_OFF, None),
        (None, ENFORCED_DENY, ("False", "Off", "; Deny not enforced yet")),
        (ENFORCED_DENY, None, ("True", "Deny", "")),
        (ENFORCED_DENY, ENFORCED_OFF, ("True", "Deny", "; Off not enforced yet")),
        (ENFORCED_OFF, None, ("False", "Off", "")),
    ],
    ids=["never-on", "never-on-off", "deny-pending", "deny", "off-pending", "lifted"],
)
def test_prevention_condition_is_what_the_api_server_enforces(
    enforced: prevention.Enforced | None,
    enforcing: prevention.Enforced | None,
    expected: tuple[str, str, str] | None,
) -> None:
    """Reason Deny, Warn or Off as confirmed; a change not confirmed yet only in the message."""
    condition = tracking.prevention_condition(enforced, enforcing, generation=1, now="t")

    if expected is None:
        assert condition is None
        return
    assert condition is not None
    assert (condition.status, condition.reason) == expected[:2]
    pending = expected[2] or "not enforced yet"
    assert (pending in condition.message) is bool(expected[2]), condition.message


@pytest.mark.parametrize(
    ("entry", "written"),
    [
        (
            {"state": State.IN_SYNC},
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "a", "state": "InSync"},
        ),
        (
            {"state": State.DRIFTED, "drifted_paths": ["/data/v"], "reverts": 2},
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": "a",
                "state": "Drifted",
                "driftedPaths": ["/data/v"],
                "reverts": 2,
            },
        ),
    ],
    ids=["in-sync-entry-is-small", "drifted-entry-keeps-its-paths"],
)
def test_status_entries_leave_out_empty_paths_and_zero_reverts(
    entry: dict[str, Any], written: dict[str, Any]
) -> None:
    """An entry's empty driftedPaths and zero reverts are not written; set ones are."""
    status = EnvironmentStatus(
        resources=[ResourceStatus(api_version="v1", kind="ConfigMap", name="a", **entry)]
    )
    (body,) = status.to_body()["resources"]
    assert {k: v for k, v in body.items() if k != "namespace"} == written
