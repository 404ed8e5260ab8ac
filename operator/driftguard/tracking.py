"""What driftguard knows of each managed object, and the status that sums it up.

No I/O (the clock aside): the Runner in reconcile.py keeps these records and writes what
`summarize` makes of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from driftguard import conditions, diff, model, plan
from driftguard.cluster import Resource
from driftguard.conditions import Reason
from driftguard.model import ObjectKey, State

MESSAGE_LIMIT = 900


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Tracked:
    """What driftguard knows of one managed object between passes."""

    key: ObjectKey
    resource: Resource
    desired: dict[str, Any]
    expectation: diff.Expectation | None = None
    written_rv: str = ""
    state: State = State.MISSING
    pointers: tuple[str, ...] = ()
    changed_by: str | None = None
    last_drift_time: str | None = None
    reverts: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=plan.FIGHT_LIMIT + 1))
    tolerated: frozenset[str] = frozenset()
    message: str | None = None

    def recent_reverts(self, at: float) -> int:
        return sum(1 for moment in self.recent if at - moment < plan.FIGHT_WINDOW_S)

    def is_stale(self, live: dict[str, Any]) -> bool:
        """An event older than our own last write: its successor is on the way."""
        seen = str(live.get("metadata", {}).get("resourceVersion", ""))
        # resourceVersions are opaque, but etcd revisions are integers; when they
        # are not, every event is judged, which costs a request, never a miss.
        if seen.isdigit() and self.written_rv.isdigit():
            return int(seen) < int(self.written_rv)
        return False

    def to_status(self) -> model.ResourceStatus:
        return model.ResourceStatus(
            api_version=self.key.api_version,
            kind=self.key.kind,
            namespace=self.key.namespace,
            name=self.key.name,
            state=self.state,
            drifted_paths=list(self.pointers),
            changed_by=self.changed_by,
            last_drift_time=self.last_drift_time,
            reverts=self.reverts,
            message=self.message,
        )


def summarize(
    previous: model.EnvironmentStatus,
    tracked: Iterable[Tracked],
    ready: tuple[bool, str, str],
) -> model.EnvironmentStatus:
    """The status to write: conditions, summary and one entry per object."""
    records = sorted(tracked, key=lambda t: (t.key.kind, t.key.name))
    summary = model.Summary(
        managed=len(records),
        in_sync=sum(t.state is State.IN_SYNC for t in records),
        drifted=sum(t.state in DRIFTING for t in records),
        missing=sum(t.state is State.MISSING for t in records),
        overridden=sum(t.state is State.OVERRIDDEN for t in records),
    )
    generation = previous.observed_generation
    ready_condition = conditions.make(conditions.READY, *ready, generation=generation, now=now())
    in_sync = _in_sync_condition(records, generation)
    return previous.model_copy(
        update={
            "conditions": conditions.merge(previous.conditions, [ready_condition, in_sync]),
            "summary": summary,
            "resources": [t.to_status() for t in records],
        }
    )


DRIFTING = (State.DRIFTED, State.CONFLICT, State.FIGHTING, State.ERROR)


def _in_sync_condition(tracked: list[Tracked], generation: int | None) -> model.Condition:
    off = [t for t in tracked if t.state in (*DRIFTING, State.MISSING)]
    if not off:
        message = f"{len(tracked)} of {len(tracked)} objects match the blueprint"
        return conditions.make(
            conditions.IN_SYNC, True, Reason.IN_SYNC, message, generation=generation, now=now()
        )
    details = "; ".join(f"{t.key} {' '.join(t.pointers) or t.state.value}" for t in off[:10])
    message = f"{len(off)} of {len(tracked)} objects drifted: {details}"[:MESSAGE_LIMIT]
    return conditions.make(
        conditions.IN_SYNC, False, Reason.DRIFTED, message, generation=generation, now=now()
    )


def fighting_message(key: ObjectKey, verdict: plan.Verdict) -> str:
    by = f" with {verdict.changed_by}" if verdict.changed_by else ""
    return (
        f"{key} reverted {plan.FIGHT_LIMIT} times in {plan.FIGHT_WINDOW_S:.0f}s at "
        f"{', '.join(verdict.pointers)}; fighting{by}: reverts pause until it stops"
    )


def rv(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion", ""))
