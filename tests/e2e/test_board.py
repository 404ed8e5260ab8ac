"""The board in a real browser, against the real control plane and the session's operator.

One board (as the admin) and one headless Chromium for the module; a second board as a
user whose RBAC covers one namespace only. The grid must show a drift without a reload
within 2 s of the `kubectl patch`, compare must mark the differing value as the command
line does, a namespace the viewer may not read must not show, and a `<script>` from the
cluster must be text.
"""

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from browser import Board, chrome, require_browser
from envs import Operator, apply, configmap, environment, run_cli, wait_condition
from helpers import Helm, Kubectl, wait_for
from selenium import webdriver
from selenium.webdriver.common.by import By

from driftguard.cli.board.grid import row_id
from driftguard.controlplane import ControlPlane

INJECTED = '<script>window.__injected=1</script><img src=x onerror="window.__injected=2">'
TOOL = "<script>window.__injected=3</script>"
"""A field manager may be any text: it names the tool that changed an object (the "who")."""
LATENCY_BUDGET_S = 2.0


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    driver = chrome(*require_browser())
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def board(
    operator: Operator, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Board]:
    """The admin's board over every namespace, shared by the module's tests."""
    handle = Board(kubeconfig, ["-A"], tmp_path_factory.mktemp("board") / "board.log").start()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def other_namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"t-{secrets.token_hex(4)}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def health(browser: webdriver.Chrome, namespace: str, name: str) -> str:
    script = "var r = document.getElementById(arguments[0]); return r ? r.dataset.health : null;"
    return str(browser.execute_script(script, row_id(namespace, name)) or "")


def observed(kubectl: Kubectl, name: str, namespace: str, version: str) -> None:
    """An Observe Environment over a ConfigMap that already exists (Observe never writes)."""
    kubectl("create", "configmap", "db", "-n", namespace, f"--from-literal=DB_VERSION={version}")
    apply(
        kubectl, environment(name, namespace, [configmap("db", DB_VERSION=version)], mode="Observe")
    )
    wait_condition(kubectl, name, namespace, "InSync", "True")


def test_grid_shows_a_drift_within_two_seconds_without_reload(
    board: Board, browser: webdriver.Chrome, kubectl: Kubectl, namespace: str
) -> None:
    """A kubectl patch turns the row Drifted live: the page is never loaded again."""
    observed(kubectl, "staging", namespace, "5.7")
    browser.get(board.url)
    wait_for(lambda: health(browser, namespace, "staging") == "in_sync", message="the row in sync")
    wait_for(lambda: "Live:" in browser.find_element(By.ID, "live").text, message="live updates")
    browser.execute_script("window.__sameDocument = true;")

    started = time.monotonic()
    kubectl("patch", "configmap", "db", "-n", namespace, "-p", '{"data":{"DB_VERSION":"5.5"}}')
    wait_for(
        lambda: health(browser, namespace, "staging") == "drifted",
        timeout=LATENCY_BUDGET_S * 2,
        interval=0.02,
        message="the row to turn Drifted",
    )
    elapsed = time.monotonic() - started

    assert elapsed < LATENCY_BUDGET_S, f"drift took {elapsed:.2f}s to reach the grid"
    assert browser.execute_script("return window.__sameDocument === true;"), "the page reloaded"
    # Later writes (who changed it) replace the row again: read it whole, as it is each time.
    script = "var r = document.getElementById(arguments[0]); return r ? r.innerText : '';"
    wait_for(
        lambda: all(
            word in str(browser.execute_script(script, row_id(namespace, "staging")))
            for word in ("Drifted", "kubectl-patch")
        ),
        message="the row naming the drift and its field manager",
    )


def test_environment_page_links_from_the_grid_and_shows_the_diff(
    board: Board, browser: webdriver.Chrome, kubectl: Kubectl, namespace: str
) -> None:
    """A deep link shows the drifted object, its diff as driftguard diff, and the trail."""
    observed(kubectl, "dev", namespace, "5.7")
    kubectl("patch", "configmap", "db", "-n", namespace, "-p", '{"data":{"DB_VERSION":"5.5"}}')
    wait_condition(kubectl, "dev", namespace, "InSync", "False")
    browser.get(f"{board.url}env/{namespace}/dev")

    diff = browser.find_element(By.CSS_SELECTOR, "figure.diff").text
    assert "-  DB_VERSION: '5.5'" in diff
    assert "+  DB_VERSION: '5.7'" in diff
    objects = browser.find_element(By.ID, "objects").find_element(By.XPATH, "..").text
    assert "Drifted" in objects
    assert "/data/DB_VERSION" in objects


def compare_rows(browser: webdriver.Chrome) -> dict[str, dict[str, Any]]:
    found = {}
    for tr in browser.find_elements(By.CSS_SELECTOR, "table.compare tbody tr"):
        cells = [td.text for td in tr.find_elements(By.CSS_SELECTOR, "th, td")]
        found[f"{cells[0]} {cells[1]}"] = {"marks": cells[2], "values": cells[3:]}
    return found


def test_compare_marks_the_differing_value_as_the_cli_does(
    board: Board, browser: webdriver.Chrome, kubectl: Kubectl, namespace: str, other_namespace: str
) -> None:
    """5.7 against 5.5 is marked "differs" in words; the rows are driftguard compare's."""
    for where, version in ((namespace, "5.7"), (other_namespace, "5.5")):
        apply(
            kubectl, environment("shop", where, [configmap("db", DB_VERSION=version, LOG="info")])
        )
        wait_condition(kubectl, "shop", where, "InSync", "True")
    left, right = f"{namespace}/shop", f"{other_namespace}/shop"
    browser.get(f"{board.url}compare?env={left}&env={right}")

    rows = compare_rows(browser)
    assert rows["ConfigMap/db /data/DB_VERSION"] == {"marks": "differs", "values": ["5.7", "5.5"]}
    assert "ConfigMap/db /data/LOG" not in rows  # the same everywhere: not a difference
    cli = json.loads(run_cli(kubectl, "compare", left, right, "-o", "json").stdout)
    assert sorted(rows) == sorted(f"{r['kind']}/{r['name']} {r['path']}" for r in cli["rows"])


def test_a_user_without_rbac_on_a_namespace_does_not_see_it(
    control_plane: ControlPlane,
    kubectl: Kubectl,
    namespace: str,
    other_namespace: str,
    browser: webdriver.Chrome,
    tmp_path: Path,
) -> None:
    """A viewer who may read Environments in one namespace sees those, and only a notice of
    the other; its Environment's page is refused too."""
    for where in (namespace, other_namespace):
        apply(kubectl, environment("app", where, [configmap("db", DB_VERSION="5.7")]))
    viewer = f"viewer-{secrets.token_hex(3)}"
    rules = [
        {
            "apiGroups": ["driftguard.io"],
            "resources": ["environments"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    grant = [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": viewer, "namespace": namespace}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": viewer, "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": viewer},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": viewer}]},
    ]  # fmt: skip
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(grant))
    config = control_plane.user_kubeconfig(viewer)
    wait_for(
        lambda: kubectl("auth", "can-i", "watch", "environments", "-n", namespace,
                        kubeconfig=config, check=False).stdout.strip() == "yes",
        message="the viewer's Role to take effect",
    )  # fmt: skip
    theirs = Board(config, ["-n", namespace, "-n", other_namespace], tmp_path / "board.log").start()
    try:
        browser.get(theirs.url)
        wait_for(lambda: health(browser, namespace, "app"), message="the viewer's own row")
        page = browser.find_element(By.TAG_NAME, "main").text

        assert health(browser, other_namespace, "app") == ""
        assert f"{other_namespace}/app" not in page
        assert f"cannot list Environment in namespace {other_namespace}" in page
        browser.get(f"{theirs.url}env/{other_namespace}/app")
        assert "5.7" not in browser.find_element(By.TAG_NAME, "main").text
        assert browser.title.startswith("Cannot read it")
    finally:
        theirs.stop()


def test_a_script_from_the_cluster_is_shown_as_text(
    board: Board, browser: webdriver.Chrome, kubectl: Kubectl, namespace: str
) -> None:
    """Markup in a ConfigMap value and in the name of the tool that changed it (shown as who)
    is text on every page, never run; a label cannot even carry it."""
    labelled = {**configmap("db"), "metadata": {"name": "db", "labels": {"x": INJECTED}}}
    refused = apply(kubectl, environment("label", namespace, [labelled]), check=False)
    assert refused.returncode != 0
    assert "a valid label must" in refused.stderr
    kubectl("create", "configmap", "db", "-n", namespace, f"--from-literal=DB_VERSION={INJECTED}")
    declared = [configmap("db", DB_VERSION=INJECTED)]
    apply(kubectl, environment("value", namespace, declared, mode="Observe"))
    wait_condition(kubectl, "value", namespace, "InSync", "True")
    patch = json.dumps({"data": {"DB_VERSION": INJECTED + " 5.5"}})
    kubectl("patch", "configmap", "db", "-n", namespace, "--field-manager", TOOL, "-p", patch)
    wait_condition(kubectl, "value", namespace, "InSync", "False")

    shown = {
        "": [TOOL],  # who changed it
        f"env/{namespace}/value": [TOOL, INJECTED],  # the objects, the diff, the trail
        f"compare?env={namespace}/value&all=1": ["<script>window.__injected=1</script>"],
    }
    for page, texts in shown.items():
        browser.get(board.url + page)
        text = browser.find_element(By.TAG_NAME, "main").text

        assert browser.execute_script("return window.__injected === undefined"), page
        assert not browser.find_elements(By.CSS_SELECTOR, "main img, main script"), page
        assert all(t in text for t in texts), page


def test_chart_serves_the_board_beside_the_operator_on_loopback(helm: Helm) -> None:
    """board.enabled adds --board-port, which `driftguard run` takes; nothing exposes it."""
    from driftguard.cli import main as cli

    objects = helm.template({"board": {"enabled": True, "port": 8799}})
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = cli._parser().parse_args(["run", *container["args"]])

    assert (args.board_port, args.board_address) == (8799, "127.0.0.1")
    assert 8799 not in [p["containerPort"] for p in container.get("ports", [])]
    services = [o for o in objects if o["kind"] == "Service"]
    assert all(8799 not in [p["port"] for p in s["spec"]["ports"]] for s in services)
    default = next(o for o in helm.template({}) if o["kind"] == "Deployment")
    assert not any(
        "--board" in a for a in default["spec"]["template"]["spec"]["containers"][0]["args"]
    )
