"""Who did it: the person behind each manual change, from the chart's admission webhook.

This module has a control plane of its own: the webhook configuration is cluster-wide and
would reach every other module's writes. Two operator replicas share the signing key, both
as the chart's ServiceAccount: `acting` watches every namespace and does the work,
`answering` watches none and alone answers the API server, so each attribution here crosses
replicas, as it does behind the chart's Service. The MutatingWebhookConfiguration is the
chart's own, rendered by helm, its clientConfig pointed at the local replica (no Pod runs).
People are client-certificate users bound to the cluster's `edit` role.
"""

import base64
import copy
import csv
import io
import json
import secrets
import ssl
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from envs import (
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICEACCOUNT,
    OPERATOR_USER,
    Operator,
    apply,
    chart_kubeconfig,
    configmap,
    deployment,
    environment,
    free_port,
    get,
    install_crd,
    run_cli,
    status,
    wait_condition,
)
from helpers import Helm, Kubectl, audit_events, start_control_plane, wait_for

from driftguard.cli import localhook
from driftguard.controlplane import ControlPlane
from driftguard.core.attribution import ANNOTATION, Signer

ENV = "app"
PEOPLE = ("alice", "bob", "carol", "dave", "erin", "mallory", "frank", "lead", "lead2")
LEADS = "shop:leads"  # the acting replica's --exception-approvers
MUTATION_AUDIT = "mutation.webhook.admission.k8s.io/"


@dataclass
class Cluster:
    plane: ControlPlane
    admin: Kubectl
    acting: Operator
    answering: Operator
    webhook_port: int
    ca_pem: bytes
    signer: Signer
    people: dict[str, Path]

    def as_(self, person: str, *args: str, **options: Any) -> Any:
        return self.admin(*args, kubeconfig=self.people[person], **options)


@pytest.fixture(scope="module")
def cluster(
    helm: Helm, chart_rbac: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    plane = start_control_plane()
    try:
        admin = Kubectl(plane.kubeconfig)
        install_crd(admin)
        kubeconfig = chart_kubeconfig(plane, admin, chart_rbac)
        work = tmp_path_factory.mktemp("attribution")
        port = free_port()
        hook = localhook.prepare(work / "webhook", port)

        def replica(name: str, webhook_port: int, scope: list[str]) -> Operator:
            args = [f"--webhook-port={webhook_port}", *hook.args[1:]]
            return Operator(
                kubeconfig, work / f"{name}.log", plane.audit_log, extra_args=args, scope=scope
            )

        acting = replica("acting", free_port(), ["--all-namespaces"])
        acting.extra_args.append(f"--exception-approvers={LEADS}")
        # Watches only its own, empty namespace: it answers the webhook and does nothing else.
        answering = replica("answering", port, [f"--namespace={OPERATOR_NAMESPACE}"])
        people = {
            p: plane.user_kubeconfig(p, groups=["team", *([LEADS] if p.startswith("lead") else [])])
            for p in PEOPLE
        }
        webhooks = chart_webhooks(helm, hook)
        admin("apply", "-f", "-", input=yaml.safe_dump(webhooks))
        try:
            acting.start()
            answering.start()
            signer = Signer((hook.directory / "key").read_bytes())
            yield Cluster(plane, admin, acting, answering, port, hook.ca_pem, signer, people)
        finally:
            print(f"--- acting ---\n{acting.log_text()[-6000:]}")
            print(f"--- answering ---\n{answering.log_text()[-3000:]}")
            acting.stop()
            answering.stop()
    finally:
        plane.stop()


def chart_webhooks(helm: Helm, hook: localhook.LocalWebhook) -> dict[str, Any]:
    """The chart's MutatingWebhookConfiguration, each webhook calling the local replica."""
    values = {"fullnameOverride": OPERATOR_SERVICEACCOUNT}
    (found,) = [
        obj
        for obj in helm.template(values, namespace=OPERATOR_NAMESPACE)
        if obj["kind"] == "MutatingWebhookConfiguration"
    ]
    local = hook.configuration(operator_user=OPERATOR_USER)
    for hook_, ours in zip(found["webhooks"], local["webhooks"], strict=True):
        hook_["clientConfig"] = ours["clientConfig"]
    return dict(found)


def test_the_local_webhook_is_the_charts(helm: Helm, tmp_path: Path) -> None:
    """`make demo` and `make bench` configure what the chart installs, but for a URL."""
    hook = localhook.prepare(tmp_path, 9443)
    local = hook.configuration(operator_user=OPERATOR_USER)
    assert local["webhooks"] == chart_webhooks(helm, hook)["webhooks"]


@pytest.fixture
def space(cluster: Cluster) -> Iterator[str]:
    """A namespace where every person may edit, with an Environment in sync."""
    name = f"t-{secrets.token_hex(4)}"
    cluster.admin("create", "namespace", name)
    for person in PEOPLE:
        cluster.admin(
            *("create", "rolebinding", f"{person}-edit", "-n", name),
            *("--clusterrole=edit", f"--user={person}"),
        )
    # The cluster's edit role knows no CRDs: DriftExceptions are granted to the team here.
    rule = "--verb=get,list,watch,create,patch,delete"
    cluster.admin("create", "role", "exceptions", "-n", name, rule, "--resource=driftexceptions")
    view = ("--verb=get,list,watch", "--resource=environments")
    cluster.admin("create", "role", "environments-view", "-n", name, *view)
    for role in ("exceptions", "environments-view"):
        cluster.admin(
            *("create", "rolebinding", role, "-n", name), f"--role={role}", "--group=team"
        )
    blueprint = [configmap("db", DB_VERSION="5.7", EXTRA="kept"), deployment("web", replicas=2)]
    apply(cluster.admin, environment(ENV, name, blueprint, mode="Enforce"))
    wait_condition(cluster.admin, ENV, name, "InSync", "True", reason="InSync", timeout=60)
    # RBAC learns of the bindings through its informers.
    wait_for(
        lambda: (
            cluster.as_("alice", "auth", "can-i", "patch", "configmaps", "-n", name).stdout.strip()
            == "yes"
        ),
        message="alice's RoleBinding to take effect",
    )
    yield name
    cluster.admin("delete", "namespace", name, "--wait=false", check=False)


def last_drift_by(cluster: Cluster, namespace: str, obj: str, user: str | None) -> dict[str, Any]:
    """status.lastDrift once it names the object and the person (or, None, nobody)."""

    def seen() -> dict[str, Any] | None:
        last = status(cluster.admin, ENV, namespace).get("lastDrift") or {}
        if last.get("object") != obj or last.get("changedByUser") != user:
            return None
        return dict(last)

    found: dict[str, Any] = wait_for(seen, timeout=30, message=f"lastDrift on {obj} by {user}")
    return found


def named_everywhere(cluster: Cluster, namespace: str, obj: str, user: str) -> None:
    """An Event and the audit trail (driftguard audit -o json) name the person for obj."""
    kind, _, name = obj.split("/")
    wait_for(
        lambda: any(obj in m and f"by {user}" in m for m in event_messages(cluster, namespace)),
        message=f"an Event naming {user} for {obj}",
    )

    def in_trail() -> bool:
        done = run_cli(cluster.admin, "audit", ENV, "-n", namespace, "-o", "json")
        return done.returncode == 0 and any(
            (i.get("kind"), i.get("name"), i.get("user")) == (kind, name, user)
            for i in json.loads(done.stdout)
        )

    wait_for(in_trail, message=f"the audit trail to name {user} for {obj}")


def entry(cluster: Cluster, namespace: str, kind: str, name: str) -> dict[str, Any]:
    for item in status(cluster.admin, ENV, namespace).get("resources") or []:
        if (item["kind"], item["name"]) == (kind, name):
            return dict(item)
    raise AssertionError(f"{kind}/{name} is not in status.resources")


def event_messages(cluster: Cluster, namespace: str) -> list[str]:
    listing = cluster.admin.json("get", "events", "-n", namespace)
    return [str(item.get("message", "")) for item in listing["items"]]


def patch_data(cluster: Cluster, person: str, namespace: str, **data: str) -> None:
    body = json.dumps({"data": data})
    cluster.as_(person, "patch", "configmap", "db", "-n", namespace, "--type=merge", "-p", body)


def test_a_patch_names_its_person_everywhere(cluster: Cluster, space: str) -> None:
    """status, the Event, the log, the audit trail and the CLI name alice beside kubectl-patch."""
    patch_data(cluster, "alice", space, DB_VERSION="5.5")
    obj = f"ConfigMap/{space}/db"
    last = last_drift_by(cluster, space, obj, "alice")
    assert last["changedBy"] == "kubectl-patch"
    item = entry(cluster, space, "ConfigMap", "db")
    assert (item["changedByUser"], item["changedBy"]) == ("alice", "kubectl-patch")
    wait_for(
        lambda: any(
            obj in m and "alice (kubectl-patch)" in m for m in event_messages(cluster, space)
        ),
        message="an Event naming alice",
    )
    assert '"changed_by_user": "alice"' in cluster.acting.log_text()

    trail = wait_for(
        lambda: (
            (done := run_cli(cluster.admin, "audit", ENV, "-n", space)).returncode == 0
            and "kubectl-patch (alice)" in done.stdout
            and done
        ),
        message="driftguard audit to name alice",
    )
    assert obj in trail.stdout
    wide = run_cli(cluster.admin, "status", "-n", space, "-o", "wide")
    assert wide.returncode == 0, wide.stderr
    assert "CHANGED BY" in wide.stdout.splitlines()[0]
    assert "alice (kubectl-patch)" in wide.stdout


def test_an_edit_a_removed_field_a_scale_and_a_delete_are_attributed(
    cluster: Cluster, space: str
) -> None:
    """kubectl edit, a JSON-patch remove, kubectl scale and kubectl delete each name their person."""
    # Only the DB_VERSION line: a uid may hold "5?7" too.
    editor = {"KUBE_EDITOR": "sed -i '/DB_VERSION/s/5[.]7/5.6/'"}
    cluster.as_("bob", "edit", "configmap", "db", "-n", space, env=editor)
    last = last_drift_by(cluster, space, f"ConfigMap/{space}/db", "bob")
    assert last["changedBy"] == "kubectl-edit"
    named_everywhere(cluster, space, f"ConfigMap/{space}/db", "bob")
    wait_condition(cluster.admin, ENV, space, "InSync", "True", reason="InSync")

    remove = '[{"op": "remove", "path": "/data/EXTRA"}]'
    cluster.as_("carol", "patch", "configmap", "db", "-n", space, "--type=json", "-p", remove)
    last = wait_for(
        lambda: (
            (d := last_drift_by(cluster, space, f"ConfigMap/{space}/db", "carol"))
            and "/data/EXTRA" in d["paths"]
            and d
        ),
        message="the removed field attributed",
    )
    named_everywhere(cluster, space, f"ConfigMap/{space}/db", "carol")
    wait_condition(cluster.admin, ENV, space, "InSync", "True", reason="InSync")

    cluster.as_("dave", "scale", "deployment", "web", "-n", space, "--replicas=4")
    last_drift_by(cluster, space, f"Deployment/{space}/web", "dave")
    named_everywhere(cluster, space, f"Deployment/{space}/web", "dave")
    wait_for(
        lambda: (get(cluster.admin, "deployment", "web", space) or {})["spec"]["replicas"] == 2,
        message="the scale reverted",
    )

    cluster.as_("erin", "delete", "configmap", "db", "-n", space)
    last_drift_by(cluster, space, f"ConfigMap/{space}/db", "erin")
    named_everywhere(cluster, space, f"ConfigMap/{space}/db", "erin")
    wait_for(lambda: get(cluster.admin, "configmap", "db", space), message="db recreated")
    # The delete's record is an Event the answering replica signed, found by the acting one.
    assert any(f"ConfigMap/{space}/db deleted by erin" in m for m in event_messages(cluster, space))


def test_a_copied_stamp_names_the_copier(cluster: Cluster, space: str) -> None:
    """mallory puts alice's stamp from another write onto her own change: mallory is named."""
    patch_data(cluster, "alice", space, DB_VERSION="5.5")
    last_drift_by(cluster, space, f"ConfigMap/{space}/db", "alice")
    wait_condition(cluster.admin, ENV, space, "InSync", "True", reason="InSync")
    live = get(cluster.admin, "configmap", "db", space) or {}
    alices = live["metadata"]["annotations"][ANNOTATION]

    body = {"metadata": {"annotations": {ANNOTATION: alices}}, "data": {"DB_VERSION": "5.1"}}
    cluster.as_(
        *("mallory", "patch", "configmap", "db", "-n", space),
        *("--type=merge", "-p", json.dumps(body)),
    )
    last_drift_by(cluster, space, f"ConfigMap/{space}/db", "mallory")


def test_a_stamp_asked_of_the_webhook_directly_names_nobody_else(
    cluster: Cluster, space: str
) -> None:
    """mallory asks the webhook itself for a stamp in alice's name, then writes with it."""
    live = get(cluster.admin, "configmap", "db", space) or {}
    forged = copy.deepcopy(live)
    forged["data"]["DB_VERSION"] = "4.0"
    answer = post_review(cluster, forged, user="alice")
    ops = json.loads(base64.b64decode(answer["response"]["patch"]))
    token = ops[0]["value"] if isinstance(ops[0]["value"], str) else ops[0]["value"][ANNOTATION]
    planted = copy.deepcopy(forged)
    planted["metadata"].setdefault("annotations", {})[ANNOTATION] = token
    person = cluster.signer.stamped(planted)
    assert person is not None
    assert person.user == "alice"  # a genuine stamp for this very content: the attack is real

    body = {"metadata": {"annotations": {ANNOTATION: token}}, "data": {"DB_VERSION": "4.0"}}
    cluster.as_(
        *("mallory", "patch", "configmap", "db", "-n", space),
        *("--type=merge", "-p", json.dumps(body)),
    )
    last_drift_by(cluster, space, f"ConfigMap/{space}/db", "mallory")


def post_review(cluster: Cluster, obj: dict[str, Any], *, user: str) -> dict[str, Any]:
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "forged-1",
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "namespace": obj["metadata"]["namespace"],
            "name": obj["metadata"]["name"],
            "operation": "UPDATE",
            "userInfo": {"username": user, "groups": ["team", "system:authenticated"]},
            "object": obj,
            "options": {"fieldManager": "kubectl-patch"},
        },
    }
    context = ssl.create_default_context(cadata=cluster.ca_pem.decode())
    request = urllib.request.Request(
        f"https://127.0.0.1:{cluster.webhook_port}/attribution",
        data=json.dumps(review).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def test_an_unmanaged_object_never_reaches_the_webhook(cluster: Cluster, space: str) -> None:
    """The objectSelector keeps the webhook out of writes to objects driftguard does not manage."""
    loose = yaml.safe_dump(configmap("loose", v="1"))
    cluster.as_("alice", "apply", "-n", space, "-f", "-", input=loose)
    cluster.as_("alice", "patch", "configmap", "loose", "-n", space, "-p", '{"data":{"v":"2"}}')
    patch_data(cluster, "alice", space, DB_VERSION="5.4")
    last_drift_by(cluster, space, f"ConfigMap/{space}/db", "alice")

    def mutations(name: str) -> list[str]:
        return [
            key
            for event in audit_events(cluster.plane.audit_log, username="alice")
            if (event.get("objectRef") or {}).get("name") == name
            and (event.get("objectRef") or {}).get("namespace") == space
            for key in event.get("annotations") or {}
            if key.startswith(MUTATION_AUDIT)
        ]

    assert mutations("db"), "the managed ConfigMap's write reached the webhook"
    assert mutations("loose") == []
    assert ANNOTATION not in (get(cluster.admin, "configmap", "loose", space) or {})[
        "metadata"
    ].get("annotations", {})


def test_history_names_who_applied_each_revision(cluster: Cluster, space: str) -> None:
    """The Environment's writer is stamped too: `driftguard history` shows who applied it."""
    listed = wait_for(
        lambda: (
            (done := run_cli(cluster.admin, "history", ENV, "-n", space)).returncode == 0
            and "driftguard-admin" in done.stdout
            and done
        ),
        message="history to name the admin",
    )
    header, *rows = listed.stdout.splitlines()
    assert "APPLIED BY" in header
    assert "driftguard-admin" in rows[-1]


def test_with_the_webhook_down_writes_pass_and_nobody_is_blamed(
    cluster: Cluster, space: str
) -> None:
    """The answering replica stopped: frank's write succeeds, is reverted, and names nobody."""
    unattributed = cluster.acting.metric("driftguard_drift_unattributed_total", namespace=space)
    cluster.answering.stop()
    try:
        patch_data(cluster, "frank", space, DB_VERSION="5.0")  # let through: failurePolicy Ignore
        last = last_drift_by(cluster, space, f"ConfigMap/{space}/db", None)
        assert last["changedBy"] == "kubectl-patch"
        wait_for(
            lambda: (
                (get(cluster.admin, "configmap", "db", space) or {})["data"]["DB_VERSION"] == "5.7"
            ),
            message="frank's change reverted",
        )
        wait_for(
            lambda: (
                cluster.acting.metric("driftguard_drift_unattributed_total", namespace=space)
                > unattributed
            ),
            message="driftguard_drift_unattributed_total to move",
        )
    finally:
        cluster.answering.start()


def test_the_charts_webhook_never_refuses_and_skips_the_operator(helm: Helm) -> None:
    """Rendered with defaults: Ignore on failure, 2 s at most, managed objects only, a CA that
    vouches for the Service's certificate, and a signing key every replica mounts."""
    objects = helm.template({}, namespace="ops", release="dg")
    (config,) = [o for o in objects if o["kind"] == "MutatingWebhookConfiguration"]
    operator = "system:serviceaccount:ops:dg-driftguard"
    for hook in config["webhooks"]:
        assert hook["failurePolicy"] == "Ignore"
        assert hook["timeoutSeconds"] <= 2
        assert hook["sideEffects"] in ("None", "NoneOnDryRun")
        assert f'request.userInfo.username != "{operator}"' in [
            c["expression"] for c in hook["matchConditions"]
        ]
    by_name = {hook["name"]: hook for hook in config["webhooks"]}
    managed = by_name["attribution.driftguard.io"]
    assert managed["objectSelector"] == {
        "matchLabels": {"app.kubernetes.io/managed-by": "driftguard"}
    }
    assert {"CREATE", "UPDATE", "DELETE"} == set(managed["rules"][0]["operations"])
    assert by_name["environments.attribution.driftguard.io"]["rules"][0]["resources"] == [
        "environments",
        "blueprints",
        "driftexceptions",
    ]

    secrets_ = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    tls = {k: base64.b64decode(v) for k, v in secrets_["dg-driftguard-webhook-tls"]["data"].items()}
    assert base64.b64decode(managed["clientConfig"]["caBundle"]) == tls["ca.crt"]
    ca = x509.load_pem_x509_certificate(tls["ca.crt"])
    served = x509.load_pem_x509_certificate(tls["tls.crt"])
    served.verify_directly_issued_by(ca)
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "dg-driftguard-webhook.ops.svc" in names.get_values_for_type(x509.DNSName)
    assert managed["clientConfig"]["service"] == {
        "name": "dg-driftguard-webhook",
        "namespace": "ops",
        "path": "/attribution",
        "port": 443,
    }
    assert len(base64.b64decode(secrets_["dg-driftguard-attribution-key"]["data"]["key"])) >= 32


def test_a_drift_exception_names_who_created_it(cluster: Cluster, space: str) -> None:
    """The webhook stamps a DriftException too: its status says who created it."""
    body = {
        "apiVersion": "driftguard.io/v1alpha1",
        "kind": "DriftException",
        "metadata": {"name": "hold", "namespace": space},
        "spec": {
            "environmentRef": {"name": ENV},
            "changes": [{"kind": "Deployment", "name": "web", "paths": ["/spec/replicas"]}],
            "reason": "incident 4711",
            "duration": "1h",
        },
    }
    cluster.admin("apply", "-f", "-", input=yaml.safe_dump(body))
    wait_for(
        lambda: (
            ((get(cluster.admin, "driftexception", "hold", space) or {}).get("status") or {}).get(
                "createdBy"
            )
            == "driftguard-admin"
        ),
        message="createdBy to name the admin",
    )


def exception_status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    found = get(cluster.admin, "driftexception", name, namespace) or {}
    return dict(found.get("status") or {})


def as_cli(cluster: Cluster, person: str, *args: str) -> Any:
    done = run_cli(Kubectl(cluster.people[person]), *args)
    assert done.returncode == 0, done.stderr
    return done


def test_four_eyes_an_exception_needs_another_leads_approval(cluster: Cluster, space: str) -> None:
    """Pending until a member of the approvers' group who is not its author approves; a later
    change of its spec needs a new approval."""
    made = as_cli(
        cluster,
        *("lead", "exception", "create", ENV, "-n", space, "--object", "Deployment/web"),
        *("--path", "/spec/replicas", "--for", "1h", "--reason", "incident 4711"),
    )
    name = made.stdout.split()[0].removeprefix("driftexception/")

    def phase(wanted: str, why: str = "") -> dict[str, Any]:
        def seen() -> dict[str, Any] | None:
            found = exception_status(cluster, space, name)
            ok = found.get("phase") == wanted and why in str(found.get("message") or "")
            return found if ok else None

        status: dict[str, Any] = wait_for(seen, message=f"{name} {wanted} ({why})")
        return status

    assert phase("Pending", "waiting for a member of shop:leads")["createdBy"] == "lead"
    as_cli(cluster, "lead", "exception", "approve", name, "-n", space)
    phase("Pending", "lead created it")
    as_cli(cluster, "bob", "exception", "approve", name, "-n", space)
    phase("Pending", "bob is not in shop:leads")
    cluster.as_("alice", "scale", "deployment", "web", "-n", space, "--replicas=6")
    wait_for(
        lambda: (get(cluster.admin, "deployment", "web", space) or {})["spec"]["replicas"] == 2,
        message="reverted while the exception waits",
    )

    as_cli(cluster, "lead2", "exception", "approve", name, "-n", space)
    assert phase("Active")["approvedBy"] == "lead2"
    cluster.as_("alice", "scale", "deployment", "web", "-n", space, "--replicas=6")
    wait_for(
        lambda: entry(cluster, space, "Deployment", "web").get("state") == "Excepted",
        message="web Excepted once approved",
    )

    widened = json.dumps({"spec": {"reason": "incident 4711, and more"}})
    cluster.as_(
        *("lead", "patch", "driftexception", name, "-n", space, "--type=merge", "-p", widened)
    )
    phase("Pending", "waiting")
    wait_for(
        lambda: (get(cluster.admin, "deployment", "web", space) or {})["spec"]["replicas"] == 2,
        message="reverted once the approved spec changed",
    )


def test_the_report_sums_up_real_incidents_in_three_formats(cluster: Cluster, space: str) -> None:
    """alice's and bob's changes, reverted; an exception erin created, a lead approved and bob
    used: the report
    counts them by person and tool, times the reverts, lists the exception, in Markdown,
    JSON and CSV, and never prints a value."""
    patch_data(cluster, "alice", space, DB_VERSION="5.5")
    last_drift_by(cluster, space, f"ConfigMap/{space}/db", "alice")
    cluster.as_("bob", "scale", "deployment", "web", "-n", space, "--replicas=5")
    last_drift_by(cluster, space, f"Deployment/{space}/web", "bob")
    as_cli(cluster, "erin", "exception", "create", ENV, "-n", space, "--object", "Deployment/web",
           "--path", "/spec/replicas", "--for", "1h", "--reason", "incident 4711")  # fmt: skip
    (made,) = json.loads(
        as_cli(cluster, "erin", "exception", "list", "-n", space, "-o", "json").stdout
    )
    as_cli(cluster, "lead", "exception", "approve", made["metadata"]["name"], "-n", space)
    wait_for(
        lambda: exception_status(cluster, space, made["metadata"]["name"]).get("phase") == "Active",
        message="erin's exception Active once a lead approved it",
    )
    cluster.as_("bob", "scale", "deployment", "web", "-n", space, "--replicas=7")
    wait_for(lambda: entry(cluster, space, "Deployment", "web")["state"] == "Excepted",
             message="web Excepted")  # fmt: skip

    def reported() -> dict[str, Any] | None:
        done = run_cli(cluster.admin, "report", "-n", space, "-o", "json")
        assert done.returncode == 0, done.stderr
        doc: dict[str, Any] = json.loads(done.stdout)
        (env,) = doc["environments"]
        ready = env["incidents"]["reverted"] >= 2 and env["incidents"]["excepted"] >= 1
        return doc if ready and env["exceptions"] and env["outOfSyncSeconds"] > 0 else None

    doc = wait_for(reported, message="the report to hold the incidents (the trail flushes)")
    (env,) = doc["environments"]
    assert env["byPerson"]["alice"] >= 1
    assert env["byPerson"]["bob"] >= 2
    assert {"kubectl-patch", "kubectl"} <= set(env["byTool"])  # kubectl scale's manager
    assert env["revertLatencyMs"]["count"] >= 2
    assert env["revertLatencyMs"]["p50"] > 0
    (granted,) = env["exceptions"]
    assert (granted["reason"], granted["createdBy"]) == ("incident 4711", "erin")
    assert granted["approvedBy"] == "lead"
    assert env["trailCoversWindow"] is True

    markdown = run_cli(cluster.admin, "report", ENV, "-n", space).stdout
    assert "## Incidents by person" in markdown
    assert "| alice |" in markdown
    assert "| incident 4711 | erin | lead |" in markdown
    assert "5.5" not in markdown  # paths and people, never a value

    rows = list(csv.DictReader(io.StringIO(
        run_cli(cluster.admin, "report", "-n", space, "-o", "csv").stdout)))  # fmt: skip
    actions = {(r["name"], r["action"], r["user"]) for r in rows}
    assert ("db", "reverted", "alice") in actions
    assert ("web", "excepted", "bob") in actions
    assert any(r["action"] == "exception-active" and r["user"] == "erin" for r in rows)
