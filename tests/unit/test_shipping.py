"""Shipping: the GitOps examples and their health checks, the krew manifest, shell completion.

The Argo CD health check runs in Lua 5.1 (lupa; Argo CD's gopher-lua speaks 5.1) and the
Flux healthCheckExprs in a CEL interpreter (cel-python), both on Environments whose
conditions the operator's own `conditions.make` builds, so a renamed reason fails here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import tarfile
from io import BytesIO
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from lupa import lua51

from driftguard.cli import completion
from driftguard.cli import main as cli
from driftguard.core import conditions, model
from driftguard.core.blueprint import parse_blueprint
from driftguard.core.conditions import Reason

ROOT = Path(__file__).parents[2]
GITOPS = ROOT / "examples" / "gitops"
NOW = "2026-01-01T00:00:00Z"


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_gitops_examples_are_the_objects_the_readme_names() -> None:
    """examples/gitops holds an Application, the argocd-cm key, a GitRepository and a Kustomization."""
    kinds = sorted(
        (doc["apiVersion"], doc["kind"], doc["metadata"]["name"])
        for path in (GITOPS / "argocd").glob("*.yaml")
        for doc in documents(path)
    ) + sorted(
        (doc["apiVersion"], doc["kind"], doc["metadata"]["name"])
        for doc in documents(GITOPS / "flux" / "environments.yaml")
    )
    assert kinds == [
        ("argoproj.io/v1alpha1", "Application", "environments"),
        ("v1", "ConfigMap", "argocd-cm"),
        ("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "environments"),
        ("source.toolkit.fluxcd.io/v1", "GitRepository", "environments"),
    ]


def test_gitops_folder_is_the_shop_example_and_parses_by_the_models() -> None:
    """The synced folder's Blueprint and Environments are examples/' own, and the models accept them."""
    for name in ("shop-blueprint.yaml", "shop-environments.yaml"):
        assert (GITOPS / "environments" / name).read_text() == (
            ROOT / "examples" / name
        ).read_text()
    found = [doc for path in (GITOPS / "environments").glob("*.yaml") for doc in documents(path)]
    by_kind = {doc["kind"] for doc in found}
    assert by_kind == {"Namespace", "Blueprint", "Environment"}
    targets = set()
    for doc in found:
        if doc["kind"] == "Blueprint":
            parse_blueprint(doc["spec"])
        elif doc["kind"] == "Environment":
            targets.add(model.parse_spec(doc["spec"]).target_namespace)
    namespaces = {doc["metadata"]["name"] for doc in found if doc["kind"] == "Namespace"}
    assert targets <= namespaces


def environment(generation: int, observed: int | None, *found: tuple[str, bool, str]) -> Any:
    """An Environment at ``generation`` whose status the operator wrote at ``observed``."""
    obj: dict[str, Any] = {
        "apiVersion": "driftguard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": "staging", "namespace": "platform", "generation": generation},
        "spec": {"resources": []},
    }
    if observed is not None:
        obj["status"] = {
            "observedGeneration": observed,
            "conditions": [
                conditions.make(
                    kind, ok, reason, f"{reason} message", generation=observed, now=NOW
                ).model_dump(by_alias=True, exclude_none=True)
                for kind, ok, reason in found
            ],
        }
    return obj


READY = conditions.READY
IN_SYNC = conditions.IN_SYNC
# (status shape, Argo CD health, Flux verdict)
HEALTH_CASES = {
    "just created": (environment(1, None), "Progressing", "inProgress"),
    "first pass pending": (
        environment(1, 1, (READY, False, Reason.PROGRESSING)),
        "Progressing",
        "inProgress",
    ),
    "in sync": (
        environment(1, 1, (READY, True, Reason.APPLIED), (IN_SYNC, True, Reason.IN_SYNC)),
        "Healthy",
        "current",
    ),
    "Enforce reverting a drift": (
        environment(1, 1, (READY, True, Reason.APPLIED), (IN_SYNC, False, Reason.DRIFTED)),
        "Progressing",
        "inProgress",
    ),
    "Observe flagging a drift": (
        environment(1, 1, (READY, True, Reason.OBSERVING), (IN_SYNC, False, Reason.DRIFTED)),
        "Degraded",
        "failed",
    ),
    "Observe in sync": (
        environment(1, 1, (READY, True, Reason.OBSERVING), (IN_SYNC, True, Reason.IN_SYNC)),
        "Healthy",
        "current",
    ),
    "invalid spec": (
        environment(1, 1, (READY, False, Reason.INVALID_SPEC), (IN_SYNC, False, Reason.DRIFTED)),
        "Degraded",
        "failed",
    ),
    "forbidden": (environment(1, 1, (READY, False, Reason.FORBIDDEN)), "Degraded", "failed"),
    "apply failed": (environment(1, 1, (READY, False, Reason.APPLY_FAILED)), "Degraded", "failed"),
    "suspended with drift": (
        environment(1, 1, (READY, True, Reason.SUSPENDED), (IN_SYNC, False, Reason.DRIFTED)),
        "Suspended",
        "failed",
    ),
    "suspended in sync": (
        environment(1, 1, (READY, True, Reason.SUSPENDED), (IN_SYNC, True, Reason.IN_SYNC)),
        "Suspended",
        "current",
    ),
    "a new spec not yet applied": (
        environment(2, 1, (READY, True, Reason.APPLIED), (IN_SYNC, True, Reason.IN_SYNC)),
        "Progressing",
        "inProgress",
    ),
    "a new spec after an invalid one": (
        environment(2, 1, (READY, False, Reason.INVALID_SPEC)),
        "Progressing",
        "inProgress",
    ),
}


def argocd_health(obj: dict[str, Any]) -> dict[str, Any]:
    """Runs the argocd-cm health script as Argo CD does: `obj` global, a table returned."""
    (config,) = documents(GITOPS / "argocd" / "argocd-cm.yaml")
    script = config["data"]["resource.customizations.health.driftguard.io_Environment"]
    lua = lua51.LuaRuntime()
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script)
    return {"status": result["status"], "message": result["message"]}


def flux_verdicts(obj: dict[str, Any]) -> set[str]:
    """The healthCheckExprs that hold: Flux binds the object's top-level fields as variables."""
    kustomization = next(
        doc for doc in documents(GITOPS / "flux" / "environments.yaml")
        if doc["kind"] == "Kustomization"
    )  # fmt: skip
    (check,) = kustomization["spec"]["healthCheckExprs"]
    assert (check["apiVersion"], check["kind"]) == ("driftguard.io/v1alpha1", "Environment")
    env = celpy.Environment()
    # A fresh object has no status; an empty map stands in (has() is false either way).
    activation = {
        key: celpy.json_to_cel(obj.get(key, {})) for key in ("metadata", "spec", "status")
    }
    held = set()
    for verdict in ("inProgress", "failed", "current"):
        program = env.program(env.compile(check[verdict]))
        if bool(program.evaluate(activation)):
            held.add(verdict)
    return held


@pytest.mark.parametrize(("obj", "argo", "flux"), HEALTH_CASES.values(), ids=HEALTH_CASES.keys())
def test_argocd_health_check_reads_ready_and_in_sync(obj: Any, argo: str, flux: str) -> None:
    """The Lua health check gives each status shape its Argo CD health, with a message."""
    health = argocd_health(obj)
    assert health["status"] == argo
    assert health["message"]


@pytest.mark.parametrize(("obj", "argo", "flux"), HEALTH_CASES.values(), ids=HEALTH_CASES.keys())
def test_flux_health_check_exprs_hold_exactly_one_verdict(obj: Any, argo: str, flux: str) -> None:
    """Exactly one of inProgress, failed and current holds, so Flux's order cannot matter."""
    assert flux_verdicts(obj) == {flux}


KREW = ROOT / "plugins" / "driftguard.yaml"


def krew_archive() -> bytes:
    spec = importlib.util.spec_from_file_location("krew_archive", ROOT / "hack" / "krew-archive.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data: bytes = module.archive_bytes()
    return data


def test_krew_manifest_is_a_plugin_whose_archive_holds_its_bin() -> None:
    """The krew Plugin: required fields, a pinned sha256 equal to the reproducible archive's."""
    (manifest,) = documents(KREW)
    assert manifest["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2"
    assert manifest["kind"] == "Plugin"
    assert manifest["metadata"]["name"] == "driftguard"
    spec = manifest["spec"]
    assert spec["version"] == f"v{cli_version()}"
    assert len(spec["shortDescription"]) <= 50
    assert "pip install driftguard" in spec["caveats"]
    (platform,) = spec["platforms"]
    assert platform["bin"] == "kubectl-driftguard"
    assert platform["selector"]["matchExpressions"][0]["values"] == ["linux", "darwin"]
    data = krew_archive()
    assert platform["sha256"] == hashlib.sha256(data).hexdigest()
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        member = tar.getmember(platform["files"][0]["from"])
        assert member.mode & 0o111
        shim = tar.extractfile(member)
        assert shim is not None
        assert b"exec driftguard" in shim.read()


def cli_version() -> str:
    import tomllib

    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_completion_prints_a_script_for_each_shell(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`driftguard completion SHELL` prints a script naming every subcommand."""
    assert cli.main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for command in ("run", "diff", "status", "history", "rollback", "audit", "compare"):
        assert command in script


def bash_complete(words: list[str]) -> list[str]:
    """What bash's completion offers after ``words`` (the last one being completed)."""
    script = completion.script(cli._parser(), "bash")
    program = (
        f"{script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        '_driftguard; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        ["bash", "--norc", "-c", program], capture_output=True, text=True, check=True
    )
    return done.stdout.split()


COMPLETIONS = {
    "a subcommand": (["driftguard", "hi"], ["history"]),
    "every subcommand starting so": (["driftguard", "c"], ["compare", "completion"]),
    "a subcommand's option": (["driftguard", "rollback", "--to"], ["--to-revision"]),
    "an option's choices": (["driftguard", "audit", "-o", ""], ["table", "json"]),
    "after a global option": (["driftguard", "--kubeconfig", "k", "st"], ["status"]),
    "the shells": (["kubectl-driftguard", "completion", "z"], ["zsh"]),
}


@pytest.mark.parametrize(("words", "offered"), COMPLETIONS.values(), ids=COMPLETIONS.keys())
def test_bash_completes(words: list[str], offered: list[str]) -> None:
    """Bash accepts the script (`bash -n`) and its completion function offers the right words."""
    script = completion.script(cli._parser(), "bash")
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert bash_complete(words) == offered


@pytest.mark.parametrize(("shell", "check"), [("zsh", ["zsh", "-n"]), ("fish", ["fish", "-n"])])
def test_zsh_and_fish_accept_their_scripts(shell: str, check: list[str], tmp_path: Path) -> None:
    """zsh and fish parse their scripts (checked where the shell is installed)."""
    if shutil.which(check[0]) is None:
        pytest.skip(f"{check[0]} is not installed")
    path = tmp_path / f"driftguard.{shell}"
    path.write_text(completion.script(cli._parser(), shell))
    done = subprocess.run([*check, str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
