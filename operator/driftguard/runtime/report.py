"""The one reporter: closed change records become Events, log events, metrics and lastDrift.

`TABLE` says, for each outcome, which Event reasons follow, which log event and
which metrics; docs/how-it-works.md prints the same table. Nothing else in the operator
posts an Event about an object, logs its drift or counts it, so the four views
cannot disagree. Reporting never writes to a managed object.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from driftguard.core import tracking
from driftguard.core.changes import ATTRIBUTED, Change, ChangeSet, Outcome
from driftguard.core.conditions import Reason
from driftguard.core.exception import Judged
from driftguard.kube import timestamps
from driftguard.telemetry import metrics
from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)


class Poster(Protocol):
    def post(self, env: dict[str, Any], reason: str, message: str, warning: bool) -> None:
        """Queues an Event on the Environment `env`."""


class Trail(Protocol):
    def add(self, changes: Iterable[Change], paused: bool) -> None:
        """Keeps the records that are incidents; True while enforcement is paused."""

    def note(self, action: str, **fields: Any) -> None:
        """Keeps a record of the Environment's own: back in sync, an exception's start or end."""


@dataclass(frozen=True, slots=True)
class Reporting:
    events: tuple[tuple[str, bool], ...] = ()  # (reason, is_warning)
    log_event: str | None = None
    level: int = logging.INFO
    counters: tuple[str, ...] = ()  # for the docs: what is counted


_DETECTED = "driftguard_drift_detected_total"
_ERRORS = "driftguard_reconcile_errors_total"

TABLE: dict[Outcome, Reporting] = {
    Outcome.CREATED: Reporting(log_event="object_created", level=logging.DEBUG),
    Outcome.CONFIGURED: Reporting(log_event="object_configured", level=logging.DEBUG),
    Outcome.ADOPTED: Reporting(log_event="object_adopted"),
    Outcome.UNCHANGED: Reporting(),
    Outcome.REVERTED: Reporting(
        (("DriftDetected", False), ("DriftReverted", False)),
        "drift_reverted",
        counters=(
            _DETECTED,
            "driftguard_drift_reverted_total",
            "driftguard_revert_latency_seconds",
        ),
    ),
    Outcome.FLAGGED: Reporting((("DriftDetected", True),), "drift_detected", counters=(_DETECTED,)),
    Outcome.TOLERATED: Reporting(log_event="drift_tolerated"),
    Outcome.EXCEPTED: Reporting((("Excepted", False),), "drift_excepted"),
    Outcome.CONFLICT: Reporting((("Conflict", True),), "conflict", logging.WARNING),
    Outcome.FIGHTING: Reporting(
        (("Fighting", True),), "fighting", logging.WARNING, ("driftguard_fights_total",)
    ),
    Outcome.FORBIDDEN: Reporting(
        (("Forbidden", True),), "forbidden", logging.WARNING, counters=(f"{_ERRORS}{{Forbidden}}",)
    ),
    Outcome.FAILED: Reporting(
        (("ApplyFailed", True),), "apply_failed", logging.WARNING, (f"{_ERRORS}{{ApplyFailed}}",)
    ),
    Outcome.PRUNED: Reporting((("Pruned", False),), "pruned"),
    Outcome.RELEASED: Reporting(log_event="released"),
}

_ERROR_REASON = {Outcome.FORBIDDEN: Reason.FORBIDDEN, Outcome.FAILED: Reason.APPLY_FAILED}


class Reporter:
    """Reports one Environment's change records, exactly as TABLE says."""

    def __init__(
        self,
        ledger: tracking.Ledger,
        events: Poster,
        body: dict[str, Any],
        trail: Trail | None = None,
    ) -> None:
        self._ledger = ledger
        self._events = events
        self.body: dict[str, Any] | None = body
        """The Environment the Events are about, kept current; None once it is let go."""
        self._trail = trail
        owner = ledger.owner
        self._env = (owner.namespace, owner.name)
        self._log = log.bind(environment=str(owner))

    def record(self, records: Iterable[Change]) -> None:
        records = list(records)
        for change in records:
            self._one(change)
        if self._trail is not None and records:
            spec = self._ledger.spec
            paused = bool(self._ledger.paused_until) or (spec is not None and spec.suspend)
            self._trail.add(records, paused)

    def _post(self, reason: str, message: str, is_warning: bool) -> None:
        if self.body is not None:
            self._events.post(self.body, reason, message, is_warning)

    def _one(self, change: Change) -> None:
        reporting = TABLE[change.outcome]
        sentence = change.describe()
        for reason, is_warning in reporting.events:
            if reason == "DriftReverted":
                self._post(reason, f"{sentence}; reverted to the blueprint", is_warning)
            else:
                self._post(reason, sentence, is_warning)
        if reporting.log_event is not None:
            self._log.log(reporting.level, reporting.log_event, **_fields(change))
        self._count(change)
        self._ledger.note(change, timestamps.now())

    def _count(self, change: Change) -> None:
        kind = change.key.kind
        if change.outcome in (Outcome.REVERTED, Outcome.FLAGGED):
            metrics.drift_detected.labels(*self._env, kind).inc()
            if change.changed_by_user is None:
                metrics.drift_unattributed.labels(*self._env).inc()
            # A revert is reported once done: the drift was seen `latency` earlier.
            seen = time.time() - (change.latency or 0.0)
            written = timestamps.epoch(change.changed_at)
            if written is not None:
                metrics.detect_latency.labels(kind).observe(max(0.0, seen - written))
            metrics.out_of_sync.began(*self._env, seen if written is None else written)
        if change.outcome is Outcome.REVERTED:
            metrics.drift_reverted.labels(*self._env, kind).inc()
            if change.latency is not None:
                metrics.revert_latency.labels(kind).observe(change.latency)
        if change.outcome is Outcome.FIGHTING:
            metrics.fights.labels(*self._env).inc()
        reason = _ERROR_REASON.get(change.outcome)
        if reason is not None:
            metrics.reconcile_errors.labels(*self._env, reason).inc()

    def applied(self, revision: int, records: ChangeSet) -> None:
        """A new blueprint is in place: one Event and one log event for the whole pass."""
        summary = records.counts()
        self._post("Applied", f"revision {revision} applied: {summary}", False)
        self._log.info("applied", revision=revision, objects=summary)

    def invalid(self, message: str) -> None:
        """The blueprint cannot be applied as written; nothing was changed."""
        self._post(Reason.INVALID_SPEC, message, True)
        self._log.warning("invalid_spec", message=message)
        metrics.reconcile_errors.labels(*self._env, Reason.INVALID_SPEC).inc()

    def unusable(self, reason: str, message: str) -> None:
        """The cluster the Environment acts in cannot be used now (a remote one)."""
        self._post(reason, message, True)
        self._log.warning("cluster_unusable", reason=reason, message=message)

    def paused(self, until: str) -> None:
        """spec.suspendUntil began: enforcement pauses until then; prevention is reported
        lifted (PreventionLifted) once the API server no longer enforces it."""
        self._post("Suspended", f"enforcement paused until {until}", True)
        self._log.info("suspended", until=until)

    def enforced(self, action: str, token: str, seconds: float) -> None:
        """The API server enforces prevention now (Deny or Warn), as a probe showed."""
        self._post(
            "PreventionEnforced",
            f"prevention {action} enforced by the API server {seconds:.1f}s after the policy"
            " was written",
            False,
        )
        self._log.info("prevention_enforced", action=action, policy=token, seconds=seconds)

    def lifted(self, before: str, seconds: float) -> None:
        """The API server no longer enforces any policy of the Environment."""
        self._post(
            "PreventionLifted",
            f"prevention lifted: the API server no longer enforces {before}, {seconds:.1f}s"
            " after the policy was removed",
            False,
        )
        self._log.info("prevention_lifted", before=before, seconds=seconds)

    def exception_began(self, judged: Judged) -> None:
        """A DriftException is in force: what it covers stands until it ends."""
        name, covers = judged.name, judged.message
        self._post("ExceptionActive", f"DriftException {name} in force: {covers}", False)
        who = {"created_by": judged.created_by, "approved_by": judged.approved_by}
        until = timestamps.rfc3339(judged.expires_at) if judged.expires_at else None
        self._log.info("exception_active", exception=name, covers=covers, until=until, **who)
        if self._trail is not None:
            self._trail.note(
                "exception-active",
                **self._object("DriftException", name),
                exception=name,
                reason=judged.reason,
                covers=covers,
                createdBy=judged.created_by,
                approvedBy=judged.approved_by,
                expiresAt=until,
            )

    def exception_ended(self, name: str, end: str) -> None:
        """A DriftException is over (Expired, Ended, Deleted, or Pending again after a
        change): its drift is judged again."""
        message = (
            f"DriftException {name} is over ({end}): the drift it held is reverted (Enforce) "
            "or flagged"
        )
        self._post("ExceptionEnded", message, False)
        self._log.info("exception_ended", exception=name, end=end)
        if self._trail is not None:
            self._trail.note(
                "exception-ended", **self._object("DriftException", name), exception=name, end=end
            )

    def back_in_sync(self, seconds: float) -> None:
        """Nothing drifts any more, after `seconds` out of sync: the SLO's interval ends."""
        self._log.info("in_sync", out_of_sync_s=round(seconds, 3))
        if self._trail is not None:
            self._trail.note(
                "in-sync", **self._object("Environment", self._env[1]), outOfSyncS=round(seconds, 3)
            )

    def _object(self, kind: str, name: str) -> dict[str, str]:
        # Every record names an object, so a reader of the trail finds kind and name on each.
        return {"kind": kind, "namespace": self._env[0], "name": name}

    def resumed(self) -> None:
        self._post("Resumed", "suspension over: enforcement resumed", False)
        self._log.info("resumed")

    def status_failed(self, error: str) -> None:
        self._log.warning("status_failed", error=error)

    def history_failed(self, error: str) -> None:
        self._log.warning("history_failed", error=error)


def _fields(change: Change) -> dict[str, Any]:
    fields: dict[str, Any] = {"object": str(change.key)}
    if change.paths:
        fields["paths"] = list(change.paths)
    if change.changed_by:
        fields["changed_by"] = change.changed_by
    if change.outcome in ATTRIBUTED:
        fields["changed_by_user"] = change.changed_by_user
    if change.is_missing:
        fields["missing"] = True
    if change.latency is not None:
        fields["latency_ms"] = round(change.latency * 1000, 2)
    if change.message:
        fields["message"] = change.message
    return fields
