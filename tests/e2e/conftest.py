"""Fixtures for the e2e tests: one local control plane per session (per pytest-xdist worker),
kubectl, a namespace per test.

Every test collected under tests/e2e gets the ``e2e`` marker. When the control plane cannot
start, the tests are skipped, except under CI=true, where they fail.
"""

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from envs import chart_rbac, operator  # noqa: F401  (session fixtures, beside their helpers)
from helpers import HELM_VERSION, Helm, Kubectl, cached_tool, start_control_plane
from images import (  # noqa: F401  (the image tests' module fixtures, beside their helpers)
    buildah,
    image_config,
    image_container,
    image_mounted,
    image_rootfs,
)
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from driftguard.controlplane import ControlPlane

E2E_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this directory ``e2e`` (the hook sees the whole session's items)."""
    for item in items:
        if item.path.is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """The session's etcd + kube-apiserver + kube-controller-manager."""
    plane = start_control_plane()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    """The admin kubeconfig (group system:masters)."""
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path) -> Kubectl:
    """Run kubectl as admin: ``kubectl("get", "ns")``; ``check=False`` to inspect failures."""
    return Kubectl(kubeconfig)


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> Iterator[k8s.ApiClient]:
    """A sync kubernetes ApiClient on the admin kubeconfig."""
    # kubernetes 37 ships py.typed, but its kubeconfig loader is unannotated.
    client = k8s_config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def core_api(api_client: k8s.ApiClient) -> k8s.CoreV1Api:
    """CoreV1Api as admin."""
    return k8s.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """The cached helm; when it is missing the tests skip, except under CI=true: they fail."""
    binary = cached_tool("helm", HELM_VERSION, build_time="about 2 minutes")
    return Helm(binary, tmp_path_factory.mktemp("helm"))


@pytest.fixture
def namespace(core_api: k8s.CoreV1Api) -> Iterator[str]:
    """A fresh namespace ``t-<random>``, deleted (without waiting) after the test."""
    name = f"t-{secrets.token_hex(4)}"
    core_api.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    try:
        core_api.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise
