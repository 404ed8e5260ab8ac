"""Generates the Environment CustomResourceDefinition from the pydantic models.

pydantic emits JSON Schema ($ref, anyOf-with-null, titles); Kubernetes wants a
structural OpenAPI v3 schema. This module translates one into the other and adds
what only a CRD has: printer columns and the status subresource. The Environment's and the
Blueprint's CEL rules leave their schemas for ValidatingAdmissionPolicies (`crdpolicy`: the API
server would evaluate them at every status write). `python -m driftguard.core.crd` prints the
YAML that lives in crds/.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from driftguard.core import crdpolicy, exception, model
from driftguard.core.blueprint import BLUEPRINT_KIND, BLUEPRINT_PLURAL, BlueprintSpec
from driftguard.core.status import BlueprintStatus, EnvironmentStatus

_DROP = {"title", "default_factory"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _resolve({**target, **extra}, defs)
    options = node.get("anyOf")
    if options is not None:
        # Optional[X] arrives as anyOf [X, null]: a structural schema says X and
        # lets the field be absent instead.
        concrete = [option for option in options if option.get("type") != "null"]
        if len(concrete) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            merged = {**concrete[0], **rest}
            if merged.get("default", 0) is None:
                del merged["default"]
            return _resolve(merged, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _resolve(prop, defs) for name, prop in value.items()}
        else:
            out[key] = _resolve(value, defs)
    if out.get("type") == "integer" and "format" not in out:
        out["format"] = "int64"
    if out.get("additionalProperties") in (False, True):
        # False: pydantic's extra="forbid", which a structural schema does by default;
        # True: any JSON (a schema, values), which a CRD says by preserving unknown fields.
        del out["additionalProperties"]
    if (
        out.get("type") == "object"
        and "properties" not in out
        and "additionalProperties" not in out
    ):
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def openapi_schema(model_class: type[Any]) -> dict[str, Any]:
    """The structural schema of a pydantic model, with $refs inlined."""
    schema = model_class.model_json_schema(by_alias=True, mode="validation")
    defs = schema.pop("$defs", {})
    resolved: dict[str, Any] = _resolve(schema, defs)
    return resolved


def _status_schema(status_model: type[Any]) -> dict[str, Any]:
    schema = openapi_schema(status_model)
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def _environment_status_schema() -> dict[str, Any]:
    schema = _status_schema(EnvironmentStatus)
    # kopf keeps the progress of its deletion handler here rather than in
    # annotations, so GitOps tools see no change made by the operator.
    schema["properties"]["kopf"] = {
        "type": "object",
        "description": "Progress of the deletion handler, kept by kopf.",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    return schema


def _columns() -> list[dict[str, Any]]:
    return [
        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
        {
            "name": "InSync",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="InSync")].status',
        },
        {"name": "Drifted", "type": "integer", "jsonPath": ".status.summary.drifted"},
        {"name": "Revision", "type": "integer", "jsonPath": ".status.revision"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Blueprint", "type": "string", "jsonPath": ".spec.blueprintRef.name"},
        # What the API server enforces (confirmed), not what the spec asks.
        {
            "name": "Prevention",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Prevention")].reason',
        },
        {
            "name": "Suspended",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Suspended")].message',
        },
        # priority 1: only `kubectl get env -o wide` shows these.
        {"name": "Target", "type": "string", "jsonPath": ".spec.targetNamespace", "priority": 1},
        {
            "name": "Managed",
            "type": "integer",
            "jsonPath": ".status.summary.managed",
            "priority": 1,
        },
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            "priority": 1,
        },
        {"name": "Last Drift", "type": "date", "jsonPath": ".status.lastDrift.time", "priority": 1},
        {
            "name": "Changed By",
            "type": "string",
            "jsonPath": ".status.lastDrift.changedBy",
            "priority": 1,
        },
    ]


def _definition(
    *,
    kind: str,
    plural: str,
    short_name: str,
    scope: str,
    columns: list[dict[str, Any]],
    description: str,
    spec: dict[str, Any],
    status: dict[str, Any],
) -> dict[str, Any]:
    """A CustomResourceDefinition of driftguard.io: one served version with a status subresource."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{model.GROUP}"},
        "spec": {
            "group": model.GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short_name],
                "categories": ["driftguard"],
            },
            "scope": scope,
            "versions": [
                {
                    "name": model.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                            "required": ["spec"],
                        }
                    },
                }
            ],
        },
    }


def _environment_spec() -> dict[str, Any]:
    """The Environment's spec schema with its CEL rules, as the models write them."""
    spec_schema = openapi_schema(model.EnvironmentSpec)
    spec_schema["description"] = "The blueprint of an environment and how to keep it."
    spec_schema[crdpolicy.RULES_KEY] = [
        {
            "rule": "!has(self.blueprintRef) || !has(self.resources) || size(self.resources) == 0",
            "message": "give either resources or blueprintRef, not both",
        },
        {
            "rule": "!has(self.values) || has(self.blueprintRef)",
            "message": "values are the parameters of a Blueprint: set blueprintRef too",
        },
    ]
    return spec_schema


def _blueprint_spec() -> dict[str, Any]:
    spec_schema = openapi_schema(BlueprintSpec)
    spec_schema["description"] = (
        "Object templates shared by many Environments and the values that differ between them."
    )
    return spec_schema


def _without_rules(spec_schema: dict[str, Any], rules_in_schema: bool) -> dict[str, Any]:
    return spec_schema if rules_in_schema else crdpolicy.extract(spec_schema)[0]


def _spec_rules(spec_schema: dict[str, Any]) -> list[crdpolicy.Rule]:
    return crdpolicy.extract({"properties": {"spec": spec_schema}})[1]


def definition(*, rules_in_schema: bool = False) -> dict[str, Any]:
    """The Environment CustomResourceDefinition.

    `rules_in_schema`: the CEL rules inside the schema, as before `crdpolicy` (the benchmark
    measures that design beside this one); crds/ ships them as a policy instead.
    """
    return _definition(
        kind=model.KIND,
        plural=model.PLURAL,
        short_name="env",
        scope="Namespaced",
        columns=_columns(),
        description="Environment is the single source of truth for a set of Kubernetes "
        "objects: driftguard applies them and reverts or flags every manual change.",
        spec=_without_rules(_environment_spec(), rules_in_schema),
        status=_environment_status_schema(),
    )


def policies() -> list[dict[str, Any]]:
    """The admission policies and bindings that hold the Environment's and Blueprint's rules."""
    return [
        *crdpolicy.policy(model.PLURAL, _spec_rules(_environment_spec())),
        *crdpolicy.policy(BLUEPRINT_PLURAL, _spec_rules(_blueprint_spec())),
    ]


def blueprint_definition(*, rules_in_schema: bool = False) -> dict[str, Any]:
    """The Blueprint CustomResourceDefinition: cluster-scoped templates with typed values."""
    ready = '.status.conditions[?(@.type=="Ready")].status'
    return _definition(
        kind=BLUEPRINT_KIND,
        plural=BLUEPRINT_PLURAL,
        short_name="bp",
        scope="Cluster",
        columns=[
            {"name": "Revision", "type": "integer", "jsonPath": ".status.revision"},
            {"name": "Ready", "type": "string", "jsonPath": ready},
            {"name": "Environments", "type": "integer", "jsonPath": ".status.environments"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        description="Blueprint holds the objects of an environment as templates; each "
        "Environment that names it in spec.blueprintRef gets them with its own spec.values.",
        spec=_without_rules(_blueprint_spec(), rules_in_schema),
        status=_status_schema(BlueprintStatus),
    )


def exception_definition() -> dict[str, Any]:
    """The DriftException CustomResourceDefinition: drift tolerated for a while, with a reason."""
    spec_schema = openapi_schema(exception.DriftExceptionSpec)
    status_schema = openapi_schema(exception.DriftExceptionStatus)
    status_schema["properties"]["conditions"]["items"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    return _definition(
        kind=exception.KIND,
        plural=exception.PLURAL,
        short_name=exception.SHORT_NAME,
        scope="Namespaced",
        columns=[
            {"name": "Environment", "type": "string", "jsonPath": ".spec.environmentRef.name"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Expires", "type": "string", "jsonPath": ".status.expiresAt"},
            {"name": "Created By", "type": "string", "jsonPath": ".status.createdBy"},
            {"name": "Reason", "type": "string", "jsonPath": ".spec.reason"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        description="DriftException lets chosen drift of one Environment stand until it ends "
        "(expiresAt or duration, capped by the operator), for a stated reason; the drift is "
        "reverted by itself then.",
        spec=spec_schema,
        status=status_schema,
    )


DEFINITIONS = {
    "environments": definition,
    "blueprints": blueprint_definition,
    "driftexceptions": exception_definition,
}


def render(which: str = "environments") -> str:
    """The YAML of crds/<which>.driftguard.io.yaml; `validation`: the admission policies."""
    header = "# Generated by `make crds` from operator/driftguard/model.py. Do not edit.\n"
    if which == "validation":
        return header + yaml.safe_dump_all(
            policies(), sort_keys=False, width=100, explicit_start=True
        )
    return header + yaml.safe_dump(DEFINITIONS[which](), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render(*sys.argv[1:2]))
