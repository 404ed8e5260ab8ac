"""Smoke tests of the local control plane: each checks one capability the operator relies on."""

import secrets
from pathlib import Path
from typing import Any

from helpers import (
    Kubectl,
    audit_events,
    is_process_alive,
    start_control_plane,
    wait_established,
    wait_for,
)
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from driftguard.controlplane import K8S_VERSION, ControlPlane

CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {{type: integer}}
"""

WIDGET = """\
apiVersion: {group}/v1
kind: Widget
metadata: {{name: w1, namespace: {namespace}}}
spec: {{size: 3}}
"""


def _random_group() -> str:
    # CRDs are cluster-scoped: a group of its own keeps this test independent of the others.
    return f"s{secrets.token_hex(3)}.smoke.driftguard.test"


def test_kubectl_applies_crd_and_namespaced_custom_object(kubectl: Kubectl, namespace: str) -> None:
    """kubectl applies a CRD, it becomes Established, and a custom object of it is stored."""
    group = _random_group()
    kubectl("apply", "-f", "-", input=CRD.format(group=group))
    try:
        wait_established(kubectl, f"widgets.{group}")
        manifest = WIDGET.format(group=group, namespace=namespace)
        # Right after CRD creation the server may answer 429 "storage is (re)initializing".
        wait_for(
            lambda: kubectl("apply", "-f", "-", input=manifest, check=False).returncode == 0,
            message="the Widget to be accepted",
        )
        stored = kubectl.json("get", f"widgets.{group}", "w1", "-n", namespace)
        assert stored["spec"] == {"size": 3}
    finally:
        kubectl("delete", "crd", f"widgets.{group}", "--wait=false")


def test_configmap_watch_sees_patch(core_api: k8s.CoreV1Api, namespace: str) -> None:
    """A watch from the ConfigMap's creation resourceVersion delivers the later patch."""
    body = k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="cm"), data={"colour": "red"})
    created = core_api.create_namespaced_config_map(namespace, body)
    core_api.patch_namespaced_config_map("cm", namespace, {"data": {"colour": "blue"}})

    watch = k8s_watch.Watch()
    seen = []
    for event in watch.stream(
        core_api.list_namespaced_config_map,
        namespace,
        field_selector="metadata.name=cm",
        resource_version=created.metadata.resource_version,
        timeout_seconds=10,
    ):
        seen.append((event["type"], event["object"].data))
        if event["type"] == "MODIFIED":
            watch.stop()
    assert seen == [("MODIFIED", {"colour": "blue"})]


def test_server_side_apply_records_field_manager(core_api: k8s.CoreV1Api, namespace: str) -> None:
    """A server-side apply shows its field manager, operation Apply, in managedFields."""
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "applied", "namespace": namespace},
        "data": {"owner": "smoke"},
    }
    applied = core_api.patch_namespaced_config_map(
        "applied",
        namespace,
        manifest,
        field_manager="smoke-manager",
        _content_type="application/apply-patch+yaml",
    )
    managers = {(f.manager, f.operation) for f in applied.metadata.managed_fields}
    assert managers == {("smoke-manager", "Apply")}


ADMINS_ONLY_POLICY = """\
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {name}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["configmaps"]
  validations:
  - expression: "'system:masters' in request.userInfo.groups"
    message: only cluster admins may write ConfigMaps here
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {name}}}
spec:
  policyName: {name}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {{kubernetes.io/metadata.name: {namespace}}}
"""

CONFIGMAP_WRITER_RBAC = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: configmap-writer, namespace: {namespace}}}
rules:
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "update", "get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: configmap-writer, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-writer}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}
"""


def test_validating_admission_policy_denies_non_admin_only(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str
) -> None:
    """A Deny policy rejects a non-admin's RBAC-allowed write and lets the admin's through."""
    user = "smoke-user"
    as_user = control_plane.user_kubeconfig(user, groups=["smoke-team"])
    kubectl("apply", "-f", "-", input=CONFIGMAP_WRITER_RBAC.format(namespace=namespace, user=user))
    # Before the policy, RBAC lets the user write: a later denial comes from the policy.
    wait_for(
        lambda: (
            kubectl(
                "create", "configmap", "before", "-n", namespace, kubeconfig=as_user, check=False
            ).returncode
            == 0
        ),
        message="the user's Role to take effect",
    )

    name = f"smoke-admins-only-{namespace}"
    kubectl("apply", "-f", "-", input=ADMINS_ONLY_POLICY.format(name=name, namespace=namespace))
    try:
        # The policy is enforced once the admission plugin's informer has seen it.
        def user_is_denied() -> bool:
            dry_run = kubectl(
                *("create", "configmap", "probe", "-n", namespace, "--dry-run=server"),
                kubeconfig=as_user,
                check=False,
            )
            return "only cluster admins may write ConfigMaps here" in dry_run.stderr

        wait_for(user_is_denied, message="the policy to be enforced")
        denied = kubectl(
            "create", "configmap", "after", "-n", namespace, kubeconfig=as_user, check=False
        )
        assert denied.returncode != 0
        assert f"ValidatingAdmissionPolicy '{name}'" in denied.stderr
        kubectl("create", "configmap", "by-admin", "-n", namespace)
    finally:
        kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name)


SECRET_READER_RBAC = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: secret-reader, namespace: {namespace}}}
rules:
- {{apiGroups: [""], resources: ["secrets"], verbs: ["list"]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: secret-reader, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: secret-reader}}
subjects:
- {{kind: ServiceAccount, name: reader, namespace: {namespace}}}
"""


def test_serviceaccount_token_is_limited_by_rbac(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str
) -> None:
    """A TokenRequest token authenticates as its ServiceAccount and can do only what RBAC grants."""
    kubectl("create", "serviceaccount", "reader", "-n", namespace)
    as_sa = control_plane.serviceaccount_kubeconfig(namespace, "reader")

    forbidden = kubectl("get", "secrets", "-n", namespace, kubeconfig=as_sa, check=False)
    assert forbidden.returncode != 0
    assert f'"system:serviceaccount:{namespace}:reader" cannot list resource "secrets"' in (
        forbidden.stderr
    )

    kubectl("apply", "-f", "-", input=SECRET_READER_RBAC.format(namespace=namespace))
    wait_for(
        lambda: (
            kubectl("get", "secrets", "-n", namespace, kubeconfig=as_sa, check=False).returncode
            == 0
        ),
        message="the RoleBinding to allow listing secrets",
    )


def test_kubectl_version_reports_server_version(kubectl: Kubectl) -> None:
    """kubectl version reports the pinned kube-apiserver version."""
    version = kubectl.json("version")
    assert version["serverVersion"]["gitVersion"] == K8S_VERSION


def test_audit_log_records_each_request_of_a_user(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str
) -> None:
    """The audit log has one completed event per request, with the user and the verb."""
    as_user = control_plane.user_kubeconfig("audited-user")
    for _ in range(3):
        kubectl("get", "configmaps", "-n", namespace, kubeconfig=as_user, check=False)

    def three_lists() -> list[dict[str, Any]]:
        events = audit_events(control_plane.audit_log, username="audited-user")
        lists = [e for e in events if e["verb"] == "list"]
        return lists if len(lists) == 3 else []

    lists = wait_for(three_lists, message="three audited list requests")
    assert {e["objectRef"]["namespace"] for e in lists} == {namespace}


def test_stop_leaves_no_process_and_no_directory() -> None:
    """After stop(), none of the instance's processes is alive and its directory is gone."""
    plane = start_control_plane(controller_manager=False)
    pids = plane.pids
    directory: Path = plane.directory
    assert set(pids) == {"etcd", "kube-apiserver"}
    assert all(is_process_alive(pid) for pid in pids.values())

    plane.stop()

    assert [name for name, pid in pids.items() if is_process_alive(pid)] == []
    assert not directory.exists()


def test_controller_manager_creates_default_serviceaccount(
    core_api: k8s.CoreV1Api, namespace: str
) -> None:
    """The controller manager runs: a new namespace gets its default ServiceAccount."""
    wait_for(
        lambda: core_api.list_namespaced_service_account(namespace).items,
        message="the default ServiceAccount",
    )
