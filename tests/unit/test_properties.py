"""Properties of the pure core over wide inputs: rendering, drift against the server's answer,
and allowedChanges bounds. test_diff, test_plan and test_render hold the table-driven cases and
the properties of an object compared with itself; these add what the server adds."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from driftguard.core import diff, model, plan, render
from driftguard.core.model import AllowedChange

OWNER = render.Owner(name="shop", namespace="platform")
NAMES = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
KEYS = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_.-]{0,10}", fullmatch=True)
# U+FFFD stands for bytes lost before the API server: render refuses it (test_render).
TEXT = st.text(st.characters(exclude_characters="\ufffd"), max_size=8)
DATA = st.dictionaries(KEYS, TEXT, max_size=4)
LABELS = st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), NAMES, max_size=3)


def _configmap(name: str, data: dict[str, str], labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **({"labels": labels} if labels else {})}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


BLUEPRINTS = st.lists(
    st.builds(_configmap, NAMES, DATA, LABELS),
    max_size=8,
    unique_by=lambda m: m["metadata"]["name"],
)


@given(resources=BLUEPRINTS, target=st.one_of(st.none(), NAMES))
def test_rendering_labels_places_and_keeps_every_object(
    resources: list[dict[str, Any]], target: str | None
) -> None:
    """Every object is rendered once, in the target namespace, with the contract's labels and
    its own, its data untouched, and the spec left as it was."""
    spec = model.parse_spec({"resources": resources, "targetNamespace": target})
    before = copy.deepcopy(spec.resources)

    rendered = render.manifests(spec, OWNER, is_namespaced=lambda _a, _k: True)

    assert len(rendered) == len(resources)
    assert spec.resources == before
    by_name = {key.name: manifest for key, manifest in rendered.items()}
    for source in resources:
        manifest = by_name[source["metadata"]["name"]]
        assert manifest["metadata"]["namespace"] == (target or OWNER.namespace)
        assert manifest["metadata"]["labels"] == {
            **source["metadata"].get("labels", {}),
            **OWNER.labels,
        }
        assert manifest["data"] == source["data"]


def _fields(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        return {}
    return {f"f:{key}": _fields(value) for key, value in doc.items()}


def _answer(manifest: dict[str, Any]) -> dict[str, Any]:
    """The server's answer to our apply: the manifest, owned by driftguard, with metadata."""
    stored = copy.deepcopy(manifest)
    entry = {"manager": model.FIELD_MANAGER, "operation": "Apply", "fieldsV1": _fields(manifest)}
    stored["metadata"] |= {"uid": "u-1", "resourceVersion": "7", "managedFields": [entry]}
    return stored


SCALARS = st.one_of(st.integers(), st.booleans(), st.text(max_size=5))
EXTRAS = st.dictionaries(KEYS, SCALARS, min_size=1, max_size=3)


@given(resource=st.builds(_configmap, NAMES, DATA, LABELS), extra=EXTRAS, manager=NAMES)
def test_fields_the_server_or_others_add_are_never_drift(
    resource: dict[str, Any], extra: dict[str, Any], manager: str
) -> None:
    """The server's answer plus what the server and other managers add (status, annotations,
    a newer resourceVersion, their own fields, their own managedFields entry) is no drift."""
    spec = model.parse_spec({"resources": [resource]})
    (manifest,) = render.manifests(spec, OWNER, is_namespaced=lambda _a, _k: True).values()
    answer = _answer(manifest)
    live = copy.deepcopy(answer)
    live["metadata"]["resourceVersion"] = "8"
    live["metadata"]["creationTimestamp"] = "2026-11-26T10:00:00Z"
    live["metadata"]["annotations"] = {f"example.com/{k.lower()}": str(v) for k, v in extra.items()}
    live["status"] = extra
    theirs = {"f:metadata": {"f:annotations": {}}, "f:status": _fields(extra)}
    live["metadata"]["managedFields"].append(
        {"manager": f"x-{manager}", "operation": "Update", "fieldsV1": theirs}
    )

    assert not diff.compute(diff.expect(answer), live).is_drifted


@given(
    resource=st.builds(_configmap, NAMES, DATA, LABELS),
    new=st.text(max_size=5),
    pick=st.integers(0),
)
def test_a_changed_owned_leaf_is_always_drift(
    resource: dict[str, Any], new: str, pick: int
) -> None:
    """Any data value or label driftguard set, changed to anything else, is drift at its path."""
    spec = model.parse_spec({"resources": [resource]})
    (manifest,) = render.manifests(spec, OWNER, is_namespaced=lambda _a, _k: True).values()
    answer = _answer(manifest)
    owned = [("data", k) for k in manifest["data"]] + [
        ("labels", k) for k in manifest["metadata"]["labels"]
    ]
    where, key = owned[pick % len(owned)]
    live = copy.deepcopy(answer)
    node = live["data"] if where == "data" else live["metadata"]["labels"]
    if node[key] == new:
        new += "-changed"
    node[key] = new

    drift = diff.compute(diff.expect(answer), live)

    assert drift.is_drifted
    escaped = key.replace("~", "~0").replace("/", "~1")
    expected = f"/data/{escaped}" if where == "data" else f"/metadata/labels/{escaped}"
    assert [change.pointer for change in drift.changes] == [expected]


BOUNDS = st.tuples(st.integers(-1000, 1000), st.integers(0, 1000))


@given(bounds=BOUNDS, blueprint=st.integers(-1000, 1000), offset=st.integers(-2000, 2000))
def test_allowed_change_tolerates_inside_the_bounds_and_breaches_outside(
    bounds: tuple[int, int], blueprint: int, offset: int
) -> None:
    """A new value of an allowed path is tolerated exactly when it lies within [min, max]."""
    low, span = bounds
    rule = AllowedChange(
        kind="Deployment", paths=["/spec/replicas"], minimum=low, maximum=low + span
    )
    desired = {"spec": {"replicas": blueprint}}
    actual = blueprint + offset if offset else blueprint + 1
    live = {"spec": {"replicas": actual}}

    tolerated, breaches = plan.tolerate([rule], desired, live)

    inside = low <= actual <= low + span
    assert (tolerated == {"/spec/replicas"}) is inside
    assert [b.actual for b in breaches] == ([] if inside else [actual])


@given(value=st.one_of(st.text(max_size=4), st.booleans(), st.none(), st.lists(st.integers())))
def test_bounds_never_tolerate_a_value_that_is_not_a_number(value: Any) -> None:
    """With bounds, a value that is not a number (a boolean included) is a breach."""
    rule = AllowedChange(paths=["/spec/replicas"], minimum=0, maximum=10)
    tolerated, breaches = plan.tolerate(
        [rule], {"spec": {"replicas": 3}}, {"spec": {"replicas": value}}
    )
    assert tolerated == frozenset()
    assert len(breaches) == 1
