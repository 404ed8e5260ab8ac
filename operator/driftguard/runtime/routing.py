"""Where watch events go: to the Environments that act in the cluster the watch is in.

One `Router` per cluster (a `clusters.Link`): this cluster's, and each remote one's.
Labelled objects go to the Environment their labels name, if it acts in that cluster;
unlabelled ones (Observe) and Namespaces to every Environment that needs the watch. A
cluster that stops answering, or answers again, is told to its Environments here.
Nothing here talks to the API server.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from driftguard.core import model, render
from driftguard.kube.errors import ApiError
from driftguard.kube.watcher import Scope
from driftguard.runtime.clusters import Link, Links
from driftguard.runtime.reconcile import Environment
from driftguard.runtime.subscriptions import NAMESPACE_SCOPE
from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)

Ident = tuple[str, str]


class Keeper(Protocol):
    """The engine, as routing sees it."""

    environments: dict[Ident, Environment]
    links: Links

    def spawn(self, work: Any) -> None: ...


class Router:
    """The watcher.Listener of one cluster's watches."""

    def __init__(self, engine: Keeper, link: Link) -> None:
        self._engine, self._link = engine, link

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
            ident = (owner.namespace, owner.name) if owner else None
            environment = self._engine.environments.get(ident) if ident else None
            # Only the cluster it acts in speaks for it: another may hold lookalikes.
            if environment is not None and self._engine.links.link_of(ident) is self._link:  # type: ignore[arg-type]
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
            self._engine.spawn(environment.full_pass())

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
                self._engine.spawn(environment.namespace_back())

    def _users(self, scope: Scope) -> list[Environment]:
        users = self._link.subscriptions.watches.users(scope)
        found = (self._engine.environments.get(cast(Ident, ident)) for ident in users)
        return [environment for environment in found if environment is not None]

    def down(self) -> None:
        """Its Environments say why they cannot act (Ready=False), at once."""
        for ident in sorted(self._link.users):
            environment = self._engine.environments.get(ident)
            if environment is not None and self._link.problem is not None:
                environment.unusable(self._link.problem)

    def up(self) -> None:
        """A full pass each: what drifted while it was away is reverted or flagged now."""
        for ident in sorted(self._link.users):
            environment = self._engine.environments.get(ident)
            if environment is not None:
                self._engine.spawn(environment.full_pass())
