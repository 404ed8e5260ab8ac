"""Renders kubeconfig files for the local control plane.

Renders only (the caller writes the file, mode 0600). Credentials are embedded (``*-data``),
so a kubeconfig stays usable when copied.
"""

import base64

import yaml

from driftguard.controlplane.pki import KeyPair


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def render(
    *, server: str, ca_pem: bytes, user: str, client: KeyPair | None = None, token: str = ""
) -> str:
    """Return a one-context kubeconfig as YAML; authenticate by client cert or by bearer token."""
    credentials: dict[str, str] = {}
    if client is not None:
        credentials["client-certificate-data"] = _b64(client.cert_pem)
        credentials["client-key-data"] = _b64(client.key_pem)
    if token:
        credentials["token"] = token
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "driftguard-local",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": {"cluster": "driftguard-local", "user": user}}],
        "current-context": user,
    }
    return yaml.safe_dump(config, sort_keys=False)
