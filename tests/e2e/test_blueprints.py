"""One Blueprint drives dev, staging and prod; every applied revision is remembered;
every drift is written down where an operator restart finds it."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from envs import (
    ROOT,
    Operator,
    apply,
    condition,
    configmap,
    deployment,
    events,
    get,
    status,
    wait_condition,
)
from helpers import Kubectl, wait_for
from kubernetes import client as k8s

DB = "/spec/template/spec/containers/0/image"


def shop(name: str, *, db_default: str = "mysql:5.7", extra: dict[str, str] | None = None) -> Any:
    """The database story's Blueprint: a Deployment and its ConfigMap, image and setting typed."""
    return {
        "apiVersion": "driftguard.io/v1alpha1",
        "kind": "Blueprint",
        "metadata": {"name": name},
        "spec": {
            "description": "the shop: a database and its settings",
            "values": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "dbImage": {"type": "string", "pattern": "^mysql:", "default": db_default},
                    "replicas": {"type": "integer", "minimum": 1, "maximum": 5, "default": 1},
                    "logLevel": {"type": "string", "enum": ["debug", "info"], "default": "info"},
                },
            },
            "resources": [
                deployment("db", image="placeholder", replicas=1),
                configmap("db-config", LOG_LEVEL="placeholder", **(extra or {})),
            ],
            "parameters": [
                {"name": "dbImage", "targets": [{"kind": "Deployment", "name": "db", "path": DB}]},
                {
                    "name": "replicas",
                    "targets": [{"kind": "Deployment", "name": "db", "path": "/spec/replicas"}],
                },
                {
                    "name": "logLevel",
                    "targets": [
                        {"kind": "ConfigMap", "name": "db-config", "path": "/data/LOG_LEVEL"}
                    ],
                },
            ],
        },
    }


def made_from(name: str, namespace: str, blueprint: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "driftguard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"blueprintRef": {"name": blueprint}, **spec},
    }


@pytest.fixture
def three(core_api: k8s.CoreV1Api) -> Iterator[list[str]]:
    """dev, staging and prod: three fresh namespaces."""
    token = secrets.token_hex(3)
    names = [f"t-{token}-{stage}" for stage in ("dev", "staging", "prod")]
    for name in names:
        core_api.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield names
    for name in names:
        core_api.delete_namespace(name)


@pytest.fixture
def blueprint_name(kubectl: Kubectl) -> Iterator[str]:
    name = f"shop-{secrets.token_hex(3)}"
    yield name
    kubectl("delete", "blueprint", name, "--ignore-not-found", "--wait=false")


def image(kubectl: Kubectl, namespace: str) -> str | None:
    found = get(kubectl, "deployment", "db", namespace)
    return found["spec"]["template"]["spec"]["containers"][0]["image"] if found else None


def data(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    found = get(kubectl, "configmap", "db-config", namespace) or {}
    return dict(found.get("data") or {})


def revisions(kubectl: Kubectl, namespace: str, env: str) -> list[int]:
    listing = kubectl.json(
        "get",
        "controllerrevisions",
        "-n",
        namespace,
        "-l",
        f"driftguard.io/environment={env},driftguard.io/record=history",
    )
    return sorted(int(item["revision"]) for item in listing["items"])


def blueprint_ready(kubectl: Kubectl, name: str) -> dict[str, Any]:
    found = kubectl.json("get", "blueprint", name)
    for entry in (found.get("status") or {}).get("conditions") or []:
        if entry["type"] == "Ready":
            return dict(entry)
    return {}


def test_one_blueprint_makes_three_environments_that_differ_only_in_their_values(
    operator: Operator, kubectl: Kubectl, three: list[str], blueprint_name: str
) -> None:
    """dev, staging, prod from one Blueprint: defaults where unset, values where set."""
    apply(kubectl, shop(blueprint_name))
    dev, staging, prod = three
    apply(kubectl, made_from("shop", dev, blueprint_name, values={"logLevel": "debug"}))
    apply(kubectl, made_from("shop", staging, blueprint_name))
    apply(kubectl, made_from("shop", prod, blueprint_name, values={"replicas": 3}))
    for namespace in three:
        wait_condition(kubectl, "shop", namespace, "Ready", "True", reason="Applied")
    assert [image(kubectl, ns) for ns in three] == ["mysql:5.7"] * 3
    assert [data(kubectl, ns)["LOG_LEVEL"] for ns in three] == ["debug", "info", "info"]
    replicas = [get(kubectl, "deployment", "db", ns)["spec"]["replicas"] for ns in three]  # type: ignore[index]
    assert replicas == [1, 1, 3]
    assert status(kubectl, "shop", staging)["blueprint"] == {"name": blueprint_name, "revision": 1}
    wait_for(
        lambda: (
            blueprint_ready(kubectl, blueprint_name).get("status") == "True"
            and kubectl.json("get", "blueprint", blueprint_name)["status"].get("environments") == 3
        ),
        timeout=20,
        message="the Blueprint Ready with 3 Environments",
    )
    listed = kubectl("get", "environment", "shop", "-n", dev).stdout
    assert blueprint_name in listed, listed  # the Blueprint printer column


def test_a_blueprint_change_reaches_every_environment_and_each_records_a_revision(
    operator: Operator, kubectl: Kubectl, three: list[str], blueprint_name: str
) -> None:
    """Upgrading the Blueprint's default database upgrades all three; each keeps revision 2."""
    apply(kubectl, shop(blueprint_name))
    for namespace in three:
        apply(kubectl, made_from("shop", namespace, blueprint_name))
    for namespace in three:
        wait_condition(kubectl, "shop", namespace, "Ready", "True", reason="Applied")
    apply(kubectl, shop(blueprint_name, db_default="mysql:8.0", extra={"CHARSET": "utf8mb4"}))
    wait_for(
        lambda: [image(kubectl, ns) for ns in three] == ["mysql:8.0"] * 3,
        timeout=30,
        message="the new default image in every environment",
    )
    assert all(data(kubectl, ns).get("CHARSET") == "utf8mb4" for ns in three)
    for namespace in three:
        wait_for(
            lambda ns=namespace: revisions(kubectl, ns, "shop") == [1, 2],
            timeout=20,
            message=f"two history records in {namespace}",
        )
        assert status(kubectl, "shop", namespace)["blueprint"]["revision"] == 2


def test_a_bad_blueprint_changes_nothing_anywhere_and_says_why(
    operator: Operator, kubectl: Kubectl, three: list[str], blueprint_name: str
) -> None:
    """A target path the templates lack: Blueprint and Environments not Ready, objects as they were."""
    apply(kubectl, shop(blueprint_name))
    for namespace in three[:2]:
        apply(kubectl, made_from("shop", namespace, blueprint_name))
    for namespace in three[:2]:
        wait_condition(kubectl, "shop", namespace, "Ready", "True", reason="Applied")
    before = [
        get(kubectl, "deployment", "db", ns)["metadata"]["resourceVersion"] for ns in three[:2]
    ]  # type: ignore[index]
    bad = shop(blueprint_name, db_default="mysql:8.0")
    bad["spec"]["parameters"][0]["targets"][0]["path"] = "/spec/template/spec/nowhere/image"
    apply(kubectl, bad)
    ready = wait_for(
        lambda: (
            blueprint_ready(kubectl, blueprint_name).get("status") == "False"
            and blueprint_ready(kubectl, blueprint_name)
        ),
        timeout=20,
        message="the Blueprint not Ready",
    )
    assert "/spec/template/spec/nowhere/image" in ready["message"], ready
    for namespace in three[:2]:
        found = wait_condition(kubectl, "shop", namespace, "Ready", "False", reason="InvalidSpec")
        assert blueprint_name in found["message"], found
        assert "revision 2" in found["message"], found
    after = [
        get(kubectl, "deployment", "db", ns)["metadata"]["resourceVersion"] for ns in three[:2]
    ]  # type: ignore[index]
    assert after == before
    assert [image(kubectl, ns) for ns in three[:2]] == ["mysql:5.7"] * 2
    # Still enforced meanwhile, with the last good revision.
    kubectl("set", "image", "deployment/db", "db=mysql:5.5", "-n", three[0])
    wait_for(lambda: image(kubectl, three[0]) == "mysql:5.7", timeout=20, message="reverted")


def test_values_that_fail_the_schema_are_invalid_spec_and_nothing_is_made(
    operator: Operator, kubectl: Kubectl, namespace: str, blueprint_name: str
) -> None:
    """A value outside the schema names the value and the rule; no object appears."""
    apply(kubectl, shop(blueprint_name))
    apply(kubectl, made_from("shop", namespace, blueprint_name, values={"replicas": 9}))
    found = wait_condition(kubectl, "shop", namespace, "Ready", "False", reason="InvalidSpec")
    assert "values.replicas" in found["message"], found
    assert "maximum" in found["message"], found
    assert get(kubectl, "deployment", "db", namespace) is None
    assert get(kubectl, "configmap", "db-config", namespace) is None
    # The Blueprint says which of its Environments it refuses, and why.
    refused = wait_for(
        lambda: (kubectl.json("get", "blueprint", blueprint_name).get("status") or {}).get(
            "invalidEnvironments"
        ),
        timeout=20,
        message="the refused Environment in the Blueprint's status",
    )
    assert refused[0].startswith(f"{namespace}/shop: spec.values"), refused


def test_a_missing_blueprint_is_invalid_spec_until_it_appears(
    operator: Operator, kubectl: Kubectl, namespace: str, blueprint_name: str
) -> None:
    """An Environment can come before its Blueprint: it is applied when the Blueprint arrives."""
    apply(kubectl, made_from("shop", namespace, blueprint_name))
    found = wait_condition(kubectl, "shop", namespace, "Ready", "False", reason="InvalidSpec")
    assert "does not exist" in found["message"], found
    apply(kubectl, shop(blueprint_name))
    wait_condition(kubectl, "shop", namespace, "Ready", "True", reason="Applied", timeout=30)
    assert image(kubectl, namespace) == "mysql:5.7"


def test_an_environment_pinned_to_a_revision_stays_there(
    operator: Operator, kubectl: Kubectl, three: list[str], blueprint_name: str
) -> None:
    """prod pins revision 1; the Blueprint moves to 2; dev follows, prod does not, until unpinned."""
    dev, _, prod = three
    apply(kubectl, shop(blueprint_name))
    wait_for(
        lambda: blueprint_ready(kubectl, blueprint_name).get("status") == "True",
        timeout=20,
        message="revision 1 checked (and kept)",
    )
    apply(kubectl, made_from("shop", dev, blueprint_name))
    pinned = made_from("shop", prod, blueprint_name)
    pinned["spec"]["blueprintRef"]["revision"] = 1
    apply(kubectl, pinned)
    for namespace in (dev, prod):
        wait_condition(kubectl, "shop", namespace, "Ready", "True", reason="Applied")
    apply(kubectl, shop(blueprint_name, db_default="mysql:8.0"))
    wait_for(lambda: image(kubectl, dev) == "mysql:8.0", timeout=30, message="dev follows")
    assert image(kubectl, prod) == "mysql:5.7"
    assert status(kubectl, "shop", prod)["blueprint"] == {"name": blueprint_name, "revision": 1}
    pinned["spec"]["blueprintRef"]["revision"] = 2
    apply(kubectl, pinned)
    wait_for(lambda: image(kubectl, prod) == "mysql:8.0", timeout=30, message="prod moves to 2")


def test_history_keeps_revision_history_limit_records(
    operator: Operator, kubectl: Kubectl, namespace: str
) -> None:
    """Four blueprints applied with revisionHistoryLimit 2: the last two records are kept."""
    env = {
        "apiVersion": "driftguard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": "app", "namespace": namespace},
        "spec": {"revisionHistoryLimit": 2, "resources": [configmap("settings", DB="5.7")]},
    }
    for version in ("5.7", "5.6", "5.5", "8.0"):
        env["spec"]["resources"] = [configmap("settings", DB=version)]
        apply(kubectl, env)
        wait_for(
            lambda v=version: (
                (get(kubectl, "configmap", "settings", namespace) or {}).get("data", {}).get("DB")
                == v
            ),
            timeout=20,
            message=f"DB={version} applied",
        )
    wait_for(
        lambda: revisions(kubectl, namespace, "app") == [3, 4],
        timeout=20,
        message="revisions 3 and 4 kept, 1 and 2 dropped",
    )
    record = kubectl.json("get", "controllerrevision", "app-r4", "-n", namespace)
    notes = record["metadata"]["annotations"]
    assert notes["driftguard.io/generation"] == "4"
    assert "kubectl-client-side-apply" in notes["driftguard.io/spec-managers"]
    assert record["data"]["spec"]["resources"][0]["data"] == {"DB": "8.0"}
    assert record["metadata"]["ownerReferences"][0]["kind"] == "Environment"


def audit_trail(kubectl: Kubectl, namespace: str, env: str) -> list[dict[str, Any]]:
    found = get(kubectl, "configmap", f"{env}-drift-audit", namespace) or {}
    text = (found.get("data") or {}).get("incidents.jsonl", "")
    return [json.loads(line) for line in text.splitlines() if line]


def test_the_audit_trail_records_each_drift_and_survives_an_operator_restart(
    operator: Operator, kubectl: Kubectl, namespace: str
) -> None:
    """Time, object, paths, values (a Secret's never), manager, action: kept across a restart."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db-password"},
        "stringData": {"password": "s3cr3t-blueprint"},
    }
    env = {
        "apiVersion": "driftguard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": "app", "namespace": namespace},
        "spec": {"resources": [configmap("settings", DB_VERSION="5.7"), secret]},
    }
    apply(kubectl, env)
    wait_condition(kubectl, "app", namespace, "Ready", "True", reason="Applied")
    kubectl(
        "patch", "configmap", "settings", "-n", namespace, "-p", '{"data":{"DB_VERSION":"5.5"}}'
    )
    wait_for(
        lambda: any(e["name"] == "settings" for e in audit_trail(kubectl, namespace, "app")),
        timeout=20,
        message="the ConfigMap drift in the audit trail",
    )
    first = next(e for e in audit_trail(kubectl, namespace, "app") if e["name"] == "settings")
    assert first["action"] == "reverted"
    assert first["paths"] == ["/data/DB_VERSION"]
    assert first["changedBy"] == "kubectl-patch"
    assert first["values"] == [{"path": "/data/DB_VERSION", "blueprint": "5.7", "live": "5.5"}]
    operator.stop()
    operator.start()
    kubectl(
        "patch",
        "secret",
        "db-password",
        "-n",
        namespace,
        "-p",
        '{"stringData":{"password":"x-live"}}',
    )
    wait_for(
        lambda: any(e["name"] == "db-password" for e in audit_trail(kubectl, namespace, "app")),
        timeout=30,
        message="the Secret drift in the audit trail, after the restart",
    )
    trail = audit_trail(kubectl, namespace, "app")
    assert [e["name"] for e in trail][:1] == ["settings"], "the first incident survived"
    text = (get(kubectl, "configmap", "app-drift-audit", namespace) or {})["data"][
        "incidents.jsonl"
    ]
    for secret_value in ("s3cr3t", "x-live", "eC1saXZl"):
        assert secret_value not in text
    assert "<redacted>" in text
    assert events(kubectl, namespace, "DriftReverted")


def test_observe_flags_are_audited_and_environment_info_names_the_revision(
    operator: Operator, kubectl: Kubectl, namespace: str, blueprint_name: str
) -> None:
    """Observe: a flagged drift in the trail; driftguard_environment_info carries the Blueprint."""
    apply(kubectl, shop(blueprint_name))
    ready = made_from("shop", namespace, blueprint_name)
    apply(kubectl, {**ready, "spec": {**ready["spec"], "mode": "Enforce"}})
    wait_condition(kubectl, "shop", namespace, "Ready", "True", reason="Applied")
    apply(kubectl, {**ready, "spec": {**ready["spec"], "mode": "Observe"}})
    wait_condition(kubectl, "shop", namespace, "Ready", "True", reason="Observing")
    kubectl("set", "image", "deployment/db", "db=mysql:5.5", "-n", namespace)
    wait_for(
        lambda: any(e["action"] == "flagged" for e in audit_trail(kubectl, namespace, "shop")),
        timeout=20,
        message="the flagged drift in the trail",
    )
    flagged = next(e for e in audit_trail(kubectl, namespace, "shop") if e["action"] == "flagged")
    assert flagged["values"] == [{"path": DB, "blueprint": "mysql:5.7", "live": "mysql:5.5"}]
    assert image(kubectl, namespace) == "mysql:5.5"
    assert condition(kubectl, "shop", namespace, "InSync")["status"] == "False"
    wait_for(
        lambda: (
            operator.metric(
                "driftguard_environment_info",
                namespace=namespace,
                environment="shop",
                blueprint=blueprint_name,
                revision="1",
            )
            == 1.0
        ),
        timeout=10,
        message="driftguard_environment_info for the Environment",
    )


def test_the_examples_are_accepted_by_the_api_server(operator: Operator, kubectl: Kubectl) -> None:
    """Everything in examples/ passes the CRDs' schemas (a server-side dry run)."""
    for namespace in ("platform", "dev", "staging", "prod"):
        kubectl("create", "namespace", namespace, check=False)
    done = kubectl("apply", "--dry-run=server", "-f", str(ROOT / "examples"))
    assert "blueprint.driftguard.io/shop created (server dry run)" in done.stdout, done.stdout
    assert "environment.driftguard.io/prod created (server dry run)" in done.stdout, done.stdout
