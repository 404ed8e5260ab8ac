"""The CRDs' CEL rules, moved out of their schemas into ValidatingAdmissionPolicies.

A CEL rule in a CRD's schema runs at every write of the object, status writes included:
kube-apiserver evaluates each rule on the whole object for each status write, spec unchanged
(ratcheting only turns the errors of unchanged fields into warnings; it still evaluates).
The blueprint's rules sit on every `spec.resources` item, so an Environment of 100 objects
paid for 600 rule evaluations at each status write. A ValidatingAdmissionPolicy that matches
the main resource and not its status subresource refuses the same input with the same
messages at create and update, and a status write evaluates nothing.

The rules stay where they are written (the models' `x-kubernetes-validations`), so the schema
with them inlined (the previous design, which `bench/statuswrite.py` measures) and the policy
come from one source. Pure: no I/O.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from driftguard.core import model

RULES_KEY = "x-kubernetes-validations"
ITEMS = "[]"


@dataclass(frozen=True)
class Rule:
    """One CEL rule of a schema, where it was: `path` runs from the root, `[]` for list items."""

    path: tuple[str, ...]
    rule: str
    message: str

    @property
    def shown_path(self) -> str:
        """`spec.resources[]`, `spec.resyncInterval`: where a person reads the field."""
        return ".".join(self.path).replace(f".{ITEMS}", ITEMS)


def extract(schema: dict[str, Any]) -> tuple[dict[str, Any], list[Rule]]:
    """The schema without its CEL rules, and the rules, in the order a walk of it finds them."""
    stripped = copy.deepcopy(schema)
    found: list[Rule] = []
    _take(stripped, (), found)
    return stripped, found


def _take(node: dict[str, Any], path: tuple[str, ...], found: list[Rule]) -> None:
    for rule in node.pop(RULES_KEY, []):
        found.append(Rule(path, rule["rule"], rule["message"]))
    for name, child in (node.get("properties") or {}).items():
        _take(child, (*path, name), found)
    if isinstance(node.get("items"), dict):
        _take(node["items"], (*path, ITEMS), found)


def _expression(rule: Rule, root: str = "object") -> str:
    """The rule over `root`: each field on the way guarded by has(), each list by all()."""
    cursor, guards, depth = root, [], 0
    for segment in rule.path:
        if segment == ITEMS:
            var = f"v{depth}"
            guards.append(f"{cursor}.all({var}, ")
            cursor, depth = var, depth + 1
        else:
            guards.append(f"!has({cursor}.{segment}) || (")
            cursor = f"{cursor}.{segment}"
    body = "(" + re.sub(r"\bself\b", cursor, rule.rule) + ")"
    return "".join(guards) + body + ")" * len(guards)


def _message_expression(rule: Rule) -> str | None:
    """For a rule on list items, the message prefixed by the first item that fails:
    `spec.resources[3]: ...`, as the API server names a schema rule's field."""
    message = _quote(rule.message)
    if rule.path.count(ITEMS) != 1:
        return None
    at = rule.path.index(ITEMS)
    listed = ".".join(("object", *rule.path[:at]))
    failing = "!" + _expression(Rule(rule.path[at + 1 :], rule.rule, rule.message), root="e")
    index = f"string({listed}.transformList(i, e, {failing}, i)[0])"
    where = ".".join(rule.path[:at])
    return f"{_quote(where + '[')} + {index} + {_quote(']: ')} + {message}"


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def policy(plural: str, rules: list[Rule]) -> list[dict[str, Any]]:
    """A ValidatingAdmissionPolicy holding `rules` for `plural` of driftguard.io, and its binding.

    It matches the main resource only: `<plural>/status` is not listed, so a status write
    never reaches it. An update that leaves the spec as it was (a finalizer, a label) is not
    checked either, so an object stored before a rule existed can still be changed and
    deleted, as the API server's ratcheting allows for schema rules.
    """
    name = f"{plural}.{model.GROUP}"
    validations = []
    for rule in rules:
        validation = {
            "expression": _expression(rule),
            "message": f"{rule.shown_path}: {rule.message}",
        }
        expression = _message_expression(rule)
        if expression is not None:
            validation["messageExpression"] = expression
        validations.append({**validation, "reason": "Invalid"})
    spec = {
        "failurePolicy": "Fail",
        "matchConstraints": {
            "resourceRules": [
                {
                    "apiGroups": [model.GROUP],
                    "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": [plural],
                }
            ]
        },
        "matchConditions": [
            {
                "name": "spec-written",
                "expression": "request.operation == 'CREATE' || object.spec != oldObject.spec",
            }
        ],
        "validations": validations,
    }
    binding = {"policyName": name, "validationActions": ["Deny"]}
    api_version = "admissionregistration.k8s.io/v1"
    return [
        {
            "apiVersion": api_version,
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": spec,
        },
        {
            "apiVersion": api_version,
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": binding,
        },
    ]
