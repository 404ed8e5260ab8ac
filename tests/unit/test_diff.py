"""diff: what driftguard set (as the server stored it) against the live object.

Each case starts from the stored `web` Deployment (the desired state), makes the
live object the way kubectl and the controllers change it (value and managedFields
together), and names the expected field changes.
"""

from __future__ import annotations

import copy
import json
import string
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftguard.core import diff, plan
from driftguard.core.diff import MISSING, ChangeKind, FieldChange

from . import objects
from .objects import CONTAINER, T_EDIT, claim, disown, nest

Edit = Callable[[dict[str, Any]], None]

IMAGE = "/spec/template/spec/containers/0/image"
ENV = "/spec/template/spec/containers/0/env"
PORTS = "/spec/template/spec/containers/0/ports"


# -- edits that change nothing we set ---------------------------------------------


def unchanged(live: dict[str, Any]) -> None:
    pass


def controller_status(live: dict[str, Any]) -> None:
    live["metadata"]["resourceVersion"] = "2001"
    live["metadata"]["generation"] = 2
    live["status"]["readyReplicas"] = 2
    live["status"]["availableReplicas"] = 2
    status = live["metadata"]["managedFields"][2]
    assert status["subresource"] == "status"
    status["time"] = T_EDIT


def annotate(live: dict[str, Any]) -> None:
    live["metadata"]["annotations"]["team"] = "payments"
    claim(live, "kubectl-annotate", nest("f:metadata", "f:annotations", "f:team"))


def extra_label(live: dict[str, Any]) -> None:
    live["metadata"]["labels"]["tier"] = "frontend"
    claim(live, "kubectl-label", nest("f:metadata", "f:labels", "f:tier"))


def edit_defaults(live: dict[str, Any]) -> None:
    live["spec"]["revisionHistoryLimit"] = 2
    objects.replace(live, "/spec/template/spec/containers/0/imagePullPolicy", "Always")
    fields = nest("f:spec", "f:revisionHistoryLimit")
    fields["f:spec"].update(
        nest("f:template", "f:spec", "f:containers", 'k:{"name":"web"}', "f:imagePullPolicy")
    )
    claim(live, "kubectl-edit", fields)


def add_probe(live: dict[str, Any]) -> None:
    probe = {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"}, "periodSeconds": 10}
    objects.put(live, "/spec/template/spec/containers/0/readinessProbe", probe)
    claim(live, "kubectl-edit", nest(*CONTAINER, "f:readinessProbe", leaf={".": {}}))


def add_volume(live: dict[str, Any]) -> None:
    live["spec"]["template"]["spec"]["volumes"] = [{"name": "cache", "emptyDir": {}}]
    item: dict[str, Any] = {'k:{"name":"cache"}': {".": {}, "f:emptyDir": {}, "f:name": {}}}
    claim(live, "kubectl-patch", nest("f:spec", "f:template", "f:spec", "f:volumes", leaf=item))


def share_replicas(live: dict[str, Any]) -> None:
    claim(live, "argocd", nest("f:spec", "f:replicas"), operation="Apply")


NO_DRIFT = [
    pytest.param(unchanged, id="identical"),
    pytest.param(controller_status, id="status-and-resourceVersion"),
    pytest.param(annotate, id="annotation-we-never-set"),
    pytest.param(extra_label, id="extra-label"),
    pytest.param(edit_defaults, id="defaulted-fields"),
    pytest.param(add_probe, id="new-field-in-our-container"),
    pytest.param(add_volume, id="list-we-never-set"),
    pytest.param(share_replicas, id="same-value-shared-with-another-applier"),
]


@pytest.mark.parametrize("edit", NO_DRIFT)
def test_no_drift_when_nothing_we_set_changed(edit: Edit) -> None:
    """Changes to fields driftguard never set are not drift."""
    desired = objects.deployment()
    live = copy.deepcopy(desired)
    edit(live)

    drift = diff.compute(diff.expect(desired), live)

    assert drift.changes == ()
    assert not drift.is_drifted


# -- edits that do ------------------------------------------------------------------


def edit_replicas(live: dict[str, Any]) -> None:
    live["spec"]["replicas"] = 5
    disown(live, "f:spec", "f:replicas")
    claim(live, "kubectl-edit", nest("f:spec", "f:replicas"))


def scale(live: dict[str, Any]) -> None:
    live["spec"]["replicas"] = 7
    disown(live, "f:spec", "f:replicas")
    claim(live, "kubectl", nest("f:spec", "f:replicas"), subresource="scale")


def set_image(live: dict[str, Any]) -> None:
    objects.replace(live, IMAGE, "nginx:1.25")
    disown(live, *CONTAINER, "f:image")
    claim(live, "kubectl-set", nest(*CONTAINER, "f:image"))


def edit_env_value(live: dict[str, Any]) -> None:
    objects.replace(live, f"{ENV}/0/value", "debug")
    disown(live, *CONTAINER, "f:env", 'k:{"name":"LOG_LEVEL"}', "f:value")
    claim(live, "kubectl-edit", nest(*CONTAINER, "f:env", 'k:{"name":"LOG_LEVEL"}', "f:value"))


def relabel_name(live: dict[str, Any]) -> None:
    live["metadata"]["labels"]["app.kubernetes.io/name"] = "shop"
    disown(live, "f:metadata", "f:labels", "f:app.kubernetes.io/name")
    claim(live, "kubectl-label", nest("f:metadata", "f:labels", "f:app.kubernetes.io/name"))


def edit_cpu(live: dict[str, Any]) -> None:
    objects.replace(live, "/spec/template/spec/containers/0/resources/limits/cpu", "2")
    disown(live, *CONTAINER, "f:resources", "f:limits", "f:cpu")
    claim(live, "kubectl-edit", nest(*CONTAINER, "f:resources", "f:limits", "f:cpu"))


def force_apply(live: dict[str, Any]) -> None:
    live["spec"]["replicas"] = 1
    disown(live, "f:spec", "f:replicas")
    claim(live, "intruder", nest("f:spec", "f:replicas"), operation="Apply")


def edit_out_label(live: dict[str, Any]) -> None:
    """kubectl edit removes a label and adds an annotation in the same save."""
    del live["metadata"]["labels"]["app"]
    disown(live, "f:metadata", "f:labels", "f:app")
    live["metadata"]["annotations"]["note"] = "cleanup"
    claim(live, "kubectl-edit", nest("f:metadata", "f:annotations", "f:note"))


def edit_out_port(live: dict[str, Any]) -> None:
    del live["spec"]["template"]["spec"]["containers"][0]["ports"]
    disown(live, *CONTAINER, "f:ports")
    live["metadata"]["annotations"]["note"] = "no ports"
    claim(live, "kubectl-edit", nest("f:metadata", "f:annotations", "f:note"))


DEBUG = {"name": "DEBUG", "value": "1"}
DEBUG_FIELDS: dict[str, Any] = {'k:{"name":"DEBUG"}': {".": {}, "f:name": {}, "f:value": {}}}


def append_env(live: dict[str, Any]) -> None:
    objects.put(live, f"{ENV}/-", dict(DEBUG))
    claim(live, "kubectl-patch", nest(*CONTAINER, "f:env", leaf=DEBUG_FIELDS))


def prepend_env(live: dict[str, Any]) -> None:
    objects.put(live, f"{ENV}/0", dict(DEBUG))
    claim(live, "kubectl-edit", nest(*CONTAINER, "f:env", leaf=DEBUG_FIELDS))


SIDECAR = {
    "image": "busybox",
    "imagePullPolicy": "Always",
    "name": "sidecar",
    "resources": {},
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
}


def add_sidecar(live: dict[str, Any]) -> None:
    objects.put(live, "/spec/template/spec/containers/-", dict(SIDECAR))
    item: dict[str, Any] = {'k:{"name":"sidecar"}': {".": {}, "f:image": {}, "f:name": {}}}
    claim(live, "kubectl-patch", nest(*CONTAINER[:-1], leaf=item))


UDP = {"containerPort": 8080, "name": "dns", "protocol": "UDP"}


def add_udp_port(live: dict[str, Any]) -> None:
    """Same containerPort, other protocol: a new item of a list keyed by two fields."""
    objects.put(live, f"{PORTS}/-", dict(UDP))
    item: dict[str, Any] = {
        'k:{"containerPort":8080,"protocol":"UDP"}': {
            ".": {},
            "f:containerPort": {},
            "f:name": {},
            "f:protocol": {},
        }
    }
    claim(live, "kubectl-patch", nest(*CONTAINER, "f:ports", leaf=item))


def add_finalizer(live: dict[str, Any]) -> None:
    live["metadata"]["finalizers"].append("example.com/audit")
    item: dict[str, Any] = {'v:"example.com/audit"': {}}
    claim(live, "kubectl-patch", nest("f:metadata", "f:finalizers", leaf=item))


def scale_and_scale_back(live: dict[str, Any]) -> None:
    """kubectl edit sets replicas to 5 and then back to 3: the value is ours, the field is not."""
    disown(live, "f:spec", "f:replicas")
    claim(live, "kubectl-edit", nest("f:spec", "f:replicas"))


def changed(pointer: str, before: Any, after: Any, manager: str | None) -> FieldChange:
    return FieldChange(pointer, ChangeKind.CHANGED, before, after, manager)


def removed(pointer: str, before: Any, manager: str | None) -> FieldChange:
    return FieldChange(pointer, ChangeKind.REMOVED, before, MISSING, manager)


def added(pointer: str, item: Any, manager: str | None) -> FieldChange:
    return FieldChange(pointer, ChangeKind.ADDED, MISSING, item, manager)


DRIFT = [
    pytest.param(
        edit_replicas, [changed("/spec/replicas", 3, 5, "kubectl-edit")], id="edit-replicas"
    ),
    pytest.param(scale, [changed("/spec/replicas", 3, 7, "kubectl")], id="scale-subresource"),
    pytest.param(
        set_image, [changed(IMAGE, "nginx:1.27.3", "nginx:1.25", "kubectl-set")], id="set-image"
    ),
    pytest.param(
        edit_env_value,
        [changed(f"{ENV}/0/value", "info", "debug", "kubectl-edit")],
        id="edit-env-value",
    ),
    pytest.param(
        relabel_name,
        [changed("/metadata/labels/app.kubernetes.io~1name", "web", "shop", "kubectl-label")],
        id="label-key-with-slash",
    ),
    pytest.param(
        edit_cpu,
        [
            changed(
                "/spec/template/spec/containers/0/resources/limits/cpu", "500m", "2", "kubectl-edit"
            )
        ],
        id="edit-cpu-limit",
    ),
    pytest.param(
        force_apply, [changed("/spec/replicas", 3, 1, "intruder")], id="force-apply-other-manager"
    ),
    pytest.param(edit_out_label, [removed("/metadata/labels/app", "web", None)], id="remove-label"),
    pytest.param(
        edit_out_port,
        [
            removed(f"{PORTS}/0/containerPort", 8080, None),
            removed(f"{PORTS}/0/name", "http", None),
        ],
        id="remove-port-list",
    ),
    pytest.param(append_env, [added(f"{ENV}/1", DEBUG, "kubectl-patch")], id="add-env-var-at-end"),
    pytest.param(
        prepend_env, [added(f"{ENV}/0", DEBUG, "kubectl-edit")], id="add-env-var-at-live-index"
    ),
    pytest.param(
        add_sidecar,
        [added("/spec/template/spec/containers/1", SIDECAR, "kubectl-patch")],
        id="add-container",
    ),
    pytest.param(
        add_udp_port, [added(f"{PORTS}/1", UDP, "kubectl-patch")], id="add-port-two-key-fields"
    ),
    pytest.param(
        add_finalizer,
        [added("/metadata/finalizers/1", "example.com/audit", "kubectl-patch")],
        id="add-to-set-list",
    ),
    pytest.param(
        scale_and_scale_back,
        [FieldChange("/spec/replicas", ChangeKind.TAKEN, 3, 3, "kubectl-edit")],
        id="taken-same-value",
    ),
]


@pytest.mark.parametrize(("edit", "expected"), DRIFT)
def test_drift_names_field_kind_values_and_manager(edit: Edit, expected: list[FieldChange]) -> None:
    """Each manual change is reported with its pointer, kind, values and field manager."""
    desired = objects.deployment()
    live = copy.deepcopy(desired)
    edit(live)

    drift = diff.compute(diff.expect(desired), live)

    assert sorted(drift.changes, key=lambda c: c.pointer) == expected


@pytest.mark.parametrize(("edit", "expected"), DRIFT)
def test_drift_pointer_resolves_in_live_or_desired(edit: Edit, expected: list[FieldChange]) -> None:
    """A change's pointer finds its actual value in live, or its expected value in desired."""
    desired = objects.deployment()
    live = copy.deepcopy(desired)
    edit(live)

    for change in diff.compute(diff.expect(desired), live).changes:
        if change.kind is ChangeKind.REMOVED:
            assert plan.pointer_get(desired, change.pointer) == change.expected
        else:
            assert plan.pointer_get(live, change.pointer) == change.actual


def test_removed_field_of_sole_manager_names_nobody() -> None:
    """A ConfigMap key removed by a patch that left no managedFields entry names no manager."""
    desired = objects.configmap()
    live = copy.deepcopy(desired)
    del live["data"]["LOG_LEVEL"]
    disown(live, "f:data", "f:LOG_LEVEL")

    drift = diff.compute(diff.expect(desired), live)

    assert drift.changes == (removed("/data/LOG_LEVEL", "info", None),)


def test_removed_field_is_not_blamed_on_an_unrelated_controller() -> None:
    """A label removed by kubectl (no entry left) is not attributed to kube-controller-manager."""
    desired = objects.deployment()
    live = copy.deepcopy(desired)
    del live["metadata"]["labels"]["app"]
    disown(live, "f:metadata", "f:labels", "f:app")

    drift = diff.compute(diff.expect(desired), live)

    assert drift.changes == (removed("/metadata/labels/app", "web", None),)


def test_removed_field_not_blamed_on_status_writer() -> None:
    """A newer status write by a controller is not blamed for a removed field: nobody is."""
    desired = objects.deployment()
    live = copy.deepcopy(desired)
    edit_out_label(live)
    claim(
        live,
        "kube-controller-manager",
        nest("f:status", "f:readyReplicas"),
        time="2026-11-26T10:09:00Z",
        subresource="status",
    )

    drift = diff.compute(diff.expect(desired), live)

    assert drift.changed_by is None


def test_changed_by_newest_owner_of_the_field() -> None:
    """Of two managers that wrote a field, the newer one is named."""
    desired = objects.deployment()
    live = copy.deepcopy(desired)
    scale(live)
    live["spec"]["replicas"] = 4
    claim(live, "kubectl-edit", nest("f:spec", "f:replicas"), time="2026-11-26T10:07:00Z")

    drift = diff.compute(diff.expect(desired), live)

    assert drift.changed_by == "kubectl-edit"


def test_no_drift_when_our_managed_fields_entry_is_gone_and_values_match() -> None:
    """Without driftguard's entry in live, equal values are not reported as taken."""
    desired = objects.deployment()
    live = copy.deepcopy(desired)
    live["metadata"]["managedFields"] = live["metadata"]["managedFields"][1:]

    assert not diff.compute(diff.expect(desired), live).is_drifted


def test_expectation_remembers_resource_version() -> None:
    """expect() keeps the resourceVersion of the object it was made from when that is the
    object as stored; a dry-run's answer (which keeps the live version) vouches for none."""
    assert diff.expect(objects.deployment(), is_stored=True).resource_version == "1042"
    assert diff.expect(objects.deployment()).resource_version == ""


@pytest.mark.parametrize(("edit", "expected"), DRIFT)
def test_an_object_at_the_version_learned_is_judged_as_by_a_whole_compare(
    edit: Edit, expected: list[FieldChange]
) -> None:
    """Learned from the very object (a pass trusting what it listed), the same version
    skips the field-by-field compare and finds what the compare finds: items another
    manager added to a list we set, nothing else."""
    live = objects.deployment()
    edit(live)

    quick = diff.compute(diff.expect(live, is_stored=True), live)
    whole = diff.compute(diff.expect(live), live)

    assert quick == whole
    assert all(change.kind is ChangeKind.ADDED for change in quick.changes)


def test_a_dry_run_answer_at_the_live_version_is_still_compared() -> None:
    """A dry-run apply answers with the live resourceVersion even when it would change the
    object: its expectation must be compared field by field."""
    wanted = objects.deployment()
    live = copy.deepcopy(wanted)
    live["spec"]["replicas"] = 7  # the live version, which the dry-run kept

    drift = diff.compute(diff.expect(wanted), live)

    assert [change.pointer for change in drift.changes] == ["/spec/replicas"]


def test_expectation_of_object_we_never_applied_is_empty() -> None:
    """Without an Apply entry of driftguard nothing is expected, so nothing can drift."""
    stored = objects.deployment()
    stored["metadata"]["managedFields"] = stored["metadata"]["managedFields"][1:]
    live = copy.deepcopy(stored)
    live["spec"]["replicas"] = 9

    expectation = diff.expect(stored)

    assert (expectation.values, expectation.lists) == ({}, {})
    assert not diff.compute(expectation, live).is_drifted


def test_expectations_of_one_shape_share_their_paths_and_the_manifests_values() -> None:
    """Two objects of one shape hold the same tuples of paths and pointers, and each value
    the server stored as the manifest wrote it is the manifest's own object: per object,
    only its values are kept. A value the server stored otherwise is the server's."""
    first, second = objects.configmap(), objects.configmap()
    second["metadata"]["name"] = "other-config"
    manifest = {"data": {"DB_VERSION": "5.7", "LOG_LEVEL": "INFO"}}

    one = diff.expect(first, is_stored=True, like=manifest)
    two = diff.expect(second, is_stored=True)

    assert one.paths is two.paths
    assert one.where is two.where
    assert one.values == two.values
    level = one.values[("f:data", "f:LOG_LEVEL")]
    version = one.values[("f:data", "f:DB_VERSION")]
    assert level == "info"
    assert level is first["data"]["LOG_LEVEL"]  # stored otherwise
    assert version is manifest["data"]["DB_VERSION"]
    pointers = {path: pointer for path, _, pointer in one.fields()}
    assert pointers[("f:data", "f:DB_VERSION")] == "/data/DB_VERSION"


# -- Drift ----------------------------------------------------------------------------


def test_drift_pointers_sorted_and_unique() -> None:
    """Drift.pointers lists each pointer once, sorted."""
    drift = diff.Drift(
        (
            changed("/spec/replicas", 3, 5, "kubectl"),
            removed("/metadata/labels/app", "web", None),
            changed("/spec/replicas", 3, 5, "kubectl"),
        )
    )
    assert drift.pointers == ["/metadata/labels/app", "/spec/replicas"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param((), None, id="no-changes"),
        pytest.param((removed("/a", 1, None),), None, id="nobody-named"),
        pytest.param(
            (removed("/a", 1, None), changed("/b", 1, 2, "kubectl-edit")),
            "kubectl-edit",
            id="first-named",
        ),
    ],
)
def test_drift_changed_by_first_named_manager(
    changes: tuple[FieldChange, ...], expected: str | None
) -> None:
    """Drift.changed_by is the first manager any change names."""
    assert diff.Drift(changes).changed_by == expected


# -- fieldsV1 helpers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        pytest.param({}, [], id="empty"),
        pytest.param({"f:spec": {"f:replicas": {}}}, [("f:spec", "f:replicas")], id="nested"),
        pytest.param(
            {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}},
            [("f:metadata", "f:labels", "f:app")],
            id="dot-is-not-a-leaf",
        ),
        pytest.param(
            {"f:c": {'k:{"name":"a"}': {".": {}, "f:name": {}, "f:image": {}}}},
            [("f:c", 'k:{"name":"a"}', "f:name"), ("f:c", 'k:{"name":"a"}', "f:image")],
            id="keyed-item-fields",
        ),
        pytest.param(
            {"f:c": {'k:{"name":"a"}': {".": {}}}},
            [("f:c", 'k:{"name":"a"}')],
            id="item-owned-whole",
        ),
        pytest.param(
            {"f:finalizers": {'v:"x"': {}, 'v:"y"': {}}},
            [("f:finalizers", 'v:"x"'), ("f:finalizers", 'v:"y"')],
            id="set-values",
        ),
        pytest.param({"f:selector": {}}, [("f:selector",)], id="atomic-map"),
    ],
)
def test_leaves(tree: dict[str, Any], expected: list[tuple[str, ...]]) -> None:
    """leaves() lists the fields that hold values, never the `.` markers."""
    assert diff.leaves(tree) == expected


RESOLVE_OBJ: dict[str, Any] = {
    "metadata": {"labels": {"app.kubernetes.io/name": "web", "a~b/c": "x"}},
    "spec": {
        "containers": [
            {"name": "init", "ports": []},
            {"name": "web", "ports": [{"containerPort": 80, "protocol": "UDP"}]},
        ],
        "finalizers": ["a", "b/c"],
        "args": ["--x", "--y"],
    },
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(("f:metadata", "f:labels"), (RESOLVE_OBJ["metadata"]["labels"], "/metadata/labels"), id="map"),
        pytest.param(("f:metadata", "f:labels", "f:app.kubernetes.io/name"), ("web", "/metadata/labels/app.kubernetes.io~1name"), id="slash-escaped"),
        pytest.param(("f:metadata", "f:labels", "f:a~b/c"), ("x", "/metadata/labels/a~0b~1c"), id="tilde-escaped-first"),
        pytest.param(("f:spec", "f:containers", 'k:{"name":"web"}', "f:name"), ("web", "/spec/containers/1/name"), id="keyed-item-live-index"),
        pytest.param(("f:spec", "f:containers", 'k:{"name":"web"}', "f:ports", 'k:{"containerPort":80,"protocol":"UDP"}', "f:protocol"), ("UDP", "/spec/containers/1/ports/0/protocol"), id="two-key-fields"),
        pytest.param(("f:spec", "f:finalizers", 'v:"b/c"'), ("b/c", "/spec/finalizers/1"), id="set-value"),
        pytest.param(("f:spec", "f:args", "i:1"), ("--y", "/spec/args/1"), id="index"),
        pytest.param(("f:spec", "f:replicas"), (MISSING, "/spec/replicas"), id="missing-field"),
        pytest.param(("f:spec", "f:containers", 'k:{"name":"db"}', "f:image"), (MISSING, "/spec/containers/-/image"), id="missing-item"),
        pytest.param(("f:spec", "f:finalizers", 'v:"z"'), (MISSING, "/spec/finalizers/-"), id="missing-set-value"),
        pytest.param(("f:spec", "f:args", "i:5"), (MISSING, "/spec/args/5"), id="index-out-of-range"),
        pytest.param(("f:status", "f:x", "f:y/z"), (MISSING, "/status/x/y~1z"), id="missing-parent"),
    ],
)  # fmt: skip
def test_resolve(path: tuple[str, ...], expected: tuple[Any, str]) -> None:
    """value_at() finds the value at a fieldsV1 path and its RFC 6901 pointer in this object."""
    assert diff.value_at(RESOLVE_OBJ, path) == expected


def _entry(manager: str, operation: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"manager": manager, "operation": operation, "fieldsV1": fields}


@pytest.mark.parametrize(
    ("entries", "manager", "expected"),
    [
        pytest.param([], "driftguard", None, id="no-managed-fields"),
        pytest.param(
            [_entry("kubectl-edit", "Update", {"f:a": {}})], "driftguard", None, id="other-only"
        ),
        pytest.param(
            [_entry("driftguard", "Update", {"f:a": {}})], "driftguard", None, id="update-ignored"
        ),
        pytest.param(
            [_entry("driftguard", "Apply", {"f:a": {}})], "driftguard", {"f:a": {}}, id="apply"
        ),
        pytest.param(
            [
                _entry("driftguard", "Apply", {"f:spec": {"f:a": {}}}),
                _entry("driftguard", "Apply", {"f:spec": {"f:b": {}}, "f:status": {}}),
            ],
            "driftguard",
            {"f:spec": {"f:a": {}, "f:b": {}}, "f:status": {}},
            id="entries-merged",
        ),
        pytest.param(
            [_entry("intruder", "Apply", {"f:a": {}})], "intruder", {"f:a": {}}, id="other-manager"
        ),
    ],
)
def test_fields_of(
    entries: list[dict[str, Any]], manager: str, expected: dict[str, Any] | None
) -> None:
    """fields_of() merges the Apply entries of one manager, or is None when it applied nothing."""
    obj = {"metadata": {"managedFields": entries}}
    assert diff.fields_of(obj, manager) == expected


# -- properties over generated objects --------------------------------------------------

KEYS = st.text(alphabet=string.ascii_letters + "./~-_", min_size=1, max_size=8)
SCALARS = st.one_of(st.integers(), st.booleans(), st.text(max_size=5))
DOCS = st.dictionaries(
    KEYS,
    st.recursive(
        SCALARS, lambda inner: st.dictionaries(KEYS, inner, min_size=1, max_size=3), max_leaves=8
    ),
    min_size=1,
    max_size=4,
)


def _fields(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        return {}
    return {f"f:{key}": _fields(value) for key, value in doc.items()}


def _stored(data: dict[str, Any]) -> dict[str, Any]:
    entry = _entry("driftguard", "Apply", {"f:data": _fields(data)})
    return {"metadata": {"managedFields": [entry]}, "data": data}


@given(data=DOCS)
def test_no_drift_against_itself(data: dict[str, Any]) -> None:
    """An object compared with the expectation made from it has no drift."""
    stored = _stored(data)
    assert not diff.compute(diff.expect(stored), copy.deepcopy(stored)).is_drifted


@given(data=DOCS, pick=st.integers(min_value=0), new=st.just(["replaced"]))
def test_one_changed_leaf_is_one_change_at_its_pointer(
    data: dict[str, Any], pick: int, new: list[str]
) -> None:
    """Changing one leaf yields one CHANGED whose RFC 6901 pointer reaches the new value."""
    stored = _stored(data)
    expectation = diff.expect(stored)
    path = sorted(expectation.values)[pick % len(expectation.values)]
    live = copy.deepcopy(stored)
    node = live
    for key in path[:-1]:
        node = node[key[2:]]
    node[path[-1][2:]] = new

    drift = diff.compute(expectation, live)

    assert [(c.kind, c.actual) for c in drift.changes] == [(ChangeKind.CHANGED, new)]
    assert plan.pointer_get(live, drift.changes[0].pointer) == new


def _configmap_manifest() -> dict[str, Any]:
    stored = objects.configmap()
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "web-config",
            "namespace": "staging",
            "labels": dict(stored["metadata"]["labels"]),
        },
        "data": dict(stored["data"]),
    }


def _patch_value(live: dict[str, Any]) -> None:
    live["data"]["DB_VERSION"] = "5.6"
    disown(live, "f:data", "f:DB_VERSION")
    claim(live, "kubectl-patch", nest("f:data", "f:DB_VERSION"))


def _remove_key(live: dict[str, Any]) -> None:
    del live["data"]["LOG_LEVEL"]
    disown(live, "f:data", "f:LOG_LEVEL")


@pytest.mark.parametrize(
    ("change", "manifest_edit", "expected"),
    [
        pytest.param(None, None, True, id="untouched"),
        pytest.param(_patch_value, None, False, id="value-taken"),
        pytest.param(_remove_key, None, False, id="key-removed"),
        pytest.param(None, lambda m: m["data"].update(NEW="1"), False, id="blueprint-adds-key"),
        pytest.param(None, lambda m: m["data"].pop("LOG_LEVEL"), False, id="blueprint-drops-key"),
    ],
)
def test_is_owned_whole(
    change: Callable[[dict[str, Any]], None] | None,
    manifest_edit: Callable[[dict[str, Any]], Any] | None,
    expected: bool,
) -> None:
    """An object is trusted without an apply only while we own exactly what the manifest sets."""
    live = objects.configmap()
    if change:
        change(live)
    manifest = _configmap_manifest()
    if manifest_edit:
        manifest_edit(manifest)
    assert diff.is_owned_whole(live, manifest) is expected
    learned = diff.expect_if_owned(live, manifest)
    assert (learned is not None) is expected
    if learned is not None:
        assert learned == diff.expect(live, is_stored=True)


def test_atomic_field_covers_the_manifest_below_it() -> None:
    """One owned atomic leaf (a selector) covers every field the manifest sets under it."""
    live = objects.configmap()
    live["spec"] = {"selector": {"app": "web"}}
    claim(live, "driftguard", nest("f:spec", "f:selector"), operation="Apply")
    manifest = _configmap_manifest()
    manifest["spec"] = {"selector": {"app": "web"}}
    assert diff.is_owned_whole(live, manifest)


def test_objects_of_one_shape_share_their_paths() -> None:
    """Two ConfigMaps decoded apart hold one tuple per field path between them; a table
    full starts again rather than growing without end."""
    first = diff.leaves(json.loads('{"f:data": {"f:v": {}, "f:w": {}}}'))
    second = diff.leaves(json.loads('{"f:data": {"f:v": {}, "f:w": {}}}'))
    assert first == [("f:data", "f:v"), ("f:data", "f:w")]
    assert all(a is b for a, b in zip(first, second, strict=True))
    for i in range(diff.PATHS_KEPT + 1):
        diff.leaves({f"f:{i}": {}})
    assert len(diff._PATHS) <= diff.PATHS_KEPT
