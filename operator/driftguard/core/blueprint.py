"""A Blueprint made into one Environment's objects: typed values laid over templates.

A Blueprint's templates are complete manifests holding the default content. Each
parameter names a top-level property of the values JSON Schema and the fields it
sets, as RFC 6901 pointers; the value replaces the whole field through an RFC 6902
patch. A value can therefore only land where the Blueprint says, with the type the
schema says: unlike text templating of YAML, no value can add a field, an object or
a document. Pure: no I/O, no clock.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer
import jsonschema
from pydantic import BaseModel, Field, ValidationError, field_validator

from driftguard.core.model import (
    EMBEDDED_OBJECTS,
    FROZEN,
    EnvironmentSpec,
    InvalidSpecError,
    Pointer,
    explain,
)

BLUEPRINT_KIND = "Blueprint"
BLUEPRINT_PLURAL = "blueprints"
_PARAMETER = r"^[A-Za-z_][A-Za-z0-9_]*$"


class ParameterTarget(BaseModel):
    """One place a value lands: a field of one object of the Blueprint."""

    model_config = FROZEN

    api_version: str | None = Field(
        None, alias="apiVersion", description="The object's apiVersion, when a kind is ambiguous."
    )
    kind: str = Field(description="The object's kind, e.g. Deployment.")
    name: str = Field(description="The object's metadata.name in resources.")
    path: Pointer = Field(
        description=(
            "RFC 6901 JSON pointer of the field the value replaces, e.g. "
            "/spec/template/spec/containers/0/image; its parent must exist in the template."
        )
    )


class Parameter(BaseModel):
    """A top-level value of spec.values and the fields it sets."""

    model_config = FROZEN

    name: str = Field(
        max_length=63, pattern=_PARAMETER, description="A property of the values schema."
    )
    targets: list[ParameterTarget] = Field(
        min_length=1, max_length=64, description="Every field this value sets."
    )


class BlueprintSpec(BaseModel):
    """Object templates shared by many Environments, and the values that differ between them."""

    model_config = FROZEN

    description: str | None = Field(
        None, max_length=1024, description="What this Blueprint is, for people."
    )
    values: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        description=(
            "JSON Schema (draft 2020-12) of an Environment's spec.values: types, bounds, "
            "enums, required ones and defaults."
        ),
    )
    resources: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=10000,
        description="The object templates: complete manifests, holding the default content.",
        json_schema_extra=EMBEDDED_OBJECTS,
    )
    parameters: list[Parameter] = Field(
        default_factory=list,
        max_length=256,
        description="Where each value goes: a JSON-pointer overlay, never text templating.",
    )

    @field_validator("resources", "values")
    @classmethod
    def _not_too_deep(cls, value: Any) -> Any:
        return EnvironmentSpec._not_too_deep(value)

    @field_validator("resources")
    @classmethod
    def _each_template_is_identified(cls, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return EnvironmentSpec._each_resource_is_identified(resources)


def parse_blueprint(raw: dict[str, Any]) -> BlueprintSpec:
    """Validates a raw Blueprint spec; errors name the path and what is allowed."""
    try:
        return BlueprintSpec.model_validate(raw)
    except ValidationError as exc:
        raise InvalidSpecError("; ".join(explain(error) for error in exc.errors())) from exc


_ERRORS_SHOWN = 5


def check(spec: BlueprintSpec) -> None:
    """Refuses a Blueprint that no Environment could use, whatever its values."""
    try:
        jsonschema.Draft202012Validator.check_schema(spec.values)
    except jsonschema.SchemaError as exc:
        raise InvalidSpecError(f"values schema: {exc.message}") from exc
    properties = spec.values.get("properties")
    names = [parameter.name for parameter in spec.parameters]
    for name in sorted({n for n in names if names.count(n) > 1}):
        raise InvalidSpecError(f"parameters: {name} is listed twice")
    for parameter in spec.parameters:
        if isinstance(properties, dict) and parameter.name not in properties:
            raise InvalidSpecError(
                f"parameters: {parameter.name} is not a property of the values schema "
                f"(it has: {', '.join(sorted(properties)) or 'none'})"
            )
        for target in parameter.targets:
            template = _template(spec, target)
            _operation(template, target)  # its parent field must exist
    # Each default must fit its own property; `required` is the Environments' to meet.
    relaxed = {key: value for key, value in spec.values.items() if key != "required"}
    _validate(relaxed, defaults(spec.values, {}), label="the defaults of the values schema")


def resolve(spec: BlueprintSpec, values: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The Environment's objects: the templates with its values (or the defaults) laid over."""
    check(spec)
    given = defaults(spec.values, values or {})
    _validate(spec.values, given, label="spec.values")
    resources = copy.deepcopy(spec.resources)
    by_object = {_identity(manifest): manifest for manifest in resources}
    for parameter in spec.parameters:
        if parameter.name not in given:
            continue
        for target in parameter.targets:
            manifest = by_object[_identity(_template(spec, target))]
            operation = {**_operation(manifest, target), "value": given[parameter.name]}
            patched = jsonpatch.apply_patch(manifest, [operation], in_place=True)
            by_object[_identity(patched)] = patched
    return [by_object[_identity(manifest)] for manifest in resources]


def defaults(schema: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The values with the schema's top-level defaults filled in where one is unset."""
    filled = dict(values)
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, prop in properties.items():
            if name not in filled and isinstance(prop, dict) and "default" in prop:
                filled[name] = copy.deepcopy(prop["default"])
    return filled


def _validate(schema: dict[str, Any], values: dict[str, Any], *, label: str) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(values), key=lambda error: list(error.absolute_path))
    if errors:
        shown = "; ".join(_describe(error) for error in errors[:_ERRORS_SHOWN])
        more = f" (and {len(errors) - _ERRORS_SHOWN} more)" if len(errors) > _ERRORS_SHOWN else ""
        raise InvalidSpecError(f"{label}: {shown}{more}")


def _describe(error: jsonschema.ValidationError) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"values{where}: {error.message}"


def _identity(manifest: dict[str, Any]) -> tuple[str, str, str]:
    meta = manifest.get("metadata") or {}
    return str(manifest.get("apiVersion")), str(manifest.get("kind")), str(meta.get("name"))


def _template(spec: BlueprintSpec, target: ParameterTarget) -> dict[str, Any]:
    found = [
        manifest
        for manifest in spec.resources
        if manifest.get("kind") == target.kind
        and (manifest.get("metadata") or {}).get("name") == target.name
        and target.api_version in (None, manifest.get("apiVersion"))
    ]
    if len(found) != 1:
        what = "no object" if not found else f"{len(found)} objects (set apiVersion)"
        raise InvalidSpecError(
            f"parameters: target {target.kind}/{target.name} matches {what} in resources"
        )
    return found[0]


def _operation(manifest: dict[str, Any], target: ParameterTarget) -> dict[str, str]:
    """`add` sets a member of an object (new or not); an array item must exist: `replace`."""
    parent_path, _, last = target.path.rpartition("/")
    try:
        parent = jsonpointer.resolve_pointer(manifest, parent_path)
    except jsonpointer.JsonPointerException:
        parent = None
    where = f"{target.kind}/{target.name} {target.path}"
    if isinstance(parent, dict):
        return {"op": "add", "path": target.path}
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return {"op": "replace", "path": target.path}
    raise InvalidSpecError(
        f"parameters: {where}: the template has no such field to set (its parent must exist)"
    )
