"""prevention: the admission policy and binding generated for an Environment."""

from __future__ import annotations

import json
from typing import Any

import pytest

from driftguard.core import diff, model, prevention
from driftguard.core.model import AllowedChange, ObjectKey, Resource

DEPLOYMENTS = Resource("apps", "v1", "Deployment", "deployments", namespaced=True)
CONFIGMAPS = Resource("", "v1", "ConfigMap", "configmaps", namespaced=True)
SECRETS = Resource("", "v1", "Secret", "secrets", namespaced=True)


def stored(kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """An object as the server answers driftguard's apply: our managedFields cover `body`."""

    def fields(node: Any) -> Any:
        return {f"f:{k}": fields(v) for k, v in node.items()} if isinstance(node, dict) else {}

    return {
        "apiVersion": "apps/v1" if kind == "Deployment" else "v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "shop",
            "managedFields": [
                {"manager": "driftguard", "operation": "Apply", "fieldsV1": fields(body)}
            ],
        },
        **body,
    }


def guarded(
    kind: str, resource: Resource, body: dict[str, Any], *rules: AllowedChange
) -> prevention.Guarded:
    obj = stored(kind, "web", body)
    return prevention.Guarded(ObjectKey.of(obj), resource, 0, diff.expect(obj), list(rules))


def build(*objects: prevention.Guarded, deny: bool = True) -> list[dict[str, Any]]:
    return prevention.policy_manifests(
        owner_namespace="platform",
        owner_name="staging",
        deny=deny,
        objects=objects,
        exempt_users=["system:serviceaccount:driftguard:driftguard", ""],
        exempt_groups=["driftguard:break-glass"],
    )


def test_nothing_to_guard_makes_no_policy() -> None:
    """An Environment without objects gets no policy at all."""
    assert build() == []


def test_binding_matches_the_objects_by_name_and_scale() -> None:
    """The binding names the objects, /scale included, in their namespaces; the action is in its name."""
    policy, binding = build(guarded("Deployment", DEPLOYMENTS, {"spec": {"replicas": 2}}))

    assert policy["metadata"]["name"] == "driftguard.platform.staging"
    assert binding["metadata"]["name"] == "driftguard.platform.staging.deny"
    assert binding["spec"]["validationActions"] == ["Deny"]
    rules = binding["spec"]["matchResources"]["resourceRules"]
    assert [(r["resources"], r["resourceNames"]) for r in rules] == [
        (["deployments"], ["web"]),
        (["deployments/scale"], ["web"]),
    ]
    selector = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
    assert selector == [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["shop"]}
    ]
    assert policy["metadata"]["labels"][model.LABEL_ENVIRONMENT] == "staging"


def test_warn_is_a_binding_of_its_own() -> None:
    """Warn binds with the Warn action under another name, so a mode change never merges the two."""
    _, binding = build(guarded("ConfigMap", CONFIGMAPS, {"data": {"a": "1"}}), deny=False)

    assert binding["metadata"]["name"].endswith(".warn")
    assert binding["spec"]["validationActions"] == ["Warn"]


def test_exempt_identities_skip_the_policy() -> None:
    """Exactly the operator, the named controllers and the break-glass group are let through
    (a write carrying the probe marker is judged whoever sends it)."""
    (policy, _) = build(guarded("ConfigMap", CONFIGMAPS, {"data": {"a": "1"}}))
    condition = policy["spec"]["matchConditions"][0]["expression"]

    users = sorted(
        [
            "system:kube-controller-manager",
            "system:serviceaccount:driftguard:driftguard",
            "system:serviceaccount:kube-system:generic-garbage-collector",
            "system:serviceaccount:kube-system:namespace-controller",
        ]
    )
    marked = (
        "(request.operation != 'DELETE' && has(object.metadata.annotations)"
        ' && "driftguard.io/prevention-probe" in object.metadata.annotations) || '
    )
    assert condition == (
        f"{marked}!(request.userInfo.username in {json.dumps(users)})"
        ' && !request.userInfo.groups.exists(g, g in ["driftguard:break-glass"])'
    )


@pytest.mark.parametrize(
    "user",
    [
        "system:serviceaccount:kube-system:someone",
        "system:serviceaccount:kube-system:deployment-controller",
        "system:kube-scheduler",
        "system:serviceaccount:kube-system:generic-garbage-collector-2",
    ],
    ids=["any-kube-system-sa", "deployment-controller", "scheduler", "lookalike-name"],
)
def test_other_system_identities_are_judged(user: str) -> None:
    """No prefix lets a kube-system identity through: only the exact names do."""
    (policy, _) = build(guarded("ConfigMap", CONFIGMAPS, {"data": {"a": "1"}}))
    condition = policy["spec"]["matchConditions"][0]["expression"]

    assert "startsWith" not in condition
    assert json.dumps(user) not in condition


def test_each_managed_field_is_a_validation_naming_it() -> None:
    """Every field driftguard set has its own check and a message naming it and the Environment."""
    (policy, _) = build(guarded("ConfigMap", CONFIGMAPS, {"data": {"DB.VERSION": "5.7"}}))
    messages = [v["message"] for v in policy["spec"]["validations"]]
    expressions = [v["expression"] for v in policy["spec"]["validations"]]

    assert any(
        m.startswith(
            "/data/DB.VERSION of ConfigMap/shop/web is set by the Environment platform/staging"
        )
        for m in messages
    )
    assert any('object.?data[?"DB.VERSION"] == optional.of("5.7")' in e for e in expressions)
    assert any("request.operation != 'DELETE'" in e for e in expressions)


def test_secret_values_never_enter_the_policy() -> None:
    """A Secret's field is compared with its old value, so no Secret value is written in the policy."""
    (policy, _) = build(guarded("Secret", SECRETS, {"data": {"password": "c2VjcmV0"}}))

    assert "c2VjcmV0" not in json.dumps(policy)
    assert any(
        "oldObject.?data.?password" in v["expression"] for v in policy["spec"]["validations"]
    )


def test_allowed_path_is_judged_by_its_bounds_also_on_scale() -> None:
    """An allowed path with bounds gets a bounds check for updates and for /scale, no equality check."""
    rule = AllowedChange(kind="Deployment", paths=["/spec/replicas"], minimum=2, maximum=4)
    (policy, _) = build(guarded("Deployment", DEPLOYMENTS, {"spec": {"replicas": 2}}, rule))
    expressions = [v["expression"] for v in policy["spec"]["validations"]]

    bounds = [e for e in expressions if "v >= 2.0 && v <= 4.0" in e]
    assert len(bounds) == 2
    assert any("variables.sub != 'scale'" in e for e in bounds)
    assert not any("object.?spec.?replicas == optional.of(2)" in e for e in expressions)


def test_two_rules_on_one_path_let_through_what_either_allows() -> None:
    """A DriftException widening the blueprint's bounds: a value within either passes."""
    own = AllowedChange(kind="Deployment", paths=["/spec/replicas"], minimum=2, maximum=10)
    wider = AllowedChange(kind="Deployment", paths=["/spec/replicas"], maximum=20)
    body = {"spec": {"replicas": 2}}
    (policy, _) = build(guarded("Deployment", DEPLOYMENTS, body, own, wider))
    validations = [v for v in policy["spec"]["validations"] if "v <= " in v["expression"]]
    assert len(validations) == 2  # updates and /scale
    assert all("(v >= 2.0 && v <= 10.0) || (v <= 20.0)" in v["expression"] for v in validations)
    assert all("stay between 2 and 10 or at most 20:" in v["message"] for v in validations)


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [
        ("/spec/replicas", ".?spec.?replicas"),
        ("/spec/template/spec/containers/0/image", ".?spec.?template.?spec.?containers[?0].?image"),
        ("/metadata/annotations/example.com~1team", '.?metadata.?annotations[?"example.com/team"]'),
        ("/data/in", '.?data[?"in"]'),
    ],
    ids=["field", "list-index", "escaped-key", "reserved-word"],
)
def test_accessor(pointer: str, expected: str) -> None:
    """A JSON pointer becomes an optional CEL chain; keys that are not identifiers are indexed."""
    assert prevention._accessor(pointer) == expected


def test_lists_driftguard_set_hold_only_its_items() -> None:
    """A keyed list driftguard set gets a check that every item is one of the blueprint's."""
    body = {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}
    obj = stored("Deployment", "web", body)
    containers = obj["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]
    containers["f:containers"] = {'k:{"name":"web"}': {"f:name": {}, "f:image": {}}}
    item = prevention.Guarded(ObjectKey.of(obj), DEPLOYMENTS, 0, diff.expect(obj), [])
    (policy, _) = build(item)

    (check,) = [v for v in policy["spec"]["validations"] if "holds only" in v["message"]]
    assert check["message"].startswith("/spec/template/spec/containers of Deployment/shop/web")
    assert 'all(x, (x.?name == optional.of("web")))' in check["expression"]


def test_the_probe_is_judged_whoever_sends_it_and_named_first() -> None:
    """A write carrying the probe marker is matched even from an exempt identity, and its
    validation comes first, naming the policy's version."""
    (policy, _) = build(guarded("ConfigMap", CONFIGMAPS, {"data": {"a": "1"}}))
    token = policy["metadata"]["annotations"][prevention.TOKEN_ANNOTATION]
    condition = policy["spec"]["matchConditions"][0]["expression"]
    first = policy["spec"]["validations"][0]

    assert condition.startswith(f"(request.operation != 'DELETE' && has(object.metadata.annotations) && \"{prevention.PROBE_ANNOTATION}\" in object.metadata.annotations) || ")  # fmt: skip
    assert first["message"] == prevention.probe_message("platform", "staging", token)
    assert first["expression"].startswith("!(request.operation != 'DELETE'")


@pytest.mark.parametrize(
    ("other", "is_same"),
    [
        ({"deny": True, "value": "1"}, True),
        ({"deny": False, "value": "1"}, False),
        ({"deny": True, "value": "2"}, False),
    ],
    ids=["same-policy", "warn-instead", "another-value"],
)
def test_the_token_names_one_version_of_the_policy(other: dict[str, Any], is_same: bool) -> None:
    """The same policy keeps its token; another action or another checked value changes it."""

    def token(*, deny: bool, value: str) -> str:
        (policy, _) = build(guarded("ConfigMap", CONFIGMAPS, {"data": {"a": value}}), deny=deny)
        return str(policy["metadata"]["annotations"][prevention.TOKEN_ANNOTATION])

    assert (token(deny=True, value="1") == token(**other)) is is_same


@pytest.mark.parametrize(
    ("deny", "objects", "expected"),
    [
        (True, True, model.Prevention.DENY),
        (False, True, model.Prevention.WARN),
        (True, False, model.Prevention.OFF),
    ],
    ids=["deny", "warn", "no-policy"],
)
def test_enforced_of_the_policy_objects(
    deny: bool, objects: bool, expected: model.Prevention
) -> None:
    """What the written policy objects ask for: the binding's action and the policy's token."""
    docs = (
        build(guarded("ConfigMap", CONFIGMAPS, {"data": {"a": "1"}}), deny=deny) if objects else []
    )

    enforced = prevention.Enforced.of(docs)

    assert enforced.action is expected
    tokens = [d["metadata"]["annotations"][prevention.TOKEN_ANNOTATION] for d in docs[:1]]
    assert enforced.token == (tokens[0] if tokens else "")


MARK = prevention.probe_message("platform", "staging", "abc")
OLD = prevention.probe_message("platform", "staging", "old")
OTHER_ENV = prevention.probe_message("platform", "prod", "abc")
DENY = prevention.Enforced(model.Prevention.DENY, "abc")
WARN = prevention.Enforced(model.Prevention.WARN, "abc")
OFF = prevention.Enforced(model.Prevention.OFF)


@pytest.mark.parametrize(
    ("wanted", "refusal", "warnings", "expected"),
    [
        (DENY, f"denied request: {MARK}", [], True),
        (DENY, None, [MARK], False),
        (DENY, f"denied request: {OLD}", [], False),
        (DENY, None, [], False),
        (WARN, None, [MARK], True),
        (WARN, None, [OLD], False),
        (WARN, f"denied request: {OLD}", [MARK], False),
        (OFF, None, [], True),
        (OFF, None, [OTHER_ENV], True),
        (OFF, None, [OLD], False),
        (OFF, f"denied request: {OLD}", [], False),
    ],
    ids=[
        "deny-refused-by-it",
        "deny-only-warned",
        "deny-refused-by-an-older-version",
        "deny-not-yet",
        "warn-warned-by-it",
        "warn-by-an-older-version",
        "warn-but-still-refused",
        "off-silent",
        "off-another-environment-speaks",
        "off-still-warned",
        "off-still-refused",
    ],
)
def test_a_probe_answer_confirms_only_what_the_api_server_enforces(
    wanted: prevention.Enforced, refusal: str | None, warnings: list[str], expected: bool
) -> None:
    """Deny needs a refusal by that version, Warn its warning and no refusal, Off silence from
    every version of this Environment's policy."""
    answered = prevention.answers(
        wanted, owner_namespace="platform", owner_name="staging", refusal=refusal, warnings=warnings
    )

    assert answered is expected
