"""Peering: a replica that kopf pauses stops driftguard's own watches and loops too.

kopf's peering pauses kopf's watch of Environments while a peer with a higher (or the
same) priority is alive. The watches, judges and resyncs that revert drift are
driftguard's, not kopf's: left running, a replica outranked after it started (a
rollout's new Pod) would keep reverting beside the one that acts. kopf does not expose
its pause, so this reads the peering object kopf keeps, every quarter of the lifetime,
and applies kopf's rule to it. Once outranked, every Environment is forgotten; when
the replica acts again, kopf lists the Environments anew and they come back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from driftguard.kube.cluster import Cluster, Resource
from driftguard.kube.errors import ApiError
from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)

CLUSTER_PEERINGS = Resource(
    "zalando.org", "v1", "ClusterKopfPeering", "clusterkopfpeerings", namespaced=False
)
PEERINGS = Resource("zalando.org", "v1", "KopfPeering", "kopfpeerings", namespaced=True)


class Forgetful(Protocol):
    environments: Mapping[tuple[str, str], Any]

    def forget(self, ident: tuple[str, str]) -> None: ...


def is_outranked(peers: Mapping[str, Any], *, identity: str, priority: int, now: datetime) -> bool:
    """kopf's rule: a live peer of a higher or the same priority pauses this one."""
    for name, info in peers.items():
        if name == identity or not isinstance(info, Mapping):
            continue
        try:
            seen = datetime.fromisoformat(str(info.get("lastseen")))
            lifetime = timedelta(seconds=int(info.get("lifetime", 60)))
            rank = int(info.get("priority", 0))
        except (TypeError, ValueError):
            continue  # not a peer kopf wrote
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=UTC)
        if seen + lifetime > now and rank >= priority:
            return True
    return False


async def follow(
    cluster: Cluster,
    engine: Forgetful,
    *,
    name: str,
    namespaces: Iterable[str],
    identity: str,
    priority: int,
    lifetime: float,
    on_role: Callable[[bool], None] | None = None,
) -> None:
    """Stands the engine by whenever a peer outranks this replica; runs until cancelled.
    `on_role` hears after each reading whether the replica stands by (readiness)."""
    places = list(namespaces) or [""]
    resource = PEERINGS if places != [""] else CLUSTER_PEERINGS
    standing_by = False
    while True:
        try:
            outranked = False
            for namespace in places:
                found = await cluster.get(resource, namespace, name)
                peers = (found or {}).get("status") or {}
                now = datetime.now(UTC)
                outranked |= is_outranked(peers, identity=identity, priority=priority, now=now)
        except ApiError as exc:
            log.warning("peering_unreadable", error=exc.describe())
        else:
            if outranked and not standing_by:
                log.info("standing_by", environments=len(engine.environments))
                for ident in list(engine.environments):
                    engine.forget(ident)
            elif standing_by and not outranked:
                log.info("acting")
            standing_by = outranked
            if on_role is not None:
                on_role(outranked)
        await asyncio.sleep(max(1.0, lifetime / 4))
