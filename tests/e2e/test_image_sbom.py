"""What the image is made of: its Debian base (with the -updates and -security suites) and
the SBOM that hack/build-image.sh writes beside the OCI archive.

The SBOM is held to three independent accounts of the image: uv.lock's runtime packages
(walked here from the project's dependencies, markers evaluated for the image's Python,
never the dev group), the distributions installed in the image's virtual environment, and
the image's dpkg database (parsed here, not through dpkg-query).
"""

import json
import platform
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from images import STORE, dpkg_status
from packageurl import PackageURL
from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
SBOM = STORE / "driftguard.cdx.json"
SITE = "opt/driftguard/lib/python3.11/site-packages"


def lock_runtime(python_version: str) -> dict[str, str]:
    """Name -> version of what uv.lock installs for the project without its dev group."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages = {canonicalize_name(p["name"]): p for p in lock["package"]}
    environment = {
        "python_version": ".".join(python_version.split(".")[:2]),
        "python_full_version": python_version,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": platform.machine(),
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
        "extra": "",
    }
    found: dict[str, str] = {}
    todo = ["driftguard"]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found[name] = packages[name]["version"]
        for dependency in packages[name].get("dependencies", []):
            marker = dependency.get("marker")
            if marker is None or Marker(marker).evaluate(environment):
                todo.append(canonicalize_name(dependency["name"]))
    return found


def installed_python(rootfs: Path) -> dict[str, str]:
    found = {}
    for metadata in rootfs.glob(f"{SITE}/*.dist-info/METADATA"):
        text = metadata.read_text()
        name = re.search(r"^Name: (.+)$", text, re.M)
        version = re.search(r"^Version: (.+)$", text, re.M)
        assert name is not None, metadata
        assert version is not None, metadata
        found[canonicalize_name(name[1])] = version[1]
    return found


@pytest.fixture(scope="module")
def sbom(image_config: dict[str, Any]) -> dict[str, Any]:
    """The SBOM beside the archive, for the image in the store (its image ID says so)."""
    assert SBOM.exists(), f"no SBOM at {SBOM}: make image writes it"
    document: dict[str, Any] = json.loads(SBOM.read_text())
    return document


def components(sbom: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """The SBOM's components of a purl type (pypi, deb), by name."""
    found = {}
    for component in sbom["components"]:
        if "purl" in component and PackageURL.from_string(component["purl"]).type == kind:
            assert component["name"] not in found, f"{component['name']} listed twice"
            found[component["name"]] = component
    return found


def test_sbom_is_valid_cyclonedx_of_this_image(sbom: dict[str, Any], buildah: Any) -> None:
    """The SBOM passes the CycloneDX 1.5 JSON schema and describes the image in the store."""
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(SBOM.read_text()) is None
    assert (sbom["bomFormat"], sbom["specVersion"]) == ("CycloneDX", "1.5")
    image = sbom["metadata"]["component"]
    assert (image["type"], image["name"], image["version"]) == (
        "container",
        "localhost/driftguard",
        "0.1.0",
    )
    image_id = buildah(
        "inspect", "--type", "image", "--format", "{{.FromImageID}}", "localhost/driftguard:0.1.0"
    )
    assert {"name": "oci:image-id", "value": image_id} in image["properties"]


def test_sbom_lists_the_locks_runtime_packages(sbom: dict[str, Any], image_rootfs: Path) -> None:
    """The SBOM's Python packages are uv.lock's runtime set, which is what the image installed."""
    # Markers are evaluated for the interpreter the image's venv runs on: Debian's python3.11.
    expected = lock_runtime(dpkg_status(image_rootfs)["python3.11-minimal"][0].split("-")[0])
    assert installed_python(image_rootfs) == expected, (
        "the image's venv is not the lock's runtime set"
    )
    listed = components(sbom, "pypi")
    assert {canonicalize_name(n): c["version"] for n, c in listed.items()} == {
        name: v for name, v in expected.items() if name != "driftguard"
    }
    for name, component in listed.items():
        purl = PackageURL.from_string(component["purl"])
        assert (purl.name, purl.version) == (canonicalize_name(name), component["version"])
    assert not {"pytest", "mypy", "ruff", "cryptography"} & set(listed), "dev packages listed"
    (project,) = [c for c in sbom["components"] if c["name"] == "driftguard"]
    assert project["version"] == expected["driftguard"]


def test_sbom_lists_the_debian_packages_with_versions(
    sbom: dict[str, Any], image_rootfs: Path
) -> None:
    """Every package in the image's dpkg database is in the SBOM at its version, with its purl."""
    installed = dpkg_status(image_rootfs)
    listed = components(sbom, "deb")
    assert set(listed) == set(installed)
    assert {"python3.11-minimal", "libc6", "libssl3"} <= set(listed)
    for name, component in listed.items():
        purl = PackageURL.from_string(component["purl"])
        version, arch = installed[name]
        assert (purl.namespace, purl.name, purl.version) == ("debian", name, version)
        assert component["version"] == version
        assert purl.qualifiers == {"arch": arch, "distro": "debian-12"}
    (image,) = [
        d for d in sbom["dependencies"] if d["ref"] == sbom["metadata"]["component"]["bom-ref"]
    ]
    assert {c["bom-ref"] for c in listed.values()} <= set(image["dependsOn"])


def test_base_takes_the_updates_and_security_suites(
    image_rootfs: Path, sbom: dict[str, Any]
) -> None:
    """apt in the image names bookworm, -updates and -security; the base's upgrades are installed."""
    sources = (image_rootfs / "etc/apt/sources.list.d/debian.sources").read_text()
    suites = {
        s for line in sources.splitlines() if line.startswith("Suites:") for s in line.split()[1:]
    }
    assert suites == {SUITE, f"{SUITE}-updates", f"{SUITE}-security"}
    assert not (image_rootfs / "etc/apt/sources.list").exists()
    release = (STORE / f"base-{SUITE}.release").read_text().split("\n")
    assert sorted(line.split()[0] for line in release if line) == sorted(suites)
    installed = dpkg_status(image_rootfs)
    upgrades = [
        line.split() for line in (STORE / f"base-{SUITE}.upgrades").read_text().splitlines()
    ]
    for name, _old, new, origin in upgrades:
        assert installed[name][0] == new, (
            f"{name} upgraded to {new} at build, {installed[name][0]} now"
        )
        assert re.fullmatch(r"Debian(-Security)?:12/\w+-(security|updates)", origin), origin
    listed = components(sbom, "deb")
    marked = {
        n
        for n, c in listed.items()
        if any(p["name"] == "debian:upgraded-from" for p in c["properties"])
    }
    assert marked == {name for name, *_ in upgrades}
