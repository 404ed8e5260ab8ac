"""Who an Environment acts as, and where it may write when it acts as the operator.

With a ServiceAccount (`spec.serviceAccountName`, or the operator's
`--default-service-account`), every request for the Environment impersonates it
and Kubernetes RBAC bounds the blueprint. Without one, the operator's own rights
apply, so the blueprint is confined: its own namespace only, and no
cluster-scoped kinds, unless the operator was started to allow more. A ServiceAccount
in kube-system or in the operator's own namespace is never impersonated, whatever RBAC
would allow: those are the cluster's controllers and the operator itself. Pure.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from driftguard.core.model import EnvironmentSpec, InvalidSpecError

SYSTEM_NAMESPACE = "kube-system"
OPERATOR_NAMESPACE = "driftguard-system"
"""The operator's namespace when it is not told (`--operator-namespace`, $POD_NAMESPACE)."""


class RefusedError(InvalidSpecError):
    """The blueprint reaches where this Environment may not: Forbidden, tried again later."""


@dataclass(frozen=True, slots=True)
class Tenancy:
    """The operator's flags on tenancy."""

    default_service_account: str | None = None
    allowed_target_namespaces: tuple[str, ...] = ()
    allow_cluster_scoped: bool = False
    operator_namespace: str = OPERATOR_NAMESPACE

    def service_account(self, spec: EnvironmentSpec) -> str | None:
        return spec.service_account_name or self.default_service_account

    def is_protected(self, namespace: str) -> bool:
        """Whether ServiceAccounts of this namespace are never impersonated."""
        return namespace in (SYSTEM_NAMESPACE, self.operator_namespace)

    def refuse_protected(self, spec: EnvironmentSpec, namespace: str) -> None:
        """Raises RefusedError when the ServiceAccount to act as lives where none may be used.

        Checked before any request: RBAC may grant a name in every namespace (a same-named
        ServiceAccount of kube-system's would match), so the operator refuses it too.
        """
        account = self.service_account(spec)
        if not account or not self.is_protected(namespace):
            return
        source = (
            "spec.serviceAccountName" if spec.service_account_name else "--default-service-account"
        )
        where = (
            "the cluster's own controllers' namespace"
            if namespace == SYSTEM_NAMESPACE
            else "the operator's own namespace"
        )
        raise RefusedError(
            f"{source}: ServiceAccount {namespace}/{account} is in {namespace}, {where}; "
            f"driftguard never impersonates a ServiceAccount in {SYSTEM_NAMESPACE} or in "
            f"{self.operator_namespace}: put the Environment in a tenant namespace"
        )

    def identity(self, spec: EnvironmentSpec, namespace: str) -> str:
        """The user to impersonate ("" for the operator itself)."""
        return user_of(namespace, self.service_account(spec))

    def confine(
        self,
        spec: EnvironmentSpec,
        namespace: str,
        *,
        is_namespaced: Callable[[str, str], bool],
    ) -> None:
        """Raises RefusedError for each object an operator-identity blueprint may not write."""
        if self.service_account(spec):
            return  # RBAC decides, for the impersonated identity
        refusals = []
        target = spec.target_namespace or namespace
        for index, manifest in enumerate(spec.resources):
            kind = manifest["kind"]
            where = f"spec.resources[{index}] ({kind}/{manifest['metadata']['name']})"
            if not is_namespaced(manifest["apiVersion"], kind):
                if not self.allow_cluster_scoped:
                    refusals.append(
                        f"{where}: {kind} is cluster-scoped; an Environment without a "
                        "serviceAccountName may not write cluster-scoped objects unless the "
                        "operator runs with --allow-cluster-scoped"
                    )
                continue
            named = manifest["metadata"].get("namespace") or target
            if named != namespace and not self.is_allowed_target(named):
                refusals.append(
                    f"{where}: namespace {named!r} is not the Environment's own ({namespace!r}); "
                    "without a serviceAccountName an Environment writes only there, unless "
                    "the operator runs with --allow-target-namespaces matching it"
                )
        if refusals:
            raise RefusedError("; ".join(refusals))

    def is_allowed_target(self, namespace: str) -> bool:
        return any(fnmatch.fnmatchcase(namespace, glob) for glob in self.allowed_target_namespaces)


def user_of(namespace: str, account: str | None) -> str:
    """The username of a ServiceAccount, as impersonation names it ("" for none)."""
    return f"system:serviceaccount:{namespace}:{account}" if account else ""
