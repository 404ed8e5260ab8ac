"""`driftguard run`: logging, metrics endpoint, then kopf with driftguard's handlers."""

from __future__ import annotations

import asyncio
import sys

import kopf
import prometheus_client

from driftguard import handlers, logs
from driftguard.tenancy import Tenancy


def run(
    *,
    namespaces: list[str],
    metrics_port: int,
    liveness: str | None,
    log_level: str,
    tenancy: Tenancy | None = None,
    break_glass_groups: tuple[str, ...] = (),
    watch_grace: float = handlers.WATCH_GRACE_S,
    history_namespace: str = "driftguard-system",
) -> int:
    # kopf decodes each watch event with json.loads, one recursion per level of nesting, and
    # the API server stores objects nested up to 10,000 levels: at Python's default limit
    # (1,000) one deep Environment would end the process. The model refuses it afterwards.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 25_000))
    logs.configure(level=log_level)
    # The contract's families only: no `_created` timestamp series beside each counter.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    if metrics_port:
        prometheus_client.start_http_server(metrics_port)
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    memo = kopf.Memo(
        namespaced=bool(namespaces),
        watch_grace=watch_grace,
        tenancy=tenancy or Tenancy(),
        break_glass_groups=break_glass_groups,
        history_namespace=history_namespace,
    )
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            liveness_endpoint=liveness,
            standalone=True,
            settings=settings,
            memo=memo,
        )
    )
    return 0
