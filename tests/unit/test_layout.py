"""The package's layout: layers as folders, each under a contract, small rooms, honest names."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "driftguard"
MODULES = sorted(PACKAGE.rglob("*.py"))
MODULE_LIMIT = 500
CLASS_LIMIT = 250


def contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return found


def test_every_module_lives_in_a_layer_that_a_contract_orders() -> None:
    """No module sits beside the layers: each subpackage is a layer of the first contract."""
    layers = {str(layer) for layer in contracts()[0]["layers"]}  # type: ignore[attr-defined]
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    folders = {f"driftguard.{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}

    assert loose == []
    assert folders - {"driftguard.controlplane"} == layers
    controlplane = [c for c in contracts() if "driftguard.controlplane" in str(c)]
    assert controlplane, "the control plane is kept apart by a contract"


def test_each_layers_modules_are_ordered_inside_it() -> None:
    """Every module of a layer appears in that layer's own contract."""
    for layer in ("core", "kube", "runtime", "cli"):
        contract = next(c for c in contracts() if c.get("containers") == [f"driftguard.{layer}"])
        named = {
            name.strip()
            for row in contract["layers"]  # type: ignore[attr-defined]
            for name in str(row).split("|")
        }
        present = {p.stem for p in (PACKAGE / layer).glob("*.py") if p.stem != "__init__"}
        present |= {p.parent.name for p in (PACKAGE / layer).glob("*/__init__.py")}
        assert present == named, f"{layer}: not in its contract {present - named}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_classes_stay_small(path: Path) -> None:
    """No module over 500 lines, no class over 250."""
    text = path.read_text()
    assert text.count("\n") <= MODULE_LIMIT
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            assert size <= CLASS_LIMIT, f"class {node.name} is {size} lines"


def test_no_module_shadows_the_standard_library() -> None:
    """A module named like a standard one (inspect, types, ...) misleads every import."""
    shadowing = [p for p in MODULES if p.stem in sys.stdlib_module_names]

    assert shadowing == []


def test_no_two_public_functions_share_a_name() -> None:
    """A name means one job: module-level functions are unique across the operator.

    Each program's `main` is the one exception; it is the same job everywhere.
    """
    seen: dict[str, list[str]] = {}
    for path in MODULES:
        if "controlplane" in path.parts:
            continue
        for node in ast.parse(path.read_text()).body:
            name = getattr(node, "name", "_")
            is_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if is_function and not name.startswith("_") and name != "main":
                seen.setdefault(name, []).append(str(path.relative_to(PACKAGE)))
    assert {name: where for name, where in seen.items() if len(where) > 1} == {}


def _third_party_imports(paths: list[Path]) -> set[str]:
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names} - {"driftguard"}


def _declared(requirements: list[str]) -> set[str]:
    names = {req.split("==")[0].split("[")[0].strip().lower() for req in requirements}
    return {name.replace("_", "-") for name in names}


def _distribution(module: str) -> str:
    import importlib.metadata

    distributions = importlib.metadata.packages_distributions().get(module, [module])
    return distributions[0].lower().replace("_", "-")


def test_every_import_the_operator_ships_is_a_declared_dependency() -> None:
    """What the package imports is in [project] dependencies (the control plane: its extra)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _declared(project["dependencies"])
    extra = _declared(project["optional-dependencies"]["controlplane"])
    operator = [p for p in MODULES if "controlplane" not in p.parts]
    controlplane = [p for p in MODULES if "controlplane" in p.parts]

    assert {_distribution(m) for m in _third_party_imports(operator)} <= runtime
    assert {_distribution(m) for m in _third_party_imports(controlplane)} <= runtime | extra


def test_the_demo_finds_the_repository_it_tells_the_story_of() -> None:
    """`make demo` applies crds/ and examples from the checkout: its root must be the repo's."""
    from driftguard.cli import demo

    assert (demo.ROOT / "crds" / "environments.driftguard.io.yaml").is_file()
    assert demo.ROOT == ROOT
