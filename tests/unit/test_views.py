"""views and comparison: the pure parts of history, rollback, audit and compare."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest

from driftguard.cli import comparison, inspection, rollback, views
from driftguard.cli import main as cli
from driftguard.cli.comparison import ABSENT, Side
from driftguard.kube import history

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
CM = ("v1", "ConfigMap", "db")
DEPLOY = ("apps/v1", "Deployment", "web")
SECRET = ("v1", "Secret", "creds")


def revision(number: int, **data: Any) -> history.Revision:
    return history.Revision.of(
        {
            "metadata": {
                "name": f"app-r{number}",
                "annotations": {
                    history.ANNOTATION_APPLIED_AT: f"2026-11-26T10:0{number}:00Z",
                    history.ANNOTATION_GENERATION: str(number),
                    history.ANNOTATION_SPEC_MANAGERS: "kubectl-client-side-apply",
                },
            },
            "revision": number,
            "data": data,
        }
    )


def secret(value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds"},
        "data": {"pw": value},
    }


def configmap(version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "db"},
        "data": {"DB_VERSION": version},
    }


def deployment(image: str, replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "web", "image": image}]}},
        },
    }


def side(
    label: str,
    declared: list[dict[str, Any]],
    live: dict[tuple[str, str, str], dict[str, Any] | None] | None = None,
    tolerated: dict[tuple[str, str, str], frozenset[str]] | None = None,
) -> Side:
    by_id = {(m["apiVersion"], m["kind"], m["metadata"]["name"]): m for m in declared}
    found = {obj: m for obj, m in by_id.items()} if live is None else {**by_id, **live}
    return Side(label, by_id, found, tolerated or {})


# history


def test_history_table_marks_the_current_revision() -> None:
    """The row of status.revision carries the marker, and no other row does."""
    rows = views.history_rows([revision(1, spec={}), revision(2, spec={})], current=2)

    header = ["CURRENT", "REVISION", "APPLIED", "GENERATION", "APPLIED BY", "SPEC BY", "BLUEPRINT"]
    assert rows[0] == header
    assert [row[0] for row in rows[1:]] == ["", "*"]
    assert rows[2][1:6] == ["2", "2026-11-26T10:02:00Z", "2", "-", "kubectl-client-side-apply"]


def test_history_names_the_person_who_applied_a_revision() -> None:
    """APPLIED BY is the person the webhook vouched for, kept on the revision's record."""
    rev = history.Revision.of(
        {
            "metadata": {"name": "app-r1", "annotations": {history.ANNOTATION_APPLIED_BY: "alice"}},
            "revision": 1,
            "data": {"spec": {}},
        }
    )
    assert views.history_rows([rev], current=1)[1][4] == "alice"
    assert views.history_json([rev], current=1)[0]["appliedBy"] == "alice"


@pytest.mark.parametrize(
    ("data", "expected"),
    [({"spec": {}}, "-"), ({"spec": {}, "blueprint": {"name": "db", "revision": 3}}, "db@3")],
    ids=["inline", "blueprint"],
)
def test_history_table_names_the_blueprint_revision(data: dict[str, Any], expected: str) -> None:
    """The BLUEPRINT column is name@revision, or - for an inline Environment."""
    assert views.history_rows([revision(1, **data)], current=None)[1][-1] == expected


def test_unknown_revision_names_the_kept_ones() -> None:
    """Asking for a revision not kept says which ones are."""
    with pytest.raises(views.Refused, match=r"no revision 7 kept \(kept: 2, 3\)"):
        views.find([revision(2), revision(3)], 7, "team/app")


def test_revision_text_redacts_inline_secrets() -> None:
    """A revision's spec prints as YAML with Secret values replaced, the keys kept."""
    text = views.revision_text(revision(1, spec={"resources": [secret("czNjcjN0")]}))

    assert "czNjcjN0" not in text
    assert f"pw: {inspection.REDACTED}" in text


def test_revisions_diff_shows_the_changed_value_and_the_made_objects() -> None:
    """--diff shows the spec change and, for a Blueprint, the objects it made."""
    old = revision(1, spec={"values": {"db": "5.7"}}, resources=[configmap("5.7")])
    new = revision(3, spec={"values": {"db": "5.5"}}, resources=[configmap("5.5")])

    text = views.revisions_diff(old, new)

    assert "-  db: '5.7'\n+  db: '5.5'\n" in text
    assert "+++ revision 3/resources" in text
    assert "+    DB_VERSION: '5.5'" in text


def test_revisions_diff_marks_a_changed_secret_without_its_value() -> None:
    """A Secret value that changed between revisions shows as changed, never as itself."""
    text = views.revisions_diff(
        revision(1, spec={"resources": [secret("b2xk")]}),
        revision(2, spec={"resources": [secret("bmV3")]}),
    )

    assert "b2xk" not in text
    assert "bmV3" not in text
    assert f"+    pw: {inspection.REDACTED} (r2)" in text


# rollback


@pytest.mark.parametrize(
    ("manager", "is_person"),
    [
        ("kubectl", True),
        ("kubectl-client-side-apply", True),
        ("kubectl-edit", True),
        ("driftguard-rollback", True),
        ("argocd-controller", False),
        ("kustomize-controller", False),
        ("helm-controller", False),
        ("flux", False),
        ("Go-http-client", False),
    ],
    ids=lambda v: str(v),
)
def test_manager_classification(manager: str, is_person: bool) -> None:
    """Only a person's kubectl and driftguard rollback count as people."""
    assert rollback.is_person(manager) is is_person


def test_tools_among_keeps_only_the_tools() -> None:
    """The refusal names the tools, not the people beside them."""
    assert rollback.tools_among(["argocd-controller", "kubectl-edit"]) == ["argocd-controller"]


def test_rollback_body_keeps_the_resource_version_and_drops_managed_fields() -> None:
    """The PUT carries the old spec and the read resourceVersion; no status, no managedFields."""
    env = {
        "apiVersion": "driftguard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": "app", "resourceVersion": "42", "managedFields": [{"manager": "x"}]},
        "spec": {"mode": "Observe"},
        "status": {"revision": 3},
    }

    body = rollback.put_body(env, {"mode": "Enforce"})

    assert body == {
        "apiVersion": "driftguard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": "app", "resourceVersion": "42"},
        "spec": {"mode": "Enforce"},
    }


@pytest.mark.parametrize(
    ("metadata", "managers", "expected"),
    [
        (
            {"annotations": {rollback.ARGO_TRACKING: "web:driftguard.io/Environment:team/app"}},
            [],
            ("argocd", "web"),
        ),
        (
            {
                "annotations": {
                    rollback.ARGO_TRACKING: "apps_web:driftguard.io/Environment:team/app"
                }
            },
            [],
            ("apps", "web"),
        ),
        ({"labels": {rollback.ARGO_INSTANCE: "web"}}, ["argocd-controller"], ("argocd", "web")),
        ({"labels": {rollback.ARGO_INSTANCE: "web"}}, ["helm-controller"], None),
        ({}, ["argocd-controller"], None),
    ],
    ids=["tracking-id", "tracking-id-namespaced", "instance-label", "instance-not-argo", "nothing"],
)
def test_argo_application_of_an_environment(
    metadata: dict[str, Any], managers: list[str], expected: tuple[str, str] | None
) -> None:
    """The Argo CD Application comes from the tracking id, or the instance label with an argocd manager."""
    assert rollback.argo_application({"metadata": metadata}, managers) == expected


def test_refusal_says_which_tool_and_where_to_change_instead() -> None:
    """The refusal names the tool, says it would put the spec back, the commit, and --force."""
    text = rollback.gitops_refusal(
        "team/app", ["argocd-controller"], "abc123 (Application argocd/web last synced it)"
    )

    assert "managed by argocd-controller" in text
    assert "would put the spec back" in text
    assert "in git instead, from abc123" in text
    assert "--force" in text


# audit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("1h", 3600), ("2d", 172800), ("1d12h", 129600), ("500ms", 0.5)],
    ids=["s", "m", "h", "d", "d+h", "ms"],
)
def test_since_durations(text: str, seconds: float) -> None:
    """--since takes Go durations and days."""
    assert views.since_seconds(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "1w", "h", "-1h", "1d2"],
    ids=["empty", "weeks", "no-number", "negative", "trailing"],
)
def test_since_refuses_what_is_not_a_duration(text: str) -> None:
    """A bad --since is an error naming it, not an empty answer."""
    with pytest.raises(ValueError, match="not a duration"):
        views.since_seconds(text)


def incident(time: str, **extra: Any) -> dict[str, Any]:
    return {
        "time": time,
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "namespace": "staging",
        "name": "db",
        "action": "reverted",
        "paths": ["/data/DB_VERSION"],
        "changedBy": "kubectl-edit",
        "user": None,
        "values": [{"path": "/data/DB_VERSION", "blueprint": "5.7", "live": "5.5"}],
        **extra,
    }


def test_since_keeps_only_newer_incidents() -> None:
    """--since 1h drops an incident of two hours ago and keeps one of ten minutes ago."""
    old, new = incident("2026-11-26T10:00:00Z"), incident("2026-11-26T11:50:00Z")

    assert views.select([old, new], since=3600, now=NOW) == [new]
    assert views.select([old, new], since=None, now=NOW) == [old, new]


def test_audit_table_row() -> None:
    """A row shows time, object, action, paths, manager and blueprint → live values."""
    rows = views.audit_rows([incident("2026-11-26T11:50:00Z")])

    assert rows[0] == ["TIME", "OBJECT", "ACTION", "PATHS", "BY", "VALUES"]
    assert rows[1] == [
        "2026-11-26T11:50:00Z",
        "ConfigMap/staging/db",
        "reverted",
        "/data/DB_VERSION",
        "kubectl-edit",
        "/data/DB_VERSION: 5.7 → 5.5",
    ]


def test_audit_never_prints_a_secret_value() -> None:
    """A Secret incident's values are redacted even if a trail held them."""
    leaked = incident("2026-11-26T11:50:00Z", kind="Secret")

    shown = json.dumps(views.select([leaked], since=None, now=NOW))

    assert "5.7" not in shown
    assert "5.5" not in shown
    assert inspection.REDACTED in shown


def test_audit_row_of_a_deletion() -> None:
    """A deleted object says so in VALUES."""
    gone = incident("2026-11-26T11:50:00Z", deleted=True, values=None, paths=["/"])

    assert views.audit_rows([gone])[1][-1] == "(deleted)"


def test_table_pads_columns() -> None:
    """Columns line up as `driftguard status` prints them, no trailing spaces."""
    assert views.table([["A", "BB"], ["ccc", ""]]) == "A     BB\nccc\n"


# compare


def test_leaves_are_json_pointers() -> None:
    """Maps and lists flatten to RFC 6901 pointers; '/' and '~' in keys are escaped."""
    found = comparison.leaf_values({"a": {"b/c": 1, "d~e": [1, {"f": "x"}]}, "g": {}, "h": []})

    assert found == {"/a/b~1c": 1, "/a/d~0e/0": 1, "/a/d~0e/1/f": "x", "/g": {}, "/h": []}


def test_images_first_then_configuration_then_the_rest() -> None:
    """Rows order: image fields, then ConfigMap data, then other fields."""
    found = comparison.rows([side("a/app", [configmap("5.7"), deployment("db:5.7")])])

    paths = [row.path for row in found]
    assert paths[0] == "/spec/template/spec/containers/0/image"
    assert paths[1] == "/data/DB_VERSION"
    assert paths.index("/spec/replicas") > 1


def test_only_differing_rows_are_shown_by_default() -> None:
    """The same declared and live value everywhere is not shown; --all shows it."""
    found = comparison.rows([side("a/app", [configmap("5.7")]), side("b/app", [configmap("5.5")])])

    shown = comparison.compare_rows(["a/app", "b/app"], found, everything=False)
    everything = comparison.compare_rows(["a/app", "b/app"], found, everything=True)

    assert shown == [
        ["OBJECT", "FIELD", "a/app", "b/app"],
        ["ConfigMap/db", "/data/DB_VERSION", "5.7", "5.5"],
    ]
    assert len(everything) > len(shown)
    assert ["ConfigMap/db", "/metadata/name", "db", "db"] in everything


def test_live_drift_shows_in_the_cell_and_is_listed() -> None:
    """A live value that departs from the declared one shows beside it and is listed."""
    drifted = {CM: configmap("5.5")}
    found = comparison.rows(
        [side("a/app", [configmap("5.7")]), side("b/app", [configmap("5.7")], drifted)]
    )

    assert comparison.compare_rows(["a/app", "b/app"], found, everything=False)[1] == [
        "ConfigMap/db",
        "/data/DB_VERSION",
        "5.7",
        "5.7 (live: 5.5)",
    ]
    assert comparison.drift_lines(["a/app", "b/app"], found) == [
        "b/app: ConfigMap/db /data/DB_VERSION"
    ]


def test_server_added_fields_are_not_compared() -> None:
    """Fields only the live object has (defaults, status) make no row and no drift."""
    live = deployment("db:5.7")
    live["spec"]["strategy"] = {"type": "RollingUpdate"}
    live["status"] = {"replicas": 2}

    found = comparison.rows([side("a/app", [deployment("db:5.7")], {DEPLOY: live})])

    assert not any(row.path.startswith(("/spec/strategy", "/status")) for row in found)
    assert comparison.drift_lines(["a/app"], found) == []


def test_a_missing_object_is_drift_once() -> None:
    """A declared object absent from the cluster is listed once, not per field."""
    found = comparison.rows([side("a/app", [configmap("5.7")], {CM: None})])

    assert comparison.drift_lines(["a/app"], found) == ["a/app: ConfigMap/db is missing"]
    assert comparison.cells(found[0]) == ["5.7 (live: missing)"]


def test_an_object_only_one_environment_declares() -> None:
    """An object one Environment lacks shows - there, and counts as a declared difference."""
    found = comparison.rows([side("a/app", [configmap("5.7")]), side("b/app", [])])

    row = next(r for r in found if r.path == "/data/DB_VERSION")
    assert comparison.cells(row) == ["5.7", "-"]
    assert row.declared_differs
    assert not row.live_differs


def test_a_tolerated_change_is_shown_but_is_not_drift() -> None:
    """A live value an allowedChanges rule tolerates shows as allowed, and exits 0."""
    found = comparison.rows(
        [
            side(
                "a/app",
                [deployment("db:5.7")],
                {DEPLOY: deployment("db:5.7", replicas=4)},
                {DEPLOY: frozenset({"/spec/replicas"})},
            )
        ]
    )

    row = next(r for r in found if r.path == "/spec/replicas")
    assert comparison.cells(row) == ["2 (live: 4, allowed)"]
    assert comparison.drift_lines(["a/app"], found) == []


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["czE=", "czE="], [inspection.REDACTED, inspection.REDACTED]),
        (["czE=", "czI="], [f"{inspection.REDACTED} #1", f"{inspection.REDACTED} #2"]),
    ],
    ids=["same", "different"],
)
def test_secret_values_say_only_whether_they_differ(values: list[str], expected: list[str]) -> None:
    """Secret cells are redacted, numbered only when the values differ."""
    found = comparison.rows([side(f"{i}/app", [secret(v)]) for i, v in enumerate(values)])

    row = next(r for r in found if r.path == "/data/pw")
    assert comparison.cells(row) == expected


def test_secret_live_drift_is_shown_without_the_value() -> None:
    """A drifted Secret value says it differs; neither value appears, in the table or JSON."""
    found = comparison.rows([side("a/app", [secret("czE=")], {SECRET: secret("bGVhaw==")})])

    row = next(r for r in found if r.path == "/data/pw")
    assert comparison.cells(row) == [f"{inspection.REDACTED} (differs)"]
    text = json.dumps(comparison.to_json(["a/app"], found, everything=True))
    assert "czE=" not in text
    assert "bGVhaw==" not in text


def test_json_rows_carry_declared_and_live_per_environment() -> None:
    """-o json has each shown row's declared and live values keyed by Environment."""
    found = comparison.rows(
        [
            side("a/app", [configmap("5.7")]),
            side("b/app", [configmap("5.5")], {CM: configmap("5.6")}),
        ]
    )

    doc = comparison.to_json(["a/app", "b/app"], found, everything=False)

    assert doc["rows"] == [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "db",
            "path": "/data/DB_VERSION",
            "declared": {"a/app": "5.7", "b/app": "5.5"},
            "live": {"a/app": "5.7", "b/app": "5.6"},
            "declaredDiffers": True,
            "liveDiffers": ["b/app"],
            "tolerated": [],
        }
    ]
    assert doc["drift"] == ["b/app: ConfigMap/db /data/DB_VERSION"]


@pytest.mark.parametrize(
    ("declared", "live", "same"),
    [("5.7", "5.7", True), ("5.7", "5.5", False), ({}, {"runAsUser": 0}, True), (1, ABSENT, False)],
    ids=["equal", "different", "empty-map-defaulted", "absent"],
)
def test_is_same(declared: Any, live: Any, same: bool) -> None:
    """A declared value matches an equal live one; a declared empty map, any map."""
    assert comparison.is_same(declared, live) is same


@pytest.mark.parametrize(
    ("text", "expected"),
    [("team/app", ("team", "app")), ("app", ("here", "app"))],
    ids=["namespaced", "bare"],
)
def test_parse_target(text: str, expected: tuple[str, str]) -> None:
    """NAMESPACE/NAME, or NAME in the current namespace."""
    assert comparison.parse_target(text, "here") == expected


def test_compare_needs_environments_or_a_blueprint() -> None:
    """compare with neither NAMESPACE/NAME nor --blueprint is a usage error."""
    with pytest.raises(SystemExit):
        cli.main(["compare"])


def test_the_new_commands_load_neither_kubernetes_nor_kopf() -> None:
    """history, rollback, audit and compare import no sync client and no kopf, as diff does."""
    script = (
        "import sys; from driftguard.cli import main, comparison, rollback, views; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'kubernetes', 'kopf'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )

    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ({"name": "shop"}, {"name": "shop", "revision": 1}),
        ({"name": "shop", "revision": 1}, {"name": "shop", "revision": 1}),
        ({"name": "other"}, {"name": "other"}),
    ],
    ids=["follows", "already-pinned", "another-blueprint"],
)
def test_rollback_pins_the_blueprint_revision_it_was_made_from(
    ref: dict[str, Any], expected: dict[str, Any]
) -> None:
    """A rollback of a Blueprint-made revision pins the Blueprint revision it used."""
    rev = revision(2, spec={"blueprintRef": ref}, blueprint={"name": "shop", "revision": 1})

    assert rollback.spec_of(rev) == {"blueprintRef": expected}


def test_rollback_of_an_inline_revision_is_its_spec() -> None:
    """An inline Environment's revision is written back as it was."""
    spec = {"resources": [configmap("5.7")]}

    assert rollback.spec_of(revision(1, spec=spec)) == spec


def test_the_environments_own_records_read_as_sentences() -> None:
    """An exception's start and end, and back in sync, have no object but say what happened."""
    records = [
        {
            "time": "2026-12-06T10:00:00Z",
            "action": "exception-active",
            "exception": "hold",
            "reason": "incident 4711",
            "createdBy": "alice",
            "approvedBy": "carol",
            "expiresAt": "2026-12-06T14:00:00Z",
        },
        {"time": "2026-12-06T12:00:00Z", "action": "exception-ended", "exception": "hold",
         "end": "Expired"},
        {"time": "2026-12-06T12:00:01Z", "action": "in-sync", "outOfSyncS": 0.42},
    ]  # fmt: skip
    _, began, ended, synced = views.audit_rows(records)
    assert began[1:] == [
        "DriftException/hold",
        "exception-active",
        "-",
        "alice, approved by carol",
        "incident 4711; until 2026-12-06T14:00:00Z",
    ]
    assert ended[-1] == "ended: Expired"
    assert synced[-1] == "in sync again after 0.42 s out of sync"
