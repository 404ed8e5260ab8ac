"""A remote cluster's kubeconfig, read from a Secret and judged before anything uses it.

A kubeconfig can make its reader run a program (`exec`, `auth-provider`) or read a
file of the machine it runs on (`tokenFile`, `client-certificate`, `client-key`,
`certificate-authority`). Whoever may write a Secret in a tenant's namespace must not
gain that on the operator's machine, so such a kubeconfig is refused unless the
operator was started to allow it (Flux's `--insecure-kubeconfig-exec` is the model).
The spec names it (`references.KubeConfigRef`). Pure: text in, a parsed config or a
message a person can act on out. The message never holds a credential.
"""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

__all__ = ["RefusedError", "fingerprint", "load"]

_PROGRAMS = ("exec", "auth-provider")
_USER_FILES = ("tokenFile", "client-certificate", "client-key")
_CLUSTER_FILES = ("certificate-authority",)


class RefusedError(ValueError):
    """The kubeconfig cannot be used: unreadable, incomplete, or unsafe."""


def fingerprint(text: bytes) -> str:
    """What tells a rotated Secret from the one in use."""
    return hashlib.sha256(text).hexdigest()


def load(text: bytes, *, where: str, allow_exec: bool = False) -> dict[str, Any]:
    """The kubeconfig in `text` (from `where`, e.g. `Secret shop/prod-kubeconfig key value`),
    reduced to its current context; RefusedError says what is wrong with it."""
    try:
        config = yaml.safe_load(text.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RefusedError(f"{where} is not a kubeconfig: {type(exc).__name__}") from exc
    if not isinstance(config, dict):
        raise RefusedError(f"{where} is not a kubeconfig (a YAML map with clusters and users)")
    context_name = config.get("current-context")
    contexts = _named(config, "contexts", "context")
    if not context_name and len(contexts) == 1:
        context_name = next(iter(contexts))
    context = contexts.get(str(context_name)) if context_name else None
    if context is None:
        raise RefusedError(f"{where} has no current-context naming one of its contexts")
    cluster = _named(config, "clusters", "cluster").get(str(context.get("cluster")))
    user = _named(config, "users", "user").get(str(context.get("user")), {})
    if cluster is None or not cluster.get("server"):
        raise RefusedError(f"{where}: context {context_name} names no cluster with a server")
    if not allow_exec:
        _refuse_unsafe(where, cluster, user)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": str(context_name),
        "contexts": [{"name": str(context_name), "context": context}],
        "clusters": [{"name": str(context.get("cluster")), "cluster": cluster}],
        "users": [{"name": str(context.get("user")), "user": user}],
    }


def _named(config: dict[str, Any], section: str, field: str) -> dict[str, dict[str, Any]]:
    items = config.get(section)
    found = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get(field), dict):
            found[str(item.get("name"))] = item[field]
    return found


def _refuse_unsafe(where: str, cluster: dict[str, Any], user: dict[str, Any]) -> None:
    found = [f"users[].user.{name}" for name in (*_PROGRAMS, *_USER_FILES) if user.get(name)]
    found += [f"clusters[].cluster.{name}" for name in _CLUSTER_FILES if cluster.get(name)]
    if found:
        raise RefusedError(
            f"{where} uses {', '.join(found)}: a kubeconfig from a Secret may not run programs "
            "or read the operator's files. Put the credentials in it (token, "
            "client-certificate-data, certificate-authority-data), or start the operator "
            "with --insecure-kubeconfig-exec to allow it"
        )
