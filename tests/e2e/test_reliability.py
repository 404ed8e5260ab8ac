"""Reliability on the session's control plane: late CRDs, all-or-nothing applies, hostile specs."""

from envs import Operator, apply, configmap, custom_crd, environment, get, wait_condition
from helpers import Kubectl, wait_for


def test_kind_whose_crd_arrives_late_becomes_ready_on_its_own(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """A blueprint naming a kind not served yet waits, says so, and applies once its CRD exists."""
    gadget = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}
    gadget["spec"] = {"size": 3}
    apply(kubectl, environment("app", namespace, [configmap("c", v="1"), gadget]))

    ready = wait_condition(kubectl, "app", namespace, "Ready", "False", reason="InvalidSpec")
    assert "spec.resources[1]" in ready["message"]
    assert "CRD" in ready["message"]
    assert get(kubectl, "cm", "c", namespace) is None  # nothing applied meanwhile

    crd = custom_crd("Gadget", "gadgets")
    try:
        apply(kubectl, crd)
        wait_condition(kubectl, "app", namespace, "Ready", "True", timeout=40)
        wait_condition(kubectl, "app", namespace, "InSync", "True", timeout=20)
        assert (get(kubectl, "gadgets", "g", namespace) or {}).get("spec") == {"size": 3}
    finally:
        kubectl("delete", "environment", "app", "-n", namespace, "--wait=false", check=False)
        kubectl("delete", "crd", "gadgets.example.com", "--wait=false", check=False)


def test_one_object_the_server_refuses_applies_nothing(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """A revision with one object the API server rejects is not applied at all, and says which."""
    apply(kubectl, environment("app", namespace, [configmap("a", v="1")]))
    wait_condition(kubectl, "app", namespace, "InSync", "True")
    # The CRD cannot judge ConfigMap keys; the API server refuses this one.
    bad_key = {**configmap("c"), "data": {"not a valid key!": "1"}}
    manifest = environment(
        "app", namespace, [configmap("a", v="2"), configmap("b", v="1"), bad_key]
    )
    apply(kubectl, manifest)

    ready = wait_condition(kubectl, "app", namespace, "Ready", "False", reason="ApplyFailed")
    assert "not a valid key!" in ready["message"]
    assert "ConfigMap/" in ready["message"]
    assert (get(kubectl, "cm", "a", namespace) or {}).get("data") == {"v": "1"}
    assert get(kubectl, "cm", "b", namespace) is None


def test_busy_resync_is_refused_at_apply_time(kubectl: Kubectl, namespace: str) -> None:
    """resyncInterval below 10s is refused by the CRD schema with a message saying the minimum."""
    manifest = environment("app", namespace, [configmap("a", v="1")], resyncInterval="1ms")

    done = apply(kubectl, manifest, check=False)

    assert done.returncode != 0
    assert "resyncInterval must be at least 10s" in done.stderr


def test_bounds_on_a_string_field_are_invalid(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """minimum/maximum on a field the blueprint holds as a string is InvalidSpec naming the rule."""
    rule = {"kind": "ConfigMap", "paths": ["/data/v"], "minimum": 1, "maximum": 3}
    manifest = environment("app", namespace, [configmap("a", v="1")], allowedChanges=[rule])
    apply(kubectl, manifest)

    ready = wait_condition(kubectl, "app", namespace, "Ready", "False", reason="InvalidSpec")
    assert "spec.allowedChanges[0]" in ready["message"]
    assert "/data/v" in ready["message"]
    assert get(kubectl, "cm", "a", namespace) is None


def test_a_kind_the_operator_may_not_list_is_forbidden_not_a_crash(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """A RoleBinding outside the chart's grants is Ready=False/Forbidden naming verb, kind and
    namespace; nothing is applied, and another Environment is enforced meanwhile."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "readers"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "Group", "name": "readers", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    apply(kubectl, environment("rbac", namespace, [configmap("a", v="1"), binding]))
    apply(kubectl, environment("plain", namespace, [configmap("b", v="1")]))

    ready = wait_condition(kubectl, "rbac", namespace, "Ready", "False", reason="Forbidden")
    assert "RoleBinding" in ready["message"]
    assert namespace in ready["message"]
    assert "cannot list" in ready["message"] or "cannot watch" in ready["message"]
    assert get(kubectl, "cm", "a", namespace) is None
    wait_condition(kubectl, "plain", namespace, "InSync", "True")
    kubectl("patch", "cm", "b", "-n", namespace, "--type=merge", "-p", '{"data":{"v":"2"}}')
    wait_for(
        lambda: (get(kubectl, "cm", "b", namespace) or {}).get("data") == {"v": "1"},
        message="the other Environment's drift reverted",
    )
