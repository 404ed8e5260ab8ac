"""An Environment's life: revisions, pruning, bad input, deletion policies, managed kinds."""

import base64
import json
from typing import Any

import pytest
import yaml
from envs import (
    Operator,
    apply,
    configmap,
    custom_crd,
    environment,
    events,
    get,
    resource_status,
    run_cli,
    status,
    stays,
    wait_condition,
)
from helpers import Kubectl, wait_established, wait_for


def exists(kubectl: Kubectl, kind: str, name: str, namespace: str) -> bool:
    return get(kubectl, kind, name, namespace) is not None


def test_blueprint_update_applies_a_new_revision(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
) -> None:
    """Changing the blueprint applies it and increments status.revision."""
    manifest = environment("app", namespace, [configmap("settings", DB_VERSION="5.7")])
    apply(kubectl, manifest)
    wait_condition(kubectl, "app", namespace, "Ready", "True", reason="Applied")
    assert status(kubectl, "app", namespace)["revision"] == 1
    manifest["spec"]["resources"] = [configmap("settings", DB_VERSION="8.0")]
    apply(kubectl, manifest)
    wait_for(
        lambda: (
            (get(kubectl, "cm", "settings", namespace) or {}).get("data") == {"DB_VERSION": "8.0"}
        ),
        message="the new blueprint to be applied",
    )
    wait_for(lambda: status(kubectl, "app", namespace).get("revision") == 2, message="revision 2")
    messages = wait_for(lambda: events(kubectl, namespace, "Applied"), message="Applied Events")
    assert any("revision 2" in message for message in messages)


def test_removed_object_is_pruned_and_others_are_not(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
) -> None:
    """Only objects this Environment made are pruned; foreign and other Environments' stay."""
    kubectl("create", "configmap", "bystander", "-n", namespace, "--from-literal=a=1")
    other = environment("other", namespace, [configmap("neighbour", a="1")])
    apply(kubectl, other)
    wait_condition(kubectl, "other", namespace, "InSync", "True")
    manifest = environment("app", namespace, [configmap("keep", a="1"), configmap("drop", a="1")])
    apply(kubectl, manifest)
    wait_condition(kubectl, "app", namespace, "InSync", "True")
    manifest["spec"]["resources"] = [configmap("keep", a="1")]
    apply(kubectl, manifest)
    wait_for(
        lambda: not exists(kubectl, "cm", "drop", namespace), message="the removed object pruned"
    )
    messages = wait_for(lambda: events(kubectl, namespace, "Pruned"), message="a Pruned Event")
    assert any(f"ConfigMap/{namespace}/drop" in message for message in messages)
    for name in ("keep", "bystander", "neighbour"):
        assert exists(kubectl, "cm", name, namespace), name


def test_prune_false_leaves_removed_objects(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
) -> None:
    """With prune: false an object removed from the blueprint stays in the cluster."""
    manifest = environment("app", namespace, [configmap("a", x="1"), configmap("b", x="1")])
    manifest["spec"]["prune"] = False
    apply(kubectl, manifest)
    wait_condition(kubectl, "app", namespace, "InSync", "True")
    manifest["spec"]["resources"] = [configmap("a", x="1")]
    apply(kubectl, manifest)
    wait_for(lambda: status(kubectl, "app", namespace).get("revision") == 2, message="revision 2")
    assert exists(kubectl, "cm", "b", namespace)


def test_object_of_another_environment_is_a_conflict(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
) -> None:
    """Two Environments naming one object: the second reports Conflict and changes nothing."""
    apply(kubectl, environment("first", namespace, [configmap("shared", owner="first")]))
    wait_condition(kubectl, "first", namespace, "InSync", "True")
    apply(kubectl, environment("second", namespace, [configmap("shared", owner="second")]))
    entry = wait_for(
        lambda: (
            resource_status(kubectl, "second", namespace, "ConfigMap", "shared").get("state")
            == "Conflict"
            and resource_status(kubectl, "second", namespace, "ConfigMap", "shared")
        ),
        message="a Conflict state",
    )
    assert f"{namespace}/first" in entry["message"]
    assert (get(kubectl, "cm", "shared", namespace) or {})["data"] == {"owner": "first"}
    wait_for(lambda: events(kubectl, namespace, "Conflict"), message="a Conflict Event")


BAD_SPECS = [
    ("mode", {"mode": "Sometimes"}, "spec.mode"),
    ("no-kind", {"resources": [{"apiVersion": "v1", "metadata": {"name": "x"}}]}, "kind"),
    ("no-name", {"resources": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}]}, "name"),
    ("pointer", {"allowedChanges": [{"paths": ["spec.replicas"]}]}, "paths"),
    ("bounds", {"allowedChanges": [{"paths": ["/spec/replicas"], "minimum": 5, "maximum": 2}]},
     "minimum must be less than or equal to maximum"),
    ("duration", {"resyncInterval": "soon"}, "resyncInterval"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "needle"), [c[1:] for c in BAD_SPECS], ids=[c[0] for c in BAD_SPECS]
)
def test_schema_refuses_bad_input_at_apply_time(
    spec: dict[str, Any],
    needle: str,
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
) -> None:
    """kubectl apply of an invalid Environment fails with a message naming the field."""
    manifest = environment("bad", namespace, [])
    manifest["spec"].update(spec)
    done = apply(kubectl, manifest, check=False)
    assert done.returncode != 0
    assert needle in done.stderr
    assert not exists(kubectl, "environment", "bad", namespace)


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ({"apiVersion": "example.com/v1", "kind": "Nope", "metadata": {"name": "x"}}, "Nope"),
        (
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "x", "namespace": "kube-system"},
            },
            "metadata.namespace",
        ),
    ],
    ids=["unknown-kind", "other-namespace"],
)
def test_invalid_blueprint_changes_nothing(
    bad: dict[str, Any],
    needle: str,
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
) -> None:
    """A blueprint the schema accepts but the server cannot: InvalidSpec, no apply, no prune."""
    manifest = environment("app", namespace, [configmap("a", v="1"), configmap("b", v="1")])
    apply(kubectl, manifest)
    wait_condition(kubectl, "app", namespace, "InSync", "True")
    manifest["spec"]["resources"] = [configmap("a", v="2"), configmap("c", v="1"), bad]
    apply(kubectl, manifest)
    ready = wait_condition(kubectl, "app", namespace, "Ready", "False", reason="InvalidSpec")
    assert "spec.resources[2]" in ready["message"]
    assert needle in ready["message"]
    assert (get(kubectl, "cm", "a", namespace) or {})["data"] == {"v": "1"}
    assert exists(kubectl, "cm", "b", namespace)
    assert not exists(kubectl, "cm", "c", namespace)
    wait_for(lambda: events(kubectl, namespace, "InvalidSpec"), message="an InvalidSpec Event")
    kubectl("patch", "cm", "a", "-n", namespace, "--type=merge", "-p", '{"data":{"v":"9"}}')
    wait_for(
        lambda: (get(kubectl, "cm", "a", namespace) or {})["data"] == {"v": "1"},
        message="the last valid blueprint to stay enforced",
    )


def test_deletion_policy_delete_removes_objects(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
) -> None:
    """deletionPolicy Delete: deleting the Environment deletes its objects, then itself."""
    manifest = environment("app", namespace, [configmap("a", v="1")], deletionPolicy="Delete")
    apply(kubectl, manifest)
    wait_condition(kubectl, "app", namespace, "InSync", "True")
    kubectl("delete", "environment", "app", "-n", namespace, "--wait=false")
    wait_for(lambda: not exists(kubectl, "cm", "a", namespace), message="the object deleted")
    wait_for(
        lambda: not exists(kubectl, "environment", "app", namespace),
        message="the Environment gone",
    )


def test_deletion_policy_orphan_leaves_objects_untouched(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
) -> None:
    """deletionPolicy Orphan: the objects stay, and later changes to them are not reverted."""
    apply(kubectl, environment("app", namespace, [configmap("a", v="1")]))
    wait_condition(kubectl, "app", namespace, "InSync", "True")
    kubectl("delete", "environment", "app", "-n", namespace)
    assert (get(kubectl, "cm", "a", namespace) or {})["data"] == {"v": "1"}
    kubectl("patch", "cm", "a", "-n", namespace, "--type=merge", "-p", '{"data":{"v":"2"}}')
    writes = len(operator.writes(namespace))
    stays(
        lambda: (
            (get(kubectl, "cm", "a", namespace) or {})["data"] == {"v": "2"}
            and len(operator.writes(namespace)) == writes
        ),
        seconds=1.5,
        message="an orphaned object was changed by the operator",
    )


WIDGET_CRD = custom_crd("Widget", "widgets")


def every_kind() -> list[dict[str, Any]]:
    labels = {"tier": "frontend"}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": labels}, "data": {"k": "v"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "labels": labels},
         "stringData": {"password": "hunter2-very-secret"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "labels": labels},
         "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa", "labels": labels}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
                  "template": {"metadata": {"labels": {"app": "x"}},
                               "spec": {"containers": [{"name": "x", "image": "busybox"}]}}}},
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "labels": labels},
         "spec": {"size": 3}},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def widget_crd(kubectl: Kubectl) -> None:
    apply(kubectl, WIDGET_CRD)
    wait_established(kubectl, "widgets.example.com")
    wait_for(
        lambda: kubectl("get", "widgets", "-A", check=False).returncode == 0,
        timeout=30,
        message="the Widget API to serve",
    )


@pytest.mark.parametrize(
    ("kind", "name"),
    [("ConfigMap", "c"), ("Secret", "s"), ("Service", "svc"), ("ServiceAccount", "sa"),
     ("Deployment", "d"), ("Widget", "w")],
)  # fmt: skip
def test_each_kind_is_managed(
    kind: str,
    name: str,
    widget_crd: None,
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
) -> None:
    """Every kind in a blueprint is applied, watched and reverted, custom resources included."""
    apply(kubectl, environment("app", namespace, every_kind()))
    wait_condition(kubectl, "app", namespace, "InSync", "True")
    resource = kind.lower()
    kubectl("label", resource, name, "-n", namespace, "tier=backend", "--overwrite")
    wait_for(
        lambda: (
            (get(kubectl, resource, name, namespace) or {})["metadata"]["labels"]["tier"]
            == "frontend"
        ),
        message=f"the label on {kind}/{name} to be reverted",
    )
    # The status write follows the revert (debounced): the object may be back first.
    wait_for(lambda: status(kubectl, "app", namespace).get("lastDrift"), message="status.lastDrift")
    last = status(kubectl, "app", namespace)["lastDrift"]
    assert last["object"] == f"{kind}/{namespace}/{name}"
    assert last["changedBy"] == "kubectl-label"


def test_secret_values_never_leak(
    widget_crd: None,
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
) -> None:
    """A drifted Secret is reported by path; its values appear in no status, Event, log or diff."""
    manifest = environment("app", namespace, every_kind(), mode="Observe")
    apply(kubectl, environment("app", namespace, every_kind()))
    wait_condition(kubectl, "app", namespace, "InSync", "True")
    apply(kubectl, manifest)
    wait_for(
        lambda: status(kubectl, "app", namespace).get("observedGeneration") == 2, message="gen 2"
    )
    leaked = "stolen-value-42"
    encoded = base64.b64encode(leaked.encode()).decode()
    kubectl("patch", "secret", "s", "-n", namespace, "--type=merge", "-p",
            json.dumps({"stringData": {"password": leaked}}))  # fmt: skip
    wait_for(
        lambda: resource_status(kubectl, "app", namespace, "Secret", "s").get("state") == "Drifted",
        message="the Secret reported Drifted",
    )
    diff = run_cli(kubectl, "diff", "app", "-n", namespace)
    assert diff.returncode == 1
    assert "/data/password" in str(status(kubectl, "app", namespace))
    texts = [
        str(status(kubectl, "app", namespace)),
        str(events(kubectl, namespace, "DriftDetected")),
        operator.log_text(),
        diff.stdout + diff.stderr,
    ]
    for secret in (
        leaked,
        encoded,
        "hunter2-very-secret",
        base64.b64encode(b"hunter2-very-secret").decode(),
    ):
        for text in texts:
            assert secret not in text


def test_cli_diff_and_status(kubectl: Kubectl, operator: Operator, namespace: str) -> None:
    """`driftguard diff` exits 0 in sync and 1 with a unified diff on drift; status lists it."""
    apply(
        kubectl, environment("app", namespace, [configmap("a", DB_VERSION="5.7")], mode="Observe")
    )
    wait_for(
        lambda: (
            resource_status(kubectl, "app", namespace, "ConfigMap", "a").get("state") == "Missing"
        ),
        message="the object reported Missing",
    )
    # Observe never labels objects: one made by hand, unlabelled, is still seen at once.
    kubectl("create", "configmap", "a", "-n", namespace, "--from-literal=DB_VERSION=5.7")
    wait_condition(kubectl, "app", namespace, "InSync", "True")
    assert run_cli(kubectl, "diff", "app", "-n", namespace).returncode == 0
    kubectl(
        "patch", "cm", "a", "-n", namespace, "--type=merge", "-p", '{"data":{"DB_VERSION":"5.6"}}'
    )
    wait_condition(kubectl, "app", namespace, "InSync", "False")
    done = run_cli(kubectl, "diff", "app", "-n", namespace)
    assert done.returncode == 1
    assert "-  DB_VERSION: '5.6'" in done.stdout
    assert "+  DB_VERSION: '5.7'" in done.stdout
    table = run_cli(kubectl, "status", "-A").stdout
    row = next(line for line in table.splitlines() if line.startswith(namespace))
    assert "Observe" in row
    assert "False" in row


def test_gitops_apply_sees_no_diff(kubectl: Kubectl, operator: Operator, namespace: str) -> None:
    """After the operator has worked, the Environment's manifest still matches: no annotations, no spec change."""
    manifest = environment("app", namespace, [configmap("a", v="1")], deletionPolicy="Delete")
    apply(kubectl, manifest)
    wait_condition(kubectl, "app", namespace, "InSync", "True")
    kubectl("patch", "cm", "a", "-n", namespace, "--type=merge", "-p", '{"data":{"v":"2"}}')
    wait_for(lambda: status(kubectl, "app", namespace).get("lastDrift"), message="a drift handled")
    done = kubectl("diff", "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert done.returncode == 0, done.stdout
    live = get(kubectl, "environment", "app", namespace) or {}
    assert live["metadata"]["generation"] == 1
    assert not any("kopf" in key for key in (live["metadata"].get("annotations") or {}))


def _kept_by_kopf(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    live = get(kubectl, "environment", "app", namespace) or {}
    return (live.get("status") or {}).get("kopf") or {}


def test_status_keeps_no_copy_of_the_spec(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """kopf's last-handled copy of the spec is never written to status; one that an earlier
    version left there goes with the next status write; deletion still runs its handler."""
    manifest = environment("app", namespace, [configmap("a", v="1")], deletionPolicy="Delete")
    apply(kubectl, manifest)
    wait_condition(kubectl, "app", namespace, "InSync", "True")
    wait_for(
        lambda: (
            "driftguard.io/finalizer"
            in (
                (get(kubectl, "environment", "app", namespace) or {})["metadata"].get("finalizers")
                or []
            )
        ),
        message="kopf's finalizer on the Environment",
    )
    # A label change is an event kopf handles (and used to store its essence for).
    kubectl("label", "environment", "app", "-n", namespace, "team=a")
    wait_for(
        lambda: (
            (get(kubectl, "environment", "app", namespace) or {})["metadata"]
            .get("labels", {})
            .get("team")
            == "a"
        ),
        message="the label",
    )
    kubectl("patch", "cm", "a", "-n", namespace, "--type=merge", "-p", '{"data":{"v":"2"}}')
    wait_for(lambda: status(kubectl, "app", namespace).get("lastDrift"), message="a drift handled")
    assert "lastHandledConfiguration" not in _kept_by_kopf(kubectl, namespace)

    stale = json.dumps({"spec": manifest["spec"]}, separators=(",", ":"))
    kubectl(
        *("patch", "environment", "app", "-n", namespace, "--subresource=status"),
        *(
            "--type=merge",
            "-p",
            json.dumps({"status": {"kopf": {"lastHandledConfiguration": stale}}}),
        ),
    )
    wait_for(
        lambda: "lastHandledConfiguration" not in _kept_by_kopf(kubectl, namespace),
        message="the stale copy dropped",
    )
    assert status(kubectl, "app", namespace)["summary"]["managed"] == 1

    kubectl("delete", "environment", "app", "-n", namespace, "--wait=false")
    wait_for(lambda: not exists(kubectl, "cm", "a", namespace), message="deletionPolicy Delete ran")
    wait_for(
        lambda: get(kubectl, "environment", "app", namespace) is None,
        message="the Environment gone, its finalizer removed",
    )


def test_suspend_reports_without_reverting(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """A suspended Environment reports drift and leaves the change in place."""
    manifest = environment("app", namespace, [configmap("a", v="1")])
    apply(kubectl, manifest)
    wait_condition(kubectl, "app", namespace, "InSync", "True")
    manifest["spec"]["suspend"] = True
    apply(kubectl, manifest)
    wait_condition(kubectl, "app", namespace, "Ready", "True", reason="Suspended")
    kubectl("patch", "cm", "a", "-n", namespace, "--type=merge", "-p", '{"data":{"v":"2"}}')
    wait_condition(kubectl, "app", namespace, "InSync", "False")
    assert (get(kubectl, "cm", "a", namespace) or {})["data"] == {"v": "2"}


@pytest.mark.parametrize("mode", ["Enforce", "Observe"])
def test_allowed_change_within_bounds_is_tolerated(
    mode: str,
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
) -> None:
    """A change at an allowed path within bounds is Overridden, counted, and never reverted."""
    deployment = every_kind()[4]
    allowed = [{"kind": "Deployment", "paths": ["/spec/replicas"], "minimum": 1, "maximum": 5}]
    apply(kubectl, environment("app", namespace, [deployment], allowedChanges=allowed))
    wait_condition(kubectl, "app", namespace, "InSync", "True")
    apply(kubectl, environment("app", namespace, [deployment], allowedChanges=allowed, mode=mode))
    generation = (get(kubectl, "environment", "app", namespace) or {})["metadata"]["generation"]
    wait_for(
        lambda: status(kubectl, "app", namespace).get("observedGeneration") == generation,
        message="the mode to be taken",
    )
    writes = len(operator.writes(namespace))
    kubectl("scale", "deploy/d", "-n", namespace, "--replicas=4")
    wait_for(
        lambda: (
            resource_status(kubectl, "app", namespace, "Deployment", "d").get("state")
            == "Overridden"
        ),
        message="the Deployment reported Overridden",
    )
    assert status(kubectl, "app", namespace)["summary"]["overridden"] == 1
    assert condition_true(kubectl, namespace)
    assert (get(kubectl, "deploy", "d", namespace) or {})["spec"]["replicas"] == 4
    assert len(operator.writes(namespace)) == writes
    if mode == "Observe":
        return
    # A new revision of the blueprint keeps the tolerated value too.
    deployment["metadata"]["labels"]["release"] = "2"
    apply(kubectl, environment("app", namespace, [deployment], allowedChanges=allowed))
    wait_for(lambda: status(kubectl, "app", namespace).get("revision") == 2, message="revision 2")
    assert (get(kubectl, "deploy", "d", namespace) or {})["spec"]["replicas"] == 4


def condition_true(kubectl: Kubectl, namespace: str) -> bool:
    conditions = status(kubectl, "app", namespace).get("conditions") or []
    return any(c["type"] == "InSync" and c["status"] == "True" for c in conditions)


def test_restart_writes_nothing_and_catches_drift_made_meanwhile(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """After a restart, untouched objects cost no write; one changed while down is reverted."""
    apply(
        kubectl,
        environment("app", namespace, [configmap("kept", v="1"), configmap("moved", v="1")]),
    )
    wait_condition(kubectl, "app", namespace, "InSync", "True")
    operator.stop()
    try:
        kubectl("patch", "cm", "moved", "-n", namespace, "--type=merge", "-p", '{"data":{"v":"2"}}')
        writes = len(operator.writes(namespace))
    finally:
        operator.start()
    wait_for(
        lambda: (get(kubectl, "cm", "moved", namespace) or {})["data"] == {"v": "1"},
        message="the change made while the operator was down to be reverted",
    )
    last = wait_for(lambda: status(kubectl, "app", namespace).get("lastDrift"), message="lastDrift")
    assert last["object"] == f"ConfigMap/{namespace}/moved"
    assert last["changedBy"] == "kubectl-patch"
    new = operator.writes(namespace)[writes:]
    assert [event["objectRef"]["name"] for event in new] == ["moved"]
    labels = {"namespace": namespace, "environment": "app"}
    wait_for(
        lambda: (
            operator.metric("driftguard_managed_resources", **labels) == 2
            and operator.metric("driftguard_environment_in_sync", **labels) == 1
        ),
        message="the gauges to be exported again by the new process",
    )


def test_kubectl_explain_documents_the_resource(kubectl: Kubectl, operator: Operator) -> None:
    """`kubectl explain` shows the descriptions generated from the models."""
    spec = kubectl("explain", "environment.spec").stdout
    assert "The blueprint of an environment and how to keep it." in spec
    mode = kubectl("explain", "environment.spec.mode").stdout
    assert "Enforce reverts manual changes" in mode
    status = kubectl("explain", "environment.status.resources.changedBy").stdout
    assert "field manager" in status


def test_fighting_another_writer_backs_off_but_never_gives_up(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """A writer that keeps undoing the blueprint is Fighting: reverts wait a backoff, then go on."""
    apply(kubectl, environment("app", namespace, [configmap("a", v="1")]))
    wait_condition(kubectl, "app", namespace, "InSync", "True")

    def fight() -> dict[str, Any]:
        kubectl("patch", "cm", "a", "-n", namespace, "--type=merge", "-p", '{"data":{"v":"2"}}',
                "--field-manager=rival")  # fmt: skip
        return resource_status(kubectl, "app", namespace, "ConfigMap", "a")

    entry = wait_for(
        lambda: (e := fight()).get("state") == "Fighting" and e,
        timeout=30,
        interval=0.3,
        message="the object reported Fighting",
    )
    assert entry["reverts"] == 5
    messages = wait_for(lambda: events(kubectl, namespace, "Fighting"), message="a Fighting Event")
    assert any("rival" in message and "/data/v" in message for message in messages)
    writes = len(operator.writes(namespace))
    fight()
    stays(
        lambda: len(operator.writes(namespace)) == writes,
        seconds=1.5,
        message="the operator reverted at once while fighting instead of backing off",
    )
    wait_for(
        lambda: (get(kubectl, "cm", "a", namespace) or {}).get("data") == {"v": "1"},
        timeout=15,
        interval=0.2,
        message="the rival's last change reverted after the backoff",
    )
