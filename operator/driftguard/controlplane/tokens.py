"""Mints ServiceAccount tokens through the TokenRequest API, as ``kubectl create token`` does.

The only module of the package that uses the ``kubernetes`` client; it returns a plain ``str``.
"""

from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from driftguard.controlplane.errors import ControlPlaneError


def request(admin_kubeconfig: Path, namespace: str, name: str, *, expiration_seconds: int) -> str:
    """Return a token for ServiceAccount ``namespace/name``, which must already exist."""
    # kubernetes 37 ships py.typed, but its kubeconfig loader is unannotated.
    api_client = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(admin_kubeconfig)
    )
    body = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(expiration_seconds=expiration_seconds)
    )
    try:
        response = k8s.CoreV1Api(api_client).create_namespaced_service_account_token(
            name, namespace, body
        )
    except ApiException as exc:
        raise ControlPlaneError(
            f"TokenRequest for ServiceAccount {namespace}/{name} failed "
            f"({exc.status} {exc.reason}); the ServiceAccount must exist"
        ) from exc
    finally:
        api_client.close()
    if response.status is None or not response.status.token:
        raise ControlPlaneError(f"TokenRequest for {namespace}/{name} returned no token")
    return response.status.token
