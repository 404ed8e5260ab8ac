"""The clusters Environments act in: this one, and remote ones named by a kubeconfig Secret.

One `Link` per kubeconfig Secret (namespace, name, key): one client and one set of
watches in that cluster, shared by every Environment that names the Secret, closed when
the last one lets it go. While a remote Link is in use a keeper asks its API server
every few seconds whether it answers, and reads the Secret again: a cluster that stops
answering makes only its own Environments not Ready (`ClusterUnreachable`), a changed
Secret is used at once (a rotated token), and a cluster that answers again gets a full
pass of each Environment, which reverts or flags what drifted while it was away.

The Secret is read as the operator, in the Environment's own namespace only. Its
kubeconfig is judged by `core/kubeconfig.py` before anything connects with it. Status,
Events, history and the audit trail are never written through a Link: they stay with
the Environment, in this cluster. Nothing here writes to a managed object.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from driftguard.core import kubeconfig
from driftguard.core.conditions import Reason
from driftguard.kube import client
from driftguard.kube.client import KubeCluster
from driftguard.kube.cluster import Cluster, Resource
from driftguard.kube.errors import ApiError
from driftguard.kube.watcher import Listener, Scope, Timing, Watches
from driftguard.runtime.guard import PolicyInventory
from driftguard.runtime.subscriptions import Subscriptions
from driftguard.telemetry import metrics
from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)

Ident = tuple[str, str]
Key = tuple[str, str, str]
"""A kubeconfig Secret: (namespace, name, key)."""

SECRETS = Resource("", "v1", "Secret", "secrets", namespaced=True)

CLUSTER_UNREACHABLE = Reason.CLUSTER_UNREACHABLE
KUBECONFIG_INVALID = Reason.KUBECONFIG_INVALID
"""Ready's reasons: the remote cluster does not answer; its kubeconfig cannot be used."""

CHECK_S = 5.0
"""A reachable remote cluster is asked this often (and its Secret read again)."""
DOWN_CHECK_CAP_S = 15.0
"""An unreachable one is asked again after 1 s, doubling up to this."""
SYNC_S = 15.0
"""A remote watch's first list may take this long before a pass gives up on it."""


class UnusableError(Exception):
    """The Environment's cluster cannot be used now: Ready's reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(eq=False)
class Link:
    """One cluster: its client, its watches, the Environments that use it."""

    key: Key
    cluster: Cluster
    subscriptions: Subscriptions
    inventory: PolicyInventory
    fingerprint: str = ""
    users: set[Ident] = field(default_factory=set)
    problem: UnusableError | None = None
    """Why its Environments cannot act now (unreachable, or a bad kubeconfig); None: fine."""
    generation: int = 0
    """Grows each time the client is replaced (a rotated Secret): Environments rebind."""
    operator_user: str = ""
    """Who the operator is there (prevention lets it through); empty: this cluster's."""
    announced: int = 0
    """The generation its Environments were last told is up."""
    keeper: asyncio.Task[None] | None = None

    @property
    def is_local(self) -> bool:
        return not self.key[1]

    @property
    def label(self) -> str:
        """The metrics' `cluster` label: the Secret's namespace/name, never the server's URL
        (it may carry credentials); empty for this cluster."""
        return "" if self.is_local else f"{self.key[0]}/{self.key[1]}"

    def describe(self) -> str:
        return "this cluster" if self.is_local else f"the cluster of Secret {self.label}"


Listening = Callable[[Link], Listener]
"""The listener of a Link's watches: the engine, told which cluster they are in."""


class Links:
    """The local Link, and the remote ones in use."""

    def __init__(
        self,
        local: Link,
        *,
        listener: Listening,
        timing: Timing,
        namespaced: bool,
        allow_exec: bool = False,
        on_down: Callable[[Link], None] = lambda link: None,
        on_up: Callable[[Link], None] = lambda link: None,
    ) -> None:
        self.local = local
        self._home = local.cluster
        self._listener = listener
        self._timing = timing
        self._namespaced = namespaced
        self._allow_exec = allow_exec
        self._on_down, self._on_up = on_down, on_up
        self.remote: dict[Key, Link] = {}
        self._bound: dict[Ident, Key] = {}
        self._making: dict[Key, asyncio.Lock] = {}

    async def acquire(self, ident: Ident, ref: tuple[str, str] | None) -> Link:
        """The Link of an Environment (ref: its kubeConfig Secret name and key; None: this
        cluster). UnusableError says why it cannot be used now; it is tried again at the
        Environment's next pass."""
        if ref is None:
            self.release(ident)
            return self.local
        key = (ident[0], *ref)
        if self._bound.get(ident) not in (None, key):
            self.release(ident)
        async with self._making.setdefault(key, asyncio.Lock()):
            link = self.remote.get(key)
            if link is None:
                link = await self._connect(key)
                self.remote[key] = link
                link.keeper = asyncio.create_task(self._keep(link))
                self._export()
        link.users.add(ident)
        self._bound[ident] = key
        if link.problem is not None:
            raise link.problem
        return link

    def release(self, ident: Ident) -> None:
        """The Environment no longer uses its remote Link: closed with its last user."""
        key = self._bound.pop(ident, None)
        link = self.remote.get(key) if key is not None else None
        if link is None:
            return
        link.users.discard(ident)
        link.subscriptions.release(ident)
        if not link.users:
            del self.remote[link.key]
            asyncio.get_running_loop().create_task(self._close(link))
            with contextlib.suppress(KeyError):
                metrics.cluster_connected.remove(link.label)
            self._export()

    def link_of(self, ident: Ident) -> Link:
        key = self._bound.get(ident)
        return self.remote.get(key, self.local) if key is not None else self.local

    async def close(self) -> None:
        for link in list(self.remote.values()):
            await self._close(link)
        self.remote.clear()

    # -- connecting -------------------------------------------------------------

    async def _connect(self, key: Key) -> Link:
        """A Link for the Secret; when it cannot be used, one that says why (problem)."""
        link = Link(key, self._home, *self._parts(self._home))
        link.subscriptions, link.inventory = self._parts(self._home, link)
        link.problem = UnusableError(CLUSTER_UNREACHABLE, "not connected yet")
        if await self._refresh(link):
            await self._check(link)
        return link

    def _parts(
        self, cluster: Cluster, link: Link | None = None
    ) -> tuple[Subscriptions, PolicyInventory]:
        listener = self._listener(link) if link is not None else _NOBODY
        watches = Watches(cluster, listener, timing=self._timing, sync_s=SYNC_S)
        return Subscriptions(watches, namespaced=self._namespaced), PolicyInventory(cluster)

    async def _refresh(self, link: Link) -> bool:
        """Reads the Secret; a changed kubeconfig replaces the client and its watches (the
        old credentials are dropped at once: a rotation may be a revocation). False when
        it cannot be used (the Link's problem says why)."""
        namespace, name, item = link.key
        where = f"Secret {namespace}/{name} key {item}"
        try:
            text = await self._read(namespace, name, item, where)
        except (kubeconfig.RefusedError, ApiError) as exc:
            self._mark(link, UnusableError(KUBECONFIG_INVALID, _said(exc)))
            return False
        print_ = kubeconfig.fingerprint(text)
        if print_ == link.fingerprint:
            return link.problem is None or link.problem.reason == CLUSTER_UNREACHABLE
        link.fingerprint = print_
        old = link.cluster, link.subscriptions
        if old[0] is not self._home:
            log.info("kubeconfig_changed", cluster=link.label)
            old[1].watches.close()
            await _quietly_close(old[0])
        try:
            config = kubeconfig.load(text, where=where, allow_exec=self._allow_exec)
            home = self._home if isinstance(self._home, KubeCluster) else None
            remote = await client.connect_remote(config, gate_of=home)
        except (kubeconfig.RefusedError, ApiError) as exc:
            self._mark(link, UnusableError(KUBECONFIG_INVALID, _said(exc)))
            return False
        link.cluster, link.operator_user = remote, ""
        link.subscriptions, link.inventory = self._parts(remote, link)
        link.generation += 1
        return True

    async def _read(self, namespace: str, name: str, item: str, where: str) -> bytes:
        try:
            secret = await self._home.get(SECRETS, namespace, name)
        except ApiError as exc:
            if exc.status == 403:
                raise ApiError(
                    403,
                    "Forbidden",
                    f"the operator may not read {where}: grant it get on Secrets in "
                    f"{namespace} (the chart's value clusters.enabled=true does)",
                ) from exc
            raise
        encoded = ((secret or {}).get("data") or {}).get(item)
        if secret is None:
            raise kubeconfig.RefusedError(f"{where}: the Secret does not exist")
        if not encoded:
            raise kubeconfig.RefusedError(f"{where}: the Secret has no key {item}")
        try:
            return base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise kubeconfig.RefusedError(f"{where} is not valid base64") from exc

    # -- keeping ---------------------------------------------------------------

    async def _keep(self, link: Link) -> None:
        failures = 0
        while link.key in self.remote:
            delay = CHECK_S if link.problem is None else min(DOWN_CHECK_CAP_S, 2.0**failures)
            await asyncio.sleep(delay)
            try:
                if await self._refresh(link):
                    await self._check(link)
            except Exception:
                log.exception("cluster_check_failed", cluster=link.label)
            failures = 0 if link.problem is None else failures + 1

    async def _check(self, link: Link) -> None:
        """Does the API server answer? Marks the Link up or down, and says so once; up
        with a new client, its Environments bind to it."""
        if not isinstance(link.cluster, KubeCluster) or link.cluster is self._home:
            return  # no usable kubeconfig: _refresh said why
        try:
            await client.version(link.cluster, timeout_s=client.REMOTE_CONNECT_S)
            if not link.operator_user:  # prevention lets the operator's own writes through
                link.operator_user = await link.cluster.whoami()
        except ApiError as exc:
            message = (
                f"{link.describe()} does not answer ({exc.describe()}): its objects are "
                "neither checked nor reverted until it does; retried with backoff"
            )
            self._mark(link, UnusableError(CLUSTER_UNREACHABLE, message))
            return
        was = link.problem
        link.problem = None
        metrics.cluster_connected.labels(link.label).set(1)
        self._export()
        if was is not None or link.announced != link.generation:
            link.announced = link.generation
            log.info("cluster_reachable", cluster=link.label)
            self._on_up(link)

    def _mark(self, link: Link, problem: UnusableError) -> None:
        was = link.problem
        link.problem = problem
        metrics.cluster_connected.labels(link.label).set(0)
        self._export()
        if was is None or was.message != problem.message:
            log.warning("cluster_unusable", cluster=link.label, reason=problem.reason)
            self._on_down(link)

    def _export(self) -> None:
        metrics.clusters_connected.set(
            sum(1 for link in self.remote.values() if link.problem is None)
        )

    async def _close(self, link: Link) -> None:
        if link.keeper is not None:
            link.keeper.cancel()
        link.subscriptions.watches.close()
        if link.cluster is not self._home:
            await _quietly_close(link.cluster)


class _Nobody:
    """The listener of a Link not made yet: it has no watches."""

    def event(self, scope: Scope, type_: str, obj: dict[str, Any], received: float) -> None:
        pass

    def relisted(self, scope: Scope, items: list[dict[str, Any]], received: float) -> None:
        pass

    def refused(self, scope: Scope, error: ApiError) -> None:
        pass

    def allowed(self, scope: Scope) -> None:
        pass


_NOBODY = _Nobody()


def _said(exc: Exception) -> str:
    return exc.describe() if isinstance(exc, ApiError) else str(exc)


async def _quietly_close(cluster: Cluster) -> None:
    if isinstance(cluster, KubeCluster):
        with contextlib.suppress(Exception):
            await cluster.close()
