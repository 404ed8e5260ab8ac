"""history, rollback, audit and compare on a real API server, over the records the operator keeps.

The session operator writes the ControllerRevisions and the audit trail; the CLI reads
them as the admin user, as a person would. Rollback writes the Environment's spec
through the API and the operator records the result as a new revision.
"""

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from envs import (
    Operator,
    apply,
    configmap,
    deployment,
    environment,
    get,
    run_cli,
    status,
    wait_condition,
)
from helpers import Kubectl, wait_established, wait_for
from kubernetes import client as k8s

DB = "db"


def env_with(namespace: str, version: str, **spec: Any) -> dict[str, Any]:
    return environment("app", namespace, [configmap(DB, DB_VERSION=version)], **spec)


def revisions(kubectl: Kubectl, namespace: str, name: str = "app") -> list[dict[str, Any]]:
    done = run_cli(kubectl, "history", name, "-n", namespace, "-o", "json")
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found


def wait_revisions(kubectl: Kubectl, namespace: str, numbers: list[int]) -> list[dict[str, Any]]:
    """Waits until `history` lists exactly these revisions (the operator records each)."""

    def listed() -> list[dict[str, Any]] | None:
        found = revisions(kubectl, namespace)
        return found if [r["revision"] for r in found] == numbers else None

    result: list[dict[str, Any]] = wait_for(listed, timeout=20, message=f"revisions {numbers}")
    return result


def db_version(kubectl: Kubectl, namespace: str) -> str | None:
    found = get(kubectl, "configmap", DB, namespace)
    return None if found is None else str(found["data"].get("DB_VERSION"))


def spec_of(kubectl: Kubectl, namespace: str, name: str = "app") -> dict[str, Any]:
    return dict((get(kubectl, "environment", name, namespace) or {})["spec"])


def test_history_lists_diffs_and_rolls_back(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """Three applied specs make three revisions; rollback to 1 writes its spec and makes a 4th."""
    for version in ("5.7", "5.6", "5.5"):
        apply(kubectl, env_with(namespace, version))
        wait_for(lambda v=version: db_version(kubectl, namespace) == v, message=f"DB {version}")
    kept = wait_revisions(kubectl, namespace, [1, 2, 3])
    assert [r["current"] for r in kept] == [False, False, True]
    assert all("kubectl-client-side-apply" in r["specManagers"] for r in kept)

    listed = run_cli(kubectl, "history", "app", "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == [
        "CURRENT",
        "REVISION",
        "APPLIED",
        "GENERATION",
        "APPLIED",
        "BY",
        "SPEC",
        "BY",
        "BLUEPRINT",
    ]
    assert rows[-1].split()[:2] == ["*", "3"]

    diff = run_cli(kubectl, "history", "app", "-n", namespace, "--diff", "1", "3")
    assert diff.returncode == 0, diff.stderr
    assert "-    DB_VERSION: '5.7'" in diff.stdout
    assert "+    DB_VERSION: '5.5'" in diff.stdout

    one = run_cli(kubectl, "history", "app", "-n", namespace, "--revision", "1")
    assert yaml.safe_load(one.stdout)["spec"]["resources"][0]["data"] == {"DB_VERSION": "5.7"}

    unknown = run_cli(kubectl, "history", "app", "-n", namespace, "--revision", "9")
    assert unknown.returncode == 1
    assert "no revision 9 kept (kept: 1, 2, 3)" in unknown.stderr

    done = run_cli(kubectl, "rollback", "app", "-n", namespace, "--to-revision", "1")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "rolled back to revision 1: spec written; the operator will apply it as revision 4"
    )
    assert spec_of(kubectl, namespace)["resources"][0]["data"] == {"DB_VERSION": "5.7"}
    wait_for(lambda: db_version(kubectl, namespace) == "5.7", message="DB back at 5.7")
    fourth = wait_revisions(kubectl, namespace, [1, 2, 3, 4])[-1]
    assert "driftguard-rollback" in fourth["specManagers"]
    assert fourth["current"] is True


def test_history_keeps_revision_history_limit(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """With revisionHistoryLimit 2 the oldest goes, and rolling back to it is refused naming the kept."""
    for version in ("5.7", "5.6", "5.5"):
        apply(kubectl, env_with(namespace, version, revisionHistoryLimit=2))
        wait_for(lambda v=version: db_version(kubectl, namespace) == v, message=f"DB {version}")
    wait_revisions(kubectl, namespace, [2, 3])

    done = run_cli(kubectl, "rollback", "app", "-n", namespace, "--to-revision", "1")

    assert done.returncode == 1
    assert "no revision 1 kept (kept: 2, 3)" in done.stderr
    assert spec_of(kubectl, namespace)["resources"][0]["data"] == {"DB_VERSION": "5.5"}


APPLICATION_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "applications.argoproj.io"},
    "spec": {
        "group": "argoproj.io",
        "names": {"kind": "Application", "plural": "applications", "singular": "application"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


def apply_as_argocd(kubectl: Kubectl, manifest: dict[str, Any]) -> None:
    argv = ["apply", "--server-side", "--field-manager=argocd-controller", "-f", "-"]
    kubectl(*argv, input=yaml.safe_dump(manifest))


def test_rollback_of_a_gitops_owned_spec_is_refused_unless_forced(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """A spec argocd-controller applies is refused, naming the tool and its synced commit; --force writes it."""
    # Argo CD's Application, as far as the CLI reads it: the commit it last synced.
    kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(APPLICATION_CRD))
    wait_established(kubectl, "applications.argoproj.io")
    app = f"web-{namespace}"
    application = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": app, "namespace": namespace},
        "status": {"sync": {"revision": "0f3c9a1e7b2d"}},
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump(application))
    tracking = {"argocd.argoproj.io/tracking-id": f"{namespace}_{app}:driftguard.io/Environment"}
    for version in ("5.7", "5.5"):
        manifest = env_with(namespace, version)
        manifest["metadata"]["annotations"] = tracking
        apply_as_argocd(kubectl, manifest)
        wait_for(lambda v=version: db_version(kubectl, namespace) == v, message=f"DB {version}")
    wait_revisions(kubectl, namespace, [1, 2])

    refused = run_cli(kubectl, "rollback", "app", "-n", namespace, "--to-revision", "1")

    assert refused.returncode == 1
    assert "managed by argocd-controller" in refused.stderr
    assert "would put the spec back" in refused.stderr
    assert f"0f3c9a1e7b2d (Application {namespace}/{app} last synced it)" in refused.stderr
    assert spec_of(kubectl, namespace)["resources"][0]["data"] == {"DB_VERSION": "5.5"}

    argv = ("rollback", "app", "-n", namespace, "--to-revision", "1", "--force")
    dry = run_cli(kubectl, *argv, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "+    DB_VERSION: '5.7'" in dry.stdout
    assert spec_of(kubectl, namespace)["resources"][0]["data"] == {"DB_VERSION": "5.5"}

    forced = run_cli(kubectl, *argv)

    assert forced.returncode == 0, forced.stderr
    assert "may put the spec back" in forced.stderr
    assert spec_of(kubectl, namespace)["resources"][0]["data"] == {"DB_VERSION": "5.7"}
    wait_for(lambda: db_version(kubectl, namespace) == "5.7", message="DB back at 5.7")
    wait_revisions(kubectl, namespace, [1, 2, 3])


def incidents(kubectl: Kubectl, namespace: str, *args: str) -> list[dict[str, Any]]:
    done = run_cli(kubectl, "audit", "app", "-n", namespace, "-o", "json", *args)
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found


def test_audit_shows_a_reverted_drift_with_its_values(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """A patched ConfigMap is in the trail: object, reverted, manager, 5.7 → 5.5; a Secret's value never."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds"},
        "stringData": {"password": "hunter2-original"},
    }
    resources = [configmap(DB, DB_VERSION="5.7"), secret]
    apply(kubectl, environment("app", namespace, resources))
    wait_condition(kubectl, "app", namespace, "InSync", "True")
    quiet = run_cli(kubectl, "audit", "app", "-n", namespace)
    assert (quiet.returncode, quiet.stdout.strip()) == (0, "no drift recorded")

    kubectl("patch", "configmap", DB, "-n", namespace, "-p", '{"data":{"DB_VERSION":"5.5"}}')
    kubectl(
        "patch", "secret", "creds", "-n", namespace, "-p", '{"stringData":{"password":"x-leak"}}'
    )

    def both() -> list[dict[str, Any]] | None:
        found = incidents(kubectl, namespace)
        return found if {i["kind"] for i in found} >= {"ConfigMap", "Secret"} else None

    found = wait_for(both, timeout=20, message="the ConfigMap's and the Secret's incidents")

    db = next(i for i in found if i["kind"] == "ConfigMap")
    assert (db["namespace"], db["name"], db["action"]) == (namespace, DB, "reverted")
    assert db["paths"] == ["/data/DB_VERSION"]
    assert db["changedBy"] == "kubectl-patch"
    assert db["values"] == [{"path": "/data/DB_VERSION", "blueprint": "5.7", "live": "5.5"}]
    table = run_cli(kubectl, "audit", "app", "-n", namespace, "--since", "1h")
    assert table.returncode == 0, table.stderr
    assert table.stdout.split()[:6] == ["TIME", "OBJECT", "ACTION", "PATHS", "BY", "VALUES"]
    row = next(line for line in table.stdout.splitlines() if f"ConfigMap/{namespace}/{DB}" in line)
    assert "reverted" in row
    assert "kubectl-patch" in row
    assert row.endswith("/data/DB_VERSION: 5.7 → 5.5")
    for shown in (table.stdout, json.dumps(found)):
        assert "hunter2" not in shown
        assert "x-leak" not in shown
        assert "aHVudGVyMi" not in shown  # nor their base64
        assert "eC1sZWFr" not in shown
    # --since filters: once a millisecond has passed, nothing is that new.
    wait_for(lambda: incidents(kubectl, namespace, "--since", "1ms") == [], message="--since 1ms")
    bad = run_cli(kubectl, "audit", "app", "-n", namespace, "--since", "soon")
    assert bad.returncode == 2
    assert "'soon' is not a duration" in bad.stderr


@pytest.fixture
def other_namespace(core_api: k8s.CoreV1Api) -> Iterator[str]:
    """A second namespace, for a second Environment."""
    name = f"t-{secrets.token_hex(4)}"
    core_api.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    core_api.delete_namespace(name)


def test_compare_shows_declared_and_live_differences(
    kubectl: Kubectl, operator: Operator, namespace: str, other_namespace: str
) -> None:
    """dev declares 5.7, staging 5.5 and its image is changed live: rows for both, exit 1 naming the drift."""
    web = deployment("web", image="nginx:1.27.3")
    apply(kubectl, environment("dev", namespace, [configmap(DB, DB_VERSION="5.7"), web]))
    staging = environment("staging", other_namespace, [configmap(DB, DB_VERSION="5.5"), web])
    apply(kubectl, staging)
    wait_condition(kubectl, "dev", namespace, "InSync", "True")
    wait_condition(kubectl, "staging", other_namespace, "InSync", "True")
    same = run_cli(kubectl, "compare", f"{namespace}/dev", f"{other_namespace}/staging")
    assert same.returncode == 0, same.stderr
    # Observe keeps the live change (Enforce would revert it before compare could see it).
    apply(kubectl, {**staging, "spec": {**staging["spec"], "mode": "Observe"}})
    wait_condition(kubectl, "staging", other_namespace, "Ready", "True", reason="Observing")
    kubectl("set", "image", "deploy/web", "web=nginx:1.26.0", "-n", other_namespace)

    done = run_cli(kubectl, "compare", f"{namespace}/dev", f"{other_namespace}/staging")

    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["OBJECT", "FIELD", f"{namespace}/dev", f"{other_namespace}/staging"]
    image = "/spec/template/spec/containers/0/image"
    drifted = ["nginx:1.27.3", "(live:", "nginx:1.26.0)"]
    assert lines[1].split() == ["Deployment/web", image, "nginx:1.27.3", *drifted]
    assert lines[2].split() == ["ConfigMap/db", "/data/DB_VERSION", "5.7", "5.5"]
    assert "live differs from declared:" in done.stdout
    assert f"  {other_namespace}/staging: Deployment/web {image}" in lines
    assert not any("/status" in line or "/metadata/uid" in line for line in lines)

    doc = json.loads(
        run_cli(
            kubectl, "compare", f"{namespace}/dev", f"{other_namespace}/staging", "-o", "json"
        ).stdout
    )
    rows = {(r["kind"], r["path"]): r for r in doc["rows"]}
    assert rows[("Deployment", image)]["liveDiffers"] == [f"{other_namespace}/staging"]
    assert rows[("ConfigMap", "/data/DB_VERSION")]["declared"] == {
        f"{namespace}/dev": "5.7",
        f"{other_namespace}/staging": "5.5",
    }
    assert status(kubectl, "staging", other_namespace)["summary"]["drifted"] == 1


def blueprint(name: str) -> dict[str, Any]:
    """A database Blueprint: the image and DB_VERSION are values, everything else is shared."""
    db = deployment("db", image="mysql:5.7")
    return {
        "apiVersion": "driftguard.io/v1alpha1",
        "kind": "Blueprint",
        "metadata": {"name": name},
        "spec": {
            "values": {
                "type": "object",
                "properties": {
                    "dbImage": {"type": "string", "default": "mysql:5.7"},
                    "dbVersion": {"type": "string", "default": "5.7"},
                },
            },
            "parameters": [
                {
                    "name": "dbImage",
                    "targets": [
                        {
                            "kind": "Deployment",
                            "name": "db",
                            "path": "/spec/template/spec/containers/0/image",
                        }
                    ],
                },
                {
                    "name": "dbVersion",
                    "targets": [{"kind": "ConfigMap", "name": DB, "path": "/data/DB_VERSION"}],
                },
            ],
            "resources": [configmap(DB, DB_VERSION="5.7", DB_HOST="db"), db],
        },
    }


def from_blueprint(name: str, namespace: str, ref: str, **values: str) -> dict[str, Any]:
    env = environment(name, namespace, [], blueprintRef={"name": ref}, values=values)
    del env["spec"]["resources"]
    return env


@pytest.fixture
def third_namespace(core_api: k8s.CoreV1Api) -> Iterator[str]:
    """A third namespace, for a third Environment."""
    name = f"t-{secrets.token_hex(4)}"
    core_api.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    core_api.delete_namespace(name)


def test_compare_every_environment_of_a_blueprint(
    kubectl: Kubectl,
    operator: Operator,
    namespace: str,
    other_namespace: str,
    third_namespace: str,
) -> None:
    """dev, staging and prod of one Blueprint: the image values differ, prod's DB_VERSION is 5.5 live."""
    ref = f"shop-{namespace}"
    kubectl("apply", "-f", "-", input=yaml.safe_dump(blueprint(ref)))
    try:
        envs = [
            from_blueprint("dev", namespace, ref, dbImage="mysql:5.7.44"),
            from_blueprint("staging", other_namespace, ref),
            from_blueprint("prod", third_namespace, ref),
        ]
        for env in envs:
            apply(kubectl, env)
        for env in envs:
            wait_condition(
                kubectl, env["metadata"]["name"], env["metadata"]["namespace"], "InSync", "True"
            )
        prod = envs[2]
        apply(kubectl, {**prod, "spec": {**prod["spec"], "mode": "Observe"}})
        wait_condition(kubectl, "prod", third_namespace, "Ready", "True", reason="Observing")
        kubectl(
            "patch", "configmap", DB, "-n", third_namespace, "-p", '{"data":{"DB_VERSION":"5.5"}}'
        )

        done = run_cli(kubectl, "compare", "--blueprint", ref)

        assert done.returncode == 1, done.stderr
        labels = sorted(
            [f"{namespace}/dev", f"{other_namespace}/staging", f"{third_namespace}/prod"]
        )
        lines = done.stdout.splitlines()
        assert lines[0].split() == ["OBJECT", "FIELD", *labels]
        image = "/spec/template/spec/containers/0/image"
        rows = {
            tuple(line.split()[:2]): line
            for line in lines[1:]
            if line.startswith(("Deployment", "ConfigMap"))
        }
        assert set(rows) == {("Deployment/db", image), ("ConfigMap/db", "/data/DB_VERSION")}
        assert lines[1].startswith("Deployment/db")  # images first
        doc = json.loads(run_cli(kubectl, "compare", "--blueprint", ref, "-o", "json").stdout)
        found = {(r["kind"], r["path"]): r for r in doc["rows"]}
        assert found[("Deployment", image)]["declared"] == {
            f"{namespace}/dev": "mysql:5.7.44",
            f"{other_namespace}/staging": "mysql:5.7",
            f"{third_namespace}/prod": "mysql:5.7",
        }
        version = found[("ConfigMap", "/data/DB_VERSION")]
        assert set(version["declared"].values()) == {"5.7"}
        assert version["live"][f"{third_namespace}/prod"] == "5.5"
        assert version["liveDiffers"] == [f"{third_namespace}/prod"]
        assert doc["drift"] == [f"{third_namespace}/prod: ConfigMap/db /data/DB_VERSION"]
        assert "5.7 (live: 5.5)" in rows[("ConfigMap/db", "/data/DB_VERSION")]
    finally:
        kubectl("delete", "blueprint", ref, "--wait=false", check=False)

    unknown = run_cli(kubectl, "compare", "--blueprint", f"none-{namespace}")
    assert unknown.returncode == 2
    assert f"no Environment uses Blueprint none-{namespace}" in unknown.stderr


def test_rollback_undoes_a_bad_blueprint_change_by_pinning(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """A Blueprint change makes revision 2; rollback to 1 pins the Blueprint's revision 1 and restores it."""
    ref = f"shop-{namespace}"
    kubectl("apply", "-f", "-", input=yaml.safe_dump(blueprint(ref)))
    try:
        apply(kubectl, from_blueprint("app", namespace, ref))
        wait_for(lambda: db_version(kubectl, namespace) == "5.7", message="DB 5.7")
        bad = [
            {"op": "replace", "path": "/spec/values/properties/dbVersion/default", "value": "5.5"}
        ]
        kubectl("patch", "blueprint", ref, "--type", "json", "-p", json.dumps(bad))
        wait_for(
            lambda: db_version(kubectl, namespace) == "5.5", message="DB 5.5 from the Blueprint"
        )
        kept = wait_revisions(kubectl, namespace, [1, 2])
        assert [r["blueprint"]["revision"] for r in kept] == [1, 2]
        diff = run_cli(kubectl, "history", "app", "-n", namespace, "--diff", "1", "2")
        assert f"+++ revision 2/resources ({ref}@2)" in diff.stdout
        assert "+    DB_VERSION: '5.5'" in diff.stdout

        done = run_cli(kubectl, "rollback", "app", "-n", namespace, "--to-revision", "1")

        assert done.returncode == 0, done.stderr
        assert f"pinned to Blueprint {ref} revision 1" in done.stdout
        assert spec_of(kubectl, namespace)["blueprintRef"] == {"name": ref, "revision": 1}
        wait_for(lambda: db_version(kubectl, namespace) == "5.7", message="DB back at 5.7")
        third = wait_revisions(kubectl, namespace, [1, 2, 3])[-1]
        assert third["blueprint"] == {"name": ref, "revision": 1}
    finally:
        kubectl("delete", "blueprint", ref, "--wait=false", check=False)
