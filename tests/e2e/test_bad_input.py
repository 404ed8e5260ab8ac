"""The bad-input corpus (tests/data/bad-input) against the session's operator.

Each file is applied with real kubectl in a namespace of its own. It must be refused at
`kubectl apply` with the expected message, or land Ready=False/InvalidSpec with it; either
way nothing of its blueprint is created and a bait object labelled as its own is not pruned.
Meanwhile the operator keeps its process and a guard Environment stays enforced.

All cases are applied in one module fixture and waited for once; each test reads its result.
"""

import importlib.util
import json
import secrets
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from envs import Operator, apply, configmap, environment, get, wait_condition
from helpers import Kubectl, is_process_alive, wait_for

CORPUS_DIR = Path(__file__).resolve().parents[1] / "data" / "bad-input"
ENV = "bad"
BAIT = "bait"
KINDS = "configmaps,secrets,deployments,services"
MANAGED = "app.kubernetes.io/managed-by=driftguard"


def _corpus() -> ModuleType:
    spec = importlib.util.spec_from_file_location("badinput_corpus", CORPUS_DIR / "corpus.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


corpus = _corpus()
CASES = corpus.load()


@dataclass
class Outcome:
    """What happened to one case."""

    namespace: str
    returncode: int = 0
    stderr: str = ""
    ready: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """The whole corpus, applied once."""

    outcomes: dict[str, Outcome]
    pid: int
    guard: str


def _bait(namespace: str) -> dict[str, Any]:
    """A ConfigMap labelled as the case's Environment's own: a prune would delete it."""
    labels = {
        "app.kubernetes.io/managed-by": "driftguard",
        "driftguard.io/environment": ENV,
        "driftguard.io/environment-namespace": namespace,
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": BAIT, "namespace": namespace, "labels": labels},
        "data": {"keep": "me"},
    }


def _apply_case(kubectl: Kubectl, case: Any, namespace: str, workdir: Path) -> Outcome:
    path = workdir / f"{case.id}.yaml"
    path.write_bytes(case.body(namespace))
    argv = ["apply", "-n", namespace, "-f", str(path)]
    if case.server_side:
        argv.insert(1, "--server-side")
    done = kubectl(*argv, check=False, timeout=120)
    return Outcome(namespace, done.returncode, done.stderr)


_READY = '{.status.conditions[?(@.type=="Ready")]'
_TAB = '{"\\t"}'
_COLUMNS = (
    "{range .items[*]}{.metadata.namespace}"
    + _TAB
    + "{.metadata.name}"
    + _TAB
    + _TAB.join(f"{_READY}.{field}}}" for field in ("status", "reason", "message"))
    + '{"\\n"}{end}'
)


def _ready_conditions(kubectl: Kubectl) -> dict[str, dict[str, Any]]:
    """Ready condition of every `bad` Environment, by namespace.

    Through jsonpath: Python's json cannot read the list whole (a case is 2,000 levels deep).
    """
    listing = kubectl("get", "environments", "-A", "-o", f"jsonpath={_COLUMNS}").stdout
    found = {}
    for line in listing.splitlines():
        namespace, name, status, reason, message = (line.split("\t") + [""] * 5)[:5]
        if name == ENV and status:
            found[namespace] = {"status": status, "reason": reason, "message": message}
    return found


def _guard(kubectl: Kubectl) -> str:
    """A valid Environment in its own namespace, in sync before the corpus arrives."""
    namespace = f"bi-guard-{secrets.token_hex(3)}"
    kubectl("create", "namespace", namespace)
    apply(kubectl, environment("guard", namespace, [configmap("guarded", v="1")]))
    wait_condition(kubectl, "guard", namespace, "InSync", "True", timeout=30)
    return namespace


@pytest.fixture(scope="module")
def run(
    kubectl: Kubectl, operator: Operator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    """Applies every case (in parallel, four kubectl at a time), then waits once for every
    InvalidSpec case's condition."""
    assert operator.process is not None
    pid = operator.process.pid
    guard = _guard(kubectl)
    suffix = secrets.token_hex(2)
    namespaces = {case.id: f"bi-{case.id[:2]}-{suffix}" for case in CASES}
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
        for ns in namespaces.values()
    ]
    manifests += [_bait(ns) for ns in namespaces.values()]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests))
    workdir = tmp_path_factory.mktemp("bad-input")
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            c.id: pool.submit(_apply_case, kubectl, c, namespaces[c.id], workdir) for c in CASES
        }
        outcomes = {name: future.result() for name, future in futures.items()}

    expected = {outcomes[c.id].namespace for c in CASES if c.expect == "InvalidSpec"}

    last: dict[str, dict[str, Any]] = {}

    def all_judged() -> dict[str, dict[str, Any]] | None:
        last.clear()
        last.update(_ready_conditions(kubectl))
        judged = {ns for ns, ready in last.items() if ready.get("status") == "False"}
        return dict(last) if expected <= judged else None

    try:
        found = wait_for(all_judged, timeout=90, interval=0.5, message="InvalidSpec cases")
    except pytest.fail.Exception:
        missing = sorted(c.id for c in CASES if outcomes[c.id].namespace in expected - set(last))
        pytest.fail(f"never judged: {missing}\n{operator.log_text()[-4000:]}")
    for outcome in outcomes.values():
        outcome.ready = found.get(outcome.namespace, {})
    try:
        yield Run(outcomes, pid, guard)
    finally:
        for ns in [*namespaces.values(), guard]:
            kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _objects(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl.json("get", KINDS, "-n", namespace)["items"]
    return items


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_case(case: Any, run: Run, kubectl: Kubectl, operator: Operator) -> None:
    """Refused at apply, or Ready=False/InvalidSpec, with the expected message; nothing of
    the blueprint created, the bait not pruned, the operator's process the same."""
    outcome = run.outcomes[case.id]
    if case.expect == "refused":
        assert outcome.returncode != 0, f"kubectl accepted it:\n{outcome.stderr}"
        for message in case.messages:
            assert message in outcome.stderr
        listing = kubectl("get", "environments", "-n", outcome.namespace, "-o", "name")
        assert listing.stdout == ""
    else:
        assert outcome.returncode == 0, outcome.stderr
        assert outcome.ready.get("reason") == "InvalidSpec", outcome.ready
        for message in case.messages:
            assert message in outcome.ready.get("message", "")

    objects = _objects(kubectl, outcome.namespace)
    managed = [
        o["metadata"]["name"]
        for o in objects
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") == "driftguard"
    ]
    assert managed == [BAIT], "something of the blueprint was applied, or the bait pruned"
    present = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert not present & set(case.blueprint)
    assert operator.process is not None
    assert operator.process.pid == run.pid
    assert is_process_alive(run.pid)


def test_guard_environment_is_enforced_meanwhile(run: Run, kubectl: Kubectl) -> None:
    """A manual change to another Environment's object, made after the whole corpus, is
    reverted."""
    patch = json.dumps({"data": {"v": "changed-by-hand"}})
    kubectl("patch", "configmap", "guarded", "-n", run.guard, "-p", patch)

    def reverted() -> bool:
        found = get(kubectl, "configmap", "guarded", run.guard) or {}
        return found.get("data") == {"v": "1"}

    wait_for(reverted, timeout=15, message="the guard's ConfigMap reverted")


def test_operator_kept_its_process(run: Run, operator: Operator) -> None:
    """The operator never crashed or restarted while it read the corpus."""
    assert operator.process is not None
    assert operator.process.poll() is None
    assert operator.process.pid == run.pid
    assert "RecursionError" not in operator.log_text()
