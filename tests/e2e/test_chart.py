"""The Helm chart: it lints, renders, ships the generated CRD, and its RBAC is enough.

The RBAC tests install the chart into the local control plane (no kubelet: its
Pod stays Pending), then run `driftguard run` on this machine with the chart's
Deployment args and a token of the chart's ServiceAccount. The operator then
has exactly the rights the chart grants: an Environment that converges, with no
request answered 403, shows they suffice; `kubectl auth can-i` shows where they stop.
"""

import os
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import CHART, ROOT, Helm, Kubectl, audit_events, wait_established, wait_for

from driftguard.controlplane import ControlPlane

CRD_NAME = "environments.driftguard.io"
MANAGED_VERBS = ["get", "list", "watch", "create", "patch", "delete"]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = of_kind(objects, "Deployment")
    (found,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(found)


def operator_role(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The operator's main ClusterRole (beside it: the metrics review rights and readers')."""
    (role,) = [
        obj for obj in of_kind(objects, "ClusterRole") if obj["metadata"]["name"] == "dg-driftguard"
    ]
    return role


def grants(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    """The verbs a list of RBAC rules grants on one group's resource."""
    verbs: set[str] = set()
    for rule in rules:
        if group in rule.get("apiGroups", []) and resource in rule.get("resources", []):
            verbs.update(rule["verbs"])
    return verbs


# -- the chart as files -----------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [{}, {"watchNamespaces": ["a", "b"], "rbac": {"targetNamespaces": ["c"]}}],
    ids=["all-namespaces", "watched-namespaces"],
)
def test_chart_lints(helm: Helm, values: dict[str, Any]) -> None:
    """`helm lint --strict` passes with the default values and with watched namespaces."""
    helm("lint", "--strict", str(CHART), "-f", "-", input=yaml.safe_dump(values))


def test_chart_crd_is_the_generated_crd() -> None:
    """The chart's CRD is byte for byte the one `make crds` generates."""
    chart_crd = CHART / "crds" / f"{CRD_NAME}.yaml"
    assert chart_crd.read_bytes() == (ROOT / "crds" / f"{CRD_NAME}.yaml").read_bytes(), (
        "charts/driftguard/crds is stale: copy crds/environments.driftguard.io.yaml over it"
    )


def test_chart_renders_default_objects(helm: Helm) -> None:
    """By default the chart renders one of each object, cluster-wide RBAC and no ServiceMonitor."""
    objects = helm.template({})
    assert sorted(obj["kind"] for obj in objects) == [
        "ClusterRole",
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterRoleBinding",
        "Deployment",
        "MutatingWebhookConfiguration",
        "Secret",
        "Secret",
        "Service",
        "Service",
        "ServiceAccount",
    ]
    assert container(objects)["args"] == [
        "--all-namespaces",
        "--metrics-port=8080",
        "--liveness=http://0.0.0.0:8081/healthz",
        "--log-level=INFO",
        "--history-namespace=ops",
        "--operator-namespace=ops",
        "--break-glass-group=driftguard:break-glass",
        "--webhook-port=9443",
        "--webhook-cert-dir=/etc/driftguard/webhook",
        "--attribution-key-file=/etc/driftguard/attribution/key",
    ]
    (service,) = [
        s for s in of_kind(objects, "Service") if s["metadata"]["name"] == "dg-driftguard-metrics"
    ]
    # Secure metrics need a token: no annotations that would have Prometheus scrape without.
    assert "annotations" not in service["metadata"]


def test_chart_runs_restricted(helm: Helm) -> None:
    """The Pod meets the restricted Pod Security Standard, with a writable /tmp only."""
    objects = helm.template({})
    pod = of_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container(objects)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container(objects)["volumeMounts"] == [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "webhook-tls", "mountPath": "/etc/driftguard/webhook", "readOnly": True},
        {"name": "attribution-key", "mountPath": "/etc/driftguard/attribution", "readOnly": True},
    ]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"metrics": {"enabled": False}, "attribution": {"enabled": False}},
            {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"},
        ),
        (
            {"metrics": {"serviceMonitor": {"enabled": True}}, "attribution": {"enabled": False}},
            {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "ServiceMonitor"},
        ),
        (
            {"rbac": {"create": False}, "serviceAccount": {"create": False}},
            {"Service", "Secret", "MutatingWebhookConfiguration"},
        ),
        (
            {"attribution": {"certManager": {"enabled": True}}},
            {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "Secret"}
            | {"Issuer", "Certificate", "MutatingWebhookConfiguration"},
        ),
    ],
    ids=["metrics-off", "service-monitor", "no-rbac", "cert-manager"],
)
def test_chart_optional_objects(helm: Helm, values: dict[str, Any], expected: set[str]) -> None:
    """Values switch the Service, the ServiceMonitor and the RBAC objects on and off."""
    kinds = {obj["kind"] for obj in helm.template(values)} - {"Deployment"}
    assert kinds == expected


def test_chart_confined_to_namespaces_uses_roles(helm: Helm) -> None:
    """With watchNamespaces, Environments are granted per namespace and objects in targets too."""
    objects = helm.template({"watchNamespaces": ["a", "b"], "rbac": {"targetNamespaces": ["c"]}})
    assert container(objects)["args"][:2] == ["--namespace=a", "--namespace=b"]
    roles = {role["metadata"]["namespace"]: role["rules"] for role in of_kind(objects, "Role")}
    # The release namespace gets a Role too: Blueprint revisions are kept there.
    assert sorted(roles) == ["a", "b", "c", "ops"]
    assert grants(roles["ops"], "apps", "controllerrevisions") == {
        "list",
        "create",
        "patch",
        "delete",
    }
    assert grants(roles["ops"], "driftguard.io", "environments") == set()
    assert grants(roles["a"], "driftguard.io", "environments") == {"list", "watch", "patch"}
    assert grants(roles["c"], "driftguard.io", "environments") == set()
    assert grants(roles["c"], "apps", "deployments") == set(MANAGED_VERBS)
    cluster_role = operator_role(objects)
    assert grants(cluster_role["rules"], "driftguard.io", "environments") == set()
    assert grants(cluster_role["rules"], "", "configmaps") == set()
    bindings = of_kind(objects, "RoleBinding")
    assert sorted(binding["metadata"]["namespace"] for binding in bindings) == [
        "a",
        "b",
        "c",
        "ops",
    ]


def test_chart_managed_resources_become_rules(helm: Helm) -> None:
    """Each rbac.managedResources entry is granted exactly the verbs the operator uses."""
    managed = [{"apiGroups": ["example.com"], "resources": ["widgets"]}]
    objects = helm.template({"rbac": {"managedResources": managed}})
    cluster_role = operator_role(objects)
    assert grants(cluster_role["rules"], "example.com", "widgets") == set(MANAGED_VERBS)
    assert grants(cluster_role["rules"], "apps", "deployments") == set()


def rbac_rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rule of every ClusterRole and Role rendered."""
    roles = of_kind(objects, "ClusterRole") + of_kind(objects, "Role")
    return [rule for role in roles for rule in role["rules"]]


@pytest.mark.parametrize(
    "values",
    [{}, {"watchNamespaces": ["a"]}, {"tenancy": {"defaultServiceAccount": "tenant"}}],
    ids=["defaults", "watched-namespaces", "default-serviceaccount"],
)
def test_chart_grants_no_cluster_wide_impersonation(helm: Helm, values: dict[str, Any]) -> None:
    """No rule impersonates without resourceNames, and none is bound cluster-wide."""
    objects = helm.template(values)
    impersonating = [rule for rule in rbac_rules(objects) if "impersonate" in rule["verbs"]]
    assert all(rule.get("resourceNames") for rule in impersonating), impersonating
    bound = {b["roleRef"]["name"] for b in of_kind(objects, "ClusterRoleBinding")}
    bound_rules = [
        rule
        for role in of_kind(objects, "ClusterRole")
        if role["metadata"]["name"] in bound
        for rule in role["rules"]
    ]
    assert grants(bound_rules, "", "serviceaccounts") & {"impersonate"} == set()
    if not values:
        assert impersonating == []


IMPERSONATOR = "dg-driftguard-impersonate"


def impersonating_namespaces(objects: list[dict[str, Any]]) -> list[str]:
    """Where the chart binds its impersonation ClusterRole."""
    return sorted(
        binding["metadata"]["namespace"]
        for binding in of_kind(objects, "RoleBinding")
        if binding["roleRef"]["name"] == IMPERSONATOR
    )


def test_chart_impersonates_named_serviceaccounts_in_tenant_namespaces(helm: Helm) -> None:
    """tenancy names the ServiceAccounts (resourceNames) and the namespaces (a RoleBinding each)."""
    tenancy = {"defaultServiceAccount": "tenant", "serviceAccounts": ["deployer", "tenant"]}
    objects = helm.template({"tenancy": {**tenancy, "namespaces": ["team-a", "team-b"]}})
    (role,) = [r for r in of_kind(objects, "ClusterRole") if r["metadata"]["name"] == IMPERSONATOR]
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["serviceaccounts"],
            "resourceNames": ["tenant", "deployer"],
            "verbs": ["get", "impersonate"],
        }
    ]
    assert impersonating_namespaces(objects) == ["team-a", "team-b"]
    bindings = of_kind(objects, "RoleBinding")
    assert {(s["namespace"], s["name"]) for b in bindings for s in b["subjects"]} == {
        ("ops", "dg-driftguard")
    }
    # Confined, the watched namespaces are the tenants', the release's own left out.
    confined = helm.template({"tenancy": tenancy, "watchNamespaces": ["team-a", "ops"]})
    assert impersonating_namespaces(confined) == ["team-a"]


@pytest.mark.parametrize(
    ("namespaces", "expected"),
    [
        (["team-a", "kube-system"], "tenancy.namespaces: kube-system is refused"),
        (["ops"], "tenancy.namespaces: ops is refused"),
    ],
    ids=["kube-system", "release-namespace"],
)
def test_chart_refuses_impersonation_in_protected_namespaces(
    helm: Helm, namespaces: list[str], expected: str
) -> None:
    """Impersonation in kube-system or the release's namespace fails to render, saying why."""
    values = {"tenancy": {"defaultServiceAccount": "tenant", "namespaces": namespaces}}
    argv = ("template", "dg", str(CHART), "-n", "ops", "-f", "-")
    done = helm(*argv, input=yaml.safe_dump(values), check=False)
    assert done.returncode != 0
    assert expected in done.stderr
    assert (
        "never impersonates a ServiceAccount in kube-system or in its own namespace" in done.stderr
    )


@pytest.mark.parametrize("confined", [False, True], ids=["cluster-wide", "watch-namespaces"])
def test_chart_grants_secrets_only_when_opted_in(helm: Helm, confined: bool) -> None:
    """By default no rule names Secrets; rbac.manageSecrets grants them the managed verbs."""
    base: dict[str, Any] = {"watchNamespaces": ["a"]} if confined else {}
    assert grants(rbac_rules(helm.template(base)), "", "secrets") == set()
    opted = helm.template({**base, "rbac": {"manageSecrets": True}})
    assert grants(rbac_rules(opted), "", "secrets") == set(MANAGED_VERBS)


def documented_rights() -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """The rows of docs/security.md's table of the operator's rights: (group, resources, verbs)."""
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    table = text.split("| apiGroup | resource | verbs | scope | why |\n|---|---|---|---|---|\n")[1]
    rows = []
    for line in table.split("\n\n")[0].splitlines():
        group, resources, verbs = (cell.strip() for cell in line.strip("|").split("|")[:3])
        rows.append(
            (
                group.strip("`").replace('""', ""),
                tuple(r.strip("` ") for r in resources.split(",")),
                tuple(v.strip() for v in verbs.split(",")),
            )
        )
    return rows


def bound_to_operator(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules of every role bound to the operator's ServiceAccount."""
    bound = {
        (binding["roleRef"]["kind"], binding["roleRef"]["name"])
        for binding in of_kind(objects, "ClusterRoleBinding") + of_kind(objects, "RoleBinding")
        if any(
            subject["kind"] == "ServiceAccount" and subject["name"] == "dg-driftguard"
            for subject in binding.get("subjects") or []
        )
    }
    roles = of_kind(objects, "ClusterRole") + of_kind(objects, "Role")
    return [
        rule for role in roles if (role["kind"], role["metadata"]["name"]) in bound
        for rule in role["rules"]
    ]  # fmt: skip


def test_chart_default_rights_are_the_documented_table(helm: Helm) -> None:
    """The default values grant the operator exactly the rules docs/security.md lists, and
    nothing else; the scrapers' role is bound to no one."""
    objects = helm.template({})
    rendered = [
        (group, tuple(rule["resources"]), tuple(rule["verbs"]))
        for rule in bound_to_operator(objects)
        for group in rule["apiGroups"]
    ]
    assert sorted(rendered) == sorted(documented_rights())
    assert sorted(o["metadata"]["name"] for o in of_kind(objects, "ClusterRole")) == [
        "dg-driftguard",
        "dg-driftguard-metrics-auth",
        "dg-driftguard-metrics-reader",
    ]
    assert of_kind(objects, "Role") == []
    reader = [
        r for r in of_kind(objects, "ClusterRoleBinding") if "reader" in r["metadata"]["name"]
    ]
    assert reader == []


def test_chart_refuses_two_replicas(helm: Helm) -> None:
    """More than one replica fails to render: there is no leader election."""
    done = helm("template", "dg", str(CHART), "--set", "replicas=2", check=False)
    assert done.returncode != 0
    assert "leader election" in done.stderr


# -- secure metrics -----------------------------------------------------------------------


def test_chart_metrics_are_secure_by_default(helm: Helm) -> None:
    """By default the operator may review tokens and access, and scrapers get a ClusterRole
    for get on /metrics; nothing else is granted for it."""
    objects = helm.template({})
    assert "--metrics-insecure" not in container(objects)["args"]
    roles = {role["metadata"]["name"]: role["rules"] for role in of_kind(objects, "ClusterRole")}
    assert roles["dg-driftguard-metrics-auth"] == [
        {
            "apiGroups": ["authentication.k8s.io"],
            "resources": ["tokenreviews"],
            "verbs": ["create"],
        },
        {
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["subjectaccessreviews"],
            "verbs": ["create"],
        },
    ]
    assert roles["dg-driftguard-metrics-reader"] == [
        {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}
    ]
    bindings = {b["metadata"]["name"]: b for b in of_kind(objects, "ClusterRoleBinding")}
    assert bindings["dg-driftguard-metrics-auth"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "dg-driftguard", "namespace": "ops"}
    ]
    assert "dg-driftguard-metrics-reader" not in bindings  # metrics.readers is empty


def test_chart_metrics_readers_are_bound(helm: Helm) -> None:
    """metrics.readers become the subjects of a binding to the scrapers' ClusterRole."""
    reader = {"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}
    objects = helm.template({"metrics": {"readers": [reader]}})
    bindings = {b["metadata"]["name"]: b for b in of_kind(objects, "ClusterRoleBinding")}
    binding = bindings["dg-driftguard-metrics-reader"]
    assert binding["roleRef"]["name"] == "dg-driftguard-metrics-reader"
    assert binding["subjects"] == [reader]


def test_chart_service_monitor_scrapes_with_a_token_over_https(helm: Helm) -> None:
    """Secure, the ServiceMonitor scrapes over HTTPS with Prometheus' token; plain, as before."""
    monitor = {"serviceMonitor": {"enabled": True}}
    (endpoint,) = of_kind(helm.template({"metrics": monitor}), "ServiceMonitor")[0]["spec"][
        "endpoints"
    ]
    assert endpoint["scheme"] == "https"
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert endpoint["tlsConfig"] == {"insecureSkipVerify": True}
    plain = helm.template({"metrics": {**monitor, "secure": False}})
    (endpoint,) = of_kind(plain, "ServiceMonitor")[0]["spec"]["endpoints"]
    assert {"scheme", "bearerTokenFile", "tlsConfig"}.isdisjoint(endpoint)


def test_chart_metrics_opt_out_is_plain_with_annotations(helm: Helm) -> None:
    """metrics.secure false: --metrics-insecure, the prometheus.io annotations, no review rights."""
    objects = helm.template({"metrics": {"secure": False}})
    assert "--metrics-insecure" in container(objects)["args"]
    (service,) = [
        s for s in of_kind(objects, "Service") if s["metadata"]["name"] == "dg-driftguard-metrics"
    ]
    assert service["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }
    assert [role["metadata"]["name"] for role in of_kind(objects, "ClusterRole")] == [
        "dg-driftguard"
    ]


def test_chart_metrics_certificate_from_a_secret(helm: Helm) -> None:
    """metrics.certSecret mounts that TLS Secret and points --metrics-cert-dir at it."""
    objects = helm.template({"metrics": {"certSecret": "metrics-tls"}})
    spec = container(objects)
    assert "--metrics-cert-dir=/etc/driftguard/metrics" in spec["args"]
    assert {
        "name": "metrics-tls",
        "mountPath": "/etc/driftguard/metrics",
        "readOnly": True,
    } in spec["volumeMounts"]
    pod = of_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]
    assert {"name": "metrics-tls", "secret": {"secretName": "metrics-tls"}} in pod["volumes"]


# -- probes and availability ------------------------------------------------------------


def test_chart_probes_ask_the_operators_probe_server(helm: Helm) -> None:
    """Startup and readiness ask /readyz, liveness /livez, on the port --liveness serves."""
    spec = container(helm.template({"livenessProbe": {"port": 9001}}))
    assert "--liveness=http://0.0.0.0:9001/healthz" in spec["args"]
    assert {"name": "health", "containerPort": 9001, "protocol": "TCP"} in spec["ports"]
    paths = {
        probe: (spec[probe]["httpGet"]["path"], spec[probe]["httpGet"]["port"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert paths == {
        "startupProbe": ("/readyz", "health"),
        "livenessProbe": ("/livez", "health"),
        "readinessProbe": ("/readyz", "health"),
    }
    # Thirty minutes for the first passes of a large cluster before the kubelet gives up.
    assert spec["startupProbe"]["periodSeconds"] * spec["startupProbe"]["failureThreshold"] == 1800


@pytest.mark.parametrize(
    ("values", "budgets"),
    [
        ({}, 0),
        ({"replicas": 2, "peering": {"enabled": True}}, 1),
        ({"replicas": 3, "sharding": {"enabled": True}}, 1),
        (
            {
                "replicas": 3,
                "sharding": {"enabled": True},
                "podDisruptionBudget": {"enabled": False},
            },
            0,
        ),
    ],
    ids=["one-replica", "peering", "sharding", "switched-off"],
)
def test_chart_disruption_budget_only_with_replicas(
    helm: Helm, values: dict[str, Any], budgets: int
) -> None:
    """A PodDisruptionBudget (one Pod at a time) only when there are several replicas."""
    found = of_kind(helm.template(values), "PodDisruptionBudget")
    assert len(found) == budgets
    for budget in found:
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        assert budget["spec"]["selector"]["matchLabels"] == {
            "app.kubernetes.io/name": "driftguard",
            "app.kubernetes.io/instance": "dg",
        }


def test_chart_network_policy_is_opt_in(helm: Helm) -> None:
    """No NetworkPolicy by default; enabled, egress goes only to the API server and DNS."""
    assert of_kind(helm.template({}), "NetworkPolicy") == []
    values = {
        "networkPolicy": {
            "enabled": True,
            "apiServer": {"cidrs": ["10.96.0.1/32", "192.0.2.10/32"]},
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
        }
    }
    (policy,) = of_kind(helm.template(values), "NetworkPolicy")
    api, dns = policy["spec"]["egress"]
    assert api == {
        "ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "10.96.0.1/32"}}, {"ipBlock": {"cidr": "192.0.2.10/32"}}],
    }
    assert dns["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    ingress = {rule["ports"][0]["port"]: rule.get("from") for rule in policy["spec"]["ingress"]}
    assert ingress == {
        "health": None,
        "metrics": values["networkPolicy"]["metricsFrom"],
        "webhook": None,
    }


def test_chart_spreads_and_prioritises_the_pods(helm: Helm) -> None:
    """priorityClassName and topologySpreadConstraints reach the Pod, the spread selecting it."""
    spread = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone"}
    values = {
        "priorityClassName": "system-cluster-critical",
        "topologySpreadConstraints": [{**spread, "whenUnsatisfiable": "ScheduleAnyway"}],
    }
    pod = of_kind(helm.template(values), "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["topologySpreadConstraints"] == [
        {
            **spread,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "driftguard",
                    "app.kubernetes.io/instance": "dg",
                }
            },
        }
    ]


def test_chart_availability_objects_pass_the_api_server(
    helm: Helm, kubectl: Kubectl, namespace: str
) -> None:
    """The Deployment, PodDisruptionBudget and NetworkPolicy of a sharded install are accepted
    by the API server as they are (a server-side dry run)."""
    values = {
        "replicas": 3,
        "sharding": {"enabled": True},
        "priorityClassName": "system-cluster-critical",
        "networkPolicy": {
            "enabled": True,
            "apiServer": {"cidrs": ["10.96.0.1/32"]},
            "extraEgress": [{"to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}]}],
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "DoNotSchedule",
            }
        ],
    }
    kinds = {"Deployment", "PodDisruptionBudget", "NetworkPolicy"}
    objects = [obj for obj in helm.template(values, namespace=namespace) if obj["kind"] in kinds]
    assert sorted(obj["kind"] for obj in objects) == sorted(kinds)
    done = kubectl(
        "apply", "--dry-run=server", "-o", "name", "-f", "-", input=yaml.safe_dump_all(objects)
    )
    assert sorted(done.stdout.split()) == [
        "deployment.apps/dg-driftguard",
        "networkpolicy.networking.k8s.io/dg-driftguard",
        "poddisruptionbudget.policy/dg-driftguard",
    ]


# -- the chart's RBAC on a real API server ----------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def install_crd(kubectl: Kubectl) -> None:
    """Installs the chart's CRD (what Helm would) and waits until Environments can be listed."""
    kubectl("apply", "--server-side", "-f", str(CHART / "crds"))
    wait_established(kubectl, CRD_NAME)
    # Right after a CRD is created, lists can answer 429 "storage is (re)initializing".
    wait_for(
        lambda: kubectl("get", "environments", "-A", check=False).returncode == 0,
        timeout=30,
        message="the Environment API to serve lists",
    )


@dataclass
class Release:
    """The chart installed in a test namespace, and what the operator may touch."""

    name: str
    namespace: str
    target: str
    serviceaccount: str
    args: list[str]
    metrics_port: int
    liveness_port: int
    is_confined: bool

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.serviceaccount}"


@pytest.fixture(params=["all-namespaces", "watched-namespace"])
def release(
    request: pytest.FixtureRequest, helm: Helm, kubectl: Kubectl, namespace: str
) -> Iterator[Release]:
    """`helm install` of the chart into the test namespace, cluster-wide or confined to it."""
    install_crd(kubectl)
    target = f"{namespace}-target"
    kubectl("create", "namespace", target)
    # Admission then refuses the chart's Pod unless it meets the restricted standard.
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    name = f"driftguard-{namespace}"  # ClusterRoles are cluster-wide: one name per test
    values: dict[str, Any] = {
        "metrics": {"port": free_port()},
        "livenessProbe": {"port": free_port()},
        # The Environments here live in the release's namespace and write to the target.
        "tenancy": {"allowTargetNamespaces": [target]},
        # Its Service has no Pod here to reach; test_attribution.py runs the webhook.
        "attribution": {"enabled": False},
    }
    if request.param == "watched-namespace":
        values["watchNamespaces"] = [namespace]
        values["rbac"] = {"targetNamespaces": [target]}
    helm_kubeconfig = f"--kubeconfig={kubectl.kubeconfig}"
    try:
        helm(
            *("install", name, str(CHART), "-n", namespace, "--skip-crds", helm_kubeconfig),
            *("-f", "-"),
            input=yaml.safe_dump(values),
        )
        deployment = kubectl.json("get", "deployment", name, "-n", namespace)
        (spec,) = deployment["spec"]["template"]["spec"]["containers"]
        yield Release(
            name=name,
            namespace=namespace,
            target=target,
            serviceaccount=deployment["spec"]["template"]["spec"]["serviceAccountName"],
            args=spec["args"],
            metrics_port=values["metrics"]["port"],
            liveness_port=values["livenessProbe"]["port"],
            is_confined=request.param == "watched-namespace",
        )
    finally:
        _release_environments(kubectl, namespace)
        helm("uninstall", name, "-n", namespace, helm_kubeconfig, check=False)
        kubectl("delete", "namespace", target, "--wait=false", check=False)


def _release_environments(kubectl: Kubectl, namespace: str) -> None:
    """Deletes the test's Environments now, finalizers and all, once its operator has stopped.

    Left to the namespace's deletion, they would linger while it terminates, and an
    operator of a later test would take them up and write into terminating namespaces.
    """
    listing = kubectl("get", "environments", "-n", namespace, "-o", "name", check=False)
    for name in listing.stdout.split():
        patch = '{"metadata":{"finalizers":null}}'
        kubectl("patch", name, "-n", namespace, "--type=merge", "-p", patch, check=False)
    kubectl("delete", "environments", "--all", "-n", namespace, "--timeout=30s", check=False)


@dataclass
class ChartOperator:
    process: "subprocess.Popen[bytes]"
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def _is_live(operator: ChartOperator, port: int) -> bool:
    if operator.process.poll() is not None:
        pytest.fail(f"the operator exited {operator.process.returncode}:\n{operator.log_text()}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def chart_operator(
    release: Release, control_plane: ControlPlane, tmp_path: Path
) -> Iterator[ChartOperator]:
    """`driftguard run` with the installed Deployment's args, as the chart's ServiceAccount."""
    kubeconfig = control_plane.serviceaccount_kubeconfig(release.namespace, release.serviceaccount)
    binary = Path(sys.executable).parent / "driftguard"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_ID": f"{release.name}-e2e"}
    log = tmp_path / "operator.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(binary), "run", *release.args], stdout=sink, stderr=subprocess.STDOUT, env=env
        )
    operator = ChartOperator(process, log)
    try:
        wait_for(
            lambda: _is_live(operator, release.liveness_port),
            timeout=30,
            message="the operator's liveness endpoint",
        )
        yield operator
    finally:
        # Shown by pytest only when the test failed.
        print(f"--- operator log ({release.name}) ---\n{operator.log_text()[-8000:]}")
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def blueprint(name: str, release: Release, resources: list[dict[str, Any]], **spec: Any) -> str:
    """An Environment in the release's namespace whose objects go to the target namespace."""
    return yaml.safe_dump(
        {
            "apiVersion": "driftguard.io/v1alpha1",
            "kind": "Environment",
            "metadata": {"name": name, "namespace": release.namespace},
            "spec": {
                "targetNamespace": release.target,
                "mode": "Enforce",
                "prune": True,
                "resources": resources,
                **spec,
            },
        }
    )


CONFIGMAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "web-config"},
    "data": {"DB_VERSION": "5.7"},
}
DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27.3"}]},
        },
    },
}


def condition(kubectl: Kubectl, release: Release, name: str, type_: str) -> dict[str, Any]:
    done = kubectl("get", "environment", name, "-n", release.namespace, "-o", "json", check=False)
    if done.returncode != 0:
        return {}
    env = yaml.safe_load(done.stdout)
    for entry in (env.get("status") or {}).get("conditions") or []:
        if entry.get("type") == type_:
            return dict(entry)
    return {}


def wait_conditions(
    kubectl: Kubectl, release: Release, name: str, *, in_sync: str = "True"
) -> None:
    """The one wait on conditions here: Ready=True (never Forbidden) and InSync as given."""

    def holds() -> bool:
        ready = condition(kubectl, release, name, "Ready")
        synced = condition(kubectl, release, name, "InSync")
        return (ready.get("status"), synced.get("status")) == ("True", in_sync)

    wait_for(holds, timeout=60, interval=0.2, message=f"{name} Ready and InSync={in_sync}")


def exists(kubectl: Kubectl, kind: str, name: str, namespace: str) -> bool:
    return kubectl("get", kind, name, "-n", namespace, check=False).returncode == 0


def denied_requests(control_plane: ControlPlane, release: Release) -> list[str]:
    """Each request of the chart's ServiceAccount the API server refused, in this test's scope.

    The scope is the release's and target namespaces and the cluster: an operator
    watching every namespace may also meet other tests' Environments, whose
    namespaces may be terminating (403 for reasons other than RBAC).
    """
    scope = {release.namespace, release.target, None}
    return [
        f"{event['verb']} {event['requestURI']}: {event['responseStatus'].get('message')}"
        for event in audit_events(control_plane.audit_log, username=release.username)
        if event.get("responseStatus", {}).get("code") in (401, 403)
        and (event.get("objectRef") or {}).get("namespace") in scope
    ]


def applied_kinds(control_plane: ControlPlane, release: Release) -> set[str]:
    """The resources in the target namespace the ServiceAccount wrote by a successful patch."""
    return {
        event["objectRef"]["resource"]
        for event in audit_events(control_plane.audit_log, username=release.username)
        if event["verb"] == "patch"
        and (event.get("objectRef") or {}).get("namespace") == release.target
        and event.get("responseStatus", {}).get("code") in (200, 201)
    }


def scrape(kubectl: Kubectl, release: Release) -> str:
    """The operator's /metrics on the port the chart passed, as Prometheus scrapes it secure:
    HTTPS, with the token of a ServiceAccount bound to the chart's metrics-reader role."""
    name = "prometheus"
    kubectl("create", "serviceaccount", name, "-n", release.namespace)
    kubectl(
        *("create", "clusterrolebinding", f"{release.name}-scraper"),
        f"--clusterrole={release.name}-metrics-reader",
        f"--serviceaccount={release.namespace}:{name}",
    )
    token = kubectl("create", "token", name, "-n", release.namespace).stdout.strip()
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # self-signed
    request = urllib.request.Request(f"https://127.0.0.1:{release.metrics_port}/metrics")
    request.add_header("Authorization", f"Bearer {token}")

    def answer() -> str | None:
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as response:
                return str(response.read().decode())
        except urllib.error.HTTPError as exc:
            if exc.code != 403:  # 403 only until the RBAC authorizer sees the binding
                pytest.fail(f"the scrape was answered {exc.code}")
            return None

    try:
        return wait_for(answer, timeout=45, interval=0.5, message="an authorized scrape")
    finally:
        kubectl("delete", "clusterrolebinding", f"{release.name}-scraper", check=False)


def apply_environment(kubectl: Kubectl, manifest: str) -> None:
    wait_for(
        lambda: kubectl("apply", "-f", "-", input=manifest, check=False).returncode == 0,
        timeout=30,
        message="the Environment to be accepted",
    )


def assert_never_refused(
    control_plane: ControlPlane, release: Release, operator: ChartOperator
) -> None:
    """The operator is still running and the API server refused none of its requests."""
    assert operator.process.poll() is None, operator.log_text()
    assert denied_requests(control_plane, release) == []
    assert "Not enough permissions" not in operator.log_text()


def test_chart_rbac_lets_the_operator_apply_and_prune(
    control_plane: ControlPlane, kubectl: Kubectl, release: Release, chart_operator: ChartOperator
) -> None:
    """With only the chart's RBAC the operator applies and prunes, and is never refused."""
    apply_environment(kubectl, blueprint("web", release, [CONFIGMAP, DEPLOYMENT]))
    wait_conditions(kubectl, release, "web")
    assert exists(kubectl, "configmap", "web-config", release.target)
    assert exists(kubectl, "deployment", "web", release.target)
    assert {"configmaps", "deployments"} <= applied_kinds(control_plane, release)
    assert "driftguard_reconcile_duration_seconds" in scrape(kubectl, release)

    apply_environment(kubectl, blueprint("web", release, [DEPLOYMENT]))
    wait_for(
        lambda: not exists(kubectl, "configmap", "web-config", release.target),
        timeout=30,
        message="the ConfigMap to be pruned",
    )
    wait_conditions(kubectl, release, "web")
    assert_never_refused(control_plane, release, chart_operator)


def test_chart_rbac_lets_the_operator_delete_objects(
    control_plane: ControlPlane,
    kubectl: Kubectl,
    release: Release,
    chart_operator: ChartOperator,
) -> None:
    """With only the chart's RBAC, deletionPolicy Delete removes the objects, then the finalizer."""
    manifest = blueprint("web", release, [CONFIGMAP, DEPLOYMENT], deletionPolicy="Delete")
    apply_environment(kubectl, manifest)
    wait_conditions(kubectl, release, "web")

    kubectl("delete", "environment", "web", "-n", release.namespace, "--wait=false")
    wait_for(
        lambda: not exists(kubectl, "environment", "web", release.namespace),
        timeout=30,
        message="the Environment's finalizer to be removed",
    )
    assert not exists(kubectl, "deployment", "web", release.target)
    assert not exists(kubectl, "configmap", "web-config", release.target)
    assert_never_refused(control_plane, release, chart_operator)


def test_chart_rbac_lets_the_operator_observe(
    control_plane: ControlPlane, kubectl: Kubectl, release: Release, chart_operator: ChartOperator
) -> None:
    """With only the chart's RBAC, Observe dry-runs the blueprint and sees an unlabelled object."""
    apply_environment(kubectl, blueprint("seen", release, [CONFIGMAP], mode="Observe"))
    wait_conditions(kubectl, release, "seen", in_sync="False")
    assert not exists(kubectl, "configmap", "web-config", release.target)

    # Observe never labels objects: one made by hand is seen through an unfiltered watch.
    kubectl(
        "create", "configmap", "web-config", "-n", release.target, "--from-literal=DB_VERSION=5.7"
    )
    wait_conditions(kubectl, release, "seen", in_sync="True")
    assert_never_refused(control_plane, release, chart_operator)


def test_chart_pod_is_admitted_as_restricted(kubectl: Kubectl, release: Release) -> None:
    """Pod Security admission, enforcing `restricted` in the release namespace, admits the Pod."""
    selector = f"app.kubernetes.io/instance={release.name}"

    def pods() -> list[Any]:
        listing = kubectl.json("get", "pods", "-n", release.namespace, "-l", selector)
        return list(listing["items"])

    (pod,) = wait_for(pods, timeout=30, message="the ReplicaSet to create the operator's Pod")
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


# (verb, resource, namespace) -> can-i answer. "own" is the release's namespace, where the
# Environments live; "target" is where their objects go; None is the cluster scope.
BOUNDARY = {
    ("patch", "deployments.apps", "target"): "yes",
    ("create", "events", "own"): "yes",
    ("patch", "environments.driftguard.io/status", "own"): "yes",
    ("delete", "nodes", None): "no",
    ("create", "clusterrolebindings", None): "no",
    ("patch", "customresourcedefinitions", None): "no",
    ("get", "pods", "target"): "no",
    ("update", "deployments.apps", "target"): "no",
    ("delete", "environments.driftguard.io", "own"): "no",
    ("update", "environments.driftguard.io/status", "own"): "no",
    # No rbac.manageSecrets: no Secret is read, listed or written anywhere.
    ("get", "secrets", "target"): "no",
    ("list", "secrets", None): "no",
    ("create", "secrets", "own"): "no",
    # No tenancy values: the operator may impersonate no ServiceAccount anywhere.
    ("impersonate", "serviceaccounts", "target"): "no",
    ("impersonate", "serviceaccounts/default", "kube-system"): "no",
    ("impersonate", "serviceaccounts", None): "no",
}
# Only the cluster-wide install reaches namespaces it was not told about; confined, the
# target namespace gets the managed kinds but no Environments.
CLUSTER_WIDE_ONLY = [
    ("create", "configmaps", "kube-system"),
    ("patch", "environments.driftguard.io", "target"),
]


def test_chart_serviceaccount_is_refused_outside_its_grant(
    control_plane: ControlPlane, kubectl: Kubectl, release: Release
) -> None:
    """`kubectl auth can-i` as the chart's ServiceAccount is "no" for what the operator never does."""
    kubeconfig = control_plane.serviceaccount_kubeconfig(release.namespace, release.serviceaccount)
    places = {"own": release.namespace, "target": release.target, "kube-system": "kube-system"}
    expected = BOUNDARY | dict.fromkeys(CLUSTER_WIDE_ONLY, "no" if release.is_confined else "yes")

    def ask(verb: str, resource: str, where: str | None) -> str:
        scope = ["-n", places[where]] if where else []
        done = kubectl("auth", "can-i", verb, resource, *scope, kubeconfig=kubeconfig, check=False)
        return done.stdout.strip() or done.stderr.strip()

    answers = {case: ask(*case) for case in expected}
    assert answers == expected


@pytest.mark.parametrize("confined", [False, True], ids=["cluster-wide", "watch-namespaces"])
def test_chart_clusters_value_grants_only_get_on_secrets(helm: Helm, confined: bool) -> None:
    """clusters.enabled adds get (no list, no watch) on Secrets where Environments live, so
    kubeconfig Secrets are read by name; insecureKubeconfigExec passes its flag."""
    base: dict[str, Any] = {
        "rbac": {"managedResources": [{"apiGroups": ["apps"], "resources": ["deployments"]}]}
    }
    if confined:
        base["watchNamespaces"] = ["a"]

    def secret_verbs(values: dict[str, Any]) -> set[str]:
        objects = helm.template(values)
        rules = [
            rule
            for role in of_kind(objects, "ClusterRole") + of_kind(objects, "Role")
            for rule in role["rules"]
        ]
        return grants(rules, "", "secrets")

    assert secret_verbs(base) == set()
    assert secret_verbs({**base, "clusters": {"enabled": True}}) == {"get"}
    args = container(helm.template({**base, "clusters": {"insecureKubeconfigExec": True}}))["args"]
    assert "--insecure-kubeconfig-exec" in args
    assert "--insecure-kubeconfig-exec" not in container(helm.template(base))["args"]
