"""Which watches each Environment needs, and the filter an unfiltered watch reads through.

Watches are shared and supervised (`kube/watcher.py`): one per kind that blueprints
use (and per target namespace when the operator is confined to namespaces), filtered
by the server with the `app.kubernetes.io/managed-by=driftguard` selector, so
unrelated objects never reach the operator. Kinds come from the blueprints and
discovery, never a list. A full pass asks here for the watches it needs before it
lists; the engine routes what they see.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from driftguard.core import model
from driftguard.core.tracking import Ledger
from driftguard.kube.cluster import Resource
from driftguard.kube.errors import ApiError
from driftguard.kube.watcher import Scope, Watches

NAMESPACES = Resource("", "v1", "Namespace", "namespaces", namespaced=False)
NAMESPACE_SCOPE = Scope(NAMESPACES, None, "")
"""One unfiltered watch of Namespaces, while an Environment writes outside its own: a
deleted target namespace is reported, and a re-created one applied again at once."""
NAMED_WATCHES = 50
"""An Observe Environment of up to this many objects watches each by name, filtered by the
API server (an idle connection each); one of more watches each of its namespaces whole,
every unrelated event there read and skipped here (about 8 us each)."""

Scopes = set[tuple[Resource, str | None]]
Names = dict[tuple[Resource, str | None], set[str]]
_NAME = b'"name":"'


class Subscriptions:
    """The operator's watches, as the Environments need them."""

    def __init__(self, watches: Watches, *, namespaced: bool) -> None:
        self.watches = watches
        self._namespaced = namespaced
        self._ledgers: dict[Hashable, Ledger] = {}

    async def need(
        self,
        ident: tuple[str, str],
        ledger: Ledger,
        scopes: Scopes,
        unlabelled: Names,
        identity: str,
        own: Scopes,
    ) -> list[ApiError]:
        """The watches one Environment needs now; those it no longer needs are released.
        Answers why RBAC refuses any of them.

        `scopes` are (kind, namespace) watched by driftguard's label as `identity` ("":
        the operator); `own` the same as the operator (the Environment's policy). An
        Observe Environment never labels objects, so the ones it reports on may carry no
        driftguard label: those (`unlabelled`) are watched by name, the API server
        filtering, or past NAMED_WATCHES in all, through an unfiltered watch of each
        namespace. Enforce never needs either: it labels what it applies. An
        impersonated identity watches only its target namespaces: a tenant's
        ServiceAccount can rarely list a kind across the cluster.
        """
        self._ledgers[ident] = ledger
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
                scope, ident, accept=self._tracked_by_users(scope) if is_unfiltered else None
            )
        # Not seeing namespaces costs only the quick return of a deleted one: never Forbidden.
        return self.watches.refusals(wanted - {NAMESPACE_SCOPE})

    def release(self, ident: tuple[str, str]) -> None:
        """The Environment is let go: every watch it alone needed stops."""
        self._ledgers.pop(ident, None)
        self.watches.release(ident)

    def _tracked_by_users(self, scope: Scope) -> Callable[[bytes], bool]:
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
            found = (self._ledgers.get(ident) for ident in self.watches.users(scope))
            ledgers = [ledger for ledger in found if ledger is not None]
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
                if any(key in ledger.tracked for ledger in ledgers):
                    return True
                start = line.find(_NAME, end)
            return False

        return is_tracked
