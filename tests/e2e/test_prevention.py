"""Prevention at admission and time-boxed suspension, as a non-admin user with real kubectl.

`spec.prevention: Deny` refuses manual writes to the fields driftguard set before they are
stored, `Warn` lets them through with a warning (and Enforce reverts them), `Off`, Observe
and a suspension remove the policy. The user is a client certificate with a Role that
grants edit rights on deployments, deployments/scale and configmaps in the test namespace,
nothing more. Each test checks what kubectl showed the person and what the cluster holds.
"""

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from envs import (
    Operator,
    apply,
    condition,
    environment,
    events,
    get,
    resource_status,
    run_cli,
    status,
    wait_condition,
)
from helpers import Kubectl, audit_events, wait_for

from driftguard.controlplane import ControlPlane

ENV = "app"
DEV = "prevention-dev"
ONCALL = "prevention-oncall"
BREAK_GLASS = "driftguard:break-glass"  # the operator's --break-glass-group default
POLICY_KINDS = "validatingadmissionpolicies,validatingadmissionpolicybindings"
EDIT = ["get", "list", "watch", "update", "patch", "delete", "create"]
BOUNDS = [{"kind": "Deployment", "name": "web", "paths": ["/spec/replicas"], "minimum": 2, "maximum": 4}]  # fmt: skip
BLUEPRINT_DATA = {"DB_VERSION": "5.7", "LOG_LEVEL": "info"}
BLUEPRINT_DEPLOYMENT = (2, "nginx:1.27.3", "frontend")


def blueprint() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "web-config"},
            "data": dict(BLUEPRINT_DATA),
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "frontend"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27.3"}]},
                },
            },
        },
    ]


def person(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str, user: str, groups: list[str]
) -> Kubectl:
    """kubectl as `user` (in `groups`), with edit rights on deployments and configmaps here."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "editor", "namespace": namespace},
        "rules": [
            {
                "apiGroups": ["apps"],
                "resources": ["deployments", "deployments/scale"],
                "verbs": EDIT,
            },
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": EDIT},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"editor-{user}", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "editor"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([role, binding]))
    as_user = Kubectl(control_plane.user_kubeconfig(user, groups=groups))
    can_i = ("auth", "can-i", "patch", "deployments", "--subresource=scale", "-n", namespace)
    # The RBAC authorizer learns of a new binding through its informers: a short wait.
    wait_for(
        lambda: as_user(*can_i, check=False).stdout.strip() == "yes",
        message=f"{user}'s Role to take effect",
    )
    return as_user


@pytest.fixture
def dev(control_plane: ControlPlane, kubectl: Kubectl, namespace: str) -> Kubectl:
    """An ordinary user with edit rights in the test namespace, in no special group."""
    return person(control_plane, kubectl, namespace, DEV, [])


def start(kubectl: Kubectl, namespace: str, prevention: str, **spec: Any) -> dict[str, Any]:
    """Applies the blueprint (Enforce) with this prevention and waits for it to be in sync."""
    manifest = environment(ENV, namespace, blueprint(), prevention=prevention, **spec)
    apply(kubectl, manifest)
    wait_condition(kubectl, ENV, namespace, "InSync", "True", reason="InSync")
    return manifest


def policies(kubectl: Kubectl, namespace: str) -> list[str]:
    """The policy objects labelled with this namespace's Environment, as `kind/name`."""
    selector = f"driftguard.io/environment={ENV},driftguard.io/environment-namespace={namespace}"
    return sorted(kubectl("get", POLICY_KINDS, "-l", selector, "-o", "name").stdout.split())


def expected_policies(namespace: str, action: str) -> list[str]:
    name = f"driftguard.{namespace}.{ENV}"
    return [
        f"validatingadmissionpolicy.admissionregistration.k8s.io/{name}",
        f"validatingadmissionpolicybinding.admissionregistration.k8s.io/{name}.{action}",
    ]


def set_by(namespace: str, pointer: str, kind: str, name: str, index: int) -> str:
    env = f"the Environment {namespace}/{ENV}"
    return f"{pointer} of {kind}/{namespace}/{name} is set by {env}: change spec.resources[{index}] of {env} instead"


@dataclass(frozen=True)
class Seen:
    """What a kubectl run showed the person: its exit code, and stderr (plus, for
    `kubectl edit`, every buffer the editor was shown)."""

    returncode: int
    stderr: str


def probe(user: Kubectl, namespace: str) -> Seen:
    """A harmless write of a managed field: a server-side dry run, which admission judges."""
    patch = '{"data":{"LOG_LEVEL":"debug"}}'
    argv = ("patch", "cm/web-config", "-n", namespace, "--type=merge", "-p", patch)
    done = user(*argv, "--dry-run=server", check=False)
    return Seen(done.returncode, done.stderr)


def enforcing(kubectl: Kubectl, namespace: str, action: str) -> dict[str, Any]:
    """Waits for the Prevention condition to say the API server enforces `action`."""
    is_on = "False" if action == "Off" else "True"
    return wait_condition(kubectl, ENV, namespace, "Prevention", is_on, reason=action)


def wait_denied(kubectl: Kubectl, user: Kubectl, namespace: str) -> None:
    """Once status says Deny, the person's write is refused at once: no retry."""
    enforcing(kubectl, namespace, "Deny")
    seen = probe(user, namespace)
    assert seen.returncode != 0, "status says Deny, the API server let the write through"
    assert set_by(namespace, "/data/LOG_LEVEL", "ConfigMap", "web-config", 0) in seen.stderr


def wait_warned(kubectl: Kubectl, user: Kubectl, namespace: str) -> None:
    """As `wait_denied`, for Warn: the write passes with the warning."""
    enforcing(kubectl, namespace, "Warn")
    seen = probe(user, namespace)
    assert seen.returncode == 0, seen.stderr
    assert set_by(namespace, "/data/LOG_LEVEL", "ConfigMap", "web-config", 0) in seen.stderr


def wait_allowed(kubectl: Kubectl, user: Kubectl, namespace: str) -> None:
    """Once status says Off, the person's write passes at once, with no warning."""
    enforcing(kubectl, namespace, "Off")
    seen = probe(user, namespace)
    assert seen.returncode == 0, f"status says Off, the API server refused: {seen.stderr}"
    assert "Warning" not in seen.stderr, seen.stderr


def wait_enforced_again(user: Kubectl, namespace: str) -> None:
    """Where no status can say it (the policy deleted by hand, the Environment gone), the
    API server's policy cache follows a moment behind: retry the probe."""
    message = set_by(namespace, "/data/LOG_LEVEL", "ConfigMap", "web-config", 0)
    wait_for(
        lambda: (seen := probe(user, namespace)).returncode != 0 and message in seen.stderr,
        message="the Deny policy to be enforced",
    )


Act = Callable[[Kubectl, str, Path], Seen]


def run(*args: str) -> Act:
    def act(user: Kubectl, namespace: str, tmp: Path) -> Seen:
        done = user(*args, "-n", namespace, check=False)
        return Seen(done.returncode, done.stderr)

    return act


def edit(target: str, script: str) -> Act:
    """`kubectl edit` with a real editor run: a script that keeps what it is shown, then seds.

    When the server refuses the change, kubectl opens the editor again with the reason in a
    comment at the top (and, the file unchanged then, cancels): that is what the person saw.
    """

    def act(user: Kubectl, namespace: str, tmp: Path) -> Seen:
        shown = tmp / "editor-shown.txt"
        editor = tmp / "editor.sh"
        editor.write_text(f"#!/bin/sh\ncat \"$1\" >> '{shown}'\nsed -i -e '{script}' \"$1\"\n")
        editor.chmod(0o755)
        env = {**os.environ, "KUBE_EDITOR": str(editor), "TMPDIR": str(tmp)}
        argv = [str(user.binary), f"--kubeconfig={user.kubeconfig}", "edit", target]
        done = subprocess.run(
            [*argv, "-n", namespace], env=env, capture_output=True, text=True, timeout=60
        )
        return Seen(done.returncode, done.stderr + shown.read_text())

    return act


@dataclass(frozen=True)
class Write:
    """One manual change of a managed object, and the sentence prevention answers it with."""

    id: str
    act: Act
    message: Callable[[str], str]


def bounds(namespace: str) -> str:
    return (
        f"/spec/replicas of Deployment/{namespace}/web must stay between 2 and 4: "
        f"change spec.resources[1] of the Environment {namespace}/{ENV} instead"
    )


def managed(namespace: str) -> str:
    return (
        f"ConfigMap/{namespace}/web-config is managed by the Environment {namespace}/{ENV}: "
        "remove it from the blueprint instead"
    )


WRITES = [
    # /scale carries no labels: the policy matches it by name.
    Write("scale", run("scale", "deploy/web", "--replicas=7"), bounds),
    Write("edit", edit("cm/web-config", 's/"5.7"/"5.6"/'),
          lambda ns: set_by(ns, "/data/DB_VERSION", "ConfigMap", "web-config", 0)),
    Write("patch", run("patch", "cm/web-config", "--type=merge", "-p", '{"data":{"LOG_LEVEL":"debug"}}'),
          lambda ns: set_by(ns, "/data/LOG_LEVEL", "ConfigMap", "web-config", 0)),
    Write("set-image", run("set", "image", "deploy/web", "web=nginx:1.25"),
          lambda ns: set_by(ns, "/spec/template/spec/containers/0/image", "Deployment", "web", 1)),
    Write("label", run("label", "deploy/web", "tier=backend", "--overwrite"),
          lambda ns: set_by(ns, "/metadata/labels/tier", "Deployment", "web", 1)),
    Write("delete", run("delete", "cm/web-config"), managed),
]  # fmt: skip


def configmap(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    return get(kubectl, "cm", "web-config", namespace) or {}


def deployment(kubectl: Kubectl, namespace: str) -> tuple[int, str, str]:
    found = get(kubectl, "deploy", "web", namespace) or {}
    image = found["spec"]["template"]["spec"]["containers"][0]["image"]
    return found["spec"]["replicas"], image, found["metadata"]["labels"]["tier"]


def is_blueprint(kubectl: Kubectl, namespace: str) -> bool:
    return (
        configmap(kubectl, namespace).get("data") == BLUEPRINT_DATA
        and deployment(kubectl, namespace) == BLUEPRINT_DEPLOYMENT
    )


def refusals(audit_log: Path, namespace: str) -> list[dict[str, Any]]:
    """The user's writes in this namespace that admission refused (dry runs aside)."""
    return [
        event
        for event in audit_events(audit_log, username=DEV)
        if (event.get("objectRef") or {}).get("namespace") == namespace
        and (event.get("responseStatus") or {}).get("code") == 422
        and "dryRun" not in event.get("requestURI", "")
    ]


@pytest.mark.parametrize("write", WRITES, ids=[write.id for write in WRITES])
def test_deny_refuses_a_manual_write_naming_the_environment(
    write: Write,
    kubectl: Kubectl,
    operator: Operator,
    dev: Kubectl,
    namespace: str,
    tmp_path: Path,
) -> None:
    """Under Deny the write is refused with a sentence naming the Environment; nothing changes."""
    start(kubectl, namespace, "Deny", allowedChanges=BOUNDS)
    assert policies(kubectl, namespace) == expected_policies(namespace, "deny")
    wait_denied(kubectl, dev, namespace)
    stored = configmap(kubectl, namespace)
    writes = len(operator.writes(namespace))

    seen = write.act(dev, namespace, tmp_path)

    assert seen.returncode != 0, f"{write.id} was let through"
    assert write.message(namespace) in seen.stderr, seen.stderr
    assert f"ValidatingAdmissionPolicy 'driftguard.{namespace}.{ENV}'" in seen.stderr
    after = configmap(kubectl, namespace)
    assert after["data"] == BLUEPRINT_DATA
    assert after["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert deployment(kubectl, namespace) == BLUEPRINT_DEPLOYMENT
    # Nothing was stored, so there was nothing to revert.
    assert len(operator.writes(namespace)) == writes
    assert not events(kubectl, namespace, "DriftDetected")
    # The audit log names the Environment beside the user who tried.
    refused = wait_for(
        lambda: refusals(operator.audit_log, namespace), message="the refusal in the audit log"
    )
    annotation = f"driftguard.{namespace}.{ENV}/environment"
    assert refused[-1]["annotations"].get(annotation) == f"{namespace}/{ENV}"


def test_deny_lets_unmanaged_writes_and_changes_within_bounds_through(
    kubectl: Kubectl, operator: Operator, dev: Kubectl, namespace: str
) -> None:
    """The same user may write another ConfigMap, a field driftguard never set, and scale within bounds."""
    start(kubectl, namespace, "Deny", allowedChanges=BOUNDS)
    wait_denied(kubectl, dev, namespace)
    writes = len(operator.writes(namespace))
    ns = ("-n", namespace)
    dev("create", "configmap", "scratch", "--from-literal=a=1", *ns)
    dev("patch", "cm/scratch", "--type=merge", "-p", '{"data":{"a":"2"}}', *ns)
    dev("annotate", "cm/web-config", "team=web", *ns)
    scaled = dev("scale", "deploy/web", "--replicas=3", *ns)
    assert "scaled" in scaled.stdout
    wait_for(
        lambda: (
            resource_status(kubectl, ENV, namespace, "Deployment", "web").get("state")
            == "Overridden"
        ),
        message="the Deployment to be reported Overridden",
    )
    assert status(kubectl, ENV, namespace)["summary"]["overridden"] == 1

    def holds() -> bool:
        scratch = get(kubectl, "cm", "scratch", namespace) or {}
        annotations = configmap(kubectl, namespace)["metadata"].get("annotations") or {}
        return (
            scratch.get("data") == {"a": "2"}
            and annotations.get("team") == "web"
            and deployment(kubectl, namespace)[0] == 3
        )

    # Judged (the scale is Overridden, and it came last): nothing was undone, and the
    # operator wrote nothing to undo it with.
    assert holds(), "a permitted change was undone"
    assert len(operator.writes(namespace)) == writes
    # Past the bound it is refused again.
    done = dev("scale", "deploy/web", "--replicas=5", *ns, check=False)
    assert done.returncode != 0
    assert bounds(namespace) in done.stderr
    assert deployment(kubectl, namespace)[0] == 3


def test_break_glass_group_member_may_write_and_enforce_reverts(
    control_plane: ControlPlane, kubectl: Kubectl, operator: Operator, dev: Kubectl, namespace: str
) -> None:
    """A member of the break-glass group gets through Deny; Enforce still reverts the change."""
    start(kubectl, namespace, "Deny", allowedChanges=BOUNDS)
    oncall = person(control_plane, kubectl, namespace, ONCALL, [BREAK_GLASS])
    wait_denied(kubectl, dev, namespace)
    ns = ("-n", namespace)
    patch = '{"data":{"DB_VERSION":"5.6"}}'
    patched = oncall("patch", "cm/web-config", "--type=merge", "-p", patch, *ns)
    assert "patched" in patched.stdout
    assert "Warning" not in patched.stderr
    scaled = oncall("scale", "deploy/web", "--replicas=9", *ns)
    assert "scaled" in scaled.stdout
    wait_for(lambda: is_blueprint(kubectl, namespace), message="the break-glass writes reverted")
    messages = wait_for(
        lambda: found if len(found := events(kubectl, namespace, "DriftReverted")) >= 2 else None,
        message="a DriftReverted Event for each write",
    )
    assert any(f"ConfigMap/{namespace}/web-config" in m for m in messages), messages
    assert any(f"Deployment/{namespace}/web" in m for m in messages), messages
    # The same write without the group is still refused.
    assert probe(dev, namespace).returncode != 0


@pytest.mark.parametrize("write", WRITES, ids=[write.id for write in WRITES])
def test_warn_lets_a_write_through_with_a_warning_then_enforce_reverts(
    write: Write,
    kubectl: Kubectl,
    operator: Operator,
    dev: Kubectl,
    namespace: str,
    tmp_path: Path,
) -> None:
    """Under Warn the write succeeds, kubectl prints the warning, and Enforce reverts it."""
    start(kubectl, namespace, "Warn", allowedChanges=BOUNDS)
    assert policies(kubectl, namespace) == expected_policies(namespace, "warn")
    wait_warned(kubectl, dev, namespace)
    uid = configmap(kubectl, namespace)["metadata"]["uid"]

    seen = write.act(dev, namespace, tmp_path)

    assert seen.returncode == 0, seen.stderr
    assert "Warning:" in seen.stderr, seen.stderr
    assert write.message(namespace) in seen.stderr, seen.stderr
    messages = wait_for(
        lambda: events(kubectl, namespace, "DriftReverted"), message="a DriftReverted Event"
    )
    wait_for(lambda: is_blueprint(kubectl, namespace), message=f"the {write.id} to be reverted")
    if write.id == "delete":
        assert configmap(kubectl, namespace)["metadata"]["uid"] != uid  # deleted, then recreated
    else:
        pointer = write.message(namespace).split(" ", 1)[0]
        assert any(pointer in m for m in messages), messages


@pytest.mark.parametrize(
    ("change", "is_reverted"),
    [({"prevention": "Off"}, True), ({"mode": "Observe"}, False), ({"suspend": True}, False)],
    ids=["off", "observe", "suspend"],
)
def test_policies_go_when_prevention_stops_and_writes_get_through(
    change: dict[str, Any],
    is_reverted: bool,
    kubectl: Kubectl,
    operator: Operator,
    dev: Kubectl,
    namespace: str,
) -> None:
    """Off, Observe and suspend remove the policy and binding; a write then passes and is reverted (Off) or flagged."""
    manifest = start(kubectl, namespace, "Deny")
    wait_denied(kubectl, dev, namespace)
    manifest["spec"].update(change)
    apply(kubectl, manifest)
    wait_allowed(kubectl, dev, namespace)
    assert not policies(kubectl, namespace)
    patch = '{"data":{"DB_VERSION":"5.6"}}'
    writes = len(operator.writes(namespace))
    patched = dev("patch", "cm/web-config", "-n", namespace, "--type=merge", "-p", patch)
    assert "Warning" not in patched.stderr
    if is_reverted:
        wait_for(
            lambda: configmap(kubectl, namespace).get("data") == BLUEPRINT_DATA,
            message="Enforce to revert the write",
        )
        messages = events(kubectl, namespace, "DriftReverted")
    else:
        wait_for(
            lambda: (
                resource_status(kubectl, ENV, namespace, "ConfigMap", "web-config").get("state")
                == "Drifted"
            ),
            message="the write to be flagged",
        )
        # Judged and flagged: the write stands, and the operator wrote nothing to the object.
        assert configmap(kubectl, namespace)["data"]["DB_VERSION"] == "5.6"
        assert len(operator.writes(namespace)) == writes
        messages = events(kubectl, namespace, "DriftDetected")
    assert any("/data/DB_VERSION" in m for m in messages), messages
    assert not policies(kubectl, namespace)


def test_hand_edits_of_the_policy_objects_are_reverted(
    kubectl: Kubectl, operator: Operator, dev: Kubectl, namespace: str
) -> None:
    """An admin who turns the binding to Warn, or deletes the policy, sees it put back."""
    start(kubectl, namespace, "Deny")
    wait_denied(kubectl, dev, namespace)
    name = f"driftguard.{namespace}.{ENV}"
    binding = f"validatingadmissionpolicybinding/{name}.deny"
    kubectl("patch", binding, "--type=merge", "-p", '{"spec":{"validationActions":["Warn"]}}')
    wait_for(
        lambda: kubectl.json("get", binding)["spec"]["validationActions"] == ["Deny"],
        message="the binding's validationActions to be reverted",
    )
    kubectl("delete", f"validatingadmissionpolicy/{name}")
    wait_for(
        lambda: policies(kubectl, namespace) == expected_policies(namespace, "deny"),
        message="the deleted policy to be recreated",
    )
    wait_enforced_again(dev, namespace)


def test_suspend_until_pauses_enforcement_and_prevention_then_resumes(
    kubectl: Kubectl, operator: Operator, dev: Kubectl, namespace: str
) -> None:
    """While suspendUntil lies ahead a write passes and stays; after it, it is reverted and Deny is back."""
    manifest = start(kubectl, namespace, "Deny")
    wait_denied(kubectl, dev, namespace)
    labels = {"namespace": namespace, "environment": ENV}
    assert operator.metric("driftguard_environment_suspended", **labels) == 0
    # Long enough for the checks below on a slow machine, short enough to wait out.
    ends = (datetime.now(UTC) + timedelta(seconds=10)).replace(microsecond=0)
    until = ends.strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest["spec"]["suspendUntil"] = until
    apply(kubectl, manifest)

    suspended = wait_condition(kubectl, ENV, namespace, "Suspended", "True", reason="Suspended")
    assert suspended["message"].startswith(f"until {until}: "), suspended
    row = kubectl("get", "environment", ENV, "-n", namespace).stdout
    assert f"until {until}" in row, row
    wait_for(
        lambda: operator.metric("driftguard_environment_suspended", **labels) == 1,
        message="driftguard_environment_suspended to be 1",
    )
    messages = wait_for(
        lambda: events(kubectl, namespace, "Suspended"), message="a Suspended Event"
    )
    assert any(until in m for m in messages), messages
    wait_allowed(kubectl, dev, namespace)
    assert not policies(kubectl, namespace)
    patch = '{"data":{"DB_VERSION":"5.6"}}'
    dev("patch", "cm/web-config", "-n", namespace, "--type=merge", "-p", patch)
    wait_for(
        lambda: (
            resource_status(kubectl, ENV, namespace, "ConfigMap", "web-config").get("state")
            == "Drifted"
        ),
        message="the write to be flagged",
    )
    remaining = (ends - datetime.now(UTC)).total_seconds()
    assert remaining > 1, f"the checks took too long: {remaining:.1f}s of suspension left"
    # Polled from now on: a revert before the suspension ends fails the check below.
    wait_for(
        lambda: configmap(kubectl, namespace).get("data") == BLUEPRINT_DATA,
        timeout=remaining + 10,
        message="the drift made while suspended to be reverted when it ends",
    )
    assert datetime.now(UTC) >= ends, "reverted before suspendUntil"
    wait_denied(kubectl, dev, namespace)
    assert policies(kubectl, namespace) == expected_policies(namespace, "deny")
    wait_for(lambda: events(kubectl, namespace, "Resumed"), message="a Resumed Event")
    wait_for(
        lambda: operator.metric("driftguard_environment_suspended", **labels) == 0,
        message="driftguard_environment_suspended to be 0",
    )
    wait_for(
        lambda: not condition(kubectl, ENV, namespace, "Suspended"),
        message="the Suspended condition to go",
    )
    wait_condition(kubectl, ENV, namespace, "InSync", "True", reason="InSync")


def test_deleting_the_environment_leaves_no_policy_behind(
    kubectl: Kubectl, operator: Operator, dev: Kubectl, namespace: str
) -> None:
    """The finalizer removes the policy and its binding before the Environment goes."""
    start(kubectl, namespace, "Deny")
    assert policies(kubectl, namespace) == expected_policies(namespace, "deny")
    wait_denied(kubectl, dev, namespace)
    kubectl("delete", "environment", ENV, "-n", namespace, "--timeout=30s")
    assert get(kubectl, "environment", ENV, namespace) is None
    assert not policies(kubectl, namespace)
    # No status is left to say when the API server lets go: its cache follows a moment behind.
    wait_for(
        lambda: (seen := probe(dev, namespace)).returncode == 0 and "Warning" not in seen.stderr,
        message="the policy no longer to be enforced",
    )


def test_deny_refuses_an_added_container(
    kubectl: Kubectl, operator: Operator, dev: Kubectl, namespace: str
) -> None:
    """A container added to the blueprint's list is drift, so Deny refuses it."""
    start(kubectl, namespace, "Deny")
    wait_denied(kubectl, dev, namespace)
    sidecar = '[{"op":"add","path":"/spec/template/spec/containers/-","value":{"name":"sidecar","image":"busybox"}}]'
    argv = ("patch", "deploy/web", "-n", namespace, "--type=json", "-p", sidecar)
    done = dev(*argv, "--dry-run=server", check=False)
    assert done.returncode != 0
    assert f"the Environment {namespace}/{ENV}" in done.stderr


def write_as(user: Kubectl, namespace: str, value: str) -> Seen:
    """A real write (not a dry run) of a managed field, as the person: one try."""
    patch = json.dumps({"data": {"LOG_LEVEL": value}})
    done = user("patch", "cm/web-config", "-n", namespace, "--type=merge", "-p", patch, check=False)
    return Seen(done.returncode, done.stderr)


def assert_refused(seen: Seen, message: str) -> None:
    assert seen.returncode != 0, "the write was let through"
    assert message in seen.stderr, seen.stderr


def switch(kubectl: Kubectl, manifest: dict[str, Any], namespace: str, **spec: Any) -> float:
    """Changes the spec, waits for the Prevention condition to follow; how long it took."""
    manifest["spec"].update(spec)
    began = time.monotonic()
    apply(kubectl, manifest)
    action = "Off" if spec.get("prevention") == "Off" or "suspendUntil" in spec else None
    enforcing(kubectl, namespace, action or str(manifest["spec"]["prevention"]))
    return time.monotonic() - began


def test_status_names_prevention_only_once_the_api_server_enforces_it(
    kubectl: Kubectl, operator: Operator, dev: Kubectl, namespace: str
) -> None:
    """Warn→Deny, Deny→Off, Off→Deny, break-glass start and end: as soon as the Prevention
    condition names the new state, the person's next write meets it, with no retry; the
    Events and `driftguard status` say the same."""
    manifest = start(kubectl, namespace, "Warn")
    wait_warned(kubectl, dev, namespace)
    message = set_by(namespace, "/data/LOG_LEVEL", "ConfigMap", "web-config", 0)
    took = {}

    took["Warn→Deny"] = switch(kubectl, manifest, namespace, prevention="Deny")
    assert_refused(write_as(dev, namespace, "debug"), message)

    took["Deny→Off"] = switch(kubectl, manifest, namespace, prevention="Off")
    passed = write_as(dev, namespace, "debug")
    assert passed.returncode == 0, f"status says Off, the write was refused: {passed.stderr}"
    assert "Warning" not in passed.stderr, passed.stderr
    assert "Off" in run_cli(kubectl, "status", "-n", namespace).stdout.split()
    wait_for(lambda: is_blueprint(kubectl, namespace), message="Enforce to revert the write")

    took["Off→Deny"] = switch(kubectl, manifest, namespace, prevention="Deny")
    assert_refused(write_as(dev, namespace, "debug"), message)
    assert "Deny" in run_cli(kubectl, "status", "-n", namespace).stdout.split()

    ends = (datetime.now(UTC) + timedelta(seconds=8)).replace(microsecond=0)
    until = ends.strftime("%Y-%m-%dT%H:%M:%SZ")
    took["break-glass starts"] = switch(kubectl, manifest, namespace, suspendUntil=until)
    passed = write_as(dev, namespace, "debug")
    assert passed.returncode == 0, f"status says Off, the write was refused: {passed.stderr}"
    assert datetime.now(UTC) < ends, "the suspension ended before the write was tried"

    enforcing(kubectl, namespace, "Deny")  # the suspension ends by itself
    assert_refused(write_as(dev, namespace, "trace"), message)

    lifted = events(kubectl, namespace, "PreventionLifted")
    enforced = events(kubectl, namespace, "PreventionEnforced")
    assert len(lifted) == 2, lifted  # Deny→Off and the break-glass
    assert len(enforced) == 4, enforced  # Warn, Deny, Deny again, and after the break-glass
    assert all("no longer enforces Deny" in m for m in lifted), lifted
    print("\n" + ", ".join(f"{step} {seconds:.2f}s" for step, seconds in took.items()))
    print("Events: " + " | ".join(enforced + lifted))


SOMEONE = "system:serviceaccount:kube-system:someone"


@pytest.fixture
def someone(kubectl: Kubectl, namespace: str) -> Iterator[str]:
    """kube-system's ServiceAccount `someone`, with the cluster's edit role in the namespace."""
    kubectl("create", "serviceaccount", "someone", "-n", "kube-system")
    kubectl(
        *("create", "rolebinding", "someone-edit", "-n", namespace, "--clusterrole=edit"),
        "--serviceaccount=kube-system:someone",
    )
    wait_for(
        lambda: kubectl("auth", "can-i", "delete", "configmaps", "-n", namespace, "--as", SOMEONE,
                        check=False).stdout.strip() == "yes",
        message="someone's RoleBinding to take effect",
    )  # fmt: skip
    yield SOMEONE
    kubectl("delete", "serviceaccount", "someone", "-n", "kube-system", "--wait=false", check=False)


def test_deny_refuses_any_kube_system_serviceaccount_but_the_named_controllers(
    kubectl: Kubectl, operator: Operator, dev: Kubectl, namespace: str, someone: str
) -> None:
    """Under Deny an arbitrary kube-system ServiceAccount is refused like a person; the garbage
    collector and the namespace controller may still delete the managed objects."""
    start(kubectl, namespace, "Deny")
    wait_denied(kubectl, dev, namespace)
    stored = configmap(kubectl, namespace)

    patch = ("patch", "cm", "web-config", "-n", namespace, "--type=merge")
    written = kubectl(*patch, "-p", '{"data":{"LOG_LEVEL":"debug"}}', "--as", someone, check=False)
    assert written.returncode != 0, "kube-system:someone's write was let through"
    assert set_by(namespace, "/data/LOG_LEVEL", "ConfigMap", "web-config", 0) in written.stderr
    assert f"ValidatingAdmissionPolicy 'driftguard.{namespace}.{ENV}'" in written.stderr
    deleting = ("delete", "cm", "web-config", "-n", namespace, "--dry-run=server")
    deleted = kubectl(*deleting, "--as", someone, check=False)
    assert deleted.returncode != 0, "kube-system:someone's delete was let through"
    assert f"the Environment {namespace}/{ENV}" in deleted.stderr, deleted.stderr
    after = configmap(kubectl, namespace)
    assert after["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]

    # The controllers that must pass, as the API server knows them (a dry run: nothing goes).
    for controller in ("generic-garbage-collector", "namespace-controller"):
        user = f"system:serviceaccount:kube-system:{controller}"
        done = kubectl(*deleting, "--as", user, check=False)
        assert done.returncode == 0, f"{controller}: {done.stderr}"
    assert configmap(kubectl, namespace)["metadata"]["uid"] == stored["metadata"]["uid"]
