"""The kubelet's probes: /livez (also /healthz), /readyz, answered from memory at each request.

Each answer is computed when the probe asks, from state the operator keeps anyway (the
watches' health, which Environments have been taken up, the Lease, the peering role):
no API call per probe and no cached verdict, so a watch that goes down shows within one
probe period.

Live: every watch of this cluster is up, or down for less than the grace period (a watch
RBAC refuses does not count: a restart would not fix it), and no watch's supervising loop
has ended. What a restart cannot fix never fails liveness.

Ready, per mode (docs/reliability.md, "Probes"):
- standalone: every Environment that existed at start has been taken up (its first pass
  done, whatever it found: applied, invalid, forbidden), and the webhook, if any, serves;
- peering: the replica knows its role. One that stands by is ready: it answers the
  webhook, and a rollout must be able to pass it. The acting one is ready as standalone;
- sharding: it holds a valid Lease, and the Environments of its share at start have been
  taken up. A replica that cannot renew is not ready until it holds a Lease again.

Readiness latches the start: an Environment created later, or a share that moves, does not
make a ready replica unready (only the Lease does, when sharding).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp import web

from driftguard.kube.cluster import ENVIRONMENTS, Cluster
from driftguard.kube.errors import ApiError
from driftguard.kube.watcher import Watches
from driftguard.telemetry.logs import get as get_logger

log = get_logger(__name__)

Ident = tuple[str, str]

RELIST_S = 10.0
"""While not ready: how often the Environments still awaited are checked to exist (one
deleted before kopf listed it would never be taken up)."""


class Lease(Protocol):
    valid_until: float  # monotonic


class Watching(Protocol):
    @property
    def watches(self) -> Watches: ...


@dataclass
class Probes:
    """What the probes answer; the handlers and the daemon tell it what happens."""

    watch_grace: float
    peering: bool = False
    engine: Watching | None = None  # set once the engine exists (on startup)
    lease: Lease | None = None  # sharding: this replica's share
    standing_by: bool | None = None  # peering: None until the peering object was read
    pending: set[Ident] | None = None  # awaited Environments; None until listed
    is_taken_up: bool = False  # every Environment at start was taken up (latched)
    _taken: set[Ident] = field(default_factory=set, repr=False)  # until latched
    _relisting: asyncio.Task[None] | None = field(default=None, repr=False)

    # -- what happens ----------------------------------------------------------

    def started(self, engine: Watching, *, lease: Lease | None = None) -> None:
        self.engine, self.lease = engine, lease

    def role(self, *, standing_by: bool) -> None:
        """Peering: the replica read the peering object and knows whether it stands by."""
        if standing_by != self.standing_by:
            log.info("probe_role", standing_by=standing_by)
        self.standing_by = standing_by

    def expect(self, idents: Iterable[Ident]) -> None:
        """The Environments there at start: ready once each is taken up (or gone)."""
        found = set(idents) - self._taken  # kopf may have handed some over already
        # Listed again: only what still exists is awaited.
        self.pending = found if self.pending is None else self.pending & found
        self._settle()

    def taken_up(self, ident: Ident) -> None:
        """kopf handed this Environment over and the operator dealt with it (or it went)."""
        if self.is_taken_up:
            return
        self._taken.add(ident)
        if self.pending is not None:
            self.pending.discard(ident)
            self._settle()

    def _settle(self) -> None:
        if self.pending is not None and not self.pending and not self.is_taken_up:
            self.is_taken_up, self._taken = True, set()
            log.info("environments_taken_up")

    # -- the answers -----------------------------------------------------------

    def liveness(self) -> tuple[bool, str]:
        if self.engine is None:
            return True, "starting"
        watches = self.engine.watches  # sharding swaps them: the current ones
        problems = [f"{scope.resource.kind} watch ended" for scope in watches.dead()]
        problems += [
            f"{scope.resource.kind} watch down {seconds:.0f}s"
            for scope, seconds in watches.lost_for(self.watch_grace)
        ]
        return (False, "; ".join(problems)) if problems else (True, "ok")

    def readiness(self) -> tuple[bool, str]:
        if self.engine is None:
            return False, "starting"
        if self.lease is not None and time.monotonic() >= self.lease.valid_until:
            return False, "holds no valid Lease"
        if self.peering:
            if self.standing_by is None:
                return False, "peering role not known yet"
            if self.standing_by:
                return True, "standing by"
        if self.is_taken_up:
            return True, "ok"
        if self.pending is None:
            return False, "Environments not listed yet"
        return False, f"{len(self.pending)} Environments not taken up yet"

    # -- the list at start -----------------------------------------------------

    def list_at_start(self, cluster: Cluster, namespaces: Iterable[str]) -> None:
        self._relisting = asyncio.create_task(self._list(cluster, list(namespaces) or [None]))

    async def _list(self, cluster: Cluster, places: list[str | None]) -> None:
        """Lists the Environments until none is awaited; an API error only delays it."""
        while not self.is_taken_up:
            try:
                found: list[Ident] = []
                for namespace in places:
                    # Names only: 500 whole Environments of 100 objects are megabytes of
                    # JSON, listed while kopf lists the same at start.
                    items, _ = await cluster.list_objects(
                        ENVIRONMENTS, namespace=namespace, metadata_only=True
                    )
                    found += [_ident(item) for item in items]
                self.expect(found)
            except ApiError as exc:
                log.warning("probe_list_failed", error=exc.describe())
            if not self.is_taken_up:
                await asyncio.sleep(RELIST_S)

    def close(self) -> None:
        if self._relisting is not None:
            self._relisting.cancel()


def _ident(item: dict[str, object]) -> Ident:
    meta = item.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def address(url: str) -> tuple[str, int, str]:
    """`--liveness http://HOST:PORT/PATH` as host, port and the liveness path."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.port:
        raise ValueError(f"{url!r}: an http://HOST:PORT/PATH URL is expected")
    return parts.hostname or "0.0.0.0", parts.port, parts.path or "/healthz"


async def serve_probes(probes: Probes, url: str) -> web.AppRunner:
    """Serves /livez, /healthz (or the URL's path) and /readyz over plain HTTP."""
    host, port, path = address(url)

    async def live(_: web.Request) -> web.Response:
        is_ok, detail = probes.liveness()
        return web.Response(status=200 if is_ok else 500, text=detail + "\n")

    async def ready(_: web.Request) -> web.Response:
        is_ok, detail = probes.readiness()
        return web.Response(status=200 if is_ok else 503, text=detail + "\n")

    app = web.Application()
    for route in {path, "/livez", "/healthz"}:
        app.router.add_get(route, live)
    app.router.add_get("/readyz", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("probes_serving", port=port)
    return runner
