"""The Ready and InSync conditions, in the standard metav1.Condition shape.

Pure: the caller passes the clock's reading. A condition keeps its
lastTransitionTime unless its status, reason or message changed.
"""

from __future__ import annotations

from collections.abc import Sequence

from driftguard.core.status import Condition

READY = "Ready"
IN_SYNC = "InSync"
SUSPENDED = "Suspended"
PREVENTION = "Prevention"  # what the API server enforces: reason Deny, Warn or Off


class Reason:
    APPLIED = "Applied"
    INVALID_SPEC = "InvalidSpec"
    APPLY_FAILED = "ApplyFailed"
    FORBIDDEN = "Forbidden"
    SUSPENDED = "Suspended"
    OBSERVING = "Observing"
    IN_SYNC = "InSync"
    DRIFTED = "Drifted"
    PROGRESSING = "Progressing"
    CLUSTER_UNREACHABLE = "ClusterUnreachable"  # a remote cluster (spec.kubeConfig) is away
    KUBECONFIG_INVALID = "KubeConfigInvalid"  # its kubeconfig Secret cannot be used


def make(
    type_: str, is_true: bool, reason: str, message: str, *, generation: int | None, now: str
) -> Condition:
    return Condition(
        type=type_,
        status="True" if is_true else "False",
        reason=reason,
        message=message,
        last_transition_time=now,
        observed_generation=generation,
    )


def merge(previous: Sequence[Condition], current: Sequence[Condition]) -> list[Condition]:
    """The current conditions, keeping old transition times where nothing changed."""
    old = {condition.type: condition for condition in previous}
    merged = []
    for condition in current:
        before = old.get(condition.type)
        if before is not None and (before.status, before.reason, before.message) == (
            condition.status,
            condition.reason,
            condition.message,
        ):
            condition = condition.model_copy(
                update={"last_transition_time": before.last_transition_time}
            )
        merged.append(condition)
    return merged
