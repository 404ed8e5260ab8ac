"""Prevention at admission: one ValidatingAdmissionPolicy and its binding per Environment.

CEL runs inside the API server: no webhook to run, nothing to fail open. The binding
matches the Environment's objects by name (and the `/scale` subresource, which carries
no labels) in their namespaces; the policy holds one validation per field driftguard
manages, so a refusal names the exact field. It judges what Enforce would revert: a field
driftguard set must keep the blueprint's value, an allowed path must stay within its
bounds, and a managed object may not be deleted. Secret values are never written into a
policy: a Secret's fields are compared with the object as it was.

One policy per Environment (not per object, not one shared policy with parameters): CEL
cannot walk a blueprint held in a parameter, so the expected values are written into the
expressions, and a binding per policy keeps every other request free of them.

What the API server enforces lags the policy objects (its policy cache follows them
through a watch), so each policy also refuses (or, under Warn, warns about) any write
carrying the probe annotation, whoever makes it: the operator's own server-side dry-run
with that marker shows what is enforced right now (`answers`). Pure.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from driftguard.core import diff, model
from driftguard.core.model import AllowedChange, ObjectKey, Prevention, Resource

GROUP = "admissionregistration.k8s.io"
POLICY = "ValidatingAdmissionPolicy"
BINDING = "ValidatingAdmissionPolicyBinding"
SCALABLE = {("apps", "Deployment"), ("apps", "StatefulSet"), ("apps", "ReplicaSet")}
CONTROLLERS = (
    "system:kube-controller-manager",
    "system:serviceaccount:kube-system:generic-garbage-collector",
    "system:serviceaccount:kube-system:namespace-controller",
)
"""The cluster's controllers that must write managed objects whatever prevention says, and
no others: the garbage collector deletes the dependents of a deleted owner (and patches
away ownerReferences and its finalizers when orphaning), the namespace controller deletes
everything in a namespace being deleted. With kube-controller-manager's
--use-service-account-credentials (kubeadm, most distributions) each controller is its own
kube-system ServiceAccount; without it every controller is system:kube-controller-manager.
The other controllers write only what driftguard never sets (the deployment controller a
Deployment's revision annotation and status, never its spec) or other kinds (ReplicaSets,
Pods, Endpoints), so a policy judging only driftguard's fields lets them through anyway.
Any other kube-system ServiceAccount is judged like a person."""
PROBE_ANNOTATION = f"{model.GROUP}/prevention-probe"
TOKEN_ANNOTATION = f"{model.GROUP}/prevention-token"
# A write carrying the probe marker (never one of the operator's real writes): what the
# probe validation refuses, and what brings the operator's own dry-run under the policy.
_MARKED = (
    "request.operation != 'DELETE' && has(object.metadata.annotations)"
    f" && {json.dumps(PROBE_ANNOTATION)} in object.metadata.annotations"
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED = {"in", "as", "break", "const", "continue", "else", "for", "function", "if",
             "import", "let", "loop", "package", "namespace", "return", "var", "void",
             "while", "true", "false", "null"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Guarded:
    """One managed object as prevention sees it."""

    key: ObjectKey
    resource: Resource
    index: int  # in spec.resources, for the message
    expectation: diff.Expectation
    rules: Sequence[AllowedChange]


def name_of(owner_namespace: str, owner_name: str) -> str:
    return f"driftguard.{owner_namespace}.{owner_name}"


def policy_manifests(
    *,
    owner_namespace: str,
    owner_name: str,
    deny: bool,
    objects: Iterable[Guarded],
    exempt_users: Iterable[str],
    exempt_groups: Iterable[str],
    blueprint: str | None = None,
) -> list[dict[str, Any]]:
    """The policy and its binding; empty when there is nothing to guard.

    `blueprint`: the Blueprint the objects are made from, which the messages point to.
    """
    objects = sorted(objects, key=lambda o: o.key)
    if not objects:
        return []
    name = name_of(owner_namespace, owner_name)
    labels = {
        model.LABEL_MANAGED_BY: model.FIELD_MANAGER,
        model.LABEL_ENVIRONMENT: owner_name,
        model.LABEL_ENVIRONMENT_NAMESPACE: owner_namespace,
    }
    env = f"Environment {owner_namespace}/{owner_name}"
    validations = [v for guarded in objects for v in _validations(guarded, env, blueprint)]
    action = "deny" if deny else "warn"
    token = _token(action, validations, _rules(objects, with_names=True))
    # First, so that a refusal of the probe names it whatever else the object fails.
    probe = {
        "expression": f"!({_MARKED})",
        "message": probe_message(owner_namespace, owner_name, token),
    }
    policy = {
        "apiVersion": f"{GROUP}/v1",
        "kind": POLICY,
        "metadata": {"name": name, "labels": labels, "annotations": {TOKEN_ANNOTATION: token}},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": _rules(objects, with_names=False)},
            "matchConditions": [
                {
                    "name": "not-exempt",
                    # A probe is judged whoever sends it: the operator's own included.
                    "expression": f"({_MARKED}) || {_not_exempt(exempt_users, exempt_groups)}",
                }
            ],
            "variables": [
                {
                    "name": "sub",
                    "expression": "has(request.subResource) ? request.subResource : ''",
                },
                {"name": "target", "expression": "request.resource.resource + '/' + request.name"},
            ],
            "validations": [probe, *validations],
            # The audit log then names the Environment beside the user of every write it
            # judged: the one place where the person behind a change is known.
            "auditAnnotations": [
                {
                    "key": "environment",
                    "valueExpression": _literal(f"{owner_namespace}/{owner_name}"),
                }
            ],
        },
    }
    namespaces = sorted({o.key.namespace for o in objects if o.key.namespace})
    match: dict[str, Any] = {"resourceRules": _rules(objects, with_names=True)}
    if namespaces and all(o.key.namespace for o in objects):
        match["namespaceSelector"] = {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}
            ]
        }
    # The action is in the binding's name: a change of mode is a new binding (and the old
    # one pruned), never a merge of Deny and Warn in one set-typed list.
    binding = {
        "apiVersion": f"{GROUP}/v1",
        "kind": BINDING,
        "metadata": {"name": f"{name}.{action}", "labels": labels},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"] if deny else ["Warn"],
            "matchResources": match,
        },
    }
    return [policy, binding]


def _rules(objects: Sequence[Guarded], *, with_names: bool) -> list[dict[str, Any]]:
    by_resource: dict[tuple[str, str], set[str]] = {}
    for guarded in objects:
        resource = guarded.resource
        plurals = [resource.plural]
        if (resource.group, resource.kind) in SCALABLE:
            plurals.append(f"{resource.plural}/scale")
        for plural in plurals:
            by_resource.setdefault((resource.group, plural), set()).add(guarded.key.name)
    rules = []
    for (group, plural), names in sorted(by_resource.items()):
        rule: dict[str, Any] = {
            "apiGroups": [group],
            "apiVersions": ["*"],
            "resources": [plural],
            "operations": ["UPDATE", "DELETE"],
        }
        if with_names:
            rule["resourceNames"] = sorted(names)
        rules.append(rule)
    return rules


def _not_exempt(users: Iterable[str], groups: Iterable[str]) -> str:
    names = sorted({*users, *CONTROLLERS} - {""})
    expression = f"!(request.userInfo.username in {_literal(names)})"
    groups = sorted(set(groups) - {""})
    if groups:
        expression += f" && !request.userInfo.groups.exists(g, g in {_literal(groups)})"
    return expression


def _validations(guarded: Guarded, env: str, blueprint: str | None) -> list[dict[str, str]]:
    key, resource = guarded.key, guarded.resource
    target = f"variables.target != {_literal(f'{resource.plural}/{key.name}')}"
    namespace = f"request.namespace != {_literal(key.namespace)}" if key.namespace else "false"
    skip = f"{target} || {namespace}"
    where = f"change spec.resources[{guarded.index}] of the {env} instead"
    if blueprint:
        where = f"change the Blueprint {blueprint}, or spec.values of the {env}, instead"
    out = [
        {
            "expression": f"{skip} || request.operation != 'DELETE'",
            "message": f"{key} is managed by the {env}: remove it from the blueprint instead",
        }
    ]
    allowed = {path: rule for rule in guarded.rules for path in rule.paths}
    is_secret = key.kind == "Secret" and not key.group
    for _, expected, pointer in guarded.expectation.fields():
        if any(pointer == a or pointer.startswith(a + "/") for a in allowed):
            continue  # judged by its bounds below
        accessor = _accessor(pointer)
        if accessor is None:
            continue
        # A Secret's value stays out of the policy: it may only keep the value it had.
        wanted = f"oldObject{accessor}" if is_secret else f"optional.of({_literal(expected)})"
        message = f"{pointer} of {key} is set by the {env}: {where}"
        out.append(
            {"expression": f"{update(skip)} || object{accessor} == {wanted}", "message": message}
        )
        if pointer == "/spec/replicas" and (resource.group, key.kind) in SCALABLE:
            scale = f"{skip} || request.operation == 'DELETE' || variables.sub != 'scale'"
            out.append(
                {"expression": f"{scale} || object{accessor} == {wanted}", "message": message}
            )
    out.extend(_lists(guarded, update(skip), where, env, allowed))
    out.extend(_bounds(guarded, skip, where))
    return out


def _lists(
    guarded: Guarded, guard: str, where: str, env: str, allowed: dict[str, AllowedChange]
) -> list[dict[str, str]]:
    """Lists driftguard set hold only its items: an added container or port is refused too."""
    out = []
    expectation = guarded.expectation
    for path, items in sorted(expectation.lists.items()):
        pointer = _pointer_of(expectation, path)
        if pointer is None or any(pointer.startswith(a) for a in allowed):
            continue
        accessor = _accessor(pointer)
        known = [json.loads(item[2:]) for item in sorted(items)]
        if accessor is None or not known:
            continue
        if next(iter(items)).startswith("v:"):
            member = f"x in {_literal(known)}"
        else:
            member = " || ".join(
                "("
                + " && ".join(f"x.?{k} == optional.of({_literal(v)})" for k, v in o.items())
                + ")"
                for o in known
            )
        out.append(
            {
                "expression": f"{guard} || object{accessor}.orValue([]).all(x, {member})",
                "message": f"{pointer} of {guarded.key} holds only the blueprint's items: {where}",
            }
        )
    return out


def _pointer_of(expectation: diff.Expectation, path: tuple[str, ...]) -> str | None:
    """The JSON pointer of a list driftguard set: the leading tokens of a field inside it."""
    for leaf, _, pointer in expectation.fields():
        if leaf[: len(path)] == path:
            return "/" + "/".join(pointer.split("/")[1 : len(path) + 1])
    return None


def update(skip: str, sub: str = "''") -> str:
    """The guard of a validation about one object's writes (not its deletion) at `sub`."""
    return f"{skip} || request.operation == 'DELETE' || variables.sub != {sub}"


def _bounds(guarded: Guarded, skip: str, where: str) -> list[dict[str, str]]:
    """A value within the bounds of any rule naming its path may be written (a
    DriftException's widen the blueprint's); a rule without bounds lets any through."""
    out = []
    is_scalable = (guarded.resource.group, guarded.key.kind) in SCALABLE
    by_path: dict[str, list[AllowedChange]] = {}
    for rule in guarded.rules:
        for path in rule.paths:
            by_path.setdefault(path, []).append(rule)
    for pointer, rules in sorted(by_path.items()):
        accessor = _accessor(pointer)
        if accessor is None or any(r.minimum is None and r.maximum is None for r in rules):
            continue
        ranges = []
        for rule in rules:
            limits = []
            if rule.minimum is not None:
                limits.append(f"v >= {rule.minimum!r}")
            if rule.maximum is not None:
                limits.append(f"v <= {rule.maximum!r}")
            ranges.append(" && ".join(limits))
        within = " || ".join(f"({r})" for r in ranges) if len(ranges) > 1 else ranges[0]
        bounds = " or ".join(r.bounds for r in rules)
        subresources = ["''", "'scale'"] if pointer == "/spec/replicas" and is_scalable else ["''"]
        for sub in subresources:
            present = f"object{accessor}"
            check = f"!{present}.hasValue() || [double({present}.value())].all(v, {within})"
            message = f"{pointer} of {guarded.key} must stay {bounds}: {where}"
            out.append({"expression": f"{update(skip, sub)} || {check}", "message": message})
    return out


def _accessor(pointer: str) -> str | None:
    """`/data/a.b` -> `.?data[?'a.b']`: an optional chain that is empty where a field is absent.

    List indices come from the stored object's pointer; map keys that are not CEL
    identifiers are indexed. None for a path CEL cannot name.
    """
    parts = []
    for raw in pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if token.isdigit() and (token == "0" or not token.startswith("0")):
            parts.append(f"[?{int(token)}]")
        elif _IDENTIFIER.match(token) and token not in _RESERVED:
            parts.append(f".?{token}")
        else:
            parts.append(f"[?{_literal(token)}]")
    return "".join(parts) if parts else None


def _literal(value: Any) -> str:
    """A JSON value as a CEL literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value)  # CEL accepts JSON's double-quoted string escapes
    if isinstance(value, list):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_literal(str(k))}: {_literal(v)}" for k, v in value.items())
        return "{" + items + "}"
    raise TypeError(f"no CEL literal for {type(value).__name__}")


def _token(action: str, validations: list[dict[str, str]], rules: list[dict[str, Any]]) -> str:
    """Names one version of a policy: its action, what it checks and what it matches."""
    text = json.dumps([action, validations, rules], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def probe_message(owner_namespace: str, owner_name: str, token: str = "") -> str:
    """The probe validation's message; without `token`, the part every version shares."""
    text = f"driftguard prevention probe of the Environment {owner_namespace}/{owner_name}:"
    return f"{text} policy {token}" if token else text


@dataclass(frozen=True, slots=True)
class Enforced:
    """What the API server enforces of one Environment's prevention.

    `action` Off means no version of its policy is enforced; otherwise `token` names the
    version (the policy's TOKEN_ANNOTATION).
    """

    action: Prevention
    token: str = ""

    @classmethod
    def of(cls, docs: Iterable[dict[str, Any]]) -> Enforced:
        """What the policy objects `docs` (the ones just written) make the API server enforce."""
        by_kind = {doc["kind"]: doc for doc in docs}
        policy, binding = by_kind.get(POLICY), by_kind.get(BINDING)
        if policy is None or binding is None:
            return cls(Prevention.OFF)
        deny = "Deny" in binding["spec"]["validationActions"]
        token = policy["metadata"].get("annotations", {}).get(TOKEN_ANNOTATION, "")
        return cls(Prevention.DENY if deny else Prevention.WARN, token)


def probe_patch(token: str) -> dict[str, Any]:
    """The merge patch of the probe: the marker, naming the version it looks for."""
    return {"metadata": {"annotations": {PROBE_ANNOTATION: token or "off"}}}


def answers(
    wanted: Enforced,
    *,
    owner_namespace: str,
    owner_name: str,
    refusal: str | None,
    warnings: Sequence[str],
) -> bool:
    """Whether a probe's answer (`refusal`: the message it was refused with, else None;
    `warnings`: the response's warnings) shows the API server enforcing `wanted` now.

    Deny: refused by that version. Warn: let through, warned by that version. Off: let
    through, and no version of this Environment's policy spoke.
    """
    mark = probe_message(owner_namespace, owner_name)
    exact = probe_message(owner_namespace, owner_name, wanted.token)
    if wanted.action is Prevention.DENY:
        return refusal is not None and exact in refusal
    if refusal is not None:
        return False
    if wanted.action is Prevention.WARN:
        return any(exact in warning for warning in warnings)
    return not any(mark in warning for warning in warnings)
