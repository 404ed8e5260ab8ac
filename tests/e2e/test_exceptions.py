"""DriftExceptions on the session's operator: chosen drift stands, with a reason, until its end.

An exception widens its Environment's allowedChanges by its own changes while it is Active:
exactly those paths may drift (state Excepted, naming it), prevention lets exactly them
through, and at the end (expiry or deletion) the operator reverts what it held by itself.
"""

from typing import Any

import yaml
from envs import (
    Operator,
    apply,
    configmap,
    deployment,
    environment,
    events,
    get,
    resource_status,
    run_cli,
    stays,
    wait_condition,
)
from helpers import Kubectl, wait_for

ENV = "app"
REPLICAS = [{"kind": "Deployment", "name": "web", "paths": ["/spec/replicas"], "maximum": 12}]


def start(kubectl: Kubectl, namespace: str, **spec: Any) -> None:
    blueprint = [configmap("db", DB_VERSION="5.7"), deployment("web", replicas=2)]
    apply(kubectl, environment(ENV, namespace, blueprint, **spec))
    wait_condition(kubectl, ENV, namespace, "InSync", "True", reason="InSync", timeout=60)


def exception_(
    name: str, namespace: str, *, changes: list[dict[str, Any]] = REPLICAS, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "driftguard.io/v1alpha1",
        "kind": "DriftException",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "environmentRef": {"name": ENV},
            "changes": changes,
            "reason": "incident 4711: hold capacity",
            **spec,
        },
    }


def phase(kubectl: Kubectl, name: str, namespace: str) -> str:
    found = get(kubectl, "driftexception", name, namespace) or {}
    return str((found.get("status") or {}).get("phase") or "")


def wait_phase(kubectl: Kubectl, name: str, namespace: str, wanted: str) -> None:
    wait_for(lambda: phase(kubectl, name, namespace) == wanted, message=f"{name} to be {wanted}")


def replicas(kubectl: Kubectl, namespace: str) -> int:
    return int((get(kubectl, "deployment", "web", namespace) or {})["spec"]["replicas"])


def scale(kubectl: Kubectl, namespace: str, count: int) -> None:
    kubectl("scale", "deployment", "web", "-n", namespace, f"--replicas={count}")


def wait_excepted(kubectl: Kubectl, namespace: str) -> None:
    wait_for(
        lambda: (
            resource_status(kubectl, ENV, namespace, "Deployment", "web").get("state") == "Excepted"
        ),
        message="web Excepted",
    )


def test_an_exception_lets_exactly_its_paths_drift(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """replicas 12 stands, Excepted; the image, a ConfigMap and replicas beyond 12 are reverted."""
    start(kubectl, namespace)
    apply(kubectl, exception_("hold", namespace, duration="1h"))
    wait_phase(kubectl, "hold", namespace, "Active")

    scale(kubectl, namespace, 12)
    wait_excepted(kubectl, namespace)
    assert resource_status(kubectl, ENV, namespace, "Deployment", "web")["exception"] == "hold"
    assert wait_for(lambda: events(kubectl, namespace, "Excepted"), message="an Excepted Event")
    stays(lambda: replicas(kubectl, namespace) == 12, seconds=2, message="12 replicas kept")

    kubectl("set", "image", "deployment/web", "web=nginx:1.25", "-n", namespace)
    kubectl("patch", "configmap", "db", "-n", namespace, "-p", '{"data":{"DB_VERSION":"5.5"}}')
    image = "{.spec.template.spec.containers[0].image}"
    wait_for(
        lambda: (
            kubectl("get", "deploy", "web", "-n", namespace, "-o", f"jsonpath={image}").stdout
            == "nginx:1.27.3"
        ),
        message="the image reverted",
    )
    wait_for(
        lambda: (get(kubectl, "configmap", "db", namespace) or {})["data"]["DB_VERSION"] == "5.7",
        message="the ConfigMap reverted",
    )
    assert replicas(kubectl, namespace) == 12

    scale(kubectl, namespace, 20)  # beyond the exception's maximum: drift
    wait_for(lambda: replicas(kubectl, namespace) == 2, message="20 replicas reverted to 2")
    assert operator.metric("driftguard_exceptions_active", namespace=namespace) == 1


def test_at_its_end_the_drift_is_reverted_by_itself(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """A 6-second exception: its drift stands, then goes back to the blueprint unasked."""
    start(kubectl, namespace)
    apply(kubectl, exception_("short", namespace, duration="6s"))
    wait_phase(kubectl, "short", namespace, "Active")
    scale(kubectl, namespace, 5)
    wait_excepted(kubectl, namespace)
    wait_for(lambda: replicas(kubectl, namespace) == 2, timeout=30, message="reverted at expiry")
    wait_phase(kubectl, "short", namespace, "Expired")
    assert wait_for(lambda: events(kubectl, namespace, "ExceptionEnded"), message="ExceptionEnded")
    assert operator.metric("driftguard_exceptions_active", namespace=namespace) == 0


def test_deleting_it_ends_it_early(kubectl: Kubectl, operator: Operator, namespace: str) -> None:
    start(kubectl, namespace)
    apply(kubectl, exception_("hold", namespace, duration="1h"))
    wait_phase(kubectl, "hold", namespace, "Active")
    scale(kubectl, namespace, 7)
    wait_excepted(kubectl, namespace)
    kubectl("delete", "driftexception", "hold", "-n", namespace)
    wait_for(lambda: replicas(kubectl, namespace) == 2, message="reverted once it is deleted")


def test_longer_than_the_cap_is_invalid_and_widens_nothing(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """48h against the default --max-exception-duration 24h: Invalid, and drift is reverted."""
    start(kubectl, namespace)
    apply(kubectl, exception_("long", namespace, duration="48h"))
    wait_phase(kubectl, "long", namespace, "Invalid")
    found = get(kubectl, "driftexception", "long", namespace) or {}
    assert "--max-exception-duration" in found["status"]["message"]
    scale(kubectl, namespace, 5)
    wait_for(lambda: replicas(kubectl, namespace) == 2, message="reverted: nothing excepted")


def test_the_schema_refuses_an_exception_without_a_reason_or_an_end(
    kubectl: Kubectl, namespace: str
) -> None:
    cases = [
        (exception_("a", namespace, duration="1h") | {}, "reason", {"reason": ""}),
        (exception_("b", namespace), "duration", {}),
        (exception_("c", namespace, duration="1h"), "duration", {"expiresAt": "2030-01-01T00:00:00Z"}),
    ]  # fmt: skip
    for body, word, extra in cases:
        body["spec"].update(extra)
        done = kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=False)
        assert done.returncode != 0, body
        assert word in done.stderr, done.stderr


def test_prevention_lets_exactly_the_excepted_paths_through(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """Under Deny, the exception's replicas are allowed at admission, the image still refused."""
    start(kubectl, namespace, prevention="Deny")
    probe = ("scale", "deployment/web", "-n", namespace, "--replicas=9", "--dry-run=server")
    wait_for(
        lambda: kubectl(*probe, check=False).returncode != 0, message="the Deny policy enforced"
    )
    apply(kubectl, exception_("hold", namespace, duration="1h"))
    wait_phase(kubectl, "hold", namespace, "Active")
    wait_for(
        lambda: kubectl(*probe, check=False).returncode == 0,
        message="the policy to let the excepted replicas through",
    )
    refused = kubectl(
        *("set", "image", "deployment/web", "web=nginx:1.25", "-n", namespace),
        "--dry-run=server",
        check=False,
    )
    assert refused.returncode != 0
    assert "ValidatingAdmissionPolicy" in refused.stderr


def test_an_exception_widens_the_blueprints_own_guardrail(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """The blueprint allows 2 to 4 replicas; an exception up to 12 lets 9 stand (Excepted)
    and through prevention, 5 of them within the guardrail stay Overridden, 20 goes back."""
    guardrail = [{"kind": "Deployment", "name": "web", "paths": ["/spec/replicas"],
                  "minimum": 2, "maximum": 4}]  # fmt: skip
    start(kubectl, namespace, prevention="Deny", allowedChanges=guardrail)
    probe = ("scale", "deployment/web", "-n", namespace, "--replicas=9", "--dry-run=server")
    wait_for(lambda: kubectl(*probe, check=False).returncode != 0, message="9 refused")
    apply(kubectl, exception_("hold", namespace, duration="1h"))
    wait_phase(kubectl, "hold", namespace, "Active")
    wait_for(lambda: kubectl(*probe, check=False).returncode == 0, message="9 let through")
    refused = kubectl(*probe[:4], "--replicas=20", "--dry-run=server", check=False)
    assert "at most 12" in refused.stderr

    scale(kubectl, namespace, 9)
    wait_excepted(kubectl, namespace)
    stays(lambda: replicas(kubectl, namespace) == 9, seconds=2, message="9 replicas kept")
    scale(kubectl, namespace, 3)
    wait_for(
        lambda: (
            resource_status(kubectl, ENV, namespace, "Deployment", "web").get("state")
            == "Overridden"
        ),
        message="3 is the blueprint's own allowance",
    )


def test_the_command_line_creates_lists_and_ends_one(
    kubectl: Kubectl, operator: Operator, namespace: str
) -> None:
    """driftguard exception create, list, then end: the drift it held is reverted at once."""
    start(kubectl, namespace)
    made = run_cli(
        kubectl,
        *("exception", "create", ENV, "-n", namespace, "--object", "Deployment/web"),
        *("--path", "/spec/replicas", "--maximum", "12", "--for", "1h"),
        *("--reason", "incident 4711: hold capacity"),
    )
    assert made.returncode == 0, made.stderr
    name = made.stdout.split()[0].removeprefix("driftexception/")
    wait_phase(kubectl, name, namespace, "Active")
    listed = run_cli(kubectl, "exception", "list", "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "ENVIRONMENT", "PHASE"]
    assert row.split()[:3] == [name, ENV, "Active"]
    assert "incident 4711" in row

    scale(kubectl, namespace, 9)
    wait_excepted(kubectl, namespace)
    ended = run_cli(kubectl, "exception", "end", name, "-n", namespace)
    assert ended.returncode == 0, ended.stderr
    wait_for(lambda: replicas(kubectl, namespace) == 2, message="reverted once ended")
    wait_phase(kubectl, name, namespace, "Ended")
    found = get(kubectl, "driftexception", name, namespace) or {}
    assert found["status"]["message"] == "ended early by driftguard-admin"


def test_the_command_line_refuses_an_unknown_environment(kubectl: Kubectl, namespace: str) -> None:
    done = run_cli(
        kubectl,
        *("exception", "create", "nope", "-n", namespace, "--path", "/spec/replicas"),
        *("--for", "1h", "--reason", "r"),
    )
    assert done.returncode == 1
    assert f"Environment {namespace}/nope not found" in done.stderr
