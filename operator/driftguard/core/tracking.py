"""The ledger of one Environment: what driftguard knows of each managed object.

`assess` is the one judging step: a live object against what driftguard set,
through the policy, giving the object's new state and the closed records worth
reporting; `reverted` is the one place a revert is recorded, whoever wrote it back
(a watch event's judge or a full pass). The status is summed up from the same
ledger. Pure: no I/O, and the clock is passed in (`at` for intervals, `now` for
timestamps).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from driftguard.core import changes, conditions, diff, model, plan, prevention, render
from driftguard.core.changes import Change, ChangeSet, Outcome
from driftguard.core.conditions import Reason
from driftguard.core.model import EnvironmentSpec, Mode, ObjectKey, Prevention, Resource, State
from driftguard.core.status import Condition, EnvironmentStatus, LastDrift, ResourceStatus, Summary

MESSAGE_LIMIT = 900

DRIFTING = (State.DRIFTED, State.CONFLICT, State.FIGHTING, State.ERROR)
TOLERATING = (State.OVERRIDDEN, State.EXCEPTED)


@dataclass(slots=True)
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
    changed_by_user: str | None = None
    last_drift_time: str | None = None
    reverts: int = 0
    # The last reverts' times, for fight detection. A tuple, as the empty one is shared:
    # a deque for every object was 760 bytes each, 38 MB at 50,000 objects.
    recent: tuple[float, ...] = ()
    tolerated: frozenset[str] = frozenset()
    exception: str | None = None  # the DriftException(s) an Excepted object holds drift by
    message: str | None = None
    fight_round: int = 0  # reverts made while fighting; 0 when not fighting
    due_at: float = 0.0  # while fighting: the next revert waits until then

    def reverted(self, at: float) -> None:
        self.reverts += 1
        self.recent = (*self.recent, at)[-(plan.FIGHT_LIMIT + 1) :]

    def recent_reverts(self, at: float) -> int:
        return sum(1 for moment in self.recent if at - moment < plan.FIGHT_WINDOW_S)

    def is_stale(self, live: dict[str, Any]) -> bool:
        """An event older than our own last write: its successor is on the way."""
        seen = rv(live)
        # resourceVersions are opaque, but etcd revisions are integers; when they
        # are not, every event is judged, which costs a request, never a miss.
        if seen.isdigit() and self.written_rv.isdigit():
            return int(seen) < int(self.written_rv)
        return False

    def learn(
        self,
        stored: dict[str, Any],
        *,
        mode: Mode,
        expectation: diff.Expectation | None = None,
    ) -> None:
        """The server's answer to our (dry-run) apply is what the object must hold; Enforce's
        answers are the object as stored. `expectation`: read from it already."""
        is_stored = mode is Mode.ENFORCE
        self.expectation = expectation or diff.expect(
            stored, is_stored=is_stored, like=self.desired
        )
        if is_stored:
            self.written_rv = rv(stored)
        self.message = None

    def to_status(self) -> ResourceStatus:
        return ResourceStatus(
            api_version=self.key.api_version,
            kind=self.key.kind,
            namespace=self.key.namespace,
            name=self.key.name,
            state=self.state,
            drifted_paths=list(self.pointers),
            changed_by=self.changed_by,
            changed_by_user=self.changed_by_user,
            last_drift_time=self.last_drift_time,
            reverts=self.reverts,
            message=self.message,
            exception=self.exception if self.state is State.EXCEPTED else None,
        )


@dataclass
class Ledger:
    """One Environment's state, shared by its full pass, its event judge and its status."""

    owner: render.Owner
    status: EnvironmentStatus
    spec: EnvironmentSpec | None = None
    tracked: dict[ObjectKey, Tracked] = field(default_factory=dict)
    ready: tuple[bool, str, str] = (False, Reason.PROGRESSING, "first pass pending")
    applied_generation: int | None = None
    policies: dict[ObjectKey, Tracked] = field(default_factory=dict)  # prevention's, unlisted
    paused_until: str | None = None  # spec.suspendUntil while it lies ahead
    exceptions_until: str | None = None  # when the first active DriftException ends
    excepting: frozenset[str] = frozenset()  # the DriftExceptions active at the last pass
    fight_backoff: float = plan.FIGHT_BACKOFF_S
    is_waiting_for_kind: bool = False  # the blueprint names a kind the server does not serve
    # What the API server enforces of prevention, as a probe confirmed it (None: never on),
    # and what the policy objects just written ask of it while that is not confirmed yet.
    enforced: prevention.Enforced | None = None
    enforcing: prevention.Enforced | None = None
    # (apiVersion, kind, namespace) of the objects status listed, as received or as last
    # written: where a pass looks for leftovers besides the blueprint's kinds.
    inventory: frozenset[tuple[str, str, str | None]] = frozenset()

    @property
    def mode(self) -> Mode:
        """Observe while suspended: drift is reported, not reverted."""
        if self.spec is None or self.paused_until:
            return Mode.OBSERVE
        return plan.mode_of(self.spec)

    def record(self, key: ObjectKey) -> Tracked | None:
        """A managed object's record, or one of the Environment's own policy objects."""
        return self.tracked.get(key) or self.policies.get(key)

    def is_mine(self, obj: dict[str, Any]) -> bool:
        return render.owner_of(obj) == self.owner

    def note(self, change: Change, now: str) -> None:
        """Drift seen: the object's record and lastDrift remember when, where and by whom."""
        if change.outcome not in (Outcome.REVERTED, Outcome.FLAGGED):
            return
        tracked = self.tracked.get(change.key)
        if tracked is not None:
            tracked.last_drift_time = now
            tracked.changed_by = change.changed_by or tracked.changed_by
            # A change nobody vouched for is nobody's: an earlier person is not carried over.
            tracked.changed_by_user = change.changed_by_user
        self.status.last_drift = LastDrift(
            time=now,
            object=str(change.key),
            paths=list(change.paths) or ["/"],
            changed_by=change.changed_by,
            changed_by_user=change.changed_by_user,
        )


def assess(
    ledger: Ledger, tracked: Tracked, live: dict[str, Any] | None, at: float
) -> tuple[plan.Verdict, ChangeSet]:
    """The operator's judging step: `plan.judge`, which `driftguard diff` calls too.

    Updates the object's record and returns what is news: a new flag, a new fight,
    a newly tolerated change. A revert is recorded by `reverted`, once it is made.
    """
    assert ledger.spec is not None
    assert tracked.expectation is not None
    if tracked.fight_round and at >= tracked.due_at + plan.FIGHT_WINDOW_S:
        tracked.fight_round = 0  # quiet for a window after the last backoff: no fight now
    verdict = plan.judge(
        key=tracked.key,
        mode=ledger.mode,
        desired=tracked.desired,
        expectation=tracked.expectation,
        live=live,
        rules=ledger.spec.allowed_changes,
        recent_reverts=tracked.recent_reverts(at),
        is_fighting=tracked.fight_round > 0,
        is_due=at >= tracked.due_at,
    )
    if verdict.state is State.FIGHTING and not tracked.fight_round:
        # The fight starts: the next revert waits for the first backoff.
        tracked.fight_round, tracked.due_at = 1, at + plan.fight_delay(1, base=ledger.fight_backoff)
        verdict = replace(verdict, action=plan.Action.DEFER)
    is_news = verdict.state != tracked.state or tuple(verdict.pointers) != tracked.pointers
    news: list[Change] = []
    key, paths = tracked.key, tuple(verdict.pointers)
    if is_news and verdict.state is State.FIGHTING:
        message = fighting_message(key, verdict)
        news.append(Change(key, Outcome.FIGHTING, paths, verdict.changed_by, message))
    elif is_news and verdict.action is plan.Action.FLAG:
        missing = live is None
        values = changes.values_of(key, tracked.desired, live, paths)
        news.append(
            Change(
                key, Outcome.FLAGGED, paths, verdict.changed_by, is_missing=missing, values=values
            )
        )
    elif verdict.state in TOLERATING and (
        verdict.tolerated != tracked.tolerated or verdict.state != tracked.state
    ):
        by = diff.last_writer(live) if live else None
        tolerated = tuple(sorted(verdict.tolerated))
        values = changes.values_of(key, tracked.desired, live, tolerated)
        if verdict.state is State.EXCEPTED:
            names = ", ".join(verdict.excepted)
            message = f"{key} holds drift at {', '.join(tolerated)} by DriftException {names}"
            news.append(
                Change(
                    key, Outcome.EXCEPTED, tolerated, by, message, values=values, exception=names
                )
            )
        else:
            news.append(Change(key, Outcome.TOLERATED, tolerated, by, values=values))
    tracked.tolerated = verdict.tolerated
    tracked.exception = ", ".join(verdict.excepted) or None
    if verdict.state in (State.IN_SYNC, *TOLERATING) and at >= tracked.due_at:
        tracked.fight_round = 0  # in sync for a whole backoff: the fight is over
    tracked.state, tracked.pointers = verdict.state, paths
    if verdict.drifted:
        tracked.changed_by = verdict.changed_by or tracked.changed_by
    return verdict, ChangeSet(tuple(news))


def reverted(
    ledger: Ledger,
    tracked: Tracked,
    *,
    stored: dict[str, Any],
    live: dict[str, Any] | None,
    pointers: Iterable[str],
    changed_by: str | None,
    at: float,
    is_missing: bool = False,
    is_fighting: bool = False,
    latency: float | None = None,
) -> ChangeSet:
    """A write put the blueprint back over drift: the record learns the server's answer,
    counts the revert (a fight's backoff grows), and the one REVERTED record is made,
    followed by whatever judging the answer finds new."""
    tracked.learn(stored, mode=ledger.mode)
    tracked.reverted(at)
    if is_fighting:
        fought(ledger, tracked, at + (latency or 0.0))  # the backoff runs from the write
    paths = tuple(pointers)
    change = Change(
        tracked.key,
        Outcome.REVERTED,
        paths,
        changed_by,
        is_missing=is_missing,
        latency=latency,
        values=changes.values_of(tracked.key, stored, live, paths),
    )
    _, news = assess(ledger, tracked, stored, at)
    return ChangeSet.of(change, news)


def conclude(
    ledger: Ledger, changes: Iterable[Change], generation: int | None, *, is_new: bool
) -> bool:
    """Ready after a full pass; True when it put a new revision in place (Enforce)."""
    failed = [change for change in changes if change.is_failure]
    ledger.status.observed_generation = generation
    if failed:
        is_forbidden = any(change.outcome is Outcome.FORBIDDEN for change in failed)
        reason = Reason.FORBIDDEN if is_forbidden else Reason.APPLY_FAILED
        message = "; ".join(change.message for change in failed)
        ledger.ready = (False, reason, message[:MESSAGE_LIMIT])
        return False
    is_applied = is_new and ledger.mode is Mode.ENFORCE
    if is_applied:
        ledger.status.revision += 1
    ledger.ready = (True, Reason.APPLIED, f"revision {ledger.status.revision} applied")
    if ledger.spec is not None and ledger.spec.suspend:
        ledger.ready = (True, Reason.SUSPENDED, "suspended: drift is reported, not reverted")
    elif ledger.mode is Mode.OBSERVE:
        message = "Observe: the blueprint is checked with dry-run applies, nothing is changed"
        ledger.ready = (True, Reason.OBSERVING, message)
    return is_applied


def victims(
    ledger: Ledger, desired: Iterable[ObjectKey], live: Iterable[tuple[Resource, dict[str, Any]]]
) -> list[tuple[Resource, dict[str, Any]]]:
    """This Environment's objects that its blueprint no longer holds (Enforce, prune on)."""
    spec = ledger.spec
    if spec is None or not spec.prune or ledger.mode is not Mode.ENFORCE:
        return []
    keep = set(desired)
    return [
        (resource, obj)
        for resource, obj in live
        if ObjectKey.of(obj) not in keep and ledger.is_mine(obj)
    ]


def fought(ledger: Ledger, tracked: Tracked, at: float) -> None:
    """A revert made while fighting: the next one waits twice as long (up to the cap)."""
    tracked.fight_round += 1
    tracked.due_at = at + plan.fight_delay(tracked.fight_round, base=ledger.fight_backoff)


def summarize(
    previous: EnvironmentStatus,
    tracked: Iterable[Tracked],
    ready: tuple[bool, str, str],
    *,
    now: str,
    paused_until: str | None = None,
    enforced: tuple[prevention.Enforced | None, prevention.Enforced | None] = (None, None),
) -> EnvironmentStatus:
    """The status to write: conditions, summary and one entry per object."""
    records = sorted(tracked, key=lambda t: (t.key.kind, t.key.name))
    summary = Summary(
        managed=len(records),
        in_sync=sum(t.state is State.IN_SYNC for t in records),
        drifted=sum(t.state in DRIFTING for t in records),
        missing=sum(t.state is State.MISSING for t in records),
        overridden=sum(t.state is State.OVERRIDDEN for t in records),
        excepted=sum(t.state is State.EXCEPTED for t in records),
    )
    generation = previous.observed_generation
    ready_condition = conditions.make(conditions.READY, *ready, generation=generation, now=now)
    in_sync = _in_sync_condition(records, generation, now)
    if not records and not ready[0]:
        # Nothing compared yet (the pass was refused): in sync it is not.
        message = f"nothing applied or compared: {ready[2]}"[:MESSAGE_LIMIT]
        in_sync = conditions.make(
            conditions.IN_SYNC, False, ready[1], message, generation=generation, now=now
        )
    if ready[1] == Reason.CLUSTER_UNREACHABLE and records:
        # What was last seen there may have changed since: in sync it is not known to be.
        message = f"unknown while its cluster does not answer; last seen: {in_sync.message}"
        in_sync = in_sync.model_copy(
            update={"status": "Unknown", "reason": ready[1], "message": message[:MESSAGE_LIMIT]}
        )
    current = [ready_condition, in_sync]
    if paused_until:
        message = f"until {paused_until}: enforcement and prevention resume by themselves"
        suspended = conditions.make(
            conditions.SUSPENDED, True, Reason.SUSPENDED, message, generation=generation, now=now
        )
        current.append(suspended)
    guarding = prevention_condition(*enforced, generation=generation, now=now)
    if guarding is not None:
        current.append(guarding)
    # Those not in sync first; past the limit the in-sync ones are counted, not listed.
    listed = sorted(records, key=lambda t: t.state is State.IN_SYNC)[: model.RESOURCE_STATUS_LIMIT]
    listed.sort(key=lambda t: (t.key.kind, t.key.name))
    omitted = len(records) - len(listed)
    return previous.model_copy(
        update={
            "conditions": conditions.merge(previous.conditions, current),
            "summary": summary,
            "resources": [t.to_status() for t in listed],
            "resources_omitted": omitted or None,
        }
    )


_ENFORCED = {
    Prevention.DENY: "the API server refuses writes that change what this Environment sets",
    Prevention.WARN: "the API server warns about writes that change what this Environment sets",
    Prevention.OFF: "the API server enforces no policy of this Environment",
}


def prevention_condition(
    enforced: prevention.Enforced | None,
    enforcing: prevention.Enforced | None,
    *,
    generation: int | None,
    now: str,
) -> Condition | None:
    """Prevention as the API server enforces it (a probe showed it), not as the spec asks:
    reason Deny, Warn or Off; None while it was never on. A change not confirmed yet is
    named in the message, never in the reason."""
    if enforced is None and (enforcing is None or enforcing.action is Prevention.OFF):
        return None
    action = enforced.action if enforced is not None else Prevention.OFF
    message = _ENFORCED[action]
    if enforcing is not None and enforcing.action is not action:
        message += f"; {enforcing.action.value} not enforced yet: waiting for the API server"
    return conditions.make(
        conditions.PREVENTION,
        action is not Prevention.OFF,
        action.value,
        message,
        generation=generation,
        now=now,
    )


def _in_sync_condition(tracked: list[Tracked], generation: int | None, now: str) -> Condition:
    off = [t for t in tracked if t.state in (*DRIFTING, State.MISSING)]
    if not off:
        message = f"{len(tracked)} of {len(tracked)} objects match the blueprint"
        return conditions.make(
            conditions.IN_SYNC, True, Reason.IN_SYNC, message, generation=generation, now=now
        )
    details = "; ".join(f"{t.key} {' '.join(t.pointers) or t.state.value}" for t in off[:10])
    message = f"{len(off)} of {len(tracked)} objects drifted: {details}"[:MESSAGE_LIMIT]
    return conditions.make(
        conditions.IN_SYNC, False, Reason.DRIFTED, message, generation=generation, now=now
    )


def fighting_message(key: ObjectKey, verdict: plan.Verdict) -> str:
    by = f" with {verdict.changed_by}" if verdict.changed_by else ""
    return (
        f"{key} reverted {plan.FIGHT_LIMIT} times in {plan.FIGHT_WINDOW_S:.0f}s at "
        f"{', '.join(verdict.pointers)}; fighting{by}: reverts go on with a backoff "
        f"from {plan.FIGHT_BACKOFF_S:.0f}s to {plan.FIGHT_BACKOFF_CAP_S:.0f}s"
    )


def rv(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion", ""))
