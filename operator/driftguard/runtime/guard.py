"""An Environment's admission policy, kept like a managed object.

After each full pass the policy and its binding (see `prevention.py`) are applied as the
operator, or removed when prevention is Off, the Environment observes or is suspended.
They are tracked beside the managed objects (not counted in status), so a hand edit to
them is reverted like any drift.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from driftguard.core import model, prevention, render
from driftguard.core.changes import Change, ChangeSet
from driftguard.core.model import Mode, ObjectKey, Prevention
from driftguard.core.tracking import Ledger, Tracked
from driftguard.kube import apply
from driftguard.kube.cluster import Cluster, Resource
from driftguard.kube.errors import ApiError
from driftguard.kube.retries import retrying

API_VERSION = f"{prevention.GROUP}/v1"

Found = list[tuple[Resource, dict[str, Any]]]


class PolicyInventory:
    """The policy objects each Environment had when the operator started: one list of each
    policy kind for all Environments, not two per Environment."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster  # the operator: policies are never a tenant's
        self._found: dict[render.Owner, Found] | None = None
        self._lock = asyncio.Lock()

    async def leftovers(self, owner: render.Owner) -> Found:
        """An Environment's policy objects found at start; asked once per Environment."""
        async with self._lock:
            if self._found is None:
                found: dict[render.Owner, Found] = {}
                for resource, _ in await self.scopes():
                    items, _ = await retrying(
                        lambda r=resource: self._cluster.list_objects(  # type: ignore[misc]
                            r, selector=model.MANAGED_SELECTOR
                        )
                    )
                    for item in items:
                        owner_of = render.owner_of(item)
                        if owner_of is not None:
                            found.setdefault(owner_of, []).append((resource, item))
                self._found = found
        return self._found.pop(owner, [])

    async def scopes(self) -> list[tuple[Resource, str | None]]:
        """The policy kinds, cluster-wide; none on a server without admission policies."""
        try:
            return [
                (await self._cluster.resource(API_VERSION, kind), None)
                for kind in (prevention.POLICY, prevention.BINDING)
            ]
        except LookupError:
            return []


@dataclass(frozen=True, slots=True)
class Settings:
    """The operator's side of prevention."""

    operator_user: str = ""  # from a SelfSubjectReview at start-up
    break_glass_groups: tuple[str, ...] = ()


class Guard:
    def __init__(
        self, cluster: Cluster, ledger: Ledger, settings: Settings, inventory: PolicyInventory
    ) -> None:
        self._cluster = cluster  # the operator itself: tenants may not write policies
        self._ledger = ledger
        self._settings = settings
        self._inventory = inventory
        self._is_checked = False

    def use(self, cluster: Cluster, inventory: PolicyInventory, operator_user: str) -> None:
        """Another cluster (a remote one, or its new client): its policies, its operator."""
        self._cluster, self._inventory = cluster, inventory
        if operator_user:
            self._settings = dataclasses.replace(self._settings, operator_user=operator_user)
        self._is_checked = False

    @property
    def cluster(self) -> Cluster:
        """The operator in the cluster the policy objects are in."""
        return self._cluster

    def expected(self) -> prevention.Enforced:
        """What the policy objects last written ask the API server to enforce."""
        return prevention.Enforced.of(tracked.desired for tracked in self._ledger.policies.values())

    @property
    def is_active(self) -> bool:
        spec = self._ledger.spec
        return (
            spec is not None
            and spec.prevention is not Prevention.OFF
            and self._ledger.mode is Mode.ENFORCE
            and self._ledger.ready[0]
        )

    async def kinds(self) -> list[Resource]:
        return [
            await self._cluster.resource(API_VERSION, kind)
            for kind in (prevention.POLICY, prevention.BINDING)
        ]

    async def sync(self, identity: str) -> ChangeSet:
        """Applies the policy the Environment needs now and removes any other of its own."""
        return ChangeSet.of(await self._sync(identity))

    async def _sync(self, identity: str) -> list[Change]:
        changes: list[Change] = []
        if not self.is_active and not self._ledger.policies:
            if self._is_checked:
                return changes  # prevention off, and nothing of ours left
            # Once per start, from one operator-wide list: a policy left behind when
            # prevention went Off while the operator was down.
            self._is_checked = True
            try:
                stale = await self._inventory.leftovers(self._ledger.owner)
                return self._removed(await apply.prune(self._cluster, stale))
            except ApiError as exc:
                return [apply.refused_kind(exc)]
        try:
            resources = {resource.kind: resource for resource in await self.kinds()}
            docs = self._desired(identity) if self.is_active else []
            wanted = {ObjectKey.of(doc): doc for doc in docs}
            for key in [key for key in self._ledger.policies if key not in wanted]:
                del self._ledger.policies[key]
            selector = self._ledger.owner.selector
            stale = []
            for resource in resources.values():
                items, _ = await self._cluster.list_objects(resource, selector=selector)
                stale += [(resource, item) for item in items if ObjectKey.of(item) not in wanted]
            self._is_checked = True
            changes += self._removed(await apply.prune(self._cluster, stale))
            for key, doc in wanted.items():
                resource = resources[key.kind]
                stored = await apply.put(self._cluster, resource, doc)
                tracked = self._ledger.policies.get(key) or Tracked(key, resource, doc)
                tracked.desired = doc
                tracked.learn(stored, mode=Mode.ENFORCE)
                tracked.state = model.State.IN_SYNC
                self._ledger.policies[key] = tracked
        except (ApiError, LookupError) as exc:
            if isinstance(exc, ApiError):
                changes.append(apply.refused_kind(exc))
        return changes

    def _removed(self, changes: Iterable[Change]) -> list[Change]:
        """Pruned policy objects say why they went."""
        why = self._why_off()
        return [
            change if change.is_failure else replace(change, message=f"{change.key} removed: {why}")
            for change in changes
        ]

    def _why_off(self) -> str:
        spec, ledger = self._ledger.spec, self._ledger
        if spec is None or spec.prevention is Prevention.OFF:
            return "prevention is Off"
        if ledger.paused_until:
            return f"prevention paused until {ledger.paused_until}"
        if ledger.mode is not Mode.ENFORCE:
            return "prevention needs Enforce (Observe and suspend write nothing)"
        if not ledger.ready[0]:
            return "the blueprint is not applied (Ready=False)"
        return "replaced by the current policy"

    def _desired(self, identity: str) -> list[dict[str, Any]]:
        ledger = self._ledger
        assert ledger.spec is not None
        spec = ledger.spec
        index = {(m["kind"], m["metadata"]["name"]): i for i, m in enumerate(spec.resources)}
        guarded = [
            prevention.Guarded(
                key=tracked.key,
                resource=tracked.resource,
                index=index.get((tracked.key.kind, tracked.key.name), 0),
                expectation=tracked.expectation,
                rules=[rule for rule in spec.allowed_changes if rule.matches(tracked.key)],
            )
            for tracked in ledger.tracked.values()
            if tracked.expectation is not None and tracked.state is not model.State.CONFLICT
        ]
        return prevention.policy_manifests(
            owner_namespace=ledger.owner.namespace,
            owner_name=ledger.owner.name,
            deny=spec.prevention is Prevention.DENY,
            objects=guarded,
            exempt_users=[self._settings.operator_user, identity],
            exempt_groups=self._settings.break_glass_groups,
            blueprint=ledger.status.blueprint.name if ledger.status.blueprint else None,
        )
