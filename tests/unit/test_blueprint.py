"""blueprint, audit, history names, changes.values_of: the pure parts of history and Blueprints."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftguard.core import blueprint, changes, model
from driftguard.core.blueprint import parse_blueprint
from driftguard.core.changes import Change, Outcome
from driftguard.core.model import InvalidSpecError, ObjectKey
from driftguard.kube import audit, history

IMAGE = "/spec/template/spec/containers/0/image"


def spec(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "values": {
            "type": "object",
            "additionalProperties": False,
            "required": ["tier"],
            "properties": {
                "image": {"type": "string", "default": "mysql:5.7"},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 5, "default": 1},
                "tier": {"type": "string", "enum": ["dev", "prod"]},
            },
        },
        "resources": [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "db"},
                "spec": {
                    "replicas": 9,
                    "template": {"spec": {"containers": [{"name": "db", "image": "x"}]}},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "settings"},
                "data": {"SHARED": "yes"},
            },
        ],
        "parameters": [
            {"name": "image", "targets": [{"kind": "Deployment", "name": "db", "path": IMAGE}]},
            {
                "name": "replicas",
                "targets": [{"kind": "Deployment", "name": "db", "path": "/spec/replicas"}],
            },
            {
                "name": "tier",
                "targets": [{"kind": "ConfigMap", "name": "settings", "path": "/data/TIER"}],
            },
        ],
    }
    raw.update(overrides)
    return raw


def resolve(values: dict[str, Any] | None, **overrides: Any) -> list[dict[str, Any]]:
    return blueprint.resolve(parse_blueprint(spec(**overrides)), values)


def test_values_land_at_their_pointers_and_defaults_fill_the_rest() -> None:
    """A given value replaces its field; an unset one takes the schema's default."""
    db, settings = resolve({"tier": "prod", "image": "mysql:8.0"})
    assert db["spec"]["template"]["spec"]["containers"][0]["image"] == "mysql:8.0"
    assert db["spec"]["replicas"] == 1
    assert settings["data"] == {"SHARED": "yes", "TIER": "prod"}


def test_resolving_never_changes_the_blueprint() -> None:
    """Every Environment gets its own copy; the templates stay as written."""
    parsed = parse_blueprint(spec())
    before = copy.deepcopy(parsed.resources)
    blueprint.resolve(parsed, {"tier": "dev"})
    assert parsed.resources == before


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "'tier' is a required property"),
        ({"tier": "qa"}, "values.tier: 'qa' is not one of"),
        ({"tier": "dev", "replicas": 0}, "values.replicas: 0 is less than the minimum of 1"),
        ({"tier": "dev", "replicas": "2"}, "values.replicas: '2' is not of type 'integer'"),
        ({"tier": "dev", "colour": "red"}, "'colour' was unexpected"),
    ],
)
def test_values_outside_the_schema_are_refused_naming_the_value(
    values: dict[str, Any], message: str
) -> None:
    """spec.values is checked against the Blueprint's JSON Schema before anything is made."""
    with pytest.raises(InvalidSpecError, match=r"spec\.values") as caught:
        resolve(values)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"values": {"type": "object", "properties": {"x": {"type": "nonsense"}}}},
            "values schema",
        ),
        (
            {
                "parameters": [
                    {"name": "ghost", "targets": [{"kind": "ConfigMap", "name": "s", "path": "/a"}]}
                ]
            },
            "ghost is not a property of the values schema",
        ),
        (
            {
                "parameters": [
                    {
                        "name": "image",
                        "targets": [{"kind": "Deployment", "name": "web", "path": IMAGE}],
                    }
                ]
            },
            "target Deployment/web matches no object",
        ),
        (
            {
                "parameters": [
                    {
                        "name": "image",
                        "targets": [
                            {"kind": "Deployment", "name": "db", "path": "/spec/nowhere/image"}
                        ],
                    }
                ]
            },
            "/spec/nowhere/image: the template has no such field",
        ),
        (
            {
                "parameters": [
                    {
                        "name": "image",
                        "targets": [
                            {
                                "kind": "Deployment",
                                "name": "db",
                                "path": "/spec/template/spec/containers/3/image",
                            }
                        ],
                    }
                ]
            },
            "no such field",
        ),
    ],
)
def test_a_bad_blueprint_is_refused_whatever_the_values(
    change: dict[str, Any], message: str
) -> None:
    """A schema that is not one, a parameter or target that points nowhere: refused up front."""
    with pytest.raises(InvalidSpecError) as caught:
        blueprint.check(parse_blueprint(spec(**change)))
    assert message in str(caught.value)


def test_defaults_that_fail_their_own_schema_make_the_blueprint_invalid() -> None:
    """A default outside its own bounds is the Blueprint's fault, not an Environment's."""
    raw = spec()
    raw["values"]["properties"]["replicas"]["default"] = 7
    with pytest.raises(InvalidSpecError, match="defaults"):
        blueprint.check(parse_blueprint(raw))


@given(
    image=st.text(min_size=1, max_size=40),
    replicas=st.integers(min_value=1, max_value=5),
    tier=st.sampled_from(["dev", "prod"]),
)
def test_a_value_changes_its_fields_and_nothing_else(image: str, replicas: int, tier: str) -> None:
    """Property: the made objects equal the templates except at the parameters' pointers."""
    db, settings = resolve({"image": image, "replicas": replicas, "tier": tier})
    template_db, template_settings = spec()["resources"]
    template_db["spec"]["replicas"] = replicas
    template_db["spec"]["template"]["spec"]["containers"][0]["image"] = image
    template_settings["data"]["TIER"] = tier
    assert (db, settings) == (template_db, template_settings)


def test_an_environment_gives_resources_or_a_blueprint_not_both() -> None:
    """blueprintRef and resources together, or values without a Blueprint: InvalidSpec."""
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}
    with pytest.raises(InvalidSpecError, match="either resources or blueprintRef"):
        model.parse_spec({"blueprintRef": {"name": "shop"}, "resources": [cm]})
    with pytest.raises(InvalidSpecError, match="set blueprintRef too"):
        model.parse_spec({"values": {"a": 1}})
    parsed = model.parse_spec({"blueprintRef": {"name": "shop", "revision": 2}})
    assert parsed.revision_history_limit == 10


KEY = ObjectKey("", "v1", "ConfigMap", "staging", "settings")
SECRET = ObjectKey("", "v1", "Secret", "staging", "password")


def test_values_of_summarises_both_sides_and_never_a_secret() -> None:
    """The blueprint's and the live value per path; long ones cut; a Secret's redacted."""
    wanted = {"data": {"DB": "5.7", "BIG": "x" * 500}}
    live = {"data": {"DB": "5.5", "BIG": "y" * 500}}
    (db, big) = changes.values_of(KEY, wanted, live, ["/data/DB", "/data/BIG"])
    assert db == ("/data/DB", "5.7", "5.5")
    assert len(big[1]) == changes.VALUE_LIMIT
    hidden = changes.values_of(
        SECRET, {"data": {"p": "czM="}}, {"data": {"p": "eA=="}}, ["/data/p"]
    )
    assert hidden == (("/data/p", "<redacted>", "<redacted>"),)
    assert changes.values_of(KEY, wanted, {"data": {}}, ["/data/DB"]) == (
        ("/data/DB", "5.7", "<absent>"),
    )


def test_audit_entries_say_what_was_done_and_paused_flags_say_paused() -> None:
    """One JSON-ready record per incident; a flag while suspended is `paused`."""
    change = Change(
        KEY, Outcome.FLAGGED, ("/data/DB",), "kubectl-edit", values=(("/data/DB", "5.7", "5.5"),)
    )
    entry = audit.entry(change, at="2026-11-26T10:00:00Z", paused=True)
    assert entry["action"] == "paused"
    assert entry["changedBy"] == "kubectl-edit"
    assert entry["values"] == [{"path": "/data/DB", "blueprint": "5.7", "live": "5.5"}]
    assert audit.entry(change, at="t", paused=False)["action"] == "flagged"
    assert json.loads(json.dumps(entry)) == entry


def test_the_trail_keeps_the_newest_within_its_bounds_and_skips_damage() -> None:
    """At most LIMIT incidents, newest kept; a line that is not JSON is skipped, not fatal."""
    entries = [{"n": i} for i in range(audit.LIMIT + 50)]
    kept = audit.bounded(entries)
    assert len(kept) == audit.LIMIT
    assert kept[-1] == {"n": audit.LIMIT + 49}
    assert audit.parse('{"n": 1}\nnot json\n{"n": 2}\n') == [{"n": 1}, {"n": 2}]


def test_record_names_fit_an_object_name() -> None:
    """`<env>-r<N>`, or a hashed prefix when the Environment's name is long."""
    assert history.record_name("staging", 3) == "staging-r3"
    long = history.record_name("a" * 253, 12)
    assert len(long) <= 253
    assert long.endswith("-r12")
    assert audit.trail_name("staging") == "staging-drift-audit"
    assert len(audit.trail_name("b" * 253)) <= 253


def test_spec_managers_are_those_owning_the_spec_not_the_status() -> None:
    """The GitOps tool behind a spec is the manager of f:spec; status writers do not count."""
    body = {
        "metadata": {
            "managedFields": [
                {"manager": "argocd-controller", "operation": "Apply", "fieldsV1": {"f:spec": {}}},
                {
                    "manager": "driftguard",
                    "operation": "Update",
                    "subresource": "status",
                    "fieldsV1": {"f:status": {}},
                },
                {"manager": "kubectl-label", "fieldsV1": {"f:metadata": {}}},
            ]
        }
    }
    assert history.spec_managers(body) == ["argocd-controller"]
