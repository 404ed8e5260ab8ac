"""hack/sbom.py's pure parts: which locked file an installed distribution came from, and the
lock's components kept to what the image installed."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _load() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "hack" / "sbom.py"
    spec = importlib.util.spec_from_file_location("sbom", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sbom"] = module
    spec.loader.exec_module(module)
    return module


sbom = _load()
FILES = "https://files.example/"


def component(name: str, version: str, *files: str) -> dict[str, Any]:
    refs = [
        {"type": "distribution", "url": FILES + f, "hashes": [{"alg": "SHA-256", "content": f}]}
        for f in files
    ]
    return {"type": "library", "bom-ref": f"{name}@{version}", "name": name, "version": version,
            "purl": f"pkg:pypi/{name}@{version}", "externalReferences": refs}  # fmt: skip


def test_wheel_tags_expand_compressed_sets() -> None:
    """A wheel's file name declares every combination of its dotted tag sets."""
    tags = sbom.wheel_tags("six-1.17.0-py2.py3-none-any.whl")
    assert tags == {"py2-none-any", "py3-none-any"}
    many = sbom.wheel_tags(
        "aiohttp-3.14.5-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
    )
    assert many == {"cp311-cp311-manylinux2014_x86_64", "cp311-cp311-manylinux_2_17_x86_64"}


def test_installed_artifact_is_the_wheel_the_tags_name() -> None:
    """Of the lock's files only the wheel whose tags the installed WHEEL record names stays."""
    locked = component(
        "aiohttp", "3.14.5", "aiohttp-3.14.5.tar.gz",
        "aiohttp-3.14.5-cp311-cp311-win_amd64.whl",
        "aiohttp-3.14.5-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
    )  # fmt: skip
    kept = sbom.installed_artifact(locked, {"cp311-cp311-manylinux_2_17_x86_64"})
    urls = [ref["url"] for ref in kept["externalReferences"]]
    assert urls == [
        FILES + "aiohttp-3.14.5-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
    ]


def test_installed_artifact_built_from_source_is_the_sdist() -> None:
    """A distribution no locked wheel matches was built from the sdist: that file stays."""
    locked = component("odd", "1.0", "odd-1.0.tar.gz", "odd-1.0-cp312-cp312-win_amd64.whl")
    kept = sbom.installed_artifact(locked, {"cp311-cp311-linux_x86_64"})
    assert [ref["url"] for ref in kept["externalReferences"]] == [FILES + "odd-1.0.tar.gz"]


def test_python_part_keeps_what_the_image_installed() -> None:
    """A Windows-only locked package is left out, with it every edge of the graph to it."""
    export = {
        "metadata": {"component": {"bom-ref": "proj@1", "name": "Proj", "version": "1",
                                   "properties": [{"name": "uv:package:is_project_root", "value": "true"}]}},
        "components": [component("Requests", "2.0", "requests-2.0-py3-none-any.whl"),
                       component("colorama", "0.4", "colorama-0.4-py3-none-any.whl")],
        "dependencies": [{"ref": "proj@1", "dependsOn": ["Requests@2.0", "colorama@0.4"]},
                         {"ref": "Requests@2.0"}, {"ref": "colorama@0.4"}],
    }  # fmt: skip
    installed = {"proj": ("1", {"py3-none-any"}), "requests": ("2.0", {"py3-none-any"})}
    components, graph, project = sbom.python_part(export, installed)
    assert [c["name"] for c in components] == ["Proj", "Requests"]
    assert "properties" not in components[0]
    assert graph == [
        {"ref": "proj@1", "dependsOn": ["Requests@2.0"]},
        {"ref": "Requests@2.0", "dependsOn": []},
    ]
    assert project == "proj@1"


@pytest.mark.parametrize(
    ("installed", "says"),
    [
        ({"proj": ("1", set()), "stranger": ("9", set())}, "not in uv.lock"),
        ({"proj": ("1", set()), "requests": ("2.1", set())}, "other versions"),
    ],
)
def test_python_part_refuses_an_image_that_is_not_the_locks(
    installed: dict[str, tuple[str, set[str]]], says: str
) -> None:
    """A distribution the lock lacks, or at another version, fails the SBOM (and so the build)."""
    export = {
        "metadata": {"component": {"bom-ref": "proj@1", "name": "proj", "version": "1"}},
        "components": [component("requests", "2.0")],
        "dependencies": [],
    }
    with pytest.raises(SystemExit, match=says):
        sbom.python_part(export, installed)
