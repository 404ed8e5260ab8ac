"""The operator image's SBOM: a CycloneDX 1.5 JSON document of what the image contains.

hack/build-image.sh runs it on the image it has just built, mounted read-only at --rootfs:

- the Python packages: uv's own CycloneDX export of uv.lock without the dev group (names,
  versions, purls pkg:pypi/..., the dependency graph), kept to the distributions installed
  in the image's virtual environment, each with the one locked file it was installed from
  (the wheel matching the tags in its WHEEL record) and that file's SHA-256. A package
  installed but not in the lock, or at another version, fails: the image would not be the
  lock's.
- the Debian packages: the image's dpkg database, read by dpkg-query (--admindir), each
  with its version, architecture and purl pkg:deb/debian/...; those the base's upgrade took
  from the -updates and -security suites say so (property debian:upgraded-from).

The document is checked against the CycloneDX 1.5 schema before it is written.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

VENV = "opt/driftguard"
UV_VERSION = "0.13.8"  # the Makefile's, so the lock is read the same way


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_python(rootfs: Path) -> dict[str, tuple[str, set[str]]]:
    """Name -> (version, wheel tags) of every distribution in the image's virtual environment."""
    found: dict[str, tuple[str, set[str]]] = {}
    for info in sorted(rootfs.glob(f"{VENV}/lib/python3*/site-packages/*.dist-info")):
        headers = HeaderParser().parsestr((info / "METADATA").read_text(encoding="utf-8"))
        wheel = HeaderParser().parsestr((info / "WHEEL").read_text(encoding="utf-8"))
        found[normalize(headers["Name"])] = (headers["Version"], set(wheel.get_all("Tag") or []))
    if not found:
        sys.exit(f"sbom: no distributions under {rootfs / VENV}")
    return found


def wheel_tags(filename: str) -> set[str]:
    """The tags a wheel's file name declares (compressed sets such as py2.py3 expanded)."""
    parts = filename.removesuffix(".whl").split("-")
    python, abi, platform = parts[-3:]
    return {
        f"{x}-{y}-{z}"
        for x in python.split(".")
        for y in abi.split(".")
        for z in platform.split(".")
    }


def installed_artifact(component: dict[str, Any], tags: set[str]) -> dict[str, Any]:
    """The component with only the lock's file that was installed: the wheel whose tags the
    installed WHEEL names, else (built from source) the sdist."""
    files = component.get("externalReferences", [])
    wheels = [
        f
        for f in files
        if f["url"].endswith(".whl") and wheel_tags(f["url"].rsplit("/", 1)[1]) & tags
    ]
    chosen = wheels or [f for f in files if not f["url"].endswith(".whl")]
    return {**component, "externalReferences": chosen[:1]} if chosen else component


def uv_export(project: Path, uv: str) -> dict[str, Any]:
    """uv's CycloneDX export of the lock: the runtime packages only (no dev group)."""
    argv = [uv, "export", "--format", "cyclonedx1.5", "--preview-features", "sbom-export"]
    argv += ["--frozen", "--no-dev", "--project", str(project)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"sbom: uv export failed: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def python_part(
    export: dict[str, Any], installed: dict[str, tuple[str, set[str]]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """The lock's components installed in the image, their dependency graph, the project's ref."""
    project = export["metadata"]["component"]
    locked = {normalize(c["name"]): c for c in [project, *export["components"]]}
    strangers = sorted(set(installed) - set(locked))
    if strangers:
        sys.exit(f"sbom: installed in the image but not in uv.lock's runtime set: {strangers}")
    other = {
        name: (version, locked[name]["version"])
        for name, (version, _) in installed.items()
        if version != locked[name]["version"]
    }
    if other:
        sys.exit(f"sbom: installed at other versions than uv.lock's (image, lock): {other}")
    # A locked package whose markers exclude this platform (e.g. Windows only) is not installed.
    kept = [
        installed_artifact(c, installed[normalize(c["name"])][1])
        for c in export["components"]
        if normalize(c["name"]) in installed
    ]
    refs = {c["bom-ref"] for c in [project, *kept]}
    graph = [
        {**d, "dependsOn": [r for r in d.get("dependsOn", []) if r in refs]}
        for d in export.get("dependencies", [])
        if d["ref"] in refs
    ]
    return (
        [{k: v for k, v in project.items() if k != "properties"}, *kept],
        graph,
        project["bom-ref"],
    )


def debian_part(rootfs: Path, upgrades: Path | None) -> list[dict[str, Any]]:
    """One component per package installed in the image's dpkg database."""
    fields = "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\t${source:Package}\n"
    argv = ["dpkg-query", f"--admindir={rootfs / 'var/lib/dpkg'}", "-W", "-f", fields]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    os_release = dict(
        line.split("=", 1)
        for line in (rootfs / "etc/os-release").read_text().split("\n")
        if "=" in line
    )
    distro = f"{os_release['ID']}-{os_release['VERSION_ID'].strip(chr(34))}"
    origins: dict[str, tuple[str, str]] = {}
    if upgrades is not None and upgrades.exists():
        for line in upgrades.read_text().splitlines():
            name, old, new, origin = line.split()
            origins[name] = (new, f"{old} ({origin})")
    components = []
    for line in sorted(done.stdout.splitlines()):
        status, name, version, arch, source = line.split("\t")
        if not status.startswith("ii"):
            continue  # removed, or only its configuration left
        purl = PackageURL(
            type="deb", namespace="debian", name=name, version=version,
            qualifiers={"arch": arch, "distro": distro},
        ).to_string()  # fmt: skip
        component: dict[str, Any] = {
            "type": "library",
            "bom-ref": purl,
            "name": name,
            "version": version,
            "purl": purl,
            "properties": [{"name": "debian:source", "value": source or name}],
        }
        if origins.get(name, ("",))[0] == version:
            upgraded = {"name": "debian:upgraded-from", "value": origins[name][1]}
            component["properties"].append(upgraded)
        components.append(component)
    return components


def document(args: argparse.Namespace) -> dict[str, Any]:
    export = uv_export(args.project, args.uv)
    python, graph, project_ref = python_part(export, installed_python(args.rootfs))
    debian = debian_part(args.rootfs, args.upgrades)
    repository, _, tag = args.image.rpartition(":")
    image_ref = f"image:{args.image}"
    tools = [*export["metadata"].get("tools", []), {"name": "driftguard hack/sbom.py"}]
    return {
        "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": tools,
            "component": {
                "type": "container",
                "bom-ref": image_ref,
                "name": repository,
                "version": tag,
                "properties": [{"name": "oci:image-id", "value": args.image_id}],
            },
        },
        "components": [*python, *debian],
        "dependencies": [
            {"ref": image_ref, "dependsOn": [project_ref, *(c["bom-ref"] for c in debian)]},
            *graph,
            *({"ref": c["bom-ref"]} for c in debian),
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="the checkout: uv.lock")
    parser.add_argument("--rootfs", type=Path, required=True, help="the image's root, mounted")
    parser.add_argument("--image", required=True, help="its name, e.g. localhost/driftguard:0.1.0")
    parser.add_argument("--image-id", required=True, help="its config digest")
    parser.add_argument("--upgrades", type=Path, help="the base's upgrade record")
    parser.add_argument("--output", type=Path, required=True)
    cache = Path(os.environ.get("DRIFTGUARD_CACHE", Path.home() / ".cache/driftguard"))
    parser.add_argument("--uv", default=str(cache / f"uv-{UV_VERSION}/bin/uv"))
    args = parser.parse_args()
    text = json.dumps(document(args), indent=1) + "\n"
    error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
    if error is not None:
        sys.exit(f"sbom: not valid CycloneDX 1.5: {error}")
    args.output.write_text(text)
    doc = json.loads(text)
    kinds = [c["purl"].split("/", 1)[0] for c in doc["components"] if "purl" in c]
    print(
        f"sbom: {kinds.count('pkg:pypi')} Python and {kinds.count('pkg:deb')} Debian packages"
        f" in {args.output}"
    )


if __name__ == "__main__":
    main()
