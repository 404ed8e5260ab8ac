"""Routes the world to the Environments: their changes and the events their watches see.

Which watches each Environment needs is `subscriptions.py`'s; Events are posted by
`events.py`; each Environment keeps itself (`reconcile.py`). The engine writes nothing
to managed objects itself: deletes go through `kube/apply.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from driftguard.core import exception, render, tracking
from driftguard.core.conditions import Reason
from driftguard.core.declared import Declared
from driftguard.core.exception import Judged
from driftguard.core.status import EnvironmentStatus
from driftguard.core.tenancy import Tenancy, user_of
from driftguard.kube import apply
from driftguard.kube.cluster import Cluster, Resource
from driftguard.kube.errors import ApiError
from driftguard.kube.watcher import Scope, Timing, Watches
from driftguard.runtime import clusters, report
from driftguard.runtime.blueprints import Blueprints, Users
from driftguard.runtime.events import EventPoster
from driftguard.runtime.exceptions import ExceptionBook
from driftguard.runtime.guard import PolicyInventory
from driftguard.runtime.guard import Settings as GuardSettings
from driftguard.runtime.reconcile import PASSES_AT_ONCE, Environment
from driftguard.runtime.routing import Router
from driftguard.runtime.subscriptions import Subscriptions
from driftguard.runtime.witness import Witness
from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)

Ident = tuple[str, str]
"""An Environment: (namespace, name)."""


class Engine:
    def __init__(
        self,
        cluster: Cluster,
        *,
        namespaced: bool = False,
        timing: Timing | None = None,
        tenancy: Tenancy | None = None,
        guard: GuardSettings | None = None,
        history_namespace: str = "driftguard-system",
        witness: Witness | None = None,
        max_exception_s: float = exception.DEFAULT_MAX_S,
        exception_approvers: str = "",
        allow_exec: bool = False,
    ) -> None:
        """`allow_exec`: remote kubeconfigs may run programs and read files (unsafe)."""
        self.cluster = cluster
        self.witness = witness  # who is behind a drift (the attribution webhook), if it is on
        signer = witness.signer if witness is not None else None
        self.blueprints = Blueprints(cluster, history_namespace, signer=signer)
        self.exceptions = ExceptionBook(cluster, max_exception_s, signer, exception_approvers)
        self._namespaced = namespaced
        self._tenancy = tenancy or Tenancy()
        self.guard = guard or GuardSettings()
        self.environments: dict[Ident, Environment] = {}
        self.timing = timing or Timing()
        local = clusters.Link(
            ("", "", ""),
            cluster,
            Subscriptions(Watches(cluster, self, timing=self.timing), namespaced=namespaced),
            PolicyInventory(cluster),
        )
        self._local = Router(self, local)
        self.links = clusters.Links(
            local,
            listener=lambda link: Router(self, link),
            timing=self.timing,
            namespaced=namespaced,
            allow_exec=allow_exec,
            on_down=lambda link: Router(self, link).down(),
            on_up=lambda link: Router(self, link).up(),
        )
        self.events = EventPoster(cluster)
        self._locks: dict[Ident, asyncio.Lock] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._passes = asyncio.Semaphore(PASSES_AT_ONCE)
        self._census: Callable[[str], Users] | None = None
        self.replica: str | None = None

    @property
    def subscriptions(self) -> Subscriptions:
        """This cluster's watches, as the Environments need them (remote ones: `links`)."""
        return self.links.local.subscriptions

    @property
    def inventory(self) -> PolicyInventory:
        return self.links.local.inventory

    @property
    def watches(self) -> Watches:
        return self.subscriptions.watches

    def use_watches(self, watches: Watches) -> None:
        """Sharding: watches that carry this replica's share (before any is needed)."""
        self.subscriptions.watches = watches

    def count_users_with(self, census: Callable[[str], Users]) -> None:
        """Sharding: a Blueprint's Environments are counted across replicas, not here."""
        self._census = census

    # -- Environments ---------------------------------------------------------

    async def environment_changed(self, declared: Declared) -> None:
        ident = declared.ident
        if declared.is_deleted:
            self.forget(ident)
            return
        async with self._locks.setdefault(ident, asyncio.Lock()):
            environment = self.environments.get(ident)
            if environment is None:
                environment = Environment(
                    self.cluster,
                    declared,
                    events=self.events,
                    subscriptions=self.subscriptions,
                    tenancy=self._tenancy,
                    guard=self.guard,
                    inventory=self.inventory,
                    blueprints=self.blueprints,
                    passes=self._passes,
                    witness=self.witness,
                    exceptions=lambda: self._exceptions_for(ident),
                    bind=lambda d: self.links.acquire(d.ident, d.kube_config),
                )
                environment.ledger.fight_backoff = self.timing.fight_backoff
                _name_shard(environment.ledger, self.replica)
                self.environments[ident] = environment
            used = environment.blueprint
            await environment.update(declared)
        for name in {used, environment.blueprint} - {None}:
            await self._count_users(str(name))

    # -- DriftExceptions -------------------------------------------------------

    async def exception_changed(self, body: dict[str, Any], *, deleted: bool = False) -> None:
        """A DriftException came, changed or went: its Environment judges everything again."""
        ident = self.exceptions.remove(body) if deleted else self.exceptions.put(body)
        if (environment := self.environments.get(ident)) is not None:  # else another's share
            await environment.full_pass()

    def _exceptions_for(self, ident: Ident) -> list[Judged]:
        """Asked by each full pass: each one as it stands; its status follows."""
        if self.exceptions.has(ident):
            self.spawn(self.exceptions.publish(ident))
        return self.exceptions.judged(ident)

    # -- Blueprints -----------------------------------------------------------

    def _made_from(self, name: str) -> list[Environment]:
        return [env for env in self.environments.values() if env.blueprint == name]

    def _blueprint_users(self, name: str) -> Users:
        """How many Environments use the Blueprint, and which its schema refuses, and why."""
        if self._census is not None:
            return self._census(name)
        users = self._made_from(name)
        refused = [
            f"{env.owner.namespace}/{env.owner.name}: {env.ledger.ready[2]}"
            for env in users
            if env.ledger.ready[1] == Reason.INVALID_SPEC
            and env.ledger.ready[2].startswith("spec.values")
        ]
        return Users(len(users), tuple(sorted(refused)))

    async def blueprint_changed(self, body: dict[str, Any]) -> None:
        """A Blueprint's new revision reaches every Environment made from it (unless pinned)."""
        name = body["metadata"]["name"]
        is_new = await self.blueprints.changed(body, users=self._blueprint_users(name))
        if is_new:
            for environment in self._made_from(name):
                if environment.follows(self.blueprints.generation(name)):
                    self.spawn(self._pass_and_count(environment, name))

    async def _pass_and_count(self, environment: Environment, name: str) -> None:
        await environment.full_pass()
        await self._count_users(name)

    async def blueprint_deleted(self, name: str) -> None:
        """Its Environments say so (InvalidSpec) and keep their objects as they are."""
        self.blueprints.deleted(name)
        for environment in self._made_from(name):
            self.spawn(environment.full_pass())

    async def _count_users(self, name: str) -> None:
        known = self.blueprints.get(name)
        if known is not None:
            await self.blueprints.changed(known, users=self._blueprint_users(name))

    def forget(self, ident: Ident, *, keep_link: bool = False) -> None:
        """Stops keeping an Environment; its objects stay as they are."""
        environment = self.environments.pop(ident, None)
        if environment is not None:
            environment.stop()
            if environment.blueprint is not None:
                self.spawn(self._count_users(environment.blueprint))
        self.subscriptions.release(ident)
        if not keep_link:
            self.links.release(ident)

    async def delete_objects(self, declared: Declared) -> int:
        """The Environment goes: its admission policy always, and with deletionPolicy Delete
        every object carrying its labels (adopted ones are released instead)."""
        ident = declared.ident
        body = declared.body
        environment = self.environments.get(ident)
        try:
            link = await self.links.acquire(ident, declared.kube_config)
        except clusters.UnusableError as exc:
            if declared.deletes_objects:
                # kopf retries the deletion handler; the finalizer stays until they are gone.
                raise RuntimeError(f"its objects cannot be deleted now: {exc.message}") from exc
            log.warning("cluster_unusable_on_delete", reason=exc.reason, message=exc.message)
            self.forget(ident)
            return 0
        self.forget(ident, keep_link=True)  # released once its objects are gone
        owner = render.Owner(name=declared.name, namespace=declared.namespace)
        status = EnvironmentStatus.model_validate(body.get("status") or {})
        kinds = {(entry.api_version, entry.kind) for entry in status.resources}
        kinds |= declared.kinds
        if environment is not None:
            kinds |= {(key.api_version, key.kind) for key in environment.ledger.tracked}
        namespace = declared.target_namespace
        target = link.cluster
        policies = await apply.delete_labelled(
            target, await link.inventory.scopes(), owner.selector
        )
        if not declared.deletes_objects:
            kinds = set()  # Orphan: only the admission policy goes
        scopes: list[tuple[Resource, str | None]] = []
        for api_version, kind in sorted(kinds):
            try:
                resource = await target.resource(api_version, kind)
            except LookupError:
                continue
            scopes.append((resource, namespace if resource.namespaced else None))
        # As the Environment's identity: deleting is bounded by its RBAC like applying.
        account = declared.service_account_name or self._tenancy.default_service_account
        if account and self._tenancy.is_protected(owner.namespace):
            scopes = []  # every pass refused to act as it: nothing was ever applied as it
        acting = target.as_user(user_of(owner.namespace, account))
        try:
            changes = policies + await apply.delete_labelled(acting, scopes, owner.selector)
        finally:
            self.links.release(ident)
        ledger = tracking.Ledger(owner=owner, status=status)
        report.Reporter(ledger, self.events, body).record(changes)
        failed = [change.message for change in changes if change.is_failure]
        if failed:
            # kopf retries the deletion handler; the finalizer stays until all are gone.
            raise RuntimeError("; ".join(failed))
        return len(changes)

    # -- watch events of this cluster's watches (watcher.Listener) -------------

    def event(self, scope: Scope, type_: str, obj: dict[str, Any], received: float) -> None:
        self._local.event(scope, type_, obj, received)

    def relisted(self, scope: Scope, items: list[dict[str, Any]], received: float) -> None:
        self._local.relisted(scope, items, received)

    def refused(self, scope: Scope, error: ApiError) -> None:
        self._local.refused(scope, error)

    def allowed(self, scope: Scope) -> None:
        self._local.allowed(scope)

    def spawn(self, work: Any) -> None:
        """Runs `work` in the background, kept until it ends."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        for ident in list(self.environments):
            self.forget(ident)
        self.watches.close()
        await self.links.close()
        self.events.close()


def _name_shard(ledger: tracking.Ledger, replica: str | None) -> None:
    """Sharding: status.shard in an Environment's first write here (one write, not two)."""
    if replica is not None and ledger.status.shard != replica:
        ledger.status = ledger.status.model_copy(update={"shard": replica})
