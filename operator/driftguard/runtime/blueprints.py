"""The Blueprints the operator knows: checked, kept revision by revision, status reported.

Environments made from a Blueprint resolve it through `lookup` and `pinned`
(see sources.declared). A new revision of a Blueprint is checked once here; its
status says whether it is valid, and each Environment's own pass says whether
its values fit. Only a valid revision is kept for pinning.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from driftguard.core import blueprint
from driftguard.core.attribution import Signer
from driftguard.core.blueprint import parse_blueprint
from driftguard.core.model import InvalidSpecError
from driftguard.core.status import BlueprintStatus, Condition
from driftguard.kube import history, timestamps
from driftguard.kube.cluster import Cluster
from driftguard.kube.errors import ApiError
from driftguard.kube.retries import retrying
from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)

REFUSED_SHOWN = 20
"""Environments listed in status.invalidEnvironments at most; the rest are counted."""


class Users(NamedTuple):
    """The Environments made from a Blueprint: how many, and those its schema refuses."""

    total: int = 0
    refused: tuple[str, ...] = ()


class Blueprints:
    def __init__(
        self, cluster: Cluster, history_namespace: str, *, signer: Signer | None = None
    ) -> None:
        """`signer`: checks who wrote each revision (None: attribution is off)."""
        self._cluster = cluster
        self._signer = signer
        self._namespace = history_namespace
        self._known: dict[str, dict[str, Any]] = {}

    async def lookup(self, name: str) -> dict[str, Any] | None:
        found = self._known.get(name)
        if found is None:  # an Environment's pass can come before the Blueprint's event
            found = await retrying(lambda: self._cluster.get(history.BLUEPRINTS, "", name))
        return found

    async def pinned(self, name: str) -> dict[int, dict[str, Any]]:
        return await history.blueprint_revisions(self._cluster, name, self._namespace)

    def generation(self, name: str) -> int | None:
        found = self._known.get(name)
        return int(found["metadata"].get("generation") or 1) if found else None

    async def changed(self, body: dict[str, Any], *, users: Users) -> bool:
        """A Blueprint event; True when its spec is new to this operator (Environments follow)."""
        meta = body["metadata"]
        name = meta["name"]
        old = self._known.get(name)
        self._known[name] = body
        is_new = old is None or old["metadata"].get("generation") != meta.get("generation")
        problem = _problem(body)
        if problem is None and is_new:
            try:
                person = self._signer.stamped(body) if self._signer is not None else None
                await history.record_blueprint(
                    self._cluster,
                    self._namespace,
                    body,
                    applied_by=person.user if person is not None else None,
                )
            except ApiError as exc:
                log.warning("blueprint_history_failed", blueprint=name, error=exc.describe())
        await self.report(body, problem, users=users)
        return is_new

    def deleted(self, name: str) -> None:
        self._known.pop(name, None)

    async def report(self, body: dict[str, Any], problem: str | None, *, users: Users) -> None:
        """Writes the Blueprint's status when it says something new."""
        meta = body["metadata"]
        old = BlueprintStatus.model_validate(body.get("status") or {})
        generation = int(meta.get("generation") or 1)
        ready = ("False", "InvalidBlueprint", problem) if problem else ("True", "Valid", "")
        conditions = [c for c in old.conditions if c.type == "Ready"]
        if conditions and (conditions[0].status, conditions[0].reason, conditions[0].message) == (
            ready
        ):
            condition = conditions[0].model_copy(update={"observed_generation": generation})
        else:
            condition = Condition(
                type="Ready",
                status=ready[0],
                reason=ready[1],
                message=(
                    f"revision {generation} is valid"
                    if not problem
                    else f"revision {generation} is invalid, nothing was changed: {problem}"
                )[:1024],
                last_transition_time=timestamps.now(),
                observed_generation=generation,
            )
        new = BlueprintStatus(
            observedGeneration=generation,
            revision=generation if not problem else old.revision,
            conditions=[condition],
            environments=users.total,
            invalid_environments=[
                *users.refused[:REFUSED_SHOWN],
                *(
                    [f"and {len(users.refused) - REFUSED_SHOWN} more"]
                    if len(users.refused) > REFUSED_SHOWN
                    else []
                ),
            ],
        )
        if _comparable(new.to_body()) == _comparable(old.to_body()):
            return
        if problem:
            log.warning("blueprint_invalid", blueprint=meta["name"], message=problem)
        try:
            await retrying(
                lambda: self._cluster.patch_status(
                    "", meta["name"], new.to_body(), resource=history.BLUEPRINTS
                )
            )
        except ApiError as exc:
            log.warning("blueprint_status_failed", blueprint=meta["name"], error=exc.describe())

    def get(self, name: str) -> dict[str, Any] | None:
        """The Blueprint as last seen, if this operator has seen it."""
        return self._known.get(name)


def _problem(body: dict[str, Any]) -> str | None:
    try:
        blueprint.check(parse_blueprint(body.get("spec") or {}))
    except InvalidSpecError as exc:
        return str(exc)
    return None


def _comparable(status: dict[str, Any]) -> dict[str, Any]:
    conditions = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"}
        for c in status.get("conditions") or []
    ]
    return {**status, "conditions": conditions}
