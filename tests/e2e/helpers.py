"""Helpers for the e2e tests: polling with a deadline, kubectl and helm runners, audit-log reading.

No fixtures here (they live in conftest.py) and never a bare sleep: wait with ``wait_for``.
"""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from driftguard.controlplane import ControlPlane, ControlPlaneError
from driftguard.controlplane.binaries import cache_root

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "driftguard"
HELM_VERSION = "v3.22.0"  # hack/build-tools.sh builds this one


def wait_for(
    predicate: Callable[[], T | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
    retry_on: tuple[type[Exception], ...] = (),
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that; fail at the deadline.

    Exceptions listed in ``retry_on`` count as "not yet"; the last one is shown on timeout.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = predicate()
        except retry_on as exc:
            last_error = exc
        else:
            if result:
                return result
        if time.monotonic() > deadline:
            detail = f"; last error: {last_error!r}" if last_error else ""
            pytest.fail(f"timed out after {timeout}s waiting for {message}{detail}")
        time.sleep(interval)


class KubectlError(AssertionError):
    """kubectl exited non-zero where the test expected success."""


class Kubectl:
    """Runs the virtualenv's kubectl against one kubeconfig."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig
        self.binary = Path(sys.executable).parent / "kubectl"
        if not os.access(self.binary, os.X_OK):
            raise ControlPlaneError(
                f"kubectl not found next to {sys.executable}: run `make install`"
            )

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> "subprocess.CompletedProcess[str]":
        """Run ``kubectl args...``; raise ``KubectlError`` with stderr unless ``check=False``.

        `env`: more environment variables (KUBE_EDITOR for `kubectl edit`)."""
        config = kubeconfig or self.kubeconfig
        argv = [str(self.binary), f"--kubeconfig={config}", *args]
        done = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, **env} if env else None,
        )
        if check and done.returncode != 0:
            raise KubectlError(
                f"kubectl {' '.join(args)} exited {done.returncode}:\n{done.stderr.strip()}"
            )
        return done

    def json(self, *args: str, kubeconfig: Path | None = None) -> Any:
        """Run ``kubectl args... -o json`` and return the parsed output."""
        return json.loads(self(*args, "-o", "json", kubeconfig=kubeconfig).stdout)


def start_control_plane(**options: Any) -> ControlPlane:
    """Start a ControlPlane; fail the test under CI=true, otherwise skip, when it cannot start."""
    plane = ControlPlane(**options)
    try:
        plane.start()
    except ControlPlaneError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"local control plane did not start: {exc}", pytrace=False)
        pytest.skip(f"local control plane unavailable: {exc}")
    return plane


def cached_tool(name: str, version: str, *, build_time: str) -> Path:
    """A tool that hack/build-tools.sh caches; missing, the test skips (under CI=true: fails)."""
    binary = cache_root() / f"tools-{name}-{version}" / "bin" / name
    if not os.access(binary, os.X_OK):
        message = f"{name} missing at {binary}: run hack/build-tools.sh ({build_time})"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return binary


class Helm:
    """Runs the cached helm with its state in a temporary directory, never in $HOME."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> "subprocess.CompletedProcess[str]":
        """Run ``helm args...``; fail the test with helm's stderr unless ``check=False``."""
        done = subprocess.run(
            [str(self.binary), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        return done

    def template(
        self, values: dict[str, Any], *, namespace: str = "ops", release: str = "dg"
    ) -> list[dict[str, Any]]:
        """The chart's objects as `helm template` renders them with these values."""
        argv = ("template", release, str(CHART), "-n", namespace, "-f", "-")
        done = self(*argv, input=yaml.safe_dump(values))
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def audit_events(audit_log: Path, *, username: str | None = None) -> list[dict[str, Any]]:
    """Parse the audit log's completed requests, optionally only those of one user."""
    events = []
    text = audit_log.read_text(encoding="utf-8")
    # The API server may be mid-way through writing its last line; only
    # newline-terminated lines are complete.
    for line in text[: text.rfind("\n") + 1].splitlines():
        event = json.loads(line)
        if event.get("stage") != "ResponseComplete":
            continue
        if username is None or event.get("user", {}).get("username") == username:
            events.append(event)
    return events


def is_process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def names(items: Iterable[dict[str, Any]]) -> list[str]:
    """The ``metadata.name`` of each object."""
    return [item["metadata"]["name"] for item in items]


def wait_established(kubectl: "Kubectl", crd: str, *, timeout: float = 30.0) -> None:
    """Polls until a CRD is Established.

    `kubectl wait --for=condition=Established` fails at once, instead of waiting, while a
    new CRD has no conditions yet ("status.conditions accessor error").
    """
    path = '{.status.conditions[?(@.type=="Established")].status}'

    def established() -> bool:
        done = kubectl("get", "crd", crd, "-o", f"jsonpath={path}", check=False)
        return done.stdout.strip() == "True"

    wait_for(established, timeout=timeout, message=f"CRD {crd} Established")
