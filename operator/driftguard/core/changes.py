"""The ChangeSet: closed records of what happened to each managed object.

A full pass, a watch event's judgement and an apply each return one ChangeSet; the
reporter (`runtime/report.py`) alone turns it into Events, log events, metrics and
the audit trail, and status is summed up from the same ledger. One source, so they
never disagree. Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import jsonpointer

from driftguard.core import attribution, diff
from driftguard.core.model import ObjectKey

VALUE_LIMIT = 80
"""Characters of a value kept in a record: enough to tell 5.5 from 5.7, never a whole file."""
REDACTED = "<redacted>"
ABSENT = "<absent>"


class Outcome(StrEnum):
    CREATED = "created"  # the object did not exist; the blueprint made it
    CONFIGURED = "configured"  # a new blueprint changed the object
    ADOPTED = "adopted"  # it existed without driftguard's labels; spec.adopt took it over
    UNCHANGED = "unchanged"  # nothing to do
    REVERTED = "reverted"  # drift put back to the blueprint (Enforce)
    FLAGGED = "flagged"  # drift reported, left as is (Observe, suspend)
    TOLERATED = "tolerated"  # a change within allowedChanges: Overridden, never reverted
    EXCEPTED = "excepted"  # a change a DriftException covers: Excepted, reverted at its end
    CONFLICT = "conflict"  # the object belongs to another Environment
    FIGHTING = "fighting"  # reverted too often: another writer keeps changing it
    FORBIDDEN = "forbidden"  # the API server refused driftguard for lack of RBAC
    FAILED = "failed"  # the API server refused for another reason
    PRUNED = "pruned"  # removed from the blueprint, deleted
    RELEASED = "released"  # removed from the blueprint, left in place (prune off, Observe)


ATTRIBUTED = (
    Outcome.REVERTED,
    Outcome.FLAGGED,
    Outcome.TOLERATED,
    Outcome.EXCEPTED,
    Outcome.FIGHTING,
)
"""Outcomes of somebody else's write: a person is looked for behind them."""


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
    values: tuple[tuple[str, str, str], ...] = ()  # (path, blueprint, live), summarised
    changed_by_user: str | None = None  # the person, when the admission webhook vouched for one
    changed_at: str | None = None  # RFC 3339: when the manual write was made, as far as known
    exception: str | None = None  # Excepted: the DriftException(s) holding it

    @property
    def is_failure(self) -> bool:
        return self.outcome in (Outcome.FAILED, Outcome.FORBIDDEN)

    def describe(self) -> str:
        """The sentence an Event and a status message carry: object, paths, manager."""
        if self.message:
            return self.message
        what = "was deleted" if self.is_missing else f"drifted at {', '.join(self.paths) or '/'}"
        who = attribution.describe(self.changed_by_user, self.changed_by)
        by = f" by {who}" if who else ""
        return f"{self.key} {what}{by}"


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """What one step did to the objects it touched, in the order it did it."""

    changes: tuple[Change, ...] = ()

    @classmethod
    def of(cls, *parts: Change | Iterable[Change]) -> ChangeSet:
        """One ChangeSet from records and other ChangeSets, in order."""
        found: list[Change] = []
        for part in parts:
            if isinstance(part, Change):
                found.append(part)
            else:
                found.extend(part)
        return cls(tuple(found))

    def __iter__(self) -> Iterator[Change]:
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)

    def __bool__(self) -> bool:
        return bool(self.changes)

    def __add__(self, other: ChangeSet) -> ChangeSet:
        return ChangeSet(self.changes + other.changes)

    @property
    def drift(self) -> tuple[Change, ...]:
        """The records of a manual change: the ones a person is looked for."""
        return tuple(change for change in self.changes if change.outcome in ATTRIBUTED)

    def attributed(
        self, person: attribution.Person | None, live: dict[str, Any] | None = None
    ) -> ChangeSet:
        """The same records, the drift ones naming the person behind it and when they
        wrote: the time their write was admitted, else the field manager's last write."""
        return ChangeSet(
            tuple(
                replace(
                    change,
                    changed_by_user=person.user if person else None,
                    changed_at=(person.at if person else "")
                    or diff.written_at(live, change.changed_by),
                )
                if change.outcome in ATTRIBUTED
                else change
                for change in self.changes
            )
        )

    @property
    def failures(self) -> tuple[Change, ...]:
        return tuple(change for change in self.changes if change.is_failure)

    def counts(self) -> str:
        """`2 created, 3 unchanged`: a pass in one phrase, outcomes in a fixed order."""
        tally = Counter(change.outcome for change in self.changes)
        return ", ".join(f"{tally[outcome]} {outcome}" for outcome in Outcome if tally[outcome])


def values_of(
    key: ObjectKey,
    expected: dict[str, Any] | None,
    live: dict[str, Any] | None,
    paths: Iterable[str],
) -> tuple[tuple[str, str, str], ...]:
    """Each drifted path with the blueprint's value and the live one, short; a Secret's never."""
    if live is None or expected is None:
        return ()
    hidden = key.kind == "Secret"
    return tuple(
        (path, _summary(expected, path, hidden), _summary(live, path, hidden)) for path in paths
    )


def _summary(obj: dict[str, Any], path: str, hidden: bool) -> str:
    try:
        value = jsonpointer.resolve_pointer(obj, path)
    except jsonpointer.JsonPointerException:
        return ABSENT
    if hidden:
        return REDACTED
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= VALUE_LIMIT else text[: VALUE_LIMIT - 1] + "…"
