"""What the operator reports: the Environment's and the Blueprint's status as pydantic models.

The status schema in the CRDs is generated from these (see `crd.py`). Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from driftguard.core.model import RESOURCE_STATUS_LIMIT, State


class Condition(BaseModel):
    """The standard metav1.Condition shape."""

    model_config = ConfigDict(populate_by_name=True)

    type: str = Field(description="Ready or InSync.")
    status: str = Field(description="True, False or Unknown.")
    reason: str = Field(description="A CamelCase word for programs, e.g. Applied or Drifted.")
    message: str = Field("", description="What happened, for people.")
    last_transition_time: str = Field(
        alias="lastTransitionTime", description="When status, reason or message last changed."
    )
    observed_generation: int | None = Field(
        None, alias="observedGeneration", description="The generation this condition is about."
    )


class Summary(BaseModel):
    """Counts of managed objects by state."""

    model_config = ConfigDict(populate_by_name=True)

    managed: int = Field(0, description="Objects in the blueprint.")
    in_sync: int = Field(0, alias="inSync", description="Objects matching the blueprint.")
    drifted: int = Field(0, description="Objects that differ (or conflict, fight, fail).")
    missing: int = Field(0, description="Objects that do not exist.")
    overridden: int = Field(0, description="Objects with tolerated allowedChanges.")
    excepted: int = Field(0, description="Objects with drift an active DriftException covers.")


class ResourceStatus(BaseModel):
    """What driftguard knows of one managed object."""

    model_config = ConfigDict(populate_by_name=True)

    api_version: str = Field(alias="apiVersion", description="The object's apiVersion.")
    kind: str = Field(description="The object's kind.")
    namespace: str = Field("", description="The object's namespace; empty if cluster-scoped.")
    name: str = Field(description="The object's name.")
    state: State = Field(description="InSync, Drifted, Missing, Overridden, Conflict, ...")
    drifted_paths: list[str] = Field(
        default_factory=list, alias="driftedPaths", description="JSON pointers that differ."
    )
    changed_by: str | None = Field(
        None, alias="changedBy", description="The field manager behind the last drift."
    )
    changed_by_user: str | None = Field(
        None,
        alias="changedByUser",
        description="The person (user or ServiceAccount) behind the last drift, as the API "
        "server authenticated them; empty when it could not be attributed.",
    )
    last_drift_time: str | None = Field(
        None, alias="lastDriftTime", description="When drift was last seen."
    )
    reverts: int = Field(0, description="How many times driftguard reverted this object.")
    message: str | None = Field(None, description="Why the object is in Error or Conflict.")
    exception: str | None = Field(
        None, description="The DriftException whose drift the object holds (state Excepted)."
    )


class LastDrift(BaseModel):
    """The most recent drift in this Environment."""

    model_config = ConfigDict(populate_by_name=True)

    time: str = Field(description="When it was seen.")
    object: str = Field(description="Kind/namespace/name of the object.")
    paths: list[str] = Field(default_factory=list, description="JSON pointers that differed.")
    changed_by: str | None = Field(
        None, alias="changedBy", description="The field manager that made the change."
    )
    changed_by_user: str | None = Field(
        None,
        alias="changedByUser",
        description="The person who made the change; empty when it could not be attributed.",
    )


class AppliedBlueprint(BaseModel):
    """The Blueprint revision the Environment's objects were last made from."""

    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(description="The Blueprint's name.")
    revision: int = Field(description="The Blueprint revision (its metadata.generation).")


_LEFT_OUT_WHEN_EMPTY = ("driftedPaths", "reverts")


class EnvironmentStatus(BaseModel):
    """What the operator reports; the only part of an Environment it writes."""

    model_config = ConfigDict(populate_by_name=True)

    observed_generation: int | None = Field(
        None, alias="observedGeneration", description="The generation last acted on."
    )
    revision: int = Field(0, description="Increments each time a new blueprint is applied.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "Ready and InSync; Suspended while suspendUntil lies ahead; Prevention (reason "
            "Deny, Warn or Off): what the API server enforces now, confirmed by a probe."
        ),
    )
    summary: Summary = Field(default_factory=Summary, description="Objects by state.")
    resources: list[ResourceStatus] = Field(
        default_factory=list,
        description=(
            "One entry per managed object, those not in sync first; past "
            f"{RESOURCE_STATUS_LIMIT} entries, in-sync ones are left out (see resourcesOmitted)."
        ),
    )
    resources_omitted: int | None = Field(
        None,
        alias="resourcesOmitted",
        description=(
            "In-sync objects left out of resources to keep status small; summary counts all."
        ),
    )
    last_drift: LastDrift | None = Field(
        None, alias="lastDrift", description="The most recent drift."
    )
    blueprint: AppliedBlueprint | None = Field(
        None, description="The Blueprint revision in use, for Environments made from one."
    )
    shard: str | None = Field(
        None,
        description=(
            "The operator replica that acts on this Environment, when several share the work "
            "(driftguard run --shards-from-leases): the id in its Lease."
        ),
    )

    def to_body(self) -> dict[str, Any]:
        """The status as written. An entry leaves out empty `driftedPaths` and zero `reverts`:
        in-sync entries are most of a status, and the API server's CPU for a status write
        grows with its bytes (docs/performance.md)."""
        body = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        for entry in body.get("resources", ()):
            for key in _LEFT_OUT_WHEN_EMPTY:
                if not entry.get(key):
                    entry.pop(key, None)
        return body


class BlueprintStatus(BaseModel):
    """What the operator reports about a Blueprint."""

    model_config = ConfigDict(populate_by_name=True)

    observed_generation: int | None = Field(
        None, alias="observedGeneration", description="The generation last checked."
    )
    revision: int | None = Field(
        None, description="The latest valid revision (metadata.generation), the one in use."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready: whether the latest revision is valid."
    )
    environments: int = Field(0, description="Environments made from this Blueprint.")
    invalid_environments: list[str] = Field(
        default_factory=list,
        alias="invalidEnvironments",
        description=(
            "Environments whose spec.values this revision refuses, as namespace/name: why. "
            "They keep the objects their last valid revision made."
        ),
    )

    def to_body(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
