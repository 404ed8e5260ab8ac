"""crdpolicy: the CRDs' CEL rules as ValidatingAdmissionPolicies, out of the status path."""

from __future__ import annotations

from typing import Any

import pytest

from driftguard.core import crd, crdpolicy

POLICIES = crd.policies()
BY_KIND: dict[tuple[str, str], dict[str, Any]] = {
    (doc["kind"], doc["metadata"]["name"]): doc for doc in POLICIES
}


def rules_of(node: Any) -> list[Any]:
    """Every x-kubernetes-validations entry anywhere under a schema node."""
    if isinstance(node, list):
        return [rule for item in node for rule in rules_of(item)]
    if not isinstance(node, dict):
        return []
    own = list(node.get(crdpolicy.RULES_KEY, []))
    return own + [rule for value in node.values() for rule in rules_of(value)]


@pytest.mark.parametrize(
    "definition", [crd.definition, crd.blueprint_definition], ids=["environments", "blueprints"]
)
def test_the_crd_has_no_cel_rule_a_status_write_would_evaluate(definition: Any) -> None:
    """The shipped schema holds no CEL rule: the API server evaluates none at a status write."""
    assert rules_of(definition()) == []


@pytest.mark.parametrize(
    ("definition", "plural"),
    [(crd.definition, "environments"), (crd.blueprint_definition, "blueprints")],
    ids=["environments", "blueprints"],
)
def test_every_rule_of_the_schema_is_in_the_policy(definition: Any, plural: str) -> None:
    """Each rule the schema held is one validation of the policy, its message kept."""
    before = rules_of(definition(rules_in_schema=True))
    policy = BY_KIND["ValidatingAdmissionPolicy", f"{plural}.driftguard.io"]
    validations = policy["spec"]["validations"]
    assert len(validations) == len(before) > 0
    for rule, validation in zip(
        sorted(before, key=lambda r: r["message"]),
        sorted(validations, key=lambda v: v["message"].split(": ", 1)[1]),
        strict=True,
    ):
        assert validation["message"].endswith(": " + rule["message"])


@pytest.mark.parametrize("plural", ["environments", "blueprints"])
def test_the_policy_matches_the_main_resource_only(plural: str) -> None:
    """Creates and updates of the resource, never its status subresource."""
    policy = BY_KIND["ValidatingAdmissionPolicy", f"{plural}.driftguard.io"]
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == [plural]
    assert rule["operations"] == ["CREATE", "UPDATE"]
    assert policy["spec"]["failurePolicy"] == "Fail"


@pytest.mark.parametrize("plural", ["environments", "blueprints"])
def test_the_binding_denies(plural: str) -> None:
    """Each policy has a binding that refuses what it finds, everywhere."""
    binding = BY_KIND["ValidatingAdmissionPolicyBinding", f"{plural}.driftguard.io"]
    assert binding["spec"] == {
        "policyName": f"{plural}.driftguard.io",
        "validationActions": ["Deny"],
    }


def test_an_update_that_leaves_the_spec_is_not_checked() -> None:
    """A finalizer or label change to an object stored before a rule existed still goes through."""
    policy = BY_KIND["ValidatingAdmissionPolicy", "environments.driftguard.io"]
    (condition,) = policy["spec"]["matchConditions"]
    assert condition["expression"] == (
        "request.operation == 'CREATE' || object.spec != oldObject.spec"
    )


@pytest.mark.parametrize(
    ("rule", "expression"),
    [
        (
            crdpolicy.Rule(("spec",), "!has(self.values)", "m"),
            "!has(object.spec) || ((!has(object.spec.values)))",
        ),
        (
            crdpolicy.Rule(("spec", "resyncInterval"), "duration(self) >= duration('10s')", "m"),
            "!has(object.spec) || (!has(object.spec.resyncInterval) || "
            "((duration(object.spec.resyncInterval) >= duration('10s'))))",
        ),
        (
            crdpolicy.Rule(("spec", "resources", "[]"), "has(self.kind)", "m"),
            "!has(object.spec) || (!has(object.spec.resources) || "
            "(object.spec.resources.all(v0, (has(v0.kind)))))",
        ),
    ],
    ids=["on-the-spec", "on-a-field", "on-each-item"],
)
def test_a_rule_becomes_an_expression_over_the_object(
    rule: crdpolicy.Rule, expression: str
) -> None:
    """`self` is the field the rule sat on; absent fields pass, as they did in the schema."""
    (validation,) = crdpolicy.policy("things", [rule])[0]["spec"]["validations"]
    assert validation["expression"] == expression


def test_an_item_rules_message_names_the_first_failing_item() -> None:
    """`spec.resources[3]: ...`: the index, as the API server named a schema rule's field."""
    rule = crdpolicy.Rule(("spec", "resources", "[]"), "has(self.kind)", "kind is required")
    (validation,) = crdpolicy.policy("things", [rule])[0]["spec"]["validations"]
    assert validation["message"] == "spec.resources[]: kind is required"
    assert validation["messageExpression"] == (
        "'spec.resources[' + string(object.spec.resources.transformList(i, e, "
        "!(has(e.kind)), i)[0]) + ']: ' + 'kind is required'"
    )


def test_quotes_in_a_message_are_escaped() -> None:
    """A message with quotes stays one CEL string literal."""
    rule = crdpolicy.Rule(("spec", "resources", "[]"), "true", "'-' and '.'")
    (validation,) = crdpolicy.policy("things", [rule])[0]["spec"]["validations"]
    assert validation["messageExpression"].endswith("+ '\\'-\\' and \\'.\\''")
