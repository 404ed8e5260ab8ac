"""Tenancy: an Environment can never do more than its own namespace is allowed to do.

A tenant, alice, may only manage Environments and ConfigMaps in her team's namespace,
and acts with real kubectl. Every operator here runs as the chart's ServiceAccount.
Each escape is refused with a status a person can act on, and changes nothing.

Tests that need operator flags (`--default-service-account`, `--allow-target-namespaces`)
run on this module's own control plane, whose one operator is started with those flags;
the others use the session's operator, which has none (the strict default).
"""

import base64
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from envs import (
    OPERATOR_NAMESPACE,
    OPERATOR_USER,
    Operator,
    allow_impersonation,
    apply,
    chart_kubeconfig,
    environment,
    events,
    get,
    install_crd,
    resource_status,
    status,
    stays,
    wait_condition,
)
from helpers import Kubectl, audit_events, start_control_plane, wait_for

from driftguard.controlplane import ControlPlane

ALLOWED_GLOB = "allowed-*"
DEFAULT_SA = ("--default-service-account", "tenant")
# Both forms: a list after one flag, and the flag repeated with `=`.
ALLOW_TARGETS = (
    "--allow-target-namespaces",
    "kube-system",
    f"--allow-target-namespaces={ALLOWED_GLOB}",
)
OWNER_LABELS = {
    "app.kubernetes.io/managed-by",
    "driftguard.io/environment",
    "driftguard.io/environment-namespace",
    "driftguard.io/adopted",
}
ALL_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]
READ_VERBS = ["get", "list", "watch"]


def configmap(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def secret(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


CLUSTER_ROLE = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": "escalated"},
    "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
}


def role(name: str, namespace: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": rules,
    }


def binding(name: str, namespace: str, subject: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [subject],
    }


def rule(group: str, resource: str, verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": [resource], "verbs": verbs}


@dataclass
class Site:
    """One control plane as a test sees it: admin and alice with kubectl, and its operator."""

    plane: ControlPlane
    admin: Kubectl
    alice: Kubectl
    operator: Operator
    namespaces: list[str] = field(default_factory=list)
    impersonable: set[str] = field(default_factory=set)

    def team(self, prefix: str, *, for_alice: bool = True) -> str:
        """A fresh namespace; alice may manage Environments and ConfigMaps there, nothing else."""
        name = f"{prefix}-{secrets.token_hex(3)}"
        self.admin("create", "namespace", name)
        self.namespaces.append(name)
        if for_alice:
            rules = [
                rule("driftguard.io", "environments", ALL_VERBS),
                rule("", "configmaps", ALL_VERBS),
            ]
            user = {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}
            self.grant(role("tenant-alice", name, rules), binding("tenant-alice", name, user))
            wait_for(
                lambda: self.alice("auth", "can-i", "create", "environments", "-n", name,
                                   check=False).stdout.strip() == "yes",
                message=f"alice's Role in {name} to take effect",
            )  # fmt: skip
        return name

    def serviceaccount(
        self, namespace: str, name: str, *grants: tuple[str, list[dict[str, Any]]]
    ) -> None:
        """A ServiceAccount in `namespace` with a Role of these rules in each (namespace, rules),
        which the operator may impersonate."""
        self.admin("create", "serviceaccount", name, "-n", namespace)
        if namespace not in self.impersonable:
            allow_impersonation(self.admin, namespace)
            self.impersonable.add(namespace)
        subject = {"kind": "ServiceAccount", "name": name, "namespace": namespace}
        for where, rules in grants:
            self.grant(role(f"sa-{name}", where, rules), binding(f"sa-{name}", where, subject))

    def grant(self, *objects: dict[str, Any]) -> None:
        self.admin("apply", "-f", "-", input=yaml.safe_dump_all(objects))

    def release(self) -> None:
        """Deletes the test's namespaces, its Environments first (finalizers and all)."""
        for namespace in self.namespaces:
            listing = self.admin("get", "environments", "-n", namespace, "-o", "name", check=False)
            for name in listing.stdout.split():
                patch = '{"metadata":{"finalizers":null}}'
                self.admin("patch", name, "-n", namespace, "--type=merge", "-p", patch, check=False)
            self.admin("delete", "namespace", namespace, "--wait=false", check=False)


def written(site: Site, namespace: str) -> list[str]:
    """What the operator wrote (not dry-run) to objects in a namespace: `verb resource/name`."""
    return [
        f"{event['verb']} {event['objectRef'].get('resource')}/{event['objectRef'].get('name')}"
        for event in site.operator.writes(namespace)
        if event.get("responseStatus", {}).get("code", 0) < 400
    ]


def deleted(site: Site, namespace: str) -> set[str]:
    """Names of objects in a namespace that the operator's DELETE requests removed or dry-ran."""
    return {
        event["objectRef"].get("name")
        for event in audit_events(site.plane.audit_log, username=OPERATOR_USER)
        if event["verb"] == "delete"
        and (event.get("objectRef") or {}).get("namespace") == namespace
        and event["objectRef"].get("resource") != "events"
        and event.get("responseStatus", {}).get("code", 0) < 400
    }


def ready_refused(site: Site, name: str, namespace: str) -> str:
    """Waits for Ready=False reason Forbidden, read by alice, and answers its message."""
    found = wait_condition(site.alice, name, namespace, "Ready", "False", reason="Forbidden")
    message: str = found["message"]
    return message


def never_in_sync(site: Site, name: str, namespace: str) -> None:
    """InSync never turns True for a while (the refusal is final, not a slow start)."""

    def is_not_in_sync() -> bool:
        conditions = status(site.admin, name, namespace).get("conditions") or []
        return not any(c["type"] == "InSync" and c["status"] == "True" for c in conditions)

    stays(is_not_in_sync, seconds=1.0, message=f"{namespace}/{name} reported InSync")


# -- sites ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alice(control_plane: ControlPlane) -> Kubectl:
    """kubectl as alice, an ordinary user, on the session's control plane."""
    return Kubectl(control_plane.user_kubeconfig("alice"))


@pytest.fixture
def site(
    control_plane: ControlPlane, kubectl: Kubectl, alice: Kubectl, operator: Operator
) -> Iterator[Site]:
    """The session's control plane and operator (no tenancy flags)."""
    found = Site(control_plane, kubectl, alice, operator)
    yield found
    found.release()


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    """This module's own control plane, for operators started with tenancy flags."""
    started = start_control_plane()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def plane_admin(plane: ControlPlane) -> Kubectl:
    admin = Kubectl(plane.kubeconfig)
    install_crd(admin)
    return admin


@pytest.fixture(scope="module")
def plane_operator(
    request: pytest.FixtureRequest,
    plane: ControlPlane,
    plane_admin: Kubectl,
    chart_rbac: list[dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    """The one operator on this module's plane, as the chart's SA, with the flags of the param."""
    kubeconfig = chart_kubeconfig(plane, plane_admin, chart_rbac)
    log = tmp_path_factory.mktemp("tenancy-operator") / "operator.log"
    handle = Operator(kubeconfig, log, plane.audit_log, extra_args=list(request.param))
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()
        print(f"--- operator log ({' '.join(request.param)}) ---\n{handle.log_text()[-6000:]}")


@pytest.fixture
def own_site(plane: ControlPlane, plane_admin: Kubectl, plane_operator: Operator) -> Iterator[Site]:
    """This module's control plane and its operator with the test's flags."""
    found = Site(plane, plane_admin, Kubectl(plane.user_kubeconfig("alice")), plane_operator)
    yield found
    found.release()


with_default_serviceaccount = pytest.mark.parametrize(
    "plane_operator", [DEFAULT_SA], ids=["default-sa"], indirect=True
)
with_allowed_targets = pytest.mark.parametrize(
    "plane_operator", [ALLOW_TARGETS], ids=["allow-targets"], indirect=True
)


# -- 1. confinement without a ServiceAccount --------------------------------------------


def test_target_namespace_elsewhere_is_forbidden_without_serviceaccount(site: Site) -> None:
    """Without a ServiceAccount, a targetNamespace other than the Environment's own is refused."""
    team = site.team("team-a")
    before = written(site, "kube-system")
    manifest = environment(
        "escape", team, [configmap("planted", x="1")], targetNamespace="kube-system"
    )
    apply(site.alice, manifest)

    message = ready_refused(site, "escape", team)
    assert "spec.resources[0] (ConfigMap/planted)" in message
    assert "namespace 'kube-system' is not the Environment's own" in message
    assert "--allow-target-namespaces" in message
    assert get(site.admin, "configmap", "planted", "kube-system") is None
    assert written(site, "kube-system") == before
    assert written(site, team) == []


def test_cluster_scoped_kind_is_forbidden_without_serviceaccount(site: Site) -> None:
    """Without a ServiceAccount, a ClusterRole in the blueprint is refused, and nothing is applied."""
    team = site.team("team-a")
    manifest = environment("escape", team, [configmap("settings", x="1"), CLUSTER_ROLE])
    apply(site.alice, manifest)

    message = ready_refused(site, "escape", team)
    assert "spec.resources[1] (ClusterRole/escalated)" in message
    assert "cluster-scoped" in message
    assert "--allow-cluster-scoped" in message
    assert "spec.resources[0]" not in message
    assert site.admin("get", "clusterrole", "escalated", check=False).returncode != 0
    assert get(site.admin, "configmap", "settings", team) is None
    assert written(site, team) == []
    # Events are posted from a queue of their own: the status may be written first.
    wait_for(
        lambda: any("escalated" in m for m in events(site.admin, team, "Forbidden")),
        message="a Forbidden Event naming the ClusterRole",
    )


def applied(site: Site, name: str, namespace: str) -> None:
    """Waits for Ready=True (Applied) and InSync=True, as alice reads them."""
    wait_condition(site.alice, name, namespace, "Ready", "True", reason="Applied")
    wait_condition(site.alice, name, namespace, "InSync", "True", reason="InSync")


@with_allowed_targets
def test_allowed_target_namespace_is_written(own_site: Site) -> None:
    """With --allow-target-namespaces, kube-system and a glob's match are written; any other target is still refused."""
    team = own_site.team("team-a")
    allowed = own_site.team("allowed", for_alice=False)
    other = own_site.team("other", for_alice=False)
    planted = f"planted-{team}"
    targets = {"system": "kube-system", "allowed": allowed, "escape": other}
    for name, target in targets.items():
        blueprint = [configmap(planted, x="1")]
        apply(own_site.alice, environment(name, team, blueprint, targetNamespace=target))

    applied(own_site, "system", team)
    applied(own_site, "allowed", team)
    assert (get(own_site.admin, "configmap", planted, "kube-system") or {})["data"] == {"x": "1"}
    assert (get(own_site.admin, "configmap", planted, allowed) or {})["data"] == {"x": "1"}
    message = ready_refused(own_site, "escape", team)
    assert f"spec.resources[0] (ConfigMap/{planted}): namespace {other!r}" in message
    assert get(own_site.admin, "configmap", planted, other) is None
    assert written(own_site, other) == []


# -- 2. impersonation: RBAC bounds the blueprint -----------------------------------------


@with_default_serviceaccount
@pytest.mark.parametrize(
    ("secret_verbs", "expected"),
    [
        ([], "cannot list Secret in namespace {team}"),
        (READ_VERBS, "Secret/{team}/creds: cannot dry-run apply Secret in namespace {team}"),
    ],
    ids=["no-secret-rights", "read-only-secrets"],
)
def test_default_serviceaccount_refuses_what_it_may_not_write(
    own_site: Site, secret_verbs: list[str], expected: str
) -> None:
    """A Secret the tenant's ServiceAccount may not write is refused, and the ConfigMap beside it is not applied either."""
    team = own_site.team("team-a")
    rules = [rule("", "configmaps", ALL_VERBS)]
    if secret_verbs:
        rules.append(rule("", "secrets", secret_verbs))
    own_site.serviceaccount(team, "tenant", (team, rules))
    blueprint = [configmap("settings", x="1"), secret("creds", password="hunter2")]
    apply(own_site.alice, environment("app", team, blueprint))

    message = ready_refused(own_site, "app", team)
    assert expected.format(team=team) in message
    assert f'User "system:serviceaccount:{team}:tenant" cannot' in message
    assert get(own_site.admin, "configmap", "settings", team) is None
    assert get(own_site.admin, "secret", "creds", team) is None
    assert written(own_site, team) == []
    assert any("creds" in m or "Secret" in m for m in events(own_site.admin, team, "Forbidden"))

    # What the ServiceAccount may do goes through once the blueprint asks for no more.
    apply(own_site.alice, environment("app", team, blueprint[:1]))
    wait_condition(own_site.alice, "app", team, "Ready", "True", reason="Applied")
    assert (get(own_site.admin, "configmap", "settings", team) or {})["data"] == {"x": "1"}


@with_default_serviceaccount
def test_refused_revision_prunes_nothing(own_site: Site) -> None:
    """A new revision with one refused object prunes nothing: the object it drops is never deleted."""
    team = own_site.team("team-a")
    rules = [rule("", "configmaps", ALL_VERBS), rule("", "secrets", READ_VERBS)]
    own_site.serviceaccount(team, "tenant", (team, rules))
    manifest = environment("app", team, [configmap("kept", x="1"), configmap("dropped", x="1")])
    apply(own_site.alice, manifest)
    wait_condition(own_site.alice, "app", team, "Ready", "True", reason="Applied")
    uid = (get(own_site.admin, "configmap", "dropped", team) or {})["metadata"]["uid"]

    manifest["spec"]["resources"] = [configmap("kept", x="2"), secret("creds", password="x")]
    apply(own_site.alice, manifest)
    message = ready_refused(own_site, "app", team)
    assert f"Secret/{team}/creds: cannot dry-run apply Secret" in message
    assert (get(own_site.admin, "configmap", "kept", team) or {})["data"] == {"x": "1"}
    stays(
        lambda: (
            (get(own_site.admin, "configmap", "dropped", team) or {}).get("metadata", {}).get("uid")
            == uid
        ),
        seconds=1.0,
        message="the ConfigMap the refused revision drops was deleted (or deleted and recreated)",
    )


@with_default_serviceaccount
def test_missing_serviceaccount_is_forbidden(own_site: Site) -> None:
    """Impersonating a ServiceAccount that does not exist is Forbidden, and nothing is applied."""
    team = own_site.team("team-a")
    apply(own_site.alice, environment("app", team, [configmap("settings", x="1")]))

    message = ready_refused(own_site, "app", team)
    assert f"ServiceAccount {team}/tenant does not exist" in message
    assert "spec.serviceAccountName" in message
    assert get(own_site.admin, "configmap", "settings", team) is None
    assert written(own_site, team) == []


@with_default_serviceaccount
def test_serviceaccount_with_rights_elsewhere_writes_there(own_site: Site) -> None:
    """A ServiceAccount with a Role in another namespace lets its Environment write there, as itself."""
    team_a = own_site.team("team-a")
    team_b = own_site.team("team-b", for_alice=False)
    own_site.serviceaccount(team_a, "deployer", (team_b, [rule("", "configmaps", ALL_VERBS)]))
    manifest = environment(
        "app",
        team_a,
        [configmap("settings", x="1")],
        targetNamespace=team_b,
        serviceAccountName="deployer",
    )
    apply(own_site.alice, manifest)

    applied(own_site, "app", team_a)
    assert (get(own_site.admin, "configmap", "settings", team_b) or {})["data"] == {"x": "1"}
    deployer = f"system:serviceaccount:{team_a}:deployer"
    patches = [
        event
        for event in audit_events(own_site.plane.audit_log, username=OPERATOR_USER)
        if event["verb"] == "patch" and (event.get("objectRef") or {}).get("namespace") == team_b
    ]
    assert patches
    assert {(event.get("impersonatedUser") or {}).get("username") for event in patches} == {
        deployer
    }

    # The impersonated watch sees drift, and the revert is made as the ServiceAccount too.
    own_site.admin(
        "patch", "cm", "settings", "-n", team_b, "--type=merge", "-p", '{"data":{"x":"2"}}'
    )
    wait_for(
        lambda: (
            (get(own_site.admin, "configmap", "settings", team_b) or {}).get("data") == {"x": "1"}
        ),
        message="the drift in team-b to be reverted",
    )


# -- 2b. the operator may impersonate only the tenants' ServiceAccounts --------------------


@pytest.fixture
def lookalikes(kubectl: Kubectl) -> Iterator[str]:
    """A ServiceAccount named like a tenant's (`deployer`) in kube-system and in the
    operator's namespace: the names RBAC would match if impersonation were cluster-wide."""
    for where in PROTECTED:
        kubectl("create", "serviceaccount", "deployer", "-n", where)
    yield "deployer"
    for where in PROTECTED:
        kubectl("delete", "serviceaccount", "deployer", "-n", where, "--wait=false", check=False)


PROTECTED = ("kube-system", OPERATOR_NAMESPACE)


def test_operator_may_impersonate_only_named_serviceaccounts_of_tenants(
    site: Site, lookalikes: str
) -> None:
    """The API server answers the operator may impersonate `deployer` in a tenant namespace,
    and not in kube-system, not in its own namespace, not another name, nor any name."""
    team = site.team("team-a")
    site.serviceaccount(team, "deployer", (team, [rule("", "configmaps", ALL_VERBS)]))

    def can_impersonate(target: str, namespace: str) -> str:
        argv = ("auth", "can-i", "impersonate", target, "-n", namespace, "--as", OPERATOR_USER)
        done = site.admin(*argv, check=False)
        return done.stdout.strip() or done.stderr.strip()

    asked = {
        ("serviceaccounts/deployer", team): "yes",
        ("serviceaccounts/deployer", "kube-system"): "no",
        ("serviceaccounts/deployer", OPERATOR_NAMESPACE): "no",
        ("serviceaccounts/generic-garbage-collector", "kube-system"): "no",
        ("serviceaccounts/default", team): "no",
        ("serviceaccounts", team): "no",
    }
    answers = {case: can_impersonate(*case) for case in asked}
    assert answers == asked


def test_serviceaccount_not_granted_to_the_operator_is_forbidden(site: Site) -> None:
    """A ServiceAccount in a namespace where the platform team did not let the operator act as
    it is Forbidden, the API server's refusal to impersonate in the message; nothing applied."""
    team = site.team("team-a")
    site.admin("create", "serviceaccount", "deployer", "-n", team)
    manifest = environment(
        "app", team, [configmap("settings", x="1")], serviceAccountName="deployer"
    )
    apply(site.alice, manifest)

    message = ready_refused(site, "app", team)
    assert message.startswith(
        f"spec.serviceAccountName: the operator may not impersonate ServiceAccount {team}/deployer;"
    ), message
    assert "tenancy.serviceAccounts" in message
    assert get(site.admin, "configmap", "settings", team) is None
    assert written(site, team) == []


@pytest.mark.parametrize("where", PROTECTED, ids=["kube-system", "operator-namespace"])
def test_environment_acting_as_a_protected_serviceaccount_is_forbidden(
    site: Site, lookalikes: str, where: str
) -> None:
    """An Environment in kube-system or the operator's namespace naming a ServiceAccount there
    is Forbidden, saying why, before any request as or about that ServiceAccount."""
    name = f"escape-{secrets.token_hex(3)}"
    planted = f"planted-{name}"
    manifest = environment(name, where, [configmap(planted, x="1")], serviceAccountName=lookalikes)
    apply(site.admin, manifest)
    try:
        found = wait_condition(site.admin, name, where, "Ready", "False", reason="Forbidden")
        assert found["message"].startswith(
            f"spec.serviceAccountName: ServiceAccount {where}/{lookalikes} is in {where}"
        ), found["message"]
        assert (
            f"never impersonates a ServiceAccount in kube-system or in {OPERATOR_NAMESPACE}"
            in found["message"]
        )
        assert get(site.admin, "configmap", planted, where) is None
        user = f"system:serviceaccount:{where}:{lookalikes}"

        def is_about(event: dict[str, Any]) -> bool:
            ref = event.get("objectRef") or {}
            acting = (event.get("impersonatedUser") or {}).get("username")
            return acting == user or (ref.get("namespace"), ref.get("name")) == (where, lookalikes)

        operator_events = audit_events(site.plane.audit_log, username=OPERATOR_USER)
        about = [f"{e['verb']} {e['requestURI']}" for e in operator_events if is_about(e)]
        assert about == []
    finally:
        site.admin("delete", "environment", name, "-n", where, "--wait=false", check=False)


# -- 3. Observe is bounded the same way -------------------------------------------------


def observe_guesses(site: Site) -> tuple[str, str, str]:
    """team-a's Observe Environments `right` and `wrong` name team-b's Secret `db`, as `tenant`.

    Answers (team-a, team-b, the Secret's value). `tenant` may manage ConfigMaps in
    team-a and nothing in team-b.
    """
    team_a = site.team("team-a")
    team_b = site.team("team-b", for_alice=False)
    site.serviceaccount(team_a, "tenant", (team_a, [rule("", "configmaps", ALL_VERBS)]))
    password = f"guessed-{secrets.token_hex(4)}"
    site.admin(
        "create", "secret", "generic", "db", "-n", team_b, f"--from-literal=password={password}"
    )
    for name, value in (("right", password), ("wrong", "not-it")):
        guess = [secret("db", password=value)]
        apply(site.alice, environment(name, team_a, guess, mode="Observe", targetNamespace=team_b))
    return team_a, team_b, password


def seen(site: Site, name: str, namespace: str) -> list[tuple[str, str, str, str]]:
    """An Environment's conditions and per-object entries, as a tenant would compare them."""
    found = status(site.alice, name, namespace)
    conditions = [(c["type"], c["status"], c["reason"], c["message"]) for c in found["conditions"]]
    entries = [
        (e["kind"], e["name"], e.get("state", ""), str(e)) for e in found.get("resources") or []
    ]
    return conditions + entries


@with_default_serviceaccount
def test_observe_cannot_confirm_a_secret_it_may_not_read(own_site: Site) -> None:
    """An Observe guess at another team's Secret is Forbidden, answers the same right or wrong, and leaks nothing."""
    team_a, team_b, password = observe_guesses(own_site)

    message = ready_refused(own_site, "right", team_a)
    assert f"cannot list Secret in namespace {team_b}" in message
    assert f'User "system:serviceaccount:{team_a}:tenant" cannot list resource "secrets"' in message
    ready_refused(own_site, "wrong", team_a)
    assert resource_status(own_site.alice, "right", team_a, "Secret", "db").get("state") != "InSync"
    assert seen(own_site, "right", team_a) == seen(own_site, "wrong", team_a)
    encoded = base64.b64encode(password.encode()).decode()
    texts = {
        "status": str(status(own_site.admin, "right", team_a)),
        "events": str(own_site.admin.json("get", "events", "-n", team_a)),
        "log": own_site.operator.log_text(),
    }
    assert [where for where, text in texts.items() if password in text or encoded in text] == []
    assert written(own_site, team_b) == []


@with_default_serviceaccount
def test_refused_observe_is_never_in_sync(own_site: Site) -> None:
    """An Observe Environment refused its reads never reports InSync=True."""
    team_a, _, _ = observe_guesses(own_site)
    ready_refused(own_site, "right", team_a)
    never_in_sync(own_site, "right", team_a)


# -- 4. adoption is explicit, and adopted objects are released, never deleted ------------


def admin_configmap(site: Site, namespace: str) -> dict[str, Any]:
    """A ConfigMap an admin made by hand, labelled as the platform team's."""
    site.admin("create", "configmap", "settings", "-n", namespace, "--from-literal=owner=admin")
    site.admin("label", "configmap", "settings", "-n", namespace, "team=platform")
    found = get(site.admin, "configmap", "settings", namespace)
    assert found is not None
    return found


def is_released(obj: dict[str, Any] | None, data: dict[str, str]) -> bool:
    """In place, with its own label and these values, and no trace of driftguard."""
    if obj is None:
        return False
    labels = obj["metadata"].get("labels") or {}
    managers = {entry["manager"] for entry in obj["metadata"].get("managedFields") or []}
    return (
        obj.get("data") == data
        and labels.get("team") == "platform"
        and not OWNER_LABELS & set(labels)
        and "driftguard" not in managers
    )


def wait_state(site: Site, name: str, namespace: str, configmap: str, state: str) -> dict[str, Any]:
    """Waits for a ConfigMap's entry in the Environment's status to hold this state; answers it."""

    def entry() -> dict[str, Any] | None:
        found = resource_status(site.alice, name, namespace, "ConfigMap", configmap)
        return found if found.get("state") == state else None

    found: dict[str, Any] = wait_for(entry, message=f"ConfigMap/{configmap} reported {state}")
    return found


def test_existing_object_is_a_conflict_until_adopted(site: Site) -> None:
    """An object an admin made is a Conflict and untouched; with adopt it is taken over and marked."""
    team = site.team("team-a")
    before = admin_configmap(site, team)
    manifest = environment("app", team, [configmap("settings", owner="alice")])
    apply(site.alice, manifest)

    entry = wait_state(site, "app", team, "settings", "Conflict")
    assert entry["message"] == (
        f"ConfigMap/{team}/settings exists, not managed by driftguard; "
        "set spec.adopt to take it over; not applied"
    )
    in_sync = wait_condition(site.alice, "app", team, "InSync", "False", reason="Drifted")
    assert f"ConfigMap/{team}/settings" in in_sync["message"]
    assert any("settings" in m for m in wait_for(lambda: events(site.admin, team, "Conflict")))
    after = get(site.admin, "configmap", "settings", team) or {}
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["data"] == {"owner": "admin"}
    assert after["metadata"]["labels"] == {"team": "platform"}
    assert written(site, team) == []

    manifest["spec"]["adopt"] = True
    apply(site.alice, manifest)
    wait_state(site, "app", team, "settings", "InSync")
    applied(site, "app", team)
    adopted = get(site.admin, "configmap", "settings", team) or {}
    assert adopted["data"] == {"owner": "alice"}
    assert adopted["metadata"]["labels"]["driftguard.io/adopted"] == "true"
    assert adopted["metadata"]["labels"]["driftguard.io/environment"] == "app"
    assert adopted["metadata"]["labels"]["team"] == "platform"


def test_adopted_object_is_released_by_prune(site: Site) -> None:
    """With adopt the object is taken over and marked; prune releases it, and still deletes what driftguard made."""
    team = site.team("team-a")
    admin_configmap(site, team)
    manifest = environment(
        "app", team, [configmap("settings", owner="alice"), configmap("made", x="1"), configmap("kept", x="1")],
        adopt=True, prune=True,
    )  # fmt: skip
    apply(site.alice, manifest)
    applied(site, "app", team)
    assert (get(site.admin, "configmap", "settings", team) or {})["metadata"]["labels"][
        "driftguard.io/adopted"
    ] == "true"
    assert (
        "driftguard.io/adopted"
        not in (get(site.admin, "configmap", "made", team) or {})["metadata"]["labels"]
    )

    manifest["spec"]["resources"] = [configmap("kept", x="1")]
    apply(site.alice, manifest)
    wait_for(
        lambda: get(site.admin, "configmap", "made", team) is None, message="made to be pruned"
    )
    wait_for(
        lambda: is_released(get(site.admin, "configmap", "settings", team), {"owner": "alice"}),
        message="the adopted ConfigMap released, in place, with its data",
    )
    assert get(site.admin, "configmap", "kept", team) is not None
    assert deleted(site, team) == {"made"}


def test_adopted_object_is_released_when_the_environment_is_deleted(site: Site) -> None:
    """deletionPolicy Delete deletes what driftguard made and releases what it adopted."""
    team = site.team("team-a")
    admin_configmap(site, team)
    blueprint = [configmap("settings", owner="alice"), configmap("made", x="1")]
    apply(site.alice, environment("app", team, blueprint, adopt=True, deletionPolicy="Delete"))
    applied(site, "app", team)

    site.alice("delete", "environment", "app", "-n", team, "--wait=false")
    wait_for(
        lambda: get(site.admin, "environment", "app", team) is None, message="the Environment gone"
    )
    assert get(site.admin, "configmap", "made", team) is None
    assert is_released(get(site.admin, "configmap", "settings", team), {"owner": "alice"})
    assert deleted(site, team) == {"made"}
