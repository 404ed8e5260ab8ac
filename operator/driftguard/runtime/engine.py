"""Routes the world to the Environments: their changes, watch events, Events to post.

Watches are shared and supervised (`watcher.py`): one per kind that blueprints
use (and per target namespace when the operator is confined to namespaces),
filtered by the server with the `app.kubernetes.io/managed-by=driftguard`
selector, so unrelated objects never reach the operator. Kinds come from the
blueprints and discovery, never a list. The engine writes nothing to managed
objects itself: deletes go through `apply.py`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, cast

from driftguard.core import model, prevention, render, tracking
from driftguard.core.conditions import Reason
from driftguard.core.status import AppliedBlueprint, EnvironmentStatus
from driftguard.core.tenancy import Tenancy, user_of
from driftguard.kube import apply, sources
from driftguard.kube.cluster import ApiError, Cluster, Resource, retrying
from driftguard.kube.watcher import Scope, Timing, Watches
from driftguard.runtime import guard, report
from driftguard.runtime.blueprints import Blueprints, Users
from driftguard.runtime.guard import Settings as GuardSettings
from driftguard.runtime.reconcile import PASSES_AT_ONCE, Environment
from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)

Ident = tuple[str, str]
"""An Environment: (namespace, name)."""

NAMESPACES = Resource("", "v1", "Namespace", "namespaces", namespaced=False)
NAMESPACE_SCOPE = Scope(NAMESPACES, None, "")
"""One unfiltered watch of Namespaces, while an Environment writes outside its own: a
deleted target namespace is reported, and a re-created one applied again at once."""
NAMED_WATCHES = 50
"""An Observe Environment of up to this many objects watches each by name, filtered by the
API server (an idle connection each); one of more watches each of its namespaces whole,
every unrelated event there read and skipped here (about 8 us each)."""


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
    ) -> None:
        self.cluster = cluster
        self.blueprints = Blueprints(cluster, history_namespace)
        self._namespaced = namespaced
        self._tenancy = tenancy or Tenancy()
        self.guard = guard or GuardSettings()
        self.environments: dict[Ident, Environment] = {}
        self.timing = timing or Timing()
        self.watches = Watches(cluster, self, timing=self.timing)
        self._events: asyncio.Queue[tuple[dict[str, Any], str, str, bool]] = asyncio.Queue()
        self._poster: asyncio.Task[None] | None = None
        self._locks: dict[Ident, asyncio.Lock] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._policy_inventory: dict[render.Owner, list[tuple[Resource, dict[str, Any]]]] | None = (
            None
        )
        self._inventory_lock = asyncio.Lock()
        self._passes = asyncio.Semaphore(PASSES_AT_ONCE)
        self.count_users: Callable[[str], Users] | None = None
        """Counts a Blueprint's Environments when this engine keeps only some (shards.py)."""

    # -- Environments ---------------------------------------------------------

    async def environment_changed(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        ident = (meta["namespace"], meta["name"])
        if meta.get("deletionTimestamp"):
            self.forget(ident)
            return
        async with self._locks.setdefault(ident, asyncio.Lock()):
            environment = self.environments.get(ident)
            if environment is None:
                environment = Environment(
                    self.cluster,
                    body,
                    post=self._poster_for(ident),
                    need_watches=lambda *need: self._need(ident, *need),
                    tenancy=self._tenancy,
                    guard=self.guard,
                    leftovers=self._leftover_policies,
                    resolve=self._declared,
                    passes=self._passes,
                )
                environment.ledger.fight_backoff = self.timing.fight_backoff
                self.environments[ident] = environment
            used = environment.blueprint
            await environment.update(body)
        for name in {used, environment.blueprint} - {None}:
            await self._count_users(str(name))

    async def _declared(
        self, body: dict[str, Any]
    ) -> tuple[dict[str, Any], AppliedBlueprint | None]:
        return await sources.declared(
            body, lookup=self.blueprints.lookup, pinned=self.blueprints.pinned
        )

    # -- Blueprints -----------------------------------------------------------

    def _made_from(self, name: str) -> list[Environment]:
        return [env for env in self.environments.values() if env.blueprint == name]

    def _blueprint_users(self, name: str) -> Users:
        """How many Environments use the Blueprint, and which its schema refuses, and why."""
        if self.count_users is not None:
            return self.count_users(name)
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
                    self._spawn(self._pass_and_count(environment, name))

    async def _pass_and_count(self, environment: Environment, name: str) -> None:
        await environment.full_pass()
        await self._count_users(name)

    async def blueprint_deleted(self, name: str) -> None:
        """Its Environments say so (InvalidSpec) and keep their objects as they are."""
        self.blueprints.deleted(name)
        for environment in self._made_from(name):
            self._spawn(environment.full_pass())

    async def _count_users(self, name: str) -> None:
        known = self.blueprints.get(name)
        if known is not None:
            await self.blueprints.changed(known, users=self._blueprint_users(name))

    def forget(self, ident: Ident) -> None:
        """Stops keeping an Environment; its objects stay as they are."""
        environment = self.environments.pop(ident, None)
        if environment is not None:
            environment.stop()
            if environment.blueprint is not None:
                self._spawn(self._count_users(environment.blueprint))
        self.watches.release(ident)

    async def delete_objects(self, body: dict[str, Any]) -> int:
        """The Environment goes: its admission policy always, and with deletionPolicy Delete
        every object carrying its labels (adopted ones are released instead)."""
        meta = body["metadata"]
        ident = (meta["namespace"], meta["name"])
        environment = self.environments.get(ident)
        self.forget(ident)
        owner = render.Owner(name=meta["name"], namespace=meta["namespace"])
        spec = body.get("spec") or {}
        status = EnvironmentStatus.model_validate(body.get("status") or {})
        kinds = {(entry.api_version, entry.kind) for entry in status.resources}
        kinds |= {(m["apiVersion"], m["kind"]) for m in spec.get("resources") or []}
        if environment is not None:
            kinds |= {(key.api_version, key.kind) for key in environment.ledger.tracked}
        target = spec.get("targetNamespace") or owner.namespace
        policies = await apply.delete_labelled(
            self.cluster, await self._policy_scopes(), owner.selector
        )
        if spec.get("deletionPolicy") != model.DeletionPolicy.DELETE:
            kinds = set()  # Orphan: only the admission policy goes
        scopes: list[tuple[Resource, str | None]] = []
        for api_version, kind in sorted(kinds):
            try:
                resource = await self.cluster.resource(api_version, kind)
            except LookupError:
                continue
            scopes.append((resource, target if resource.namespaced else None))
        # As the Environment's identity: deleting is bounded by its RBAC like applying.
        account = spec.get("serviceAccountName") or self._tenancy.default_service_account
        acting = self.cluster.as_user(user_of(owner.namespace, account))
        changes = policies + await apply.delete_labelled(acting, scopes, owner.selector)
        ledger = tracking.Ledger(owner=owner, status=status)
        reporter = report.Reporter(ledger, lambda *event: self.post(body, *event))
        reporter.record(changes)
        failed = [change.message for change in changes if change.is_failure]
        if failed:
            # kopf retries the deletion handler; the finalizer stays until all are gone.
            raise RuntimeError("; ".join(failed))
        return len(changes)

    async def _leftover_policies(
        self, owner: render.Owner
    ) -> list[tuple[Resource, dict[str, Any]]]:
        """The policy objects an Environment had when the operator started: one list of each
        policy kind for all Environments, not two per Environment."""
        async with self._inventory_lock:
            if self._policy_inventory is None:
                inventory: dict[render.Owner, list[tuple[Resource, dict[str, Any]]]] = {}
                for resource, _ in await self._policy_scopes():
                    items, _ = await retrying(
                        lambda r=resource: self.cluster.list_objects(  # type: ignore[misc]
                            r, selector=model.MANAGED_SELECTOR
                        )
                    )
                    for item in items:
                        found = render.owner_of(item)
                        if found is not None:
                            inventory.setdefault(found, []).append((resource, item))
                self._policy_inventory = inventory
        return self._policy_inventory.pop(owner, [])

    async def _policy_scopes(self) -> list[tuple[Resource, str | None]]:
        try:
            return [
                (await self.cluster.resource(guard.API_VERSION, kind), None)
                for kind in (prevention.POLICY, prevention.BINDING)
            ]
        except LookupError:
            return []  # a server without admission policies has none of ours

    async def _need(
        self,
        ident: Ident,
        scopes: set[tuple[Resource, str | None]],
        unlabelled: dict[tuple[Resource, str | None], set[str]],
        identity: str,
        own: set[tuple[Resource, str | None]],
    ) -> list[ApiError]:
        """The watches one Environment needs now; those it no longer needs are released.

        An Observe Environment never labels objects, so the ones it reports on may
        carry no driftguard label: those (`unlabelled`) are watched by name, the API
        server filtering, or past NAMED_WATCHES in all, through an unfiltered watch of
        each namespace. Enforce never needs either: it labels what it applies. An
        impersonated identity watches only its target namespaces: a tenant's
        ServiceAccount can rarely list a kind across the cluster.
        """
        wanted: set[Scope] = set()
        for resource, namespace in scopes:
            is_narrow = (self._namespaced or identity) and resource.namespaced
            where = namespace if is_narrow else None
            wanted.add(Scope(resource, where, model.MANAGED_SELECTOR, identity))
        is_few = sum(len(names) for names in unlabelled.values()) <= NAMED_WATCHES
        for (resource, namespace), names in unlabelled.items():
            if is_few:
                wanted |= {Scope(resource, namespace, "", identity, name=n) for n in names}
            elif resource.namespaced:
                wanted.add(Scope(resource, namespace, "", identity))
        wanted |= {Scope(resource, where, model.MANAGED_SELECTOR) for resource, where in own}
        if any(namespace not in (None, ident[0]) for _, namespace in scopes):
            wanted.add(NAMESPACE_SCOPE)
        self.watches.release(ident, keep=frozenset(wanted))
        for scope in wanted:
            is_unfiltered = not scope.selector and not scope.name and scope != NAMESPACE_SCOPE
            await self.watches.need(
                scope, ident, accept=self._observed(scope) if is_unfiltered else None
            )
        # Not seeing namespaces costs only the quick return of a deleted one: never Forbidden.
        return self.watches.refusals(wanted - {NAMESPACE_SCOPE})

    # -- watch events (watcher.Listener) --------------------------------------

    def event(self, scope: Scope, type_: str, obj: dict[str, Any], received: float) -> None:
        if scope == NAMESPACE_SCOPE:
            meta = obj.get("metadata") or {}
            is_gone = type_ == "DELETED" or bool(meta.get("deletionTimestamp"))
            self._namespace_changed({meta.get("name", "")}, gone=is_gone)
            return
        live = None if type_ == "DELETED" else obj
        key = model.ObjectKey.of(obj)
        owner = render.owner_of(obj)
        if scope.selector:
            environment = self.environments.get((owner.namespace, owner.name)) if owner else None
            if environment is not None:
                environment.observe(key, live, received)
        elif owner is None:  # a labelled one comes through the labelled watch
            for environment in self._users(scope):
                environment.observe(key, live, received)

    def relisted(self, scope: Scope, items: list[dict[str, Any]], received: float) -> None:
        if scope == NAMESPACE_SCOPE:
            present = {
                item["metadata"]["name"]
                for item in items
                if not item["metadata"].get("deletionTimestamp")
            }
            targets = {environment.target_namespace for environment in self._users(scope)}
            self._namespace_changed(targets - present, gone=True)
            self._namespace_changed(targets & present, gone=False)
            return
        for environment in self._users(scope):
            environment.relisted(scope.resource, scope.namespace, items, received, scope.name)

    def refused(self, scope: Scope, error: ApiError) -> None:
        if scope == NAMESPACE_SCOPE:
            return  # the watch logged it; a deleted namespace then waits for the retry
        for environment in self._users(scope):
            environment.refused(error)

    def allowed(self, scope: Scope) -> None:
        if scope == NAMESPACE_SCOPE:
            return
        for environment in self._users(scope):
            self._spawn(environment.full_pass())

    def _namespace_changed(self, names: set[str], *, gone: bool) -> None:
        """Target namespaces deleted (or being deleted), or there again."""
        for environment in self._users(NAMESPACE_SCOPE):
            if environment.target_namespace not in names:
                continue
            if gone and not environment.is_namespace_missing:
                log.warning("namespace_missing", namespace=environment.target_namespace)
                environment.namespace_gone()
            elif not gone and environment.is_namespace_missing:
                log.info("namespace_back", namespace=environment.target_namespace)
                self._spawn(environment.namespace_back())

    def _users(self, scope: Scope) -> list[Environment]:
        found = (self.environments.get(cast(Ident, ident)) for ident in self.watches.users(scope))
        return [environment for environment in found if environment is not None]

    def _observed(self, scope: Scope) -> Callable[[bytes], bool]:
        """Skips, undecoded, events of objects no Observe Environment of this scope tracks.

        An unfiltered watch sees every object of a kind in a namespace, and decoding
        each would cost the most CPU of all. A tracked object's event always holds
        `"name":"<its name>"`; a line without any such name cannot be one of ours.
        Each `"name":"…"` value in the line (a handful) is looked up in the ledgers,
        so an unrelated event costs the same however many objects are tracked.
        """
        resource = scope.resource
        namespace = scope.namespace or ""

        def is_tracked(line: bytes) -> bool:
            if not line.startswith(
                (b'{"type":"ADDED"', b'{"type":"MODIFIED"', b'{"type":"DELETED"')
            ):
                return True  # bookmarks and errors always go through
            users = self._users(scope)
            start = line.find(_NAME)
            while start >= 0:
                start += len(_NAME)
                end = line.find(b'"', start)
                if end < 0:
                    return True  # cannot happen in JSON; let the decoder judge
                key = model.ObjectKey(
                    resource.group,
                    resource.version,
                    resource.kind,
                    namespace,
                    line[start:end].decode(errors="replace"),
                )
                if any(key in environment.ledger.tracked for environment in users):
                    return True
                start = line.find(_NAME, end)
            return False

        return is_tracked

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- Events ---------------------------------------------------------------

    def _poster_for(self, ident: Ident) -> report.Post:
        def post(reason: str, message: str, warning: bool) -> None:
            environment = self.environments.get(ident)
            if environment is not None:
                self.post(environment.body, reason, message, warning)

        return post

    def post(self, env: dict[str, Any], reason: str, message: str, warning: bool) -> None:
        """Queues a Kubernetes Event; posting never delays a revert."""
        if self._poster is None:
            self._poster = asyncio.create_task(self._post_events())
        self._events.put_nowait((env, reason, message, warning))

    async def _post_events(self) -> None:
        while True:
            env, reason, message, warning = await self._events.get()
            try:
                # Retried like any request (a throttled API server must not cost Events).
                post = functools.partial(
                    self.cluster.post_event, env, reason=reason, message=message, warning=warning
                )
                await retrying(post)
            except ApiError as exc:
                log.warning("event_failed", reason=reason, error=exc.describe())

    async def close(self) -> None:
        for ident in list(self.environments):
            self.forget(ident)
        self.watches.close()
        if self._poster is not None:
            self._poster.cancel()


_NAME = b'"name":"'
