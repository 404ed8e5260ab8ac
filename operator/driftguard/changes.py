"""The ChangeSet: closed records of what happened to each managed object.

A full pass and every watch event produce these records; `report.py` turns them
into Events, log events and metrics, and status is summed up from the same
ledger. One source, so the four never disagree. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from driftguard.model import ObjectKey


class Outcome(StrEnum):
    CREATED = "created"  # the object did not exist; the blueprint made it
    CONFIGURED = "configured"  # a new blueprint changed the object
    ADOPTED = "adopted"  # it existed without driftguard's labels; spec.adopt took it over
    UNCHANGED = "unchanged"  # nothing to do
    REVERTED = "reverted"  # drift put back to the blueprint (Enforce)
    FLAGGED = "flagged"  # drift reported, left as is (Observe, suspend)
    TOLERATED = "tolerated"  # a change within allowedChanges: Overridden, never reverted
    CONFLICT = "conflict"  # the object belongs to another Environment
    FIGHTING = "fighting"  # reverted too often: another writer keeps changing it
    FORBIDDEN = "forbidden"  # the API server refused driftguard for lack of RBAC
    FAILED = "failed"  # the API server refused for another reason
    PRUNED = "pruned"  # removed from the blueprint, deleted
    RELEASED = "released"  # removed from the blueprint, left in place (prune off, Observe)


@dataclass(frozen=True, slots=True)
class Change:
    """One closed record: what happened to one object, and why."""

    key: ObjectKey
    outcome: Outcome
    paths: tuple[str, ...] = ()
    changed_by: str | None = None
    message: str = ""
    is_missing: bool = False  # the drift was a deletion
    latency: float | None = None  # a revert: seconds from the watch event to the server's answer

    @property
    def is_failure(self) -> bool:
        return self.outcome in (Outcome.FAILED, Outcome.FORBIDDEN)

    def describe(self) -> str:
        """The sentence an Event and a status message carry: object, paths, manager."""
        if self.message:
            return self.message
        what = "was deleted" if self.is_missing else f"drifted at {', '.join(self.paths) or '/'}"
        by = f" by {self.changed_by}" if self.changed_by else ""
        return f"{self.key} {what}{by}"


ChangeSet = tuple[Change, ...]


def counts(changes: Iterable[Change]) -> str:
    """`2 created, 3 unchanged`: a pass in one phrase, outcomes in a fixed order."""
    tally = Counter(change.outcome for change in changes)
    return ", ".join(f"{tally[outcome]} {outcome}" for outcome in Outcome if tally[outcome])
