"""Policy: what to do about one object's drift — revert, flag, tolerate, or nothing.

Pure: no I/O, no clock. The caller passes the facts (desired manifest, drift,
live object, allowed changes, recent reverts); the plan says what the object's
state is and which action follows.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from jsonpointer import EndOfList, JsonPointer, resolve_pointer

from driftguard.core import diff
from driftguard.core.diff import MISSING, ChangeKind, Drift, FieldChange
from driftguard.core.exception import ExceptedChange
from driftguard.core.model import AllowedChange, EnvironmentSpec, Mode, ObjectKey, State

FIGHT_LIMIT = 5
"""Reverts of one object within the fight window after which driftguard stops reverting."""

FIGHT_WINDOW_S = 60.0

FIGHT_BACKOFF_S = 5.0
"""Once fighting, each further revert waits this long, doubling per revert, up to the cap:
enough to stop a hot loop with a controller, never long enough for a person to win."""

FIGHT_BACKOFF_CAP_S = 300.0


def fight_delay(round_: int, *, base: float = FIGHT_BACKOFF_S) -> float:
    """The wait before the revert that follows `round_` reverts made while fighting."""
    return float(min(FIGHT_BACKOFF_CAP_S, base * 2.0 ** max(round_ - 1, 0)))


class Action(StrEnum):
    NONE = "none"
    REVERT = "revert"  # force-apply the blueprint, removing items others added
    DEFER = "defer"  # fighting: revert once the backoff has passed
    RECREATE = "recreate"  # the object is gone: apply it again
    FLAG = "flag"  # report only


NOTHING: frozenset[str] = frozenset()
"""No path tolerated."""


@dataclass(frozen=True, slots=True)
class Verdict:
    state: State
    action: Action
    drifted: tuple[FieldChange, ...] = ()
    tolerated: frozenset[str] = NOTHING
    excepted: tuple[str, ...] = ()  # the DriftExceptions that tolerate some of it

    @property
    def pointers(self) -> list[str]:
        return sorted({change.pointer for change in self.drifted})

    @property
    def changed_by(self) -> str | None:
        return Drift(self.drifted).changed_by


def pointer_get(obj: Any, pointer: str) -> Any:
    """The value at an RFC 6901 pointer, or MISSING."""
    found = resolve_pointer(obj, pointer, MISSING)
    # "-" names the slot after a list's last item: a place to add, never a value.
    return MISSING if isinstance(found, EndOfList) else found


def _covers(allowed: str, pointer: str) -> bool:
    return pointer == allowed or pointer.startswith(allowed + "/")


def allowed_for(key: ObjectKey, rules: Sequence[AllowedChange]) -> list[AllowedChange]:
    return [rule for rule in rules if rule.matches(key)]


def tolerate(
    rules: Sequence[AllowedChange], desired: dict[str, Any], live: dict[str, Any]
) -> tuple[frozenset[str], list[FieldChange]]:
    """Allowed paths whose live value departs from the blueprint: tolerated (within the
    bounds of any rule naming the path: a DriftException may widen the blueprint's own)
    or out of bounds (of every one)."""
    tolerated: set[str] = set()
    breaches: dict[str, FieldChange] = {}
    for rule in rules:
        for path in rule.paths:
            wanted, actual = pointer_get(desired, path), pointer_get(live, path)
            if wanted is MISSING or actual is MISSING or actual == wanted:
                continue
            if rule.is_within_bounds(actual):
                tolerated.add(path)
            else:
                breaches.setdefault(path, FieldChange(path, ChangeKind.CHANGED, wanted, actual))
    # Most objects tolerate nothing: one empty frozenset for them (each is 216 bytes).
    kept = frozenset(tolerated) if tolerated else NOTHING
    return kept, [b for path, b in breaches.items() if path not in tolerated]


def decide(
    *,
    key: ObjectKey,
    mode: Mode,
    desired: dict[str, Any],
    live: dict[str, Any] | None,
    drift: Drift,
    rules: Sequence[AllowedChange],
    recent_reverts: int = 0,
    is_fighting: bool = False,
    is_due: bool = True,
) -> Verdict:
    """The state of one object and the action its mode calls for.

    An object reverted FIGHT_LIMIT times within the window, or already fighting, is
    Fighting: it is still reverted, but only once its backoff is due (`is_due`).
    """
    if live is None:
        return Verdict(State.MISSING, _act(mode, Action.RECREATE))
    matching = allowed_for(key, rules)
    tolerated, breaches = tolerate(matching, desired, live)
    allowed = {path for rule in matching for path in rule.paths}
    drifted = [
        change
        for change in drift.changes
        # An allowed path is judged by its bounds alone (the breaches below).
        if not any(_covers(path, change.pointer) for path in allowed)
        # Observe only reports values: a field changed back by hand is in sync
        # again even though its new owner is the hand that changed it.
        and not (mode is Mode.OBSERVE and change.kind is ChangeKind.TAKEN)
    ]
    for breach in breaches:
        if not any(_covers(breach.pointer, change.pointer) for change in drifted):
            drifted.append(_attribute(breach, drift, live))
    if drifted:
        if mode is Mode.ENFORCE and (is_fighting or recent_reverts >= FIGHT_LIMIT):
            action = Action.REVERT if is_due else Action.DEFER
            return Verdict(State.FIGHTING, action, tuple(drifted), tolerated)
        return Verdict(State.DRIFTED, _act(mode, Action.REVERT), tuple(drifted), tolerated)
    if tolerated:
        excepted = _excepted_by(matching, tolerated, live)
        state = State.EXCEPTED if excepted else State.OVERRIDDEN
        return Verdict(state, Action.NONE, (), tolerated, excepted)
    return Verdict(State.IN_SYNC, Action.NONE, (), tolerated)


def _excepted_by(
    rules: Sequence[AllowedChange], tolerated: frozenset[str], live: dict[str, Any]
) -> tuple[str, ...]:
    """The exceptions that hold a tolerated value the blueprint's own allowedChanges would
    not (if they would, it is Overridden, as without the exceptions)."""
    own = {
        p
        for rule in rules
        if not isinstance(rule, ExceptedChange)
        for p in rule.paths
        if p in tolerated and rule.is_within_bounds(pointer_get(live, p))
    }
    return tuple(
        sorted(
            {
                rule.exception
                for rule in rules
                if isinstance(rule, ExceptedChange)
                and any(
                    p in tolerated and p not in own and rule.is_within_bounds(pointer_get(live, p))
                    for p in rule.paths
                )
            }
        )
    )


def judge(
    *,
    key: ObjectKey,
    mode: Mode,
    desired: dict[str, Any],
    expectation: diff.Expectation,
    live: dict[str, Any] | None,
    rules: Sequence[AllowedChange],
    recent_reverts: int = 0,
    is_fighting: bool = False,
    is_due: bool = True,
) -> Verdict:
    """The whole pure judging step: the drift from what we set, then decide() on it."""
    drift = diff.compute(expectation, live) if live is not None else Drift()
    return decide(
        key=key,
        mode=mode,
        desired=desired,
        live=live,
        drift=drift,
        rules=rules,
        recent_reverts=recent_reverts,
        is_fighting=is_fighting,
        is_due=is_due,
    )


def misplaced_bounds(
    rules: Sequence[AllowedChange], desired: dict[ObjectKey, dict[str, Any]]
) -> list[str]:
    """Bounds on a field the blueprint does not hold as a number: they could never hold.

    The value's type is named, never the value (it may be a Secret's).
    """
    problems = []
    for index, rule in enumerate(rules):
        if rule.minimum is None and rule.maximum is None:
            continue
        for key, manifest in desired.items():
            if not rule.matches(key):
                continue
            for path in rule.paths:
                value = pointer_get(manifest, path)
                if value is MISSING or (
                    isinstance(value, int | float) and not isinstance(value, bool)
                ):
                    continue
                problems.append(
                    f"spec.allowedChanges[{index}]: minimum/maximum need a number at {path}, "
                    f"but the blueprint's {key} holds a {type(value).__name__} there"
                )
    return problems


def mode_of(spec: EnvironmentSpec) -> Mode:
    """The mode an Environment is judged in: a suspended one only reports, as in Observe."""
    return Mode.OBSERVE if spec.suspend else spec.mode


def _act(mode: Mode, action: Action) -> Action:
    return action if mode is Mode.ENFORCE else Action.FLAG


def _attribute(breach: FieldChange, drift: Drift, live: dict[str, Any]) -> FieldChange:
    """A bounds breach names the manager the diff found for that field, else the last writer."""
    manager = next(
        (c.manager for c in drift.changes if _covers(breach.pointer, c.pointer) and c.manager),
        diff.last_writer(live),
    )
    return FieldChange(breach.pointer, breach.kind, breach.expected, breach.actual, manager)


def without(manifest: dict[str, Any], pointers: frozenset[str]) -> dict[str, Any]:
    """The manifest minus tolerated fields, so an apply stops claiming them."""
    if not pointers:
        return manifest
    trimmed = copy.deepcopy(manifest)
    for pointer in pointers:
        parsed = JsonPointer(pointer)
        # The whole object is never a tolerated field; an absent one has nothing to drop.
        if not parsed.parts or pointer_get(trimmed, pointer) is MISSING:
            continue
        parent, token = parsed.to_last(trimmed)
        del parent[token]
    return trimmed
