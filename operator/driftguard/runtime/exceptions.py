"""The DriftExceptions of each Environment: kept in memory, judged against the clock.

kopf delivers every DriftException; the book keeps them by Environment. An Environment's
full pass asks for its active ones (`active`) and widens its spec with them; the pass
after the earliest end (the resync wakes for it) finds it over and reverts what it held.
Each exception's status (phase, end, who created it) is written by the replica that
keeps its Environment, only when it changes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from driftguard.core import exception
from driftguard.core.attribution import Signer
from driftguard.core.exception import Judged, Phase
from driftguard.core.model import EnvironmentSpec
from driftguard.core.tracking import Ledger
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
        *,
        max_seconds: float = exception.DEFAULT_MAX_S,
        signer: Signer | None = None,
    ) -> None:
        self._cluster = cluster
        self.max_seconds = max_seconds
        self._signer = signer
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
        self._bodies.get(ident, {}).pop((body.get("metadata") or {}).get("name", ""), None)
        return ident

    def has(self, ident: Ident) -> bool:
        return bool(self._bodies.get(ident))

    def judged(self, ident: Ident, *, now: float | None = None) -> list[Judged]:
        """Every exception of the Environment as it stands now."""
        moment = time.time() if now is None else now
        return [
            exception.evaluate(
                name,
                body,
                created_at=_epoch((body.get("metadata") or {}).get("creationTimestamp")),
                expires_at=_epoch_or_none((body.get("spec") or {}).get("expiresAt")),
                now=moment,
                max_seconds=self.max_seconds,
            )
            for name, body in sorted(self._bodies.get(ident, {}).items())
        ]

    def active(self, ident: Ident) -> list[Judged]:
        return [j for j in self.judged(ident) if j.phase is Phase.ACTIVE]

    async def publish(self, ident: Ident) -> None:
        """Writes each exception's status where it changed: phase, end, creator, message."""
        for judged in self.judged(ident):
            body = self._bodies.get(ident, {}).get(judged.name)
            if body is None:
                continue
            old = body.get("status") or {}
            wanted = exception.DriftExceptionStatus(
                phase=judged.phase,
                expires_at=_rfc3339(judged.expires_at) if judged.expires_at else None,
                created_by=old.get("createdBy") or self._creator(body),
                approved_by=old.get("approvedBy"),
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
        if self._signer is None:
            return None
        person = self._signer.stamped(body)
        return person.user if person is not None else None


def widened(
    ledger: Ledger, reporter: Reporter, spec: EnvironmentSpec, active: list[Judged]
) -> EnvironmentSpec:
    """The spec a pass judges with: the active exceptions' changes allowed. Their start and
    end are Events; an ended one's drift is then judged, and reverted, by that pass."""
    names = frozenset(j.name for j in active)
    for judged in active:
        if judged.name not in ledger.excepting:
            reporter.exception_began(judged.name, judged.message)
    for name in sorted(ledger.excepting - names):
        reporter.exception_ended(name)
    ledger.excepting = names
    ledger.exceptions_until = earliest_end(active)
    owner = ledger.owner
    metrics.exceptions_active.labels(owner.namespace, owner.name).set(len(active))
    return exception.widen(spec, active)


def earliest_end(active: list[Judged]) -> str | None:
    """When the first active exception ends (RFC 3339): the resync wakes then."""
    ends = [j.expires_at for j in active if j.expires_at is not None]
    return _rfc3339(min(ends)) if ends else None


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


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
