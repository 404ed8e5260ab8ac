"""DriftException: drift an Environment tolerates for a while, with a reason and an end.

Pure: the caller gives the times (seconds since the epoch). An active exception widens
its Environment's allowedChanges by its own changes, tagged with its name, so judging,
applying and prevention treat them as they do allowedChanges, and status says
`Excepted` (naming it) instead of `Overridden`. It never narrows anything: an invalid or
ended exception simply adds nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from driftguard.core.model import (
    _DURATION,
    _RFC3339,
    FROZEN,
    AllowedChange,
    EnvironmentSpec,
    parse_duration,
)

KIND = "DriftException"
PLURAL = "driftexceptions"
SHORT_NAME = "dex"
DEFAULT_MAX_S = 24 * 3600.0
ANNOTATION_ENDED = "driftguard.io/ended"
"""Set by `driftguard exception end`: the exception is over before its time (phase Ended)."""


class EnvironmentRef(BaseModel):
    model_config = FROZEN

    name: str = Field(min_length=1, max_length=253, description="An Environment in this namespace.")


class DriftExceptionSpec(BaseModel):
    """Drift of these paths is tolerated, for this reason, until this end."""

    model_config = ConfigDict(
        **FROZEN,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.duration) != has(self.expiresAt)",
                    "message": "give its end: duration (e.g. 4h) or expiresAt (RFC 3339), "
                    "one of them",
                }
            ]
        },
    )

    environment_ref: EnvironmentRef = Field(
        alias="environmentRef", description="The Environment whose drift it tolerates."
    )
    changes: list[AllowedChange] = Field(
        min_length=1,
        max_length=32,
        description="What it covers, as allowedChanges: objects by kind/name, JSON pointers, "
        "optional bounds.",
    )
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"\S",
        description="Why (an incident, a ticket): required, shown in status, Events and reports.",
    )
    duration: str | None = Field(
        None,
        pattern=_DURATION,
        description="How long from its creation, e.g. 4h or 30m (or give expiresAt).",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "duration(self) > duration('0s')", "message": "duration must be > 0"}
            ]
        },
    )
    expires_at: str | None = Field(
        None,
        alias="expiresAt",
        pattern=_RFC3339,
        description="When it ends (RFC 3339), or give duration.",
        json_schema_extra={"format": "date-time"},
    )


class Phase(StrEnum):
    PENDING = "Pending"
    ACTIVE = "Active"
    EXPIRED = "Expired"
    ENDED = "Ended"
    INVALID = "Invalid"


class DriftExceptionStatus(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    phase: Phase | None = Field(None, description="Pending, Active, Expired, Ended or Invalid.")
    expires_at: str | None = Field(None, alias="expiresAt", description="When it ends.")
    created_by: str | None = Field(
        None, alias="createdBy", description="The person who created it (attribution)."
    )
    approved_by: str | None = Field(
        None, alias="approvedBy", description="Who approved it, with four eyes."
    )
    approved_spec: str | None = Field(
        None,
        alias="approvedSpec",
        description="A digest of the spec approved: a later change needs a new approval.",
    )
    message: str | None = Field(None, description="Why it is Invalid, or what it covers.")
    conditions: list[dict[str, Any]] = Field(
        default_factory=list, description="Ready: whether it is in force, and why not."
    )

    def to_body(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ExceptedChange(AllowedChange):
    """An allowed change that holds because of a DriftException (its name)."""

    exception: str


@dataclass(frozen=True, slots=True)
class Judged:
    """What one DriftException is now, and until when (seconds since the epoch)."""

    name: str
    environment: str
    phase: Phase
    expires_at: float | None = None
    message: str = ""
    changes: tuple[AllowedChange, ...] = ()
    reason: str = ""
    created_by: str | None = None  # the people, for the audit trail: set by the caller
    approved_by: str | None = None


def evaluate(
    name: str,
    body: dict[str, Any],
    *,
    created_at: float,
    expires_at: float | None,
    now: float,
    max_seconds: float = DEFAULT_MAX_S,
    waiting: str = "",
) -> Judged:
    """The phase of an exception. `expires_at`: its spec.expiresAt read by the caller;
    `waiting`: why it is not approved yet, when four eyes are required (else empty)."""
    raw = body.get("spec") or {}
    environment = str((raw.get("environmentRef") or {}).get("name") or "")
    try:
        spec = DriftExceptionSpec.model_validate(raw)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        return Judged(name, environment, Phase.INVALID, message=f"spec.{where}: {problem['msg']}")
    if spec.duration is not None:
        expires_at = created_at + parse_duration(spec.duration)
    if expires_at is None:
        return Judged(name, environment, Phase.INVALID, message="spec.expiresAt: not a time")
    if expires_at - created_at > max_seconds:
        return Judged(
            name,
            environment,
            Phase.INVALID,
            expires_at,
            f"lasts {_hours(expires_at - created_at)}, more than the {_hours(max_seconds)} "
            "the operator allows (--max-exception-duration): shorten it",
        )
    ended = (body.get("metadata") or {}).get("annotations", {}).get(ANNOTATION_ENDED)
    if ended:
        return Judged(name, environment, Phase.ENDED, expires_at, f"ended early by {ended}")
    if now >= expires_at:
        return Judged(name, environment, Phase.EXPIRED, expires_at)
    if waiting:
        return Judged(name, environment, Phase.PENDING, expires_at, waiting)
    covered = "; ".join(_describe(change) for change in spec.changes)
    return Judged(
        name,
        environment,
        Phase.ACTIVE,
        expires_at,
        f"covers {covered}",
        tuple(spec.changes),
        reason=spec.reason,
    )


def widen(spec: EnvironmentSpec, active: list[Judged]) -> EnvironmentSpec:
    """The Environment's spec with each active exception's changes allowed, tagged."""
    extra = [
        ExceptedChange(**change.model_dump(by_alias=True), exception=judged.name)
        for judged in active
        if judged.phase is Phase.ACTIVE
        for change in judged.changes
    ]
    if not extra:
        return spec
    return spec.model_copy(update={"allowed_changes": [*spec.allowed_changes, *extra]})


def spec_digest(body: dict[str, Any]) -> str:
    """What an approval approves: the spec as it was (a later change needs a new one)."""
    canonical = json.dumps(body.get("spec") or {}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def approval(
    person_user: str | None,
    person_groups: tuple[str, ...],
    *,
    created_by: str | None,
    approvers: str,
) -> str:
    """Why this stamp does not approve the exception (empty: it does)."""
    if person_user is None:
        return "no approval vouched for by the attribution webhook"
    if approvers not in person_groups:
        return f"{person_user} is not in {approvers}"
    if created_by is None or person_user == created_by:
        return f"{person_user} created it: another member of {approvers} must approve"
    return ""


def _describe(change: AllowedChange) -> str:
    what = "/".join(part for part in (change.kind, change.name) if part) or "every object"
    bounds = f" {change.bounds}" if change.bounds else ""
    return f"{what} {', '.join(change.paths)}{bounds}"


def _hours(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:g}h" if hours >= 1 else f"{seconds / 60:g}m"


def is_duration(text: str) -> bool:
    return re.fullmatch(_DURATION, text) is not None
