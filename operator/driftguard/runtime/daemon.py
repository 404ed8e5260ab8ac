"""`driftguard run`: logging, metrics endpoint, then kopf with driftguard's handlers.

Standalone by default. With `--peering NAME` several replicas run and kopf's peering
lets only the one with the highest priority act; the others stand by (`standby.py`).
With `--shards-from-leases` several replicas share the work, each acting on its own
share of the target namespaces (`membership.py`, `shards.py`).
"""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import os
import random
import socket
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import kopf
import prometheus_client

from driftguard.core.tenancy import Tenancy
from driftguard.kube import cluster
from driftguard.kube.client import KubeCluster
from driftguard.runtime import exposition, handlers, probes
from driftguard.telemetry import logs, pauses

VERSION = importlib.metadata.version("driftguard")
"""The build's version: logged at start and sent in every request's User-Agent."""


@dataclass(frozen=True, slots=True)
class Sharding:
    """`--shards-from-leases`: this replica's id, where the Leases are, their duration."""

    replica: str
    namespace: str
    duration: float


@dataclass(frozen=True, slots=True)
class Metrics:
    """`--metrics-port`: where /metrics listens; secure (HTTPS, a reviewed token) or not."""

    port: int
    secure: bool = True
    cert_dir: str | None = None


@dataclass(frozen=True, slots=True)
class Webhook:
    """`--webhook-port`: where the attribution webhook listens, its TLS files, the key."""

    port: int
    cert_dir: str
    key_file: str | None = None


def run(
    *,
    namespaces: list[str],
    metrics: Metrics | None,
    liveness: str | None,
    log_level: str,
    tenancy: Tenancy | None = None,
    break_glass_groups: tuple[str, ...] = (),
    watch_grace: float = handlers.WATCH_GRACE_S,
    history_namespace: str = "driftguard-system",
    max_exception_s: float = 24 * 3600.0,
    exception_approvers: str = "",
    peering: str | None = None,
    priority: int | None = None,
    peering_lifetime: int = 60,
    sharding: Sharding | None = None,
    webhook: Webhook | None = None,
    allow_kubeconfig_exec: bool = False,
) -> int:
    # kopf decodes each watch event with json.loads, one recursion per level of nesting, and
    # the API server stores objects nested up to 10,000 levels: at Python's default limit
    # (1,000) one deep Environment would end the process. The model refuses it afterwards.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 25_000))
    # The operator keeps every managed object's bookkeeping (about 26 container objects
    # each) for as long as it runs. With the default thresholds (700, 10, 10) the cyclic
    # collector walked all of it again and again while a pass built it: 28 % of the CPU
    # of a restart at 20,000 objects (1.65 of 5.98 s). Collected every 50,000 net new
    # containers, it took 0.36 s; what it frees is only reference cycles, which are few.
    gc.set_threshold(50_000, 20, 10)
    pauses.watch_collections()
    logs.configure(level=log_level)
    # kopf names a peer after POD_ID (the chart sets the Pod's name); outside a Pod, after
    # the host and pid. The same name goes in the User-Agent, so that the API server's
    # audit log tells replicas apart.
    identity = os.environ.setdefault("POD_ID", f"{socket.gethostname()}-{os.getpid()}")
    if sharding is not None:
        # The replica's id names its Lease and, in the User-Agent, its requests.
        sharding = Sharding(sharding.replica or identity, sharding.namespace, sharding.duration)
        identity = sharding.replica
    cluster.USER_AGENT = f"driftguard/{VERSION} ({identity})"
    if peering and priority is None:
        # Replicas of one Deployment share their flags; kopf pauses every peer of the
        # same priority, so each picks its own.
        priority = random.randint(1, 2**31 - 1)
    # The contract's families only: no `_created` timestamp series beside each counter.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    settings = kopf.OperatorSettings()
    handlers.configure_kopf(settings)
    settings.peering.lifetime = peering_lifetime
    logs.get(__name__).info(
        "operator_started", version=VERSION, identity=identity, peering=peering, priority=priority
    )
    memo = kopf.Memo(
        probes=probes.Probes(watch_grace=watch_grace, peering=bool(peering)),
        namespaced=bool(namespaces),
        watch_grace=watch_grace,
        tenancy=tenancy or Tenancy(),
        break_glass_groups=break_glass_groups,
        history_namespace=history_namespace,
        max_exception_s=max_exception_s,
        exception_approvers=exception_approvers,
        peering=peering,
        namespaces=namespaces,
        identity=identity,
        priority=priority or 0,
        peering_lifetime=peering_lifetime,
        sharding=sharding,
        webhook=webhook,
        allow_kubeconfig_exec=allow_kubeconfig_exec,
    )
    operator = kopf.operator(
        clusterwide=not namespaces,
        namespaces=namespaces,
        # kopf's own endpoint would cache its answer for 10 s: probes.py serves the probes.
        liveness_endpoint=None,
        standalone=not peering,
        peering_name=peering,
        priority=priority,
        settings=settings,
        memo=memo,
    )
    asyncio.run(_serve(operator, memo.probes, liveness, metrics))
    return 0


async def _serve(
    operator: Coroutine[Any, Any, None],
    health: probes.Probes,
    url: str | None,
    metrics: Metrics | None,
) -> None:
    """The probes answer from the first moment (not live-failing, not ready), and /metrics
    serves; then kopf runs."""
    runners = [await probes.serve_probes(health, url)] if url else []
    is_served = metrics is not None and metrics.port > 0
    # Secure /metrics asks the API server about each scraper, on a client of its own.
    reviews = await KubeCluster.connect() if is_served and metrics and metrics.secure else None
    try:
        if metrics is not None and is_served:
            runners.append(
                await exposition.serve_metrics(
                    port=metrics.port,
                    secure=metrics.secure,
                    cert_dir=metrics.cert_dir,
                    cluster=reviews,
                )
            )
        await operator
    finally:
        for runner in runners:
            await runner.cleanup()
        if reviews is not None:
            await reviews.close()
