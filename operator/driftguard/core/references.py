"""The spec's references to other objects: a Blueprint, a kubeconfig Secret.

Part of the spec models (`model.py`), which the CRD schema is made from. Pure.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BlueprintRef", "KubeConfigRef", "SecretKeyRef"]

_FROZEN = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")


class BlueprintRef(BaseModel):
    """The Blueprint an Environment is made from, optionally pinned to one of its revisions."""

    model_config = _FROZEN

    name: str = Field(
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Name of a cluster-scoped Blueprint.",
    )
    revision: int | None = Field(
        None,
        ge=1,
        description=(
            "Pin this revision of the Blueprint (its metadata.generation, as its status.revision "
            "shows); default: follow the Blueprint, each change applied at once."
        ),
    )


class SecretKeyRef(BaseModel):
    """A key of a Secret in the Environment's own namespace (never another's)."""

    model_config = _FROZEN

    name: str = Field(
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Name of a Secret in the Environment's namespace.",
    )
    key: str = Field(
        "value",
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="The key holding the kubeconfig; default: value.",
    )


class KubeConfigRef(BaseModel):
    """Where a remote cluster's kubeconfig is: the Environment then acts in that cluster."""

    model_config = _FROZEN

    secret_ref: SecretKeyRef = Field(
        alias="secretRef",
        description=(
            "A Secret in the Environment's namespace whose key holds a kubeconfig. Objects are "
            "listed, watched, applied, reverted and pruned in that cluster; status, Events, "
            "history and the audit trail stay here. Kubeconfigs that run programs or read "
            "local files are refused unless the operator runs with --insecure-kubeconfig-exec."
        ),
    )
