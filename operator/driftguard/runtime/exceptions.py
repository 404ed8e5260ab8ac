"""The DriftExceptions of each Environment: kept in memory, judged against the clock.

kopf delivers every DriftException; the book keeps them by Environment. An Environment's
full pass asks for its active ones (`active`) and widens its spec with them; the pass
after the earliest end (the resync wakes for it) finds it over and reverts what it held.
Each exception's status (phase, end, who created it) is written by the replica that
keeps its Environment, only when it changes.
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from driftguard.core import exception
from driftguard.core.attribution import APPROVAL_ANNOTATION, Signer
from driftguard.core.exception import Judged, Phase
from driftguard.core.model import EnvironmentSpec
from driftguard.core.tracking import Ledger
from driftguard.kube import timestamps
from driftguard.kube.cluster import Cluster, Resource
from driftguard.kube.errors import ApiError
from driftguard.runtime.report import Reporter
from driftguard.telemetry import metrics
from driftguard.telemetry.logs import get as get_logger

DRIFTEXCEPTIONS = Resource(
    "driftguard.io", "v1alpha1", exception.KIND, exception.PLURAL, namespaced=True
)
Ident = tuple[str, str]

log = get_logger(__name__)


class ExceptionBook:
    def __init__(
        self,
        cluster: Cluster,
        max_seconds: float = exception.DEFAULT_MAX_S,
        signer: Signer | None = None,
        approvers: str = "",
    ) -> None:
        """`approvers`: the group one of whose members, not the author, must approve each
        exception before it is in force (empty: none needed)."""
        self._cluster = cluster
        self.max_seconds = max_seconds
        self._signer = signer
        self.approvers = approvers
        self._approved: dict[tuple[str, str], tuple[str, str]] = {}  # (user, spec digest)
        self._bodies: dict[Ident, dict[str, dict[str, Any]]] = {}

    def put(self, body: dict[str, Any]) -> Ident:
        """A DriftException created or changed; returns its Environment."""
        meta = body.get("metadata") or {}
        ident = _ident(body)
        for other, bodies in self._bodies.items():  # its environmentRef may have changed
            if other != ident:
                bodies.pop(meta.get("name", ""), None)
        self._bodies.setdefault(ident, {})[meta.get("name", "")] = body
        return ident

    def remove(self, body: dict[str, Any]) -> Ident:
        ident = _ident(body)
        self._approved.pop(_key(body), None)
        self._bodies.get(ident, {}).pop((body.get("metadata") or {}).get("name", ""), None)
        return ident

    def has(self, ident: Ident) -> bool:
        return bool(self._bodies.get(ident))

    def judged(self, ident: Ident, *, now: float | None = None) -> list[Judged]:
        """Every exception of the Environment as it stands now."""
        moment = time.time() if now is None else now
        found = []
        for name, body in sorted(self._bodies.get(ident, {}).items()):
            judged = exception.evaluate(
                name,
                body,
                created_at=_epoch((body.get("metadata") or {}).get("creationTimestamp")),
                expires_at=_epoch_or_none((body.get("spec") or {}).get("expiresAt")),
                now=moment,
                max_seconds=self.max_seconds,
                waiting=self._waiting(body),
            )
            created_by = ((body.get("status") or {}).get("createdBy")) or self._creator(body)
            approved_by = self._approved.get(_key(body), (None, None))[0]
            found.append(replace(judged, created_by=created_by, approved_by=approved_by))
        return found

    def active(self, ident: Ident) -> list[Judged]:
        return [j for j in self.judged(ident) if j.phase is Phase.ACTIVE]

    async def publish(self, ident: Ident) -> None:
        """Writes each exception's status where it changed: phase, end, creator, message."""
        for judged in self.judged(ident):
            body = self._bodies.get(ident, {}).get(judged.name)
            if body is None:
                continue
            old = body.get("status") or {}
            approved_by, approved_spec = self._approved.get(_key(body), (None, None))
            wanted = exception.DriftExceptionStatus(
                phase=judged.phase,
                expires_at=timestamps.rfc3339(judged.expires_at) if judged.expires_at else None,
                created_by=old.get("createdBy") or self._creator(body),
                approved_by=approved_by,
                approved_spec=approved_spec,
                message=judged.message or None,
            ).to_body()
            wanted.pop("conditions", None)
            if {k: v for k, v in old.items() if k != "conditions"} == wanted:
                continue
            # A merge patch: a field no longer wanted is removed by naming it null.
            status: dict[str, Any] = {k: None for k in old if k != "conditions"} | wanted
            try:
                await self._cluster.patch_status(
                    ident[0], judged.name, status, resource=DRIFTEXCEPTIONS
                )
                body["status"] = wanted
            except ApiError as exc:
                log.warning("exception_status_failed", exception=judged.name, error=exc.describe())

    def _creator(self, body: dict[str, Any]) -> str | None:
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        if self._signer is None or APPROVAL_ANNOTATION in annotations:
            return None  # the stamp then names whoever approved it last
        person = self._signer.stamped(body)
        return person.user if person is not None else None

    def _waiting(self, body: dict[str, Any]) -> str:
        """Why the exception is not approved (empty: approved, or no approval needed).
        An approval holds for the spec it approved; it is kept in status."""
        if not self.approvers:
            return ""
        status = body.get("status") or {}
        digest = exception.spec_digest(body)
        key = _key(body)
        if key in self._approved:
            if self._approved[key][1] == digest:
                return ""
            del self._approved[key]  # the spec changed since: approve it again
        if status.get("approvedBy") and status.get("approvedSpec") == digest:
            self._approved[key] = (status["approvedBy"], digest)
            return ""
        asked = f"waiting for a member of {self.approvers} other than its author to approve it"
        if self._signer is None:
            return asked + " (four eyes need the attribution webhook to tell who approves)"
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        if APPROVAL_ANNOTATION not in annotations:
            return asked + " (driftguard exception approve)"
        person = self._signer.stamped(body)
        why = exception.approval(
            person.user if person else None,
            person.groups if person else (),
            created_by=status.get("createdBy"),
            approvers=self.approvers,
        )
        if why:
            return f"{asked}: {why}"
        assert person is not None  # approval() says why otherwise
        self._approved[key] = (person.user, digest)
        log.info("exception_approved", exception=key[1], approver=person.user)
        return ""


def widened(
    ledger: Ledger, reporter: Reporter, spec: EnvironmentSpec, judged: list[Judged]
) -> EnvironmentSpec:
    """The spec a pass judges with: the active exceptions' changes allowed. Their start and
    end are Events and audit records; an ended one's drift is then judged, and reverted,
    by that pass."""
    active = [j for j in judged if j.phase is Phase.ACTIVE]
    names = frozenset(j.name for j in active)
    for one in active:
        if one.name not in ledger.excepting:
            reporter.exception_began(one)
    phases = {j.name: j.phase for j in judged}
    for name in sorted(ledger.excepting - names):
        # Pending again: its spec changed after approval. Gone from the book: deleted.
        reporter.exception_ended(name, str(phases.get(name, "Deleted")))
    ledger.excepting = names
    ledger.exceptions_until = earliest_end(active)
    owner = ledger.owner
    metrics.exceptions_active.labels(owner.namespace, owner.name).set(len(active))
    ends = {j.name: j.expires_at for j in active if j.expires_at is not None}
    metrics.set_exception_ends(owner.namespace, owner.name, ends)
    return exception.widen(spec, active)


def earliest_end(active: list[Judged]) -> str | None:
    """When the first active exception ends (RFC 3339): the resync wakes then."""
    ends = [j.expires_at for j in active if j.expires_at is not None]
    return timestamps.rfc3339(min(ends)) if ends else None


def _key(body: dict[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _ident(body: dict[str, Any]) -> Ident:
    namespace = str((body.get("metadata") or {}).get("namespace") or "")
    ref = ((body.get("spec") or {}).get("environmentRef") or {}).get("name")
    return namespace, str(ref or "")


def _epoch_or_none(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo else None


def _epoch(text: Any) -> float:
    found = _epoch_or_none(text)
    return time.time() if found is None else found
