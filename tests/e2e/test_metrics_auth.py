"""Secure /metrics, the chart's default: HTTPS, and the API server judges every scraper.

`driftguard run` as the chart's ServiceAccount (its RBAC includes the review rights),
without `--metrics-insecure`, serving a certificate it made itself. The scrapers are
ServiceAccounts with tokens from the TokenRequest API, as a Prometheus in the cluster
would send: one bound to the chart's `<release>-metrics-reader` ClusterRole, one not.
The operator serves one empty namespace, so it acts on nothing of the other tests.
"""

import http.client
import os
import secrets
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from envs import (
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICEACCOUNT,
    OPERATOR_USER,
    chart_kubeconfig,
    free_port,
    install_crd,
)
from helpers import Kubectl, audit_events, wait_for

from driftguard.controlplane import ControlPlane

READER_ROLE = f"{OPERATOR_SERVICEACCOUNT}-metrics-reader"


def scrape(port: int, token: str | None) -> tuple[int, str]:
    """GET /metrics over HTTPS (the self-signed certificate is not verified), as a scraper."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    request = urllib.request.Request(f"https://127.0.0.1:{port}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


@pytest.fixture(scope="module")
def secure_operator(
    control_plane: ControlPlane,
    kubectl: Kubectl,
    chart_rbac: list[dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[int, Path]]:
    """The operator with the chart's metrics flags (secure), serving an empty namespace."""
    install_crd(kubectl)
    kubeconfig = chart_kubeconfig(control_plane, kubectl, chart_rbac)
    quiet = f"m-{secrets.token_hex(4)}"
    kubectl("create", "namespace", quiet)
    port = free_port()
    log = tmp_path_factory.mktemp("metrics-auth") / "operator.log"
    binary = Path(sys.executable).parent / "driftguard"
    argv = [str(binary), "run", "--namespace", quiet, "--metrics-port", str(port)]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        )

    def serving() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the operator exited:\n{log.read_text()[-3000:]}")
        try:
            return scrape(port, None)[0] == 401
        except OSError:
            return False

    try:
        wait_for(serving, timeout=60, interval=0.2, message="secure /metrics to answer")
        yield port, log
    finally:
        process.terminate()
        process.wait(timeout=15)
        kubectl("delete", "namespace", quiet, "--wait=false", check=False)


def serviceaccount(kubectl: Kubectl, name: str, *, reader: bool) -> str:
    """A ServiceAccount's token (TokenRequest), bound to the scrapers' ClusterRole or not."""
    kubectl("create", "serviceaccount", name, "-n", OPERATOR_NAMESPACE)
    if reader:
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": READER_ROLE,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": OPERATOR_NAMESPACE}],
        }
        kubectl("apply", "-f", "-", input=yaml.safe_dump(binding))
    return str(kubectl("create", "token", name, "-n", OPERATOR_NAMESPACE).stdout.strip())


def reviews(control_plane: ControlPlane) -> int:
    """TokenReviews the operator has made (the audit log)."""
    return sum(
        1
        for event in audit_events(control_plane.audit_log, username=OPERATOR_USER)
        if (event.get("objectRef") or {}).get("resource") == "tokenreviews"
    )


def test_scrape_without_a_token_is_unauthorized(secure_operator: tuple[int, Path]) -> None:
    """No bearer token: 401, and no metric in the answer."""
    status, body = scrape(secure_operator[0], None)
    assert status == 401
    assert "driftguard_" not in body


def test_scrape_with_an_unknown_token_is_unauthorized(secure_operator: tuple[int, Path]) -> None:
    """A token the API server does not know: 401."""
    status, body = scrape(secure_operator[0], "not-a-token-" + secrets.token_hex(8))
    assert status == 401
    assert "driftguard_" not in body


def test_scrape_without_the_reader_role_is_forbidden(
    kubectl: Kubectl, secure_operator: tuple[int, Path]
) -> None:
    """A real ServiceAccount's token without the scrapers' ClusterRole: 403, naming it."""
    name = f"nosy-{secrets.token_hex(3)}"
    token = serviceaccount(kubectl, name, reader=False)
    status, body = scrape(secure_operator[0], token)
    assert status == 403
    assert f"system:serviceaccount:{OPERATOR_NAMESPACE}:{name}" in body
    assert "driftguard_" not in body


def test_scrape_as_a_bound_reader_returns_the_metrics(
    control_plane: ControlPlane, kubectl: Kubectl, secure_operator: tuple[int, Path]
) -> None:
    """A ServiceAccount bound to the chart's metrics-reader ClusterRole gets 200 and the
    metrics; its scrapes within the cache's lifetime cost one TokenReview, and the token
    is never written to the operator's log."""
    port, log = secure_operator
    token = serviceaccount(kubectl, f"prometheus-{secrets.token_hex(3)}", reader=True)
    # The RBAC authorizer learns of the new binding through its informers; a 403 verdict is
    # kept for a while, so the wait is as long as the cache's lifetime and a bit.
    _, body = wait_for(
        lambda: (answer := scrape(port, token))[0] == 200 and answer,
        timeout=45,
        interval=0.5,
        message="the bound reader's scrape to answer 200",
    )
    assert "driftguard_reconcile_duration_seconds" in body
    before = reviews(control_plane)
    for _ in range(5):
        assert scrape(port, token)[0] == 200
    assert reviews(control_plane) == before
    assert token not in log.read_text()


def test_plain_http_to_the_secure_port_gets_no_metrics(secure_operator: tuple[int, Path]) -> None:
    """Plain HTTP to the HTTPS port is not answered with metrics."""
    url = f"http://127.0.0.1:{secure_operator[0]}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
    except (OSError, http.client.HTTPException):
        return  # the TLS server hangs up on a request that is not a handshake
    pytest.fail(f"plain HTTP was answered: {body[:200]}")
